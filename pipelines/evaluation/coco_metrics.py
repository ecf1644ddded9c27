"""COCO box evaluation with pycocotools, fed image by image, and its tf.estimator metric ops.

`CocoEvaluator` accumulates ground truth and detections in absolute pixels of the original images,
runs `COCOeval` once (the result is cached until more images arrive) and writes the COCO results file
(`detections.json`: [{image_id, category_id, bbox [x, y, w, h], score}]). `metric_ops` wraps it in
`tf.py_func` ops for `EstimatorSpec.eval_metric_ops`: one update op per batch, and value ops that all
read the one cached evaluation.

Metric keys (the short scheme, one float each; -1.0 means "undefined", COCOeval's convention, e.g. no
ground truth of that kind): 'AP' (IoU .50:.95), 'AP50', 'AP75', 'APs', 'APm', 'APl' (by object area),
'AR1', 'AR10', 'AR100' (by detections per image), and 'AP/<category name>' per label-map category
(IoU .50:.95, all areas, 100 detections), computed from COCOeval's `eval['precision']` array.

Not here: segmentation masks, keypoints, the OD API's other metric sets, Open Images metrics.
"""
import contextlib
import copy
import io
import json
import logging
import threading

import numpy as np
import tensorflow.compat.v1 as tf
from pycocotools import coco as coco_lib
from pycocotools import cocoeval

from datasets import tfrecord

METRIC_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100')
CATEGORY_PREFIX = 'AP/'
RESULTS_NAME = 'detections.json'
UNDEFINED = -1.0
LOG = logging.getLogger('mnv2')  # the CLI prints this logger; TensorFlow's INFO stream is verbose


def image_id_from_source_id(source_id, fallback):
  """The COCO image id of a record: int(source_id) when it is a decimal integer, else `fallback` (an int)."""
  text = source_id.decode('utf-8', 'replace') if isinstance(source_id, bytes) else str(source_id)
  text = text.strip()
  if text.lstrip('-').isdigit():
    return int(text)
  return fallback


def category_metric_names(categories):
  """dict category id -> metric key 'AP/<name>' (the id is appended to a name used twice)."""
  keys, seen = {}, set()
  for cat_id, name in sorted(categories.items()):
    key = CATEGORY_PREFIX + str(name)
    if key in seen:
      key = '%s_%d' % (key, cat_id)
    seen.add(key)
    keys[cat_id] = key
  return keys


def _xywh(boxes):
  """float [N, 4] [ymin, xmin, ymax, xmax] -> float [N, 4] COCO [x, y, width, height]."""
  boxes = np.asarray(boxes, np.float64).reshape([-1, 4])
  return np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], axis=1)


class CocoEvaluator(object):
  """Accumulates per-image boxes and evaluates them with pycocotools' COCOeval (bbox)."""

  def __init__(self, categories, results_path=None):
    """Args:
      categories: dict int category id -> str name; only these categories are evaluated.
      results_path: optional path of the COCO results file written by `evaluate` (e.g. .../detections.json).
    """
    if not categories:
      raise ValueError('CocoEvaluator: categories must not be empty')
    self.categories = dict((int(k), str(v)) for k, v in categories.items())
    self.results_path = results_path
    self._lock = threading.Lock()
    self.reset()

  def reset(self):
    self._images, self._groundtruth, self._detections = [], [], []
    self._seen = set()
    self._cache = None

  @property
  def num_images(self):
    return len(self._images)

  def add_image(self, image_id, height, width, gt_boxes, gt_classes, gt_is_crowd=None, gt_area=None,
                det_boxes=None, det_scores=None, det_classes=None):
    """Adds one image; an image id seen before is ignored (returns False).

    Args:
      image_id: int (or str) COCO image id.
      height, width: ints > 0, original image size in pixels.
      gt_boxes: float [N, 4] ground truth [ymin, xmin, ymax, xmax] in absolute pixels; N may be 0.
      gt_classes: int [N] category ids.
      gt_is_crowd: optional bool/int [N]; crowd regions only stop detections from counting as false positives.
      gt_area: optional float [N] object areas in pixels (COCO's segment area); <= 0 or None -> box area.
      det_boxes: optional float [D, 4] detections [ymin, xmin, ymax, xmax] in absolute pixels.
      det_scores: float [D] scores in [0, 1].
      det_classes: int [D] category ids.

    Returns:
      bool, whether the image was added.
    """
    if image_id in self._seen:
      LOG.warning('COCO evaluation: image id %r seen twice; keeping the first', image_id)
      return False
    self._seen.add(image_id)
    self._cache = None
    self._images.append({'id': image_id, 'height': int(height), 'width': int(width)})
    xywh = _xywh(gt_boxes)
    count = len(xywh)
    crowd = np.zeros([count], bool) if gt_is_crowd is None else np.asarray(gt_is_crowd).astype(bool)
    area = np.zeros([count]) if gt_area is None else np.asarray(gt_area, np.float64)
    area = np.where(area > 0, area, xywh[:, 2] * xywh[:, 3])
    for i in range(count):
      # pycocotools treats ann id 0 as "no match", so ids start at 1.
      self._groundtruth.append({'id': len(self._groundtruth) + 1, 'image_id': image_id,
                                'category_id': int(gt_classes[i]), 'bbox': [float(v) for v in xywh[i]],
                                'area': float(area[i]), 'iscrowd': int(crowd[i])})
    if det_boxes is not None:
      det_xywh = _xywh(det_boxes)
      for i in range(len(det_xywh)):
        self._detections.append({'image_id': image_id, 'category_id': int(det_classes[i]),
                                 'bbox': [float(v) for v in det_xywh[i]], 'score': float(det_scores[i])})
    return True

  def detections(self):
    """The COCO results list accumulated so far (image_id, category_id, bbox [x, y, w, h], score)."""
    return list(self._detections)

  def _coco_objects(self):
    categories = [{'id': k, 'name': v} for k, v in sorted(self.categories.items())]
    gt = coco_lib.COCO()
    gt.dataset = {'images': list(self._images), 'annotations': copy.deepcopy(self._groundtruth),
                  'categories': categories}
    gt.createIndex()
    if self._detections:
      dt = gt.loadRes(copy.deepcopy(self._detections))  # loadRes adds keys to the dicts it gets
    else:  # loadRes cannot take an empty list
      dt = coco_lib.COCO()
      dt.dataset = {'images': list(self._images), 'annotations': [], 'categories': categories}
      dt.createIndex()
    return gt, dt

  def _run_cocoeval(self):
    """dict metric name -> float; prints COCOeval's summary through tf.logging."""
    names = category_metric_names(self.categories)
    if not self._images:
      return dict([(n, UNDEFINED) for n in METRIC_NAMES] + [(n, UNDEFINED) for n in names.values()])
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
      gt, dt = self._coco_objects()
      evaluator = cocoeval.COCOeval(gt, dt, iouType='bbox')
      evaluator.evaluate()
      evaluator.accumulate()
      evaluator.summarize()
    LOG.info('COCO evaluation of %d images:\n%s', len(self._images), log.getvalue())
    metrics = dict(zip(METRIC_NAMES, [float(v) for v in evaluator.stats[:len(METRIC_NAMES)]]))
    # precision: [IoU thresholds, recall points, categories, area ranges, max dets]; -1 = no ground truth.
    precision = evaluator.eval['precision']
    for index, cat_id in enumerate(evaluator.params.catIds):
      values = precision[:, :, index, 0, -1]
      values = values[values > -1]
      metrics[names[cat_id]] = float(np.mean(values)) if values.size else UNDEFINED
    return metrics

  def write_results(self, path):
    """Writes the COCO results file atomically (temp name + rename)."""
    tfrecord.atomic_write(path, json.dumps(self._detections))

  def evaluate(self):
    """Metrics dict (see the module docstring); runs COCOeval at most once per set of images (thread-safe)."""
    with self._lock:
      if self._cache is None:
        self._cache = self._run_cocoeval()
        if self.results_path:
          self.write_results(self.results_path)
      return dict(self._cache)

  def add_batch(self, source_ids, heights, widths, gt, detections):
    """Adds a batch of images from the eval input pipeline (numpy arrays, the batch first).

    Args:
      source_ids: bytes [B] record source ids (COCO image ids as text).
      heights, widths: int [B] original image sizes.
      gt: tuple (boxes float [B, M, 4] normalized [ymin, xmin, ymax, xmax] in [0, 1], classes int [B, M],
        is_crowd bool [B, M], area float [B, M], num_objects int [B]) -- zero-padded after num_objects.
      detections: tuple (boxes float [B, D, 4] absolute pixels, scores float [B, D], classes int [B, D],
        num_detections int [B]).
    """
    gt_boxes, gt_classes, gt_crowd, gt_area, num_objects = gt
    det_boxes, det_scores, det_classes, num_dets = detections
    for b in range(len(source_ids)):
      image_id = image_id_from_source_id(source_ids[b], -(len(self._images) + 1))
      n, d = int(num_objects[b]), int(num_dets[b])
      scale = np.array([heights[b], widths[b], heights[b], widths[b]], np.float64)
      self.add_image(image_id, heights[b], widths[b], np.asarray(gt_boxes[b][:n], np.float64) * scale,
                     gt_classes[b][:n], gt_crowd[b][:n], gt_area[b][:n],
                     det_boxes[b][:d], det_scores[b][:d], det_classes[b][:d])


def metric_ops(evaluator, source_ids, image_sizes, groundtruth, detections):
  """eval_metric_ops computing COCO metrics with `evaluator` (tf.py_func; CPU, not serializable).

  Args:
    evaluator: a CocoEvaluator, owned by this graph.
    source_ids: string [B] record source ids.
    image_sizes: (height int32 [B], width int32 [B]) of the original images.
    groundtruth: (boxes float32 [B, M, 4] normalized, classes int32 [B, M], is_crowd bool [B, M],
      area float32 [B, M], num_objects int32 [B]).
    detections: (boxes float32 [B, D, 4] absolute pixels, scores float32 [B, D], classes int32 [B, D],
      num_detections int32 [B]).

  Returns:
    dict metric name -> (value_op float32 [], update_op); names as in the module docstring.
  """
  def update(*arrays):
    evaluator.add_batch(arrays[0], arrays[1], arrays[2], arrays[3:8], arrays[8:12])
    return np.int64(evaluator.num_images)

  inputs = [source_ids] + list(image_sizes) + list(groundtruth) + list(detections)
  update_op = tf.py_func(update, inputs, tf.int64, stateful=True, name='coco_update')
  names = list(METRIC_NAMES) + [v for _, v in sorted(category_metric_names(evaluator.categories).items())]

  def value_op(name):
    return tf.py_func(lambda: np.float32(evaluator.evaluate()[name]), [], tf.float32, stateful=True,
                      name='coco_value')

  ops = {}
  for name in names:
    value = value_op(name)
    value.set_shape([])
    ops[name] = (value, update_op)
  return ops
