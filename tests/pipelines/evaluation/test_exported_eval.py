"""Scoring an export on the held-out split (`pipelines.evaluation.exported_eval`): predictions built from the records'
own groundtruth (read with the product decoders, not the module's parser) score perfectly; known-wrong ones
score what the metric definitions say; bad predictions and missing files name the record or the key."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from datasets import decoders
from pipelines.evaluation import exported_eval
from pipelines.training import runner
from tests.conftest import config_from_text
from tests.conftest import tiny_shapes_records

CONFIGS = {
    'classification': """
task: classification
train: {steps: 1, learning_rate: {schedule: constant}}
classification: {image_size: 48, num_classes: 5}
data: {eval_files: '%(r)s/classification/val-*', labels_file: '%(r)s/classification/labels.txt'}
""",
    'detection': """
task: detection
train: {steps: 1, learning_rate: {schedule: constant}}
detection: {image_size: 64, num_classes: 7}
data: {eval_files: '%(r)s/detection/val-*', labels_file: '%(r)s/detection/label_map.pbtxt'}
""",
    'segmentation': """
task: segmentation
train: {steps: 1, learning_rate: {schedule: constant}}
segmentation: {num_classes: 5, eval_crop_size: 64}
data: {eval_files: '%(r)s/segmentation/val-*', labels_file: '%(r)s/segmentation/labels.txt'}
""",
}
DECODERS = {'classification': decoders.decode_classification, 'detection': decoders.decode_detection,
            'segmentation': decoders.decode_segmentation}
ENCODED_KEYS = {'classification': 'image/encoded', 'detection': 'image/encoded', 'segmentation': 'image/encoded'}


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  counts = {'imagenet': {'train': 1, 'val': 10}, 'coco': {'train': 1, 'val': 6}, 'voc': {'train': 1, 'val': 4}}
  return tiny_shapes_records(tmp_path_factory.mktemp('exported_eval'), counts)[0]


def _config(tmp_path, records_dir, task):
  return config_from_text(tmp_path, CONFIGS[task] % {'r': records_dir}, name=task + '.yaml', mode='eval')


def _groundtruth(config):
  """encoded image bytes -> the decoded record (numpy), through datasets.decoders."""
  files = sorted(tf.io.gfile.glob(config.data.eval_files))
  with tf.Graph().as_default():
    serialized = tf.placeholder(tf.string, [])
    encoded = tf.parse_single_example(serialized, {ENCODED_KEYS[config.task]: tf.FixedLenFeature([], tf.string)})
    decoded = dict(DECODERS[config.task](serialized), encoded=encoded[ENCODED_KEYS[config.task]])
    table = {}
    with tf.Session() as session:
      for path in files:
        for record in tf.python_io.tf_record_iterator(path):
          value = session.run(decoded, {serialized: record})
          table[value['encoded']] = value
  assert table
  return table


def _perfect(task, truth, num_classes):
  def predict(encoded):
    gt = truth[encoded]
    if task == 'classification':
      return {'probabilities': np.eye(num_classes)[gt['label']]}
    if task == 'detection':
      scale = np.array([gt['height'], gt['width'], gt['height'], gt['width']], np.float32)
      count = len(gt['boxes'])
      return {'detection_boxes': gt['boxes'] * scale, 'detection_scores': np.ones([count], np.float32),
              'detection_classes': gt['classes'], 'num_detections': np.int32(count)}
    return {'mask': gt['label'][:, :, 0].astype(np.int32)}
  return predict


@pytest.mark.parametrize('task,key', [('classification', 'top1_accuracy'), ('detection', 'AP50'),
                                      ('detection', 'AP'), ('segmentation', 'miou')])
def test_groundtruth_as_prediction_scores_one(tmp_path, records, task, key):
  config = _config(tmp_path, records, task)
  truth = _groundtruth(config)
  num_classes = getattr(config, task).num_classes
  metrics = exported_eval.evaluate(config, _perfect(task, truth, num_classes))
  assert metrics[key] == pytest.approx(1.0)
  if task == 'classification':
    assert metrics['top5_accuracy'] == 1.0
  if task == 'segmentation':
    assert metrics['pixel_accuracy'] == 1.0 and metrics['IoU/background'] == 1.0


def test_wrong_predictions_score_as_defined(tmp_path, records):
  config = _config(tmp_path, records, 'classification')
  truth = _groundtruth(config)
  labels = np.array([v['label'] for v in truth.values()])
  # Always class 1 first, class 2 second: top-1 counts label 1, top-5 (k=5 of 5 classes) counts everything.
  probabilities = np.array([0.1, 0.5, 0.3, 0.05, 0.05])
  metrics = exported_eval.evaluate(config, lambda encoded: {'probabilities': probabilities})
  assert metrics['top1_accuracy'] == pytest.approx(np.mean(labels == 1))
  assert metrics['top5_accuracy'] == 1.0
  assert 0 < metrics['top1_accuracy'] < 1  # the tiny split has several classes: the check above can fail

  config = _config(tmp_path, records, 'segmentation')
  truth = _groundtruth(config)
  metrics = exported_eval.evaluate(config, lambda encoded: {'mask': np.zeros(truth[encoded]['label'].shape[:2],
                                                                             np.int32)})
  labels = np.concatenate([v['label'].reshape(-1) for v in truth.values()])
  labels = labels[labels != 255]
  background = np.mean(labels == 0)  # IoU of background = its pixels / all pixels; every other class 0
  present = len(np.unique(labels))
  assert metrics['pixel_accuracy'] == pytest.approx(background, rel=1e-6)
  assert metrics['miou'] == pytest.approx(background / present, rel=1e-6)


def test_max_images_and_multitask_prefixes(tmp_path, records):
  config = _config(tmp_path, records, 'classification')
  seen = []

  def predict(encoded):
    seen.append(encoded)
    return {'probabilities': np.ones([5]) / 5}
  exported_eval.evaluate(config, predict, max_images=3)
  assert len(seen) == 3


def test_errors_name_the_record_and_the_key(tmp_path, records):
  config = _config(tmp_path, records, 'segmentation')
  with pytest.raises(ValueError, match=r'val-00000-of-00001.* record 0: predicted mask \(2, 2\)'):
    exported_eval.evaluate(config, lambda encoded: {'mask': np.zeros([2, 2], np.int32)})
  config = _config(tmp_path, records, 'classification')
  with pytest.raises(ValueError, match=r'val-00000-of-00001 record \d+: label \d+ .*outside 0..2'):
    exported_eval.evaluate(config, lambda encoded: {'probabilities': np.ones([3]) / 3})
  missing = runner.load_config(str(tmp_path / 'classification.yaml'),
                               ['data.eval_files=%s' % os.path.join(str(tmp_path), 'nothing-*')])
  with pytest.raises(ValueError, match=r'data.eval_files: no file matches .*nothing-\*'):
    exported_eval.evaluate(missing, lambda encoded: {})


def test_latency_and_size(tmp_path):
  calls = []
  assert exported_eval.latency_ms(lambda: calls.append(1), runs=5, warmup=2) >= 0 and len(calls) == 7
  (tmp_path / 'a').write_bytes(b'x' * 10)
  (tmp_path / 'sub').mkdir()
  (tmp_path / 'sub' / 'b').write_bytes(b'y' * 5)
  assert exported_eval.size_bytes(str(tmp_path / 'a')) == 10
  assert exported_eval.size_bytes(str(tmp_path)) == 15
