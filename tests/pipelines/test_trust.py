"""Issue #11: every bad input gives one clear `error:` line (exit 2), and records written by the official
TensorFlow tools (tests read them from ../shared/real_data, never copied here) train, evaluate and predict."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
import tensorflow.compat.v1 as tf
from PIL import Image

from pipelines.cli import main as cli
from pipelines import config_lib
from pipelines.training import runner
from tests.conftest import tiny_imagenet_records

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REAL = os.path.join(REPO, '..', 'shared', 'real_data')
# The configs below skip graph.pbtxt and the .meta files (`runtime.save_graph_def: false`): these tests are
# about data and checkpoints, and TF 1.15 spends seconds writing the graph at every training start and
# checkpoint (test_classification.py and test_moving_average.py check both settings).

CLASSIFICATION = """
task: classification
model: {depth_multiplier: 0.35}
classification: {image_size: 32, num_classes: 4}
data: {train_files: '%(train)s', eval_files: '%(eval)s', shuffle_buffer: 4, num_parallel_reads: 1}
train: {batch_size: 2, steps: 1, learning_rate: {schedule: constant, base: 0.01}}
eval: {batch_size: 2}
runtime: {save_checkpoints_steps: 1, log_every_n_steps: 1, seed: 1, save_graph_def: false}
"""


def _real(*parts):
  path = os.path.join(REAL, *parts)
  if not os.path.exists(path):
    pytest.skip('real data from the official TensorFlow tools not found at %s (see its SOURCES.md)' % path)
  return path


def _write(tmp_path, text, name='config.yaml'):
  path = str(tmp_path / name)
  with open(path, 'w') as f:
    f.write(text)
  return path


def _classification(tmp_path, train, eval_files=None, name='config.yaml'):
  return _write(tmp_path, CLASSIFICATION % {'train': train, 'eval': eval_files or train}, name)


def _error_line(capsys):
  err = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]
  assert len(err) == 1, err
  return err[0]


def _failing_run(args, capsys):
  """(exit status, the one error line) of an `mnv2` command that fails at run time (an input check).

  On TF 1.15 it runs in a child process: TF 1.15 sometimes crashes (SIGSEGV in Session.close) while the
  Estimator unwinds from a failed input check, which would take the whole test session down with it; a
  crashed child is run once more, and a second crash fails the test.
  """
  if not tf.__version__.startswith('1.'):
    code = cli.main(args)
    return code, _error_line(capsys)
  for _ in range(2):
    child = subprocess.run([sys.executable, '-m', 'pipelines'] + args, cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, timeout=900,
                           env=dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', '')))
    if child.returncode >= 0:
      break
  err = [line for line in child.stderr.splitlines() if line.startswith('error:')]
  assert len(err) == 1, child.stderr[-3000:]
  return child.returncode, err[0]


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  return tiny_imagenet_records(tmp_path_factory.mktemp('imagenet'), 3, images_per_class=2)


@pytest.fixture(scope='module')
def trained(records, tmp_path_factory):
  """A 1-step classification model dir (labels 1..3, 4 logits) and its config path."""
  tmp = tmp_path_factory.mktemp('trained')
  config = _classification(tmp, os.path.join(records, 'train-*'))
  model_dir = str(tmp / 'model')
  assert cli.main(['train', '--config', config, '--model-dir', model_dir]) == 0
  return config, model_dir


# ----------------------------------------------------------------------------------- labels (item 2)


def test_label_outside_classes_names_record_and_value(tmp_path, records, capsys):
  config = _classification(tmp_path, os.path.join(records, 'train-*'))
  code, line = _failing_run(['train', '--config', config, '--model-dir', str(tmp_path / 'm'),
                             '--set', 'classification.num_classes=3', '--set', 'train.steps=3'], capsys)
  assert code == 2
  assert '.JPEG' in line and 'has label 3' in line and 'classification.label_offset' in line, line
  assert 'Traceback' not in line


def test_cifar10_png_records_train_with_label_offset(tmp_path, capsys):
  cifar = _real('classification', 'cifar10_train.tfrecord')
  config = _classification(tmp_path, cifar)
  assert cli.main(['train', '--config', config, '--model-dir', str(tmp_path / 'm'), '--set', 'train.batch_size=1',
                   '--set', 'classification.num_classes=11', '--set', 'classification.label_offset=1']) == 0
  # Its one record has label 3: with 4 logits (classes 1..3) and offset 1 it is class 4, out of range.
  code, line = _failing_run(['train', '--config', config, '--model-dir', str(tmp_path / 'm2'), '--set',
                             'train.batch_size=1', '--set', 'classification.label_offset=1'], capsys)
  assert code == 2 and 'has label 3 + classification.label_offset 1 = 4' in line, line


def test_tf_cnn_benchmarks_labels_start_at_zero(tmp_path, capsys):
  folder = _real('classification', 'tf_cnn_benchmarks_fake_imagenet')
  config = _classification(tmp_path, os.path.join(folder, 'train-*'), os.path.join(folder, 'validation-*'))
  # Labels 0..9 and no background: offset 0 stops at the first label 0, naming the record.
  code, line = _failing_run(['train', '--config', config, '--model-dir', str(tmp_path / 'm0'), '--set',
                             'train.batch_size=16', '--set', 'train.steps=2', '--set', 'classification.num_classes=11'],
                            capsys)
  assert code == 2
  assert 'has label 0' in line and 'train_' in line, line
  model_dir = str(tmp_path / 'm1')
  overrides = ['--set', 'classification.num_classes=11', '--set', 'classification.label_offset=1']
  assert cli.main(['train', '--config', config, '--model-dir', model_dir] + overrides) == 0
  assert cli.main(['eval', '--config', config, '--model-dir', model_dir] + overrides) == 0
  with open(os.path.join(model_dir, 'eval', 'metrics.json')) as f:
    assert 0.0 <= json.load(f)['top1_accuracy'] <= 1.0


SEGMENTATION = """
task: segmentation
model: {depth_multiplier: 0.35}
segmentation: {num_classes: 21, crop_size: 65, eval_crop_size: 513, output_stride: 32, min_scale: 0.5,
               max_scale: 0.5}
data: {train_files: '%(train)s', eval_files: '%(train)s', shuffle_buffer: 2, num_parallel_reads: 1}
train: {batch_size: 1, steps: 1, learning_rate: {schedule: constant, base: 0.01}}
runtime: {save_checkpoints_steps: 1, log_every_n_steps: 1, seed: 1, save_graph_def: false}
"""


def test_deeplab_record_with_values_beyond_classes(tmp_path, capsys):
  record = _real('segmentation', 'pascal_voc_seg', 'val-00000-of-00001.tfrecord')
  config = _write(tmp_path, SEGMENTATION % {'train': record})
  code, line = _failing_run(['train', '--config', config, '--model-dir', str(tmp_path / 'm')], capsys)
  assert code == 2
  assert 'record 2007_' in line, line
  assert 'segmentation.ignore_label 255' in line and 'has label values' in line


# ------------------------------------------------------------------------- other formats (item 3)


def test_foreign_record_names_file_record_and_key(tmp_path, capsys):
  fsns = _real('foreign', 'fsns-00000-of-00001')
  config = _classification(tmp_path, fsns)
  assert cli.main(['train', '--config', config, '--model-dir', str(tmp_path / 'm')]) == 2
  line = _error_line(capsys)
  assert fsns in line and 'record 0' in line and "'image/class/label'" in line, line


def test_sequence_example_record_is_named(tmp_path, capsys):
  record = _real('detection', 'snapshot_serengeti_sequence_examples.record')
  config = _write(tmp_path, DETECTION % {'train': record, 'labels': _real('detection', 'pet_label_map.pbtxt')})
  assert cli.main(['train', '--config', config, '--model-dir', str(tmp_path / 'm')]) == 2
  line = _error_line(capsys)
  assert record in line and "'image/encoded'" in line and 'SequenceExample' in line, line


DETECTION = """
task: detection
model: {depth_multiplier: 0.35}
detection: {image_size: 64, num_classes: 37}
data: {train_files: '%(train)s', eval_files: '%(train)s', labels_file: '%(labels)s', shuffle_buffer: 4,
       num_parallel_reads: 1}
train: {batch_size: 2, steps: 1, learning_rate: {schedule: constant, base: 0.004}}
eval: {batch_size: 4}
runtime: {save_checkpoints_steps: 1, log_every_n_steps: 1, seed: 1, save_graph_def: false}
"""


def test_pets_record_trains_evaluates_and_predicts(tmp_path, capsys):
  record = _real('detection', 'pets_examples.record')
  label_map = _real('detection', 'pet_label_map.pbtxt')
  images = [_real('detection', 'test_images', 'image1.jpg'), _real('detection', 'test_images', 'image2.jpg')]
  config = _write(tmp_path, DETECTION % {'train': record, 'labels': label_map})
  model_dir = str(tmp_path / 'model')
  assert cli.main(['train', '--config', config, '--model-dir', model_dir]) == 0
  assert cli.main(['eval', '--config', config, '--model-dir', model_dir]) == 0
  with open(os.path.join(model_dir, 'eval', 'metrics.json')) as f:
    metrics = json.load(f)
  assert {'AP', 'AP50', 'AP75', 'AR100'} <= set(metrics)
  assert 'AP/chihuahua' in metrics and 'AP/yorkshire_terrier' in metrics
  out = str(tmp_path / 'boxes')
  assert cli.main(['predict'] + images + ['--config', config, '--model-dir', model_dir, '--output', out,
                                          '--min-score', '0']) == 0
  drawn = sorted(os.listdir(out))
  assert len(drawn) == 2
  assert Image.open(os.path.join(out, drawn[0])).size == Image.open(images[0]).size


# ------------------------------------------------------------------ runtime errors of commands (item 1)


def test_predict_on_a_non_image(tmp_path, trained, capsys):
  config, model_dir = trained
  text = _write(tmp_path, 'not an image', 'notes.jpg')
  assert cli.main(['predict', text, '--config', config, '--model-dir', model_dir]) == 2
  assert 'notes.jpg: not a JPEG, PNG, GIF or BMP image' in _error_line(capsys)


def test_checkpoint_that_does_not_match_the_config(tmp_path, trained, capsys):
  config, model_dir = trained
  for command in (['eval'], ['export', '--export-dir', str(tmp_path / 'export')]):
    assert cli.main(command + ['--config', config, '--model-dir', model_dir,
                               '--set', 'model.depth_multiplier=0.5']) == 2
    line = _error_line(capsys)
    assert 'does not match the model this config builds' in line, line
  assert not os.path.exists(str(tmp_path / 'export')) or not os.listdir(str(tmp_path / 'export'))


def test_corrupt_record(tmp_path, records, capsys):
  shard = sorted(f for f in os.listdir(records) if f.startswith('train-'))[0]
  with open(os.path.join(records, shard), 'rb') as f:
    data = f.read()
  broken = str(tmp_path / 'broken.tfrecord')
  with open(broken, 'wb') as f:
    f.write(data[:len(data) - 40])  # the last record is cut short
  config = _classification(tmp_path, broken)
  code, line = _failing_run(['train', '--config', config, '--model-dir', str(tmp_path / 'm'),
                             '--set', 'train.steps=4'], capsys)
  assert code == 2
  assert 'corrupt' in line or 'truncated' in line, line


def test_debug_keeps_the_traceback(tmp_path, records, monkeypatch):
  config = _classification(tmp_path, os.path.join(records, 'train-*'))
  monkeypatch.setenv('MNV2_DEBUG', '1')
  with pytest.raises(Exception):
    cli.main(['train', '--config', config, '--model-dir', str(tmp_path / 'm'), '--set', 'classification.num_classes=3',
              '--set', 'train.steps=3'])


# ------------------------------------------------------------------------------ bad inputs (item 5)


def test_changed_config_is_refused_and_config_yaml_kept(tmp_path, trained, capsys):
  config, model_dir = trained
  saved_path = os.path.join(model_dir, 'config.yaml')
  with open(saved_path) as f:
    saved = f.read()
  args = ['train', '--config', config, '--model-dir', model_dir, '--set', 'model.depth_multiplier=0.5',
          '--set', 'classification.image_size=40', '--set', 'train.steps=2']
  assert cli.main(args) == 2
  line = _error_line(capsys)
  assert 'classification.image_size, model.depth_multiplier' in line and '--allow-config-change' in line
  assert 'train.steps' not in line
  # Allowed, the run then fails (the checkpoint has 0.35-wide variables): config.yaml is still the original.
  assert cli.main(args + ['--allow-config-change']) == 2
  assert 'does not match' in _error_line(capsys)
  with open(saved_path) as f:
    assert f.read() == saved


def test_checkpoint_without_moving_averages_evaluates_with_raw_weights(tmp_path, records, capsys):
  config = _classification(tmp_path, os.path.join(records, 'train-*'))
  model_dir = str(tmp_path / 'm')
  assert cli.main(['train', '--config', config, '--model-dir', model_dir,
                   '--set', 'train.moving_average_decay=null']) == 0
  # A new config in the same dir, with the default decay, is the case of a checkpoint trained elsewhere.
  assert cli.main(['eval', '--config', config, '--model-dir', model_dir]) == 0
  assert 'holds no moving averages' in capsys.readouterr().err
  assert cli.main(['export', '--config', config, '--model-dir', model_dir]) == 0


@pytest.mark.parametrize('override,key', [
    ('train.warm_start.exclude=["Logits(["]', 'train.warm_start.exclude[0]'),
    ('train.warm_start.include=["*"]', 'train.warm_start.include[0]'),
    ('segmentation.scale_step=-0.25', 'segmentation.scale_step'),
    ('segmentation.scale_step=2.0', 'segmentation.scale_step'),
    ('data.num_train_examples=-1', 'data.num_train_examples'),
    ('data.num_parallel_calls=-1', 'data.num_parallel_calls'),
    ('classification.label_offset=1.5', 'classification.label_offset'),
])
def test_config_errors_name_the_key(tmp_path, override, key):
  task = 'segmentation' if override.startswith('segmentation') else 'classification'
  path = _write(tmp_path, yaml.safe_dump({'task': task, 'train': {'steps': 1, 'learning_rate': {
      'schedule': 'constant'}}}))
  with pytest.raises(config_lib.ConfigError) as e:
    runner.load_config(path, [override])
  assert str(e.value).startswith('%s: %s: ' % (path, key)), str(e.value)


def test_segmentation_ignore_label_is_what_loss_and_metrics_skip(graph):
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from pipelines.evaluation import segmentation_metrics  # pylint: disable=g-import-not-at-top
  from pipelines.tasks import segmentation  # pylint: disable=g-import-not-at-top
  labels = tf.constant([[0, 1, 7, 2]])
  logits = tf.one_hot([[0, 1, 0, 0]], 3) * 5.0
  with tf.Session() as sess:
    matrix = sess.run(segmentation_metrics.batch_confusion_matrix(labels, tf.constant([[0, 1, 0, 0]]), 3,
                                                                  ignore_label=2))
    loss_ignore_2, loss_all = sess.run([segmentation.pixel_loss(logits, labels, 3, ignore_label=2),
                                        segmentation.pixel_loss(logits, labels, 3)])
  assert matrix.sum() == 2  # label 2 ignored, 7 out of range
  assert loss_ignore_2 < loss_all


def test_shared_real_data_is_not_copied_into_the_repo():
  for root, _, files in os.walk(REPO):
    if '.git' in root or '.venv' in root:
      continue
    for name in files:
      assert name not in ('pets_examples.record', 'cifar10_train.tfrecord', 'fsns-00000-of-00001'), root


# ------------------------------------------------------------------------------ nothing lost (item 7)


def test_sigkill_between_checkpoints_then_resume(tmp_path, records):
  import signal  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  config = _classification(tmp_path, os.path.join(records, 'train-*'))
  model_dir = str(tmp_path / 'model')
  command = [sys.executable, '-m', 'pipelines', 'train', '--config', config, '--model-dir', model_dir,
             '--set', 'train.steps=60', '--set', 'runtime.save_checkpoints_steps=2',
             '--set', 'runtime.keep_checkpoint_max=3']
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO] + [p for p in [os.environ.get('PYTHONPATH')] if p]),
             TF_CPP_MIN_LOG_LEVEL='2')
  process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while process.poll() is None and time.time() < deadline:
    latest = tf.train.latest_checkpoint(model_dir)
    if latest and int(latest.split('-')[-1]) >= 4:
      break
    time.sleep(0.05)
  time.sleep(0.3)  # somewhere between two checkpoints (or inside a save)
  process.send_signal(signal.SIGKILL)
  process.wait()
  killed_at = int(tf.train.latest_checkpoint(model_dir).split('-')[-1])
  assert 4 <= killed_at < 60
  rerun = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         timeout=900)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  logged = [int(n) for n in re.findall(r' step (\d+) ', rerun.stderr.decode('utf-8', 'replace'))]
  assert logged and logged[0] > killed_at, logged[:3]  # resumed from the last checkpoint, not from step 0
  state = tf.train.get_checkpoint_state(model_dir)
  assert state.model_checkpoint_path.endswith('-60')
  for path in state.all_model_checkpoint_paths:  # every checkpoint left is complete and readable
    reader = tf.train.load_checkpoint(path)
    for name in reader.get_variable_to_shape_map():
      reader.get_tensor(name)
  with open(os.path.join(model_dir, 'config.yaml')) as f:
    assert yaml.safe_load(f)['train']['steps'] == 60


# ------------------------------------------------------------------------- detection records (item 5)


def _detection_records(path, objects):
  """One OD API record per entry of `objects`: (num_boxes, num_labels)."""
  import io  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from datasets import tfrecord  # pylint: disable=g-import-not-at-top
  with tf.io.TFRecordWriter(path) as writer:
    for index, (boxes, labels) in enumerate(objects):
      out = io.BytesIO()
      Image.fromarray(np.full([32, 32, 3], 100, np.uint8)).save(out, format='JPEG')
      starts = [0.1 * i for i in range(boxes)]
      feature = {'image/encoded': tfrecord.bytes_feature(out.getvalue()),
                 'image/source_id': tfrecord.bytes_feature('img%d' % index),
                 'image/object/bbox/ymin': tfrecord.float_feature(starts),
                 'image/object/bbox/xmin': tfrecord.float_feature(starts),
                 'image/object/bbox/ymax': tfrecord.float_feature([s + 0.3 for s in starts]),
                 'image/object/bbox/xmax': tfrecord.float_feature([s + 0.3 for s in starts]),
                 'image/object/class/label': tfrecord.int64_feature([1] * labels)}
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
  return path


def test_eval_keeps_every_box_beyond_max_objects(tmp_path, graph):
  import logging  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from pipelines.inputs import detection_input  # pylint: disable=g-import-not-at-top
  from pipelines.tasks import detection  # pylint: disable=g-import-not-at-top
  record = _detection_records(str(tmp_path / 'd.record'), [(3, 3), (1, 1)])
  path = _write(tmp_path, DETECTION % {'train': record, 'labels': _real('detection', 'pet_label_map.pbtxt')})
  config = runner.load_config(path, ['detection.max_objects=2'])
  messages = []
  handler = logging.Handler()
  handler.emit = lambda rec: messages.append(rec.getMessage())
  logging.getLogger('mnv2').addHandler(handler)
  try:
    anchors = detection.ssd_anchors(config)
    eval_data = detection_input.dataset(config, tf.estimator.ModeKeys.EVAL, anchors)
    train_data = detection_input.dataset(config, tf.estimator.ModeKeys.TRAIN, anchors)
  finally:
    logging.getLogger('mnv2').removeHandler(handler)
  assert any('1 of 2 evaluation records hold more than detection.max_objects=2' in m for m in messages), messages
  assert any('training uses the first 2 boxes' in m for m in messages), messages
  _, labels = tf.data.make_one_shot_iterator(eval_data).get_next()
  _, train_labels = tf.data.make_one_shot_iterator(train_data).get_next()
  with tf.Session() as sess:
    num, boxes = sess.run([labels[detection_input.NUM_OBJECTS], labels[detection_input.GT_BOXES]])
    sess.run(train_labels)
  assert sorted(num.tolist()) == [1, 3] and boxes.shape[1] == 3


def test_boxes_without_class_labels(tmp_path, capsys):
  record = _detection_records(str(tmp_path / 'd.record'), [(2, 1), (2, 1)])
  config = _write(tmp_path, DETECTION % {'train': record, 'labels': _real('detection', 'pet_label_map.pbtxt')})
  code, line = _failing_run(['train', '--config', config, '--model-dir', str(tmp_path / 'm')], capsys)
  assert code == 2
  assert 'img' in line and 'class labels (image/object/class/label)' in line, line
