"""Tests for datasets.imagenet: converter (both layouts, error modes, resume, TF-Slim keys).

Decoder and preprocessing: test_decoders.py, test_classification_preprocessing.py; input pipeline:
tests/pipelines/test_classification_input.py.
"""
import argparse
import glob
import io
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from datasets import decoders
from datasets import imagenet
from datasets import tfrecord

SIZE = (40, 32)  # Pillow's (width, height)
WORDS = u'n01000001\ttench, Tinca tinca\nn01000002 goldfish\nn01000003\tgreat white shark\n'


def _save(path, mode, color, fmt):
  Image.new(mode, SIZE, color).save(path, format=fmt)


@pytest.fixture
def folders(tmp_path):
  """3 synsets: an RGB JPEG, a PNG, a grayscale JPEG, a CMYK JPEG, an RGB JPEG and a corrupt .JPEG."""
  root = tmp_path / 'raw'
  for synset in ('n01000001', 'n01000002', 'n01000003'):
    (root / synset).mkdir(parents=True)
  _save(str(root / 'n01000001' / 'a.JPEG'), 'RGB', (250, 0, 0), 'JPEG')
  _save(str(root / 'n01000001' / 'b.png'), 'RGB', (0, 250, 0), 'PNG')
  _save(str(root / 'n01000002' / 'c.jpg'), 'L', 100, 'JPEG')
  _save(str(root / 'n01000002' / 'd.JPEG'), 'CMYK', (0, 0, 255, 0), 'JPEG')  # yellow
  _save(str(root / 'n01000003' / 'e.jpeg'), 'RGB', (0, 0, 250), 'JPEG')
  (root / 'n01000003' / 'broken.JPEG').write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
  (root / 'n01000003' / 'notes.txt').write_text(u'not an image')
  words = tmp_path / 'synset_words.txt'
  words.write_text(WORDS)
  return str(root), str(words), str(tmp_path / 'out')


def _read_all(output_dir, split='train'):
  """Decodes every record of a split with `decoders.decode_classification`; returns {filename: decoded dict}."""
  files = sorted(p for p in glob.glob(os.path.join(output_dir, split + '-*')))
  out = {}
  with tf.Graph().as_default():
    serialized = tf.placeholder(tf.string, [])
    decoded = decoders.decode_classification(serialized)
    with tf.Session() as sess:
      for path in files:
        for record in tf.io.tf_record_iterator(path):
          value = sess.run(decoded, {serialized: record})
          out[value['filename'].decode()] = value
  return out


EXPECTED = {  # filename -> (label, text, RGB colour)
    'a.JPEG': (1, 'tench, Tinca tinca', (250, 0, 0)),
    'b.png': (1, 'tench, Tinca tinca', (0, 250, 0)),
    'c.jpg': (2, 'goldfish', (100, 100, 100)),
    'd.JPEG': (2, 'goldfish', (255, 255, 0)),
    'e.jpeg': (3, 'great white shark', (0, 0, 250)),
}


def test_convert_skip_mode_writes_the_rest(folders, capsys):
  raw, words, out = folders
  stats = imagenet.convert(raw, out, 'train', labels_file=words, num_shards=2, num_workers=2)
  broken = os.path.join(raw, 'n01000003', 'broken.JPEG')
  assert (stats['written'], stats['skipped'], stats['num_classes']) == (5, 1, 3)
  assert [path for path, _ in stats['errors']] == [broken]
  assert broken in capsys.readouterr().err
  records = _read_all(out)
  assert sorted(records) == sorted(EXPECTED)
  for name, (label, text, color) in EXPECTED.items():
    record = records[name]
    assert record['label'] == label and record['text'].decode() == text
    assert record['image'].shape == (32, 40, 3) and record['image'].dtype == np.uint8
    assert np.abs(record['image'].astype(int) - np.array(color)).max() <= 8, name
  with io.open(os.path.join(out, 'labels.txt'), encoding='utf-8') as f:
    assert f.read() == u'0:background\n1:tench, Tinca tinca\n2:goldfish\n3:great white shark\n'
  # Re-running resumes: every shard is complete, nothing is rewritten.
  again = imagenet.convert(raw, out, 'train', labels_file=words, num_shards=2, num_workers=2)
  assert (again['written'], again['shards_skipped']) == (0, 2)


def test_record_keys_match_tf_slim(folders):
  raw, _, out = folders
  os.remove(os.path.join(raw, 'n01000003', 'broken.JPEG'))
  imagenet.convert(raw, out, 'train', num_shards=1, num_workers=1)
  record = next(tf.io.tf_record_iterator(os.path.join(out, 'train-00000-of-00001')))
  feature = tf.train.Example.FromString(record).features.feature
  assert sorted(feature.keys()) == sorted([
      'image/encoded', 'image/format', 'image/class/label', 'image/class/synset', 'image/class/text',
      'image/height', 'image/width', 'image/channels', 'image/colorspace', 'image/filename'])
  assert feature['image/format'].bytes_list.value == [b'JPEG']
  assert feature['image/colorspace'].bytes_list.value == [b'RGB']
  assert feature['image/channels'].int64_list.value == [3]
  assert (feature['image/height'].int64_list.value, feature['image/width'].int64_list.value) == ([32], [40])
  # Without a labels file the class text is the synset.
  synset = feature['image/class/synset'].bytes_list.value
  assert feature['image/class/text'].bytes_list.value == synset


def test_convert_fail_mode_names_path(folders, capsys):
  raw, words, out = folders
  broken = os.path.join(raw, 'n01000003', 'broken.JPEG')
  with pytest.raises(tfrecord.ConversionError, match='broken.JPEG'):
    imagenet.convert(raw, out, 'train', labels_file=words, num_shards=2, num_workers=1, on_error='fail')
  parser = argparse.ArgumentParser()
  imagenet.add_arguments(parser)
  args = parser.parse_args(['--input-dir', raw, '--output-dir', out, '--split', 'train',
                            '--labels-file', words, '--num-shards', '2', '--num-workers', '2', '--on-error', 'fail'])
  capsys.readouterr()
  assert imagenet.run(args) == 2
  err = capsys.readouterr().err
  assert broken in err and 'Traceback' not in err
  assert not [n for n in os.listdir(out) if '.tmp-' in n]


def test_convert_input_errors(folders, tmp_path):
  raw, words, out = folders
  with pytest.raises(ValueError, match='nowhere'):
    imagenet.convert(str(tmp_path / 'nowhere'), out, 'train')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='empty'):
    imagenet.convert(str(tmp_path / 'empty'), out, 'train')
  (tmp_path / 'short_words.txt').write_text(u'n01000001 tench\n')
  with pytest.raises(ValueError, match=r'n01000002.*short_words\.txt'):
    imagenet.convert(raw, out, 'train', labels_file=str(tmp_path / 'short_words.txt'))


def _flat(tmp_path, truth):
  val = tmp_path / 'val'
  val.mkdir()
  colors = [(250, 0, 0), (0, 0, 250), (0, 250, 0)]
  for i, color in enumerate(colors):  # created in reverse order: sorting, not listing order, matters
    _save(str(val / ('ILSVRC2012_val_%08d.JPEG' % (3 - i))), 'RGB', color, 'JPEG')
  gt = tmp_path / 'ground_truth.txt'
  gt.write_text(truth)
  return str(val), str(gt)


def test_convert_flat_validation_layout(folders, tmp_path):
  _, words, out = folders
  val, gt = _flat(tmp_path, u'n01000003\nn01000001\nn01000003\n')
  stats = imagenet.convert(val, out, 'validation', labels_file=words, ground_truth_file=gt,
                           num_shards=1, num_workers=1)
  assert stats['written'] == 3 and stats['num_classes'] == 3
  records = _read_all(out, 'validation')
  got = dict((name, (int(r['label']), r['text'].decode())) for name, r in records.items())
  assert got == {'ILSVRC2012_val_00000001.JPEG': (3, 'great white shark'),
                 'ILSVRC2012_val_00000002.JPEG': (1, 'tench, Tinca tinca'),
                 'ILSVRC2012_val_00000003.JPEG': (3, 'great white shark')}
  assert records['ILSVRC2012_val_00000001.JPEG']['image'][0, 0, 1] > 200  # the green one: names, not order
  # Without a labels file: labels follow the sorted unique ground-truth synsets.
  other = str(tmp_path / 'out2')
  imagenet.convert(val, other, 'validation', ground_truth_file=gt, num_shards=1, num_workers=1)
  assert tfrecord.read_label_file(os.path.join(other, 'labels.txt')) == {
      0: 'background', 1: 'n01000001', 2: 'n01000003'}


def test_convert_flat_count_mismatch_names_both(tmp_path):
  val, gt = _flat(tmp_path, u'n01000003\nn01000001\n')
  with pytest.raises(ValueError) as info:
    imagenet.convert(val, str(tmp_path / 'out'), 'validation', ground_truth_file=gt)
  assert gt in str(info.value) and val in str(info.value)
