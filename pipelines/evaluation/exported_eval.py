"""An exported model (SavedModel or TFLite) measured on its task's held-out split: metric, latency, size.

What the Estimator's evaluation measures is the checkpoint on the eval input pipeline. What a user ships
is an export, fed encoded images through its own serving path. This module measures the export:

  evaluate(config, predict)   every record of `data.eval_files` (each member's, for a multitask config):
                              its encoded image -> `predict` -> the prediction dict that `mnv2 predict`
                              prints (`pipelines.cli.predict` / `pipelines.export.tflite_task` keys), scored with the
                              code the Estimator's evaluation uses: `coco_metrics.CocoEvaluator` (detection),
                              `segmentation_metrics` confusion matrix and mIoU (segmentation), top-1 / top-5
                              accuracy of the class probabilities (classification, `label_offset` applied).
                              Keys as in the Estimator's `metrics.json` (`<member>/` prefixed for multitask).
  latency_ms(fn, runs)        median wall time of `fn()` after warm-up, in milliseconds.
  size_bytes(path)            a file's size, or a directory's total (a SavedModel).

Records are parsed with the converters' feature keys (the OD API's, DeepLab's and TF-Slim's), so the
groundtruth is what the Estimator's evaluation reads; only the image goes through the export's own
preprocessing. Not here: exporting (`pipelines.training.runner.export`, `pipelines.export.tflite_task.export`).
"""
import io
import logging
import os
import statistics
import time

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image

from datasets import coco
from datasets import imagenet
from datasets import voc
from pipelines.evaluation import coco_metrics
from pipelines.evaluation import segmentation_metrics
from pipelines.tasks import labels
from pipelines.tasks import registry

LOG = logging.getLogger('mnv2')


# ------------------------------------------------------------------------------------------ records


def _eval_records(config):
  """(path, index, tf.train.Example) of every record of `data.eval_files`, files in sorted order."""
  pattern = config.data.eval_files
  files = sorted(tf.io.gfile.glob(pattern)) if pattern else []
  if not files:
    raise ValueError('data.eval_files: no file matches %r' % (pattern,))
  for path in files:
    for index, serialized in enumerate(tf.python_io.tf_record_iterator(path)):
      yield path, index, tf.train.Example.FromString(serialized)


def _bytes(example, key):
  values = example.features.feature[key].bytes_list.value
  return values[0] if values else b''


def _floats(example, key):
  return np.asarray(example.features.feature[key].float_list.value, np.float64)


def _ints(example, key):
  return np.asarray(example.features.feature[key].int64_list.value, np.int64)


def _image_size(encoded):
  """(height, width) of an encoded image, read from its header."""
  width, height = Image.open(io.BytesIO(encoded)).size
  return height, width


# ------------------------------------------------------------------------------------------ per task


class ClassificationScorer(object):
  """top-1 / top-5 accuracy: the Estimator's `top1_accuracy` (argmax) and `top5_accuracy` (in_top_k)."""

  def __init__(self, config):
    self.offset = config.classification.label_offset
    self.top_k = min(5, config.classification.num_classes)
    self.correct1 = self.correct5 = self.count = 0

  def image(self, example):
    return _bytes(example, imagenet.ENCODED_KEY)

  def add(self, example, prediction, where):
    label = int(_ints(example, imagenet.LABEL_KEY)[0]) + self.offset
    probabilities = np.asarray(prediction['probabilities'], np.float64).reshape(-1)
    if not 0 <= label < len(probabilities):
      raise ValueError('%s: label %d (+ classification.label_offset) is outside 0..%d' % (
          where, label, len(probabilities) - 1))
    # in_top_k: the label's probability is among the k largest (ties count as in).
    self.correct1 += int(np.argmax(probabilities) == label)
    self.correct5 += int(np.sum(probabilities > probabilities[label]) < self.top_k)
    self.count += 1

  def result(self):
    count = max(1, self.count)
    return {'top1_accuracy': self.correct1 / float(count), 'top5_accuracy': self.correct5 / float(count)}


class DetectionScorer(object):
  """COCO box metrics with the Estimator's `CocoEvaluator` (ids from source_id, crowd and area kept)."""

  def __init__(self, categories):
    self.evaluator = coco_metrics.CocoEvaluator(categories)

  def image(self, example):
    return _bytes(example, coco.ENCODED)

  def add(self, example, prediction, where):
    del where
    height, width = _image_size(self.image(example))
    boxes = np.stack([_floats(example, k) for k in (coco.YMIN, coco.XMIN, coco.YMAX, coco.XMAX)], axis=1)
    count = len(boxes)

    def per_object(values):
      return np.concatenate([values, np.zeros([count])])[:count]

    scale = np.array([height, width, height, width], np.float64)
    num = int(prediction['num_detections'])
    image_id = coco_metrics.image_id_from_source_id(_bytes(example, coco.SOURCE_ID),
                                                    -(self.evaluator.num_images + 1))
    self.evaluator.add_image(image_id, height, width, boxes.reshape([-1, 4]) * scale,
                             _ints(example, coco.CLASS_LABEL), per_object(_ints(example, coco.IS_CROWD)),
                             per_object(_floats(example, coco.AREA)),
                             np.asarray(prediction['detection_boxes'])[:num],
                             np.asarray(prediction['detection_scores'])[:num],
                             np.asarray(prediction['detection_classes'])[:num])

  def result(self):
    return self.evaluator.evaluate()


class SegmentationScorer(object):
  """mIoU, pixel accuracy and per-class IoU from one confusion matrix (`segmentation_metrics`)."""

  def __init__(self, config):
    seg = config.segmentation
    self.names = labels.class_names(config.data.labels_file, seg.num_classes)
    self.total = np.zeros([seg.num_classes, seg.num_classes], np.float64)
    self._graph = tf.Graph()
    with self._graph.as_default():
      self._labels = tf.placeholder(tf.int32, [None, None])
      self._predictions = tf.placeholder(tf.int32, [None, None])
      self._counts = segmentation_metrics.batch_confusion_matrix(self._labels, self._predictions, seg.num_classes,
                                                                 ignore_label=seg.ignore_label)
      self._matrix = tf.placeholder(tf.float64, [seg.num_classes, seg.num_classes])
      self._metrics = segmentation_metrics.metrics_from_confusion(self._matrix)
    self._session = tf.Session(graph=self._graph)

  def image(self, example):
    return _bytes(example, voc.KEY_IMAGE_ENCODED)

  def add(self, example, prediction, where):
    label = np.asarray(Image.open(io.BytesIO(_bytes(example, voc.KEY_LABEL_ENCODED))))
    if label.ndim == 3:
      label = label[:, :, 0]
    mask = np.asarray(prediction['mask'])
    if mask.shape != label.shape:
      raise ValueError('%s: predicted mask %s differs from the label %s' % (where, mask.shape, label.shape))
    self.total += self._session.run(self._counts, {self._labels: label.astype(np.int32),
                                                   self._predictions: mask.astype(np.int32)})

  def result(self):
    values = self._session.run(self._metrics, {self._matrix: self.total})
    self._session.close()
    metrics = {segmentation_metrics.MIOU: float(values[segmentation_metrics.MIOU]),
               segmentation_metrics.PIXEL_ACCURACY: float(values[segmentation_metrics.PIXEL_ACCURACY])}
    for name, iou in zip(segmentation_metrics.metric_names(self.names), values['iou']):
      metrics[name] = float(iou)
    return metrics


def _evaluate_task(config, predict, max_images, prefix=''):
  scorer = registry.make_task(config).exported_scorer()
  count = 0
  for path, index, example in _eval_records(config):
    if max_images is not None and count >= max_images:
      break
    where = '%s record %d' % (path, index)
    try:
      prediction = predict(scorer.image(example))
    except (tf.errors.OpError, ValueError) as e:
      raise ValueError('%s: the exported model cannot predict on its image: %s' % (
          where, getattr(e, 'message', str(e)).split('\n')[0]))
    if prefix:
      prediction = dict((k[len(prefix):], v) for k, v in prediction.items() if k.startswith(prefix))
    scorer.add(example, prediction, where)
    count += 1
  LOG.info('exported model: %s scored on %d held-out images', config.task, count)
  return scorer.result()


def evaluate(config, predict, max_images=None):
  """The task's metrics of an exported model on `data.eval_files`.

  Args:
    config: the export's Config (a multitask config scores each member on its own eval split).
    predict: callable, encoded image bytes -> one prediction dict (no batch dimension), keys as
      `pipelines.cli.predict` (`<member>/<key>` for multitask).
    max_images: optional int, score only the first images of each split.

  Returns:
    dict metric name -> float, the Estimator's `metrics.json` keys (`<member>/` prefixed for multitask).
  """
  metrics = {}
  for name, member in config.member_configs():
    prefix = '%s/' % name if name else ''
    for key, value in _evaluate_task(member, predict, max_images, prefix=prefix).items():
      metrics[prefix + key] = value
  return metrics


# ------------------------------------------------------------------------------------------ measuring


def latency_ms(fn, runs=20, warmup=3):
  """Median wall time of `fn()` in milliseconds, after `warmup` untimed calls."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(max(1, runs)):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1000.0 * statistics.median(times)


def size_bytes(path):
  """Size of a file, or the total of the files under a directory (a SavedModel's variables included)."""
  if not tf.io.gfile.isdir(path):
    return tf.io.gfile.stat(path).length
  return sum(tf.io.gfile.stat(os.path.join(root, name)).length
             for root, _, names in tf.io.gfile.walk(path) for name in names)
