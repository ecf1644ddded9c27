"""Argmax matcher golden cases: thresholds, forced matches, padding rows, crowd rows, no ground truth."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from heads.core import matcher


def _match(similarity, **kwargs):
  with tf.Session() as sess:
    return sess.run(matcher.argmax_match(tf.constant(similarity, tf.float32), **kwargs)).tolist()


def test_thresholds_without_force(graph):
  sim = [[0.9, 0.3, 0.1, 0.45], [0.2, 0.6, 0.55, 0.0]]
  assert _match(sim, matched_threshold=0.5, unmatched_threshold=0.4, force_match_for_each_row=False) == [0, 1, 1, -2]
  assert _match(sim, force_match_for_each_row=False) == [0, 1, 1, -1]


def test_force_match_each_row(graph):
  sim = [[0.3, 0.2, 0.1], [0.1, 0.45, 0.4]]
  assert _match(sim, force_match_for_each_row=False) == [-1, -1, -1]
  assert _match(sim) == [0, 1, -1]


def test_force_match_overrides_other_rows_and_lowest_row_wins_ties(graph):
  # Row 1's best anchor (col 0) is positive for row 0 (0.9) but is forced to row 1.
  assert _match([[0.9, 0.95], [0.3, 0.2]]) == [1, 0]
  # Both rows want col 0: the lowest row index keeps it.
  assert _match([[0.3, 0.1], [0.3, 0.2]]) == [0, -1]


def test_rows_without_overlap_are_not_forced(graph):
  assert _match([[0.0, 0.0, 0.0], [0.2, 0.1, 0.0]]) == [1, -1, -1]


def test_padding_rows_are_excluded(graph):
  sim = [[0.6, 0.2, 0.1], [0.1, 0.3, 0.9]]
  assert _match(sim, valid_rows=tf.constant([True, False])) == [0, -1, -1]
  assert _match(sim, valid_rows=tf.constant([False, False])) == [-1, -1, -1]


def test_crowd_rows_ignore_instead_of_match(graph):
  # Col 2: best is the crowd row (0.8 > 0.6) -> ignored. Col 3: crowd best but below 0.5 -> negative.
  # The crowd row's best anchor (col 2) is not forced.
  sim = [[0.9, 0.1, 0.6, 0.0], [0.1, 0.2, 0.8, 0.3]]
  assert _match(sim, ignore_rows=tf.constant([False, True])) == [0, -1, -2, -1]
  assert _match(sim) == [0, -1, 1, -1]


def test_no_ground_truth(graph):
  sim = tf.placeholder(tf.float32, [None, 5])
  matches = matcher.argmax_match(sim, valid_rows=tf.zeros([0], tf.bool), ignore_rows=tf.zeros([0], tf.bool))
  with tf.Session() as sess:
    got = sess.run(matches, {sim: np.zeros([0, 5], np.float32)})
  assert got.dtype == np.int32 and got.tolist() == [-1] * 5
  assert matches.get_shape().as_list() == [5]


def test_bad_arguments(graph):
  with pytest.raises(ValueError, match='unmatched_threshold'):
    matcher.argmax_match(tf.zeros([1, 2]), matched_threshold=0.4, unmatched_threshold=0.5)
  with pytest.raises(ValueError, match='valid_rows'):
    matcher.argmax_match(tf.zeros([1, 2]), valid_rows=tf.ones([1], tf.int32))
