"""Center-size coder: hand-computed codes, round trip, batched decode, empty boxes."""
import math

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from heads.core import box_coder


def _run(fetches):
  with tf.Session() as sess:
    return sess.run(fetches)


def test_encode_golden(graph):
  anchors = tf.constant([[0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.4, 0.6]])
  boxes = tf.constant([[0.1, 0.2, 0.5, 0.8], [0.1, 0.3, 0.5, 0.7]])
  codes = _run(box_coder.encode(boxes, anchors))
  expected = [[-2.0, 0.0, 5 * math.log(0.4), 5 * math.log(0.6)], [0.0, 2.5, 5 * math.log(2.0), 0.0]]
  np.testing.assert_allclose(codes, expected, rtol=1e-5, atol=1e-5)
  unscaled = _run(box_coder.encode(boxes, anchors, scale_factors=None))
  np.testing.assert_allclose(unscaled[1], [0.0, 0.25, math.log(2.0), 0.0], rtol=1e-5, atol=1e-6)


def test_decode_golden_and_batched(graph):
  anchors = tf.constant([[0.2, 0.2, 0.4, 0.6]])
  codes = tf.constant([[[0.0, 2.5, 5 * math.log(2.0), 0.0]], [[0.0, 0.0, 0.0, 0.0]]])
  boxes = _run(box_coder.decode(codes, anchors))
  np.testing.assert_allclose(boxes, [[[0.1, 0.3, 0.5, 0.7]], [[0.2, 0.2, 0.4, 0.6]]], rtol=1e-5, atol=1e-6)


def test_round_trip(graph):
  rng = np.random.RandomState(0)
  def random_boxes(n):
    corner = rng.uniform(0.0, 0.7, [n, 2])
    return np.concatenate([corner, corner + rng.uniform(0.05, 0.3, [n, 2])], 1).astype(np.float32)
  boxes, anchors = random_boxes(50), random_boxes(50)
  decoded = _run(box_coder.decode(box_coder.encode(boxes, anchors), anchors))
  np.testing.assert_allclose(decoded, boxes, rtol=1e-4, atol=1e-5)


def test_empty_box_gives_finite_codes(graph):
  codes = _run(box_coder.encode(tf.constant([[0.5, 0.5, 0.5, 0.5]]), tf.constant([[0.0, 0.0, 1.0, 1.0]])))
  assert np.isfinite(codes).all()
  np.testing.assert_allclose(codes[0, 2], 5 * math.log(1e-8), rtol=1e-3)


def test_bad_scale_factors(graph):
  with pytest.raises(ValueError, match='scale_factors'):
    box_coder.encode(tf.zeros([1, 4]), tf.zeros([1, 4]), scale_factors=(1.0, 2.0))
