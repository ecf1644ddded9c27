"""Per-anchor losses against hand / numpy values; hard-negative mining counts and crowd exclusion."""
import math

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from heads.core import losses


def _run(fetches):
  with tf.Session() as sess:
    return sess.run(fetches)


def test_weighted_smooth_l1_golden(graph):
  predictions = tf.constant([[[0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]]])
  targets = tf.constant([[[0.5, 0.0, 0.0, -0.5], [0.0, 0.0, 0.0, 0.0]]])
  got = _run(losses.weighted_smooth_l1(predictions, targets, tf.constant([[1.0, 0.5]])))
  # Anchor 0: 2 * 0.5 * 0.5^2; anchor 1: (2 - 0.5) * weight 0.5.
  np.testing.assert_allclose(got, [[0.25, 0.75]], rtol=1e-6)
  got = _run(losses.weighted_smooth_l1(predictions, targets, tf.constant([[1.0, 1.0]]), delta=3.0))
  np.testing.assert_allclose(got, [[0.25, 2.0]], rtol=1e-6)


def test_weighted_sigmoid_ce_matches_numpy(graph):
  rng = np.random.RandomState(1)
  logits = rng.normal(size=[2, 3, 4]).astype(np.float32)
  targets = (rng.uniform(size=[2, 3, 4]) > 0.5).astype(np.float32)
  weights = rng.uniform(size=[2, 3]).astype(np.float32)
  got = _run(losses.weighted_sigmoid_ce(tf.constant(logits), tf.constant(targets), tf.constant(weights)))
  prob = 1.0 / (1.0 + np.exp(-logits))
  expected = -(targets * np.log(prob) + (1 - targets) * np.log(1 - prob)) * weights[:, :, None]
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_weighted_softmax_ce_golden(graph):
  logits = tf.constant([[[0.0, 0.0], [0.0, math.log(3.0)], [5.0, -5.0]]])
  targets = tf.constant([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
  got = _run(losses.weighted_softmax_ce(logits, targets, tf.constant([[1.0, 2.0, 1.0]])))
  np.testing.assert_allclose(got, [[math.log(2.0), 2 * math.log(4.0 / 3.0), 0.0]], rtol=1e-5)


MATCHES = np.array([[0, -1, -1, -1, -2, -1, 1, -1],
                    [-1, -1, -2, -1, -1, -1, -1, -1]], np.int32)
CLS = np.array([[1.0, 5.0, 2.0, 7.0, 100.0, 3.0, 1.0, 0.5],
                [0.1, 0.4, 9.0, 0.3, 0.2, 0.8, 0.0, 0.6]], np.float32)
REG = np.array([[0.5, 0, 0, 0, 0, 0, 0.25, 0],
                [0] * 8], np.float32)
# Eight disjoint boxes along the diagonal: NMS suppresses none of them.
BOXES = np.tile(np.array([[i / 8.0, i / 8.0, (i + 0.9) / 8.0, (i + 0.9) / 8.0] for i in range(8)], np.float32),
                [2, 1, 1])


def _mine(boxes=BOXES, **kwargs):
  args = dict(num_hard_examples=None, iou_threshold=1.0, max_negatives_per_positive=3.0, min_negatives_per_image=0)
  args.update(kwargs)
  return _run(losses.hard_example_miner(tf.constant(CLS), tf.constant(REG), tf.constant(boxes),
                                        tf.constant(MATCHES), **args))


def _kept(cls_kept):
  return [np.nonzero(row)[0].tolist() for row in cls_kept]


def test_miner_keeps_top_negatives_per_positive(graph):
  cls_kept, reg_kept, num_pos, num_neg = _mine(max_negatives_per_positive=1.0)
  # Image 0: positives 0 and 6; the two highest negatives are 3 (7.0) and 1 (5.0); crowd 4 (100) never.
  assert _kept(cls_kept) == [[0, 1, 3, 6], []]
  np.testing.assert_allclose(cls_kept[0, [0, 1, 3, 6]], [1.0, 5.0, 7.0, 1.0])
  np.testing.assert_allclose(reg_kept, [[0.5, 0, 0, 0, 0, 0, 0.25, 0], [0] * 8])
  np.testing.assert_array_equal(num_pos, [2, 0])
  np.testing.assert_array_equal(num_neg, [2, 0])


def test_miner_is_capped_by_available_negatives_and_keeps_a_minimum(graph):
  cls_kept, _, _, num_neg = _mine(max_negatives_per_positive=3.0, min_negatives_per_image=2)
  # Image 0: 6 wanted, 5 exist. Image 1: no positives, the minimum 2 (0.8, 0.6); crowd 2 (9.0) skipped.
  assert _kept(cls_kept) == [[0, 1, 2, 3, 5, 6, 7], [5, 7]]
  np.testing.assert_array_equal(num_neg, [5, 2])


def test_miner_nms_suppresses_overlapping_lower_loss_boxes(graph):
  boxes = BOXES.copy()
  boxes[0, 1] = boxes[0, 3]  # anchor 1 (loss 5.0) decodes onto anchor 3 (7.0): suppressed at IoU 0.99
  cls_kept, _, _, _ = _mine(boxes=boxes, iou_threshold=0.99, max_negatives_per_positive=1.0)
  assert _kept(cls_kept)[0] == [0, 3, 5, 6]
  # num_hard_examples: only the 3 highest-loss anchors of each image are candidates.
  cls_kept, _, num_pos, _ = _mine(num_hard_examples=3, max_negatives_per_positive=None)
  assert _kept(cls_kept) == [[1, 3], [5, 7]]  # the crowd anchors (100.0, 9.0) are candidates, never kept
  np.testing.assert_array_equal(num_pos, [0, 0])


def test_miner_bad_arguments(graph):
  with pytest.raises(ValueError, match='max_negatives_per_positive'):
    losses.hard_example_miner(tf.zeros([1, 2]), tf.zeros([1, 2]), tf.zeros([1, 2, 4]), tf.zeros([1, 2], tf.int32),
                              max_negatives_per_positive=-1)
  with pytest.raises(ValueError, match='loss_type'):
    losses.hard_example_miner(tf.zeros([1, 2]), tf.zeros([1, 2]), tf.zeros([1, 2, 4]), tf.zeros([1, 2], tf.int32),
                              loss_type='focal')
