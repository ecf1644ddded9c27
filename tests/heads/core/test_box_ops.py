"""Golden values of box areas, intersections, IoU (incl. empty boxes) and clipping."""
import numpy as np
import tensorflow.compat.v1 as tf

from heads.core import box_ops


def _run(fetches):
  with tf.Session() as sess:
    return sess.run(fetches)


def test_area_and_intersection(graph):
  a = tf.constant([[0.0, 0.0, 0.5, 0.4], [0.0, 0.0, 1.0, 1.0]])
  b = tf.constant([[0.5, 0.5, 1.5, 1.5], [0.2, 0.1, 0.3, 0.3], [2.0, 2.0, 3.0, 3.0]])
  area, inter = _run([box_ops.area(a), box_ops.intersection(a, b)])
  np.testing.assert_allclose(area, [0.2, 1.0], rtol=1e-6)
  np.testing.assert_allclose(inter, [[0.0, 0.02, 0.0], [0.25, 0.02, 0.0]], rtol=1e-5, atol=1e-7)


def test_iou_golden_and_empty_union(graph):
  a = tf.constant([[0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.3, 0.3]])
  b = tf.constant([[0.5, 0.5, 1.5, 1.5], [0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.3, 0.3]])
  iou = _run(box_ops.iou(a, b))
  np.testing.assert_allclose(iou, [[1.0 / 7.0, 1.0, 0.0], [0.0, 0.0, 0.0]], rtol=1e-6)
  assert not np.isnan(iou).any()


def test_iou_with_no_rows(graph):
  a = tf.placeholder(tf.float32, [None, 4])
  iou = box_ops.iou(a, tf.constant([[0.0, 0.0, 1.0, 1.0]]))
  with tf.Session() as sess:
    assert sess.run(iou, {a: np.zeros([0, 4], np.float32)}).shape == (0, 1)


def test_clip_to_window_keeps_shape(graph):
  boxes = tf.constant([[[-0.1, 0.2, 0.5, 1.3], [1.2, 1.2, 1.5, 1.5]]])
  clipped = _run(box_ops.clip_to_window(boxes, [0.0, 0.0, 1.0, 1.0]))
  np.testing.assert_allclose(clipped, [[[0.0, 0.2, 0.5, 1.0], [1.0, 1.0, 1.0, 1.0]]])


def test_center_size_round_trip(graph):
  boxes = tf.constant([[0.1, 0.2, 0.5, 0.8]])
  yc, xc, h, w = box_ops.to_center_size(boxes)
  got = _run([yc, xc, h, w, box_ops.from_center_size(yc, xc, h, w)])
  np.testing.assert_allclose(np.concatenate(got[:4]), [0.3, 0.5, 0.4, 0.6], rtol=1e-6)
  np.testing.assert_allclose(got[4], [[0.1, 0.2, 0.5, 0.8]], rtol=1e-6)
