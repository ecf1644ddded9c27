"""Issue #11 for the converters: user errors exit 2 with one line, nothing is written half-way, and an
interrupted conversion (SIGKILL, a full disk, a read-only directory) resumes to the same bytes."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from datasets import shard_writer
from datasets import tfrecord
from datasets import voc
from pipelines.cli import main as cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REAL = os.path.join(REPO, '..', 'shared', 'real_data')


def _error_line(capsys):
  err = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]
  assert len(err) == 1, err
  return err[0]


def _raw_imagenet(root, num_images, size=16, classes=3):
  """Class folders of PNG noise images (PNG makes the converter re-encode: slower, on purpose)."""
  rng = np.random.RandomState(0)
  for i in range(num_images):
    folder = os.path.join(root, 'n%03d' % (i % classes + 1))
    if not os.path.isdir(folder):
      os.makedirs(folder)
    Image.fromarray(rng.randint(0, 256, [size, size, 3]).astype(np.uint8)).save(os.path.join(folder, '%04d.png' % i))
  return root


def _files(directory):
  return dict((name, open(os.path.join(directory, name), 'rb').read()) for name in sorted(os.listdir(directory)))


def _convert_args(raw, out, shards=3):
  return ['convert', 'imagenet', '--input-dir', raw, '--output-dir', out, '--split', 'train',
          '--num-shards', str(shards), '--num-workers', '1']


@pytest.fixture(scope='module')
def small_raw(tmp_path_factory):
  return _raw_imagenet(str(tmp_path_factory.mktemp('raw')), 12)


@pytest.fixture(scope='module')
def reference(small_raw, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('reference'))
  assert cli.main(_convert_args(small_raw, out)) == 0
  return _files(out)


# ------------------------------------------------------------------------------------- COCO id 0 (item 4)


def test_coco_category_id_zero_is_refused_then_shifted(tmp_path, capsys):
  folder = os.path.join(REAL, 'coco_json', 'waste_identification_sample')
  if not os.path.isdir(folder):
    pytest.skip('real data from the official TensorFlow tools not found at %s' % folder)
  out = str(tmp_path / 'out')
  args = ['convert', 'coco', '--images-dir', folder, '--annotations', os.path.join(folder, 'dataset.json'),
          '--output-dir', out, '--split', 'val', '--num-shards', '1', '--num-workers', '1']
  assert cli.main(args) == 2
  line = _error_line(capsys)
  assert 'category id 0' in line and 'plastics_HDPE_flexible_color_SAchets' in line, line
  assert '--category-id-offset 1' in line
  assert not os.path.exists(out) or not os.listdir(out)  # nothing written

  assert cli.main(args + ['--category-id-offset', '1']) == 0
  summary = capsys.readouterr().out
  assert 'category ids shifted by +1' in summary and '2 records written' in summary, summary
  with open(os.path.join(out, 'label_map.pbtxt')) as f:
    label_map = f.read()
  assert 'id: 0\n' not in label_map and 'id: 1\n' in label_map and 'id: 6\n' in label_map
  assert '--category-id-offset' in label_map.splitlines()[0]
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  labels = set()
  for record in tf.io.tf_record_iterator(os.path.join(out, 'val-00000-of-00001')):
    labels.update(tf.train.Example.FromString(record).features.feature['image/object/class/label'].int64_list.value)
  with open(os.path.join(folder, 'dataset.json')) as f:
    original = set(a['category_id'] for a in json.load(f)['annotations'])
  assert labels == set(i + 1 for i in original)


# ------------------------------------------------------------------------------------- VOC labels.txt (item 5)


def _devkit(root):
  base = os.path.join(root, 'VOC2012')
  for sub in ('JPEGImages', 'SegmentationClass', os.path.join('ImageSets', 'Segmentation')):
    os.makedirs(os.path.join(base, sub))
  Image.fromarray(np.zeros([8, 8, 3], np.uint8)).save(os.path.join(base, 'JPEGImages', 'a.jpg'))
  Image.fromarray(np.ones([8, 8], np.uint8), mode='L').save(os.path.join(base, 'SegmentationClass', 'a.png'))
  with open(os.path.join(base, 'ImageSets', 'Segmentation', 'train.txt'), 'w') as f:
    f.write('a\n')
  return root


def test_voc_refuses_labels_file_of_other_classes(tmp_path):
  devkit, out = _devkit(str(tmp_path / 'devkit')), str(tmp_path / 'out')
  voc.convert(devkit, out, 'train', num_shards=1, num_workers=1, class_names=['background', 'cat'])
  with pytest.raises(ValueError, match='labels.txt already exists with different classes'):
    voc.convert(devkit, out, 'val', split_file=os.path.join(devkit, 'VOC2012', 'ImageSets', 'Segmentation',
                                                            'train.txt'), num_shards=1, num_workers=1)
  assert not [n for n in os.listdir(out) if n.startswith('val')]  # refused before writing a shard


# ------------------------------------------------------------------------ interrupted conversions (item 7)


class _FullDisk(object):
  """A writer that fails like a full disk after its first record."""

  def __init__(self, path):
    self._inner = open(path, 'wb')
    self._count = 0

  def write(self, record):
    self._count += 1
    if self._count > 1:
      raise OSError(errno.ENOSPC, 'No space left on device', self._inner.name)
    self._inner.write(record)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._inner.close()


def test_full_disk_then_resume(tmp_path, small_raw, reference, monkeypatch, capsys):
  out = str(tmp_path / 'out')
  real_open = shard_writer._open_writer  # pylint: disable=protected-access

  def failing(path):
    return _FullDisk(path) if 'train-00001' in path else real_open(path)
  monkeypatch.setattr(shard_writer, '_open_writer', failing)
  assert cli.main(_convert_args(small_raw, out)) == 2
  line = _error_line(capsys)
  assert 'train-00001-of-00003' in line and 'No space left on device' in line, line
  assert 'train-00000-of-00003' in os.listdir(out) and 'train-00001-of-00003' not in os.listdir(out)
  assert not [n for n in os.listdir(out) if tfrecord.is_temp_file(n)]
  monkeypatch.setattr(shard_writer, '_open_writer', real_open)
  assert cli.main(_convert_args(small_raw, out)) == 0
  assert '1 complete shards kept' in capsys.readouterr().out
  assert _files(out) == reference


def test_read_only_output_dir_then_resume(tmp_path, small_raw, reference, monkeypatch, capsys):
  out = str(tmp_path / 'out')
  real_open = shard_writer._open_writer  # pylint: disable=protected-access

  def denied(path):
    raise PermissionError(errno.EACCES, 'Permission denied', path)
  monkeypatch.setattr(shard_writer, '_open_writer', denied)  # root ignores chmod, so inject the failure
  assert cli.main(_convert_args(small_raw, out)) == 2
  line = _error_line(capsys)
  assert os.path.join(out, 'train-00000-of-00003') in line and 'Permission denied' in line, line
  monkeypatch.setattr(shard_writer, '_open_writer', real_open)
  assert cli.main(_convert_args(small_raw, out)) == 0
  assert _files(out) == reference


@pytest.mark.skipif(not hasattr(os, 'geteuid') or os.geteuid() == 0, reason='root writes to read-only dirs')
def test_really_read_only_output_dir(tmp_path, small_raw, capsys):
  out = str(tmp_path / 'out')
  os.makedirs(out)
  os.chmod(out, 0o555)
  try:
    assert cli.main(_convert_args(small_raw, out)) == 2
    assert out in _error_line(capsys)
  finally:
    os.chmod(out, 0o755)
  assert cli.main(_convert_args(small_raw, out)) == 0


def test_sigkill_mid_conversion_then_rerun_gives_the_same_shards(tmp_path):
  raw = _raw_imagenet(str(tmp_path / 'raw'), 1500, size=48)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO] + [p for p in [os.environ.get('PYTHONPATH')] if p]),
             TF_CPP_MIN_LOG_LEVEL='2')
  whole, killed = str(tmp_path / 'whole'), str(tmp_path / 'killed')

  def command(out):
    return [sys.executable, '-m', 'pipelines'] + _convert_args(raw, out, shards=6)
  process = subprocess.Popen(command(killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  first = os.path.join(killed, 'train-00000-of-00006')
  deadline = time.time() + 240
  while not os.path.exists(first) and process.poll() is None and time.time() < deadline:
    time.sleep(0.005)
  process.send_signal(signal.SIGKILL)
  process.wait()
  done = [n for n in os.listdir(killed) if n.startswith('train-') and not tfrecord.is_temp_file(n)]
  assert 1 <= len(done) < 6, done  # killed between shards
  subprocess.check_call(command(killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  subprocess.check_call(command(whole), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  assert not [n for n in os.listdir(killed) if tfrecord.is_temp_file(n)]
  assert _files(killed) == _files(whole)
  shutil.rmtree(raw)
