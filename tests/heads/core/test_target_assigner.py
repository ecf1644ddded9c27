"""Target assignment golden case (positive, negatives, crowd, padding), no ground truth, tf.data map."""
import math

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from heads.core import fields
from heads.core import target_assigner

ANCHORS = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.5, 0.5, 1.0], [0.5, 0.0, 1.0, 0.5], [0.5, 0.5, 1.0, 1.0]],
                   np.float32)
# Row 0: label 2, IoU 0.9 with anchor 0. Row 1: crowd on anchor 3. Row 2: padding (would match anchor 1).
GT_BOXES = np.array([[0.0, 0.0, 0.5, 0.45], [0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0]], np.float32)
GT_LABELS = np.array([2, 1, 3], np.int32)
GT_CROWD = np.array([False, True, False])


def _check_golden(targets):
  np.testing.assert_array_equal(targets[fields.MATCHES], [0, -1, -1, -2])
  np.testing.assert_array_equal(targets[fields.CLS_TARGETS], [[0, 0, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(targets[fields.CLS_WEIGHTS], [1, 1, 1, 0])
  np.testing.assert_array_equal(targets[fields.REG_WEIGHTS], [1, 0, 0, 0])
  # Anchor 0: center (0.25, 0.25) size 0.5; box center (0.25, 0.225), size (0.5, 0.45).
  expected_reg = np.zeros([4, 4])
  expected_reg[0] = [0.0, -0.025 / 0.5 * 10, 0.0, 5 * math.log(0.9)]
  np.testing.assert_allclose(targets[fields.REG_TARGETS], expected_reg, rtol=1e-5, atol=1e-6)
  assert targets[fields.NUM_POSITIVES] == 1.0


def test_assign_golden(graph):
  targets = target_assigner.assign(ANCHORS, GT_BOXES, GT_LABELS, num_classes=3, gt_is_crowd=GT_CROWD, num_valid=2)
  assert targets[fields.CLS_TARGETS].get_shape().as_list() == [4, 4]
  assert targets[fields.REG_TARGETS].get_shape().as_list() == [4, 4]
  assert targets[fields.MATCHES].dtype == tf.int32
  with tf.Session() as sess:
    _check_golden(sess.run(targets))


def test_assign_without_ground_truth(graph):
  boxes = tf.placeholder(tf.float32, [None, 4])
  labels = tf.placeholder(tf.int32, [None])
  targets = target_assigner.assign(ANCHORS, boxes, labels, num_classes=3)
  with tf.Session() as sess:
    got = sess.run(targets, {boxes: np.zeros([0, 4]), labels: np.zeros([0])})
  np.testing.assert_array_equal(got[fields.MATCHES], [-1] * 4)
  np.testing.assert_array_equal(got[fields.CLS_TARGETS][:, 0], [1] * 4)
  assert got[fields.CLS_TARGETS][:, 1:].sum() == 0 and got[fields.REG_TARGETS].sum() == 0
  assert got[fields.NUM_POSITIVES] == 0.0


def test_assign_inside_dataset_map(graph):
  dataset = tf.data.Dataset.from_tensors((GT_BOXES, GT_LABELS, GT_CROWD, np.int32(2))).repeat(2)

  def _map(boxes, labels, crowd, num_valid):
    return target_assigner.assign(ANCHORS, boxes, labels, 3, gt_is_crowd=crowd, num_valid=num_valid)

  batch = tf.data.make_one_shot_iterator(dataset.map(_map).batch(2)).get_next()
  assert batch[fields.CLS_TARGETS].get_shape().as_list()[1:] == [4, 4]
  with tf.Session() as sess:
    got = sess.run(batch)
  for i in range(2):
    _check_golden({key: value[i] for key, value in got.items()})


def test_out_of_range_label_fails(graph):
  with pytest.raises(tf.errors.InvalidArgumentError, match='num_classes=3'):
    target_assigner.assign(ANCHORS, GT_BOXES[:1], np.array([4], np.int32), num_classes=3)
  labels = tf.placeholder(tf.int32, [1])
  targets = target_assigner.assign(ANCHORS, GT_BOXES[:1], labels, num_classes=3)
  with tf.Session() as sess:
    with pytest.raises(tf.errors.InvalidArgumentError, match='num_classes=3'):
      sess.run(targets, {labels: [4]})
