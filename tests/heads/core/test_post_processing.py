"""Batched multi-class NMS against a numpy greedy-NMS reference; padding and clipping."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from heads.core import fields
from heads.core import post_processing


def _np_iou(box, boxes):
  ymin = np.maximum(box[0], boxes[:, 0])
  xmin = np.maximum(box[1], boxes[:, 1])
  ymax = np.minimum(box[2], boxes[:, 2])
  xmax = np.minimum(box[3], boxes[:, 3])
  inter = np.maximum(ymax - ymin, 0) * np.maximum(xmax - xmin, 0)
  areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  return inter / (areas + (box[2] - box[0]) * (box[3] - box[1]) - inter)


def _np_nms_image(boxes, scores, score_thr, iou_thr, per_class, total):
  """Greedy NMS per class, then the best `total` over classes: list of (score, class, box)."""
  detections = []
  for k in range(scores.shape[1]):
    candidates = [i for i in np.argsort(-scores[:, k]) if scores[i, k] > score_thr]
    kept = []
    for i in candidates:
      if len(kept) < per_class and (not kept or _np_iou(boxes[i], boxes[kept]).max() <= iou_thr):
        kept.append(i)
    detections += [(scores[i, k], k, boxes[i]) for i in kept]
  return sorted(detections, key=lambda d: -d[0])[:total]


def _random_inputs(rng, batch, num_boxes, num_classes):
  # Boxes clustered around a few centers, so that NMS has overlaps to suppress.
  centers = rng.uniform(0.2, 0.8, [batch, 4, 2])[:, rng.randint(0, 4, num_boxes)]
  centers += rng.normal(scale=0.03, size=centers.shape)
  sizes = rng.uniform(0.1, 0.3, [batch, num_boxes, 2])
  boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=-1).astype(np.float32)
  return boxes, rng.uniform(size=[batch, num_boxes, num_classes]).astype(np.float32)


def test_matches_numpy_reference(graph):
  rng = np.random.RandomState(3)
  boxes, scores = _random_inputs(rng, batch=3, num_boxes=40, num_classes=3)
  outputs = post_processing.batch_multiclass_nms(boxes, scores, score_threshold=0.3, iou_threshold=0.5,
                                                 max_detections_per_class=5, max_total_detections=12)
  with tf.Session() as sess:
    got = sess.run(outputs)
  assert got[fields.NUM_DETECTIONS].dtype == np.int32
  for b in range(3):
    expected = _np_nms_image(boxes[b], scores[b], 0.3, 0.5, 5, 12)
    n = len(expected)
    assert got[fields.NUM_DETECTIONS][b] == n
    np.testing.assert_allclose(got[fields.DETECTION_SCORES][b, :n], [d[0] for d in expected], rtol=1e-6)
    np.testing.assert_array_equal(got[fields.DETECTION_CLASSES][b, :n], [d[1] for d in expected])
    np.testing.assert_allclose(got[fields.DETECTION_BOXES][b, :n], [d[2] for d in expected], rtol=1e-6)
    assert not got[fields.DETECTION_SCORES][b, n:].any() and not got[fields.DETECTION_BOXES][b, n:].any()


def test_few_detections_are_zero_padded_and_clipped(graph):
  boxes = np.array([[[-0.1, 0.2, 0.5, 1.2], [0.0, 0.2, 0.5, 1.1], [0.6, 0.6, 0.9, 0.9]]], np.float32)
  scores = np.array([[[0.9, 0.0], [0.8, 0.7], [0.0, 0.05]]], np.float32)
  outputs = post_processing.batch_multiclass_nms(boxes, scores, score_threshold=0.1, iou_threshold=0.5,
                                                 max_total_detections=4, clip_window=[0.0, 0.0, 1.0, 1.0])
  with tf.Session() as sess:
    got = sess.run(outputs)
  # Box 1 is suppressed in class 0 by box 0 but survives in class 1; box 2 is below the score threshold.
  np.testing.assert_array_equal(got[fields.NUM_DETECTIONS], [2])
  np.testing.assert_allclose(got[fields.DETECTION_SCORES], [[0.9, 0.7, 0.0, 0.0]], rtol=1e-6)
  np.testing.assert_array_equal(got[fields.DETECTION_CLASSES], [[0, 1, 0, 0]])
  np.testing.assert_allclose(got[fields.DETECTION_BOXES],
                             [[[0.0, 0.2, 0.5, 1.0], [0.0, 0.2, 0.5, 1.0], [0, 0, 0, 0], [0, 0, 0, 0]]])


def test_bad_limits(graph):
  with pytest.raises(ValueError, match='max_total_detections'):
    post_processing.batch_multiclass_nms(tf.zeros([1, 2, 4]), tf.zeros([1, 2, 1]), max_total_detections=0)
