"""Argmax matching of anchors (columns) to ground-truth boxes (rows) from a similarity matrix.

The match vector is int32 [N_anchors], one entry per anchor:
  >= 0  index of the ground-truth row the anchor is matched to (a positive);
    -1  unmatched: a negative, trained as background;
    -2  ignored: neither positive nor negative (no classification or regression loss).
Every other module of `heads.core` uses this convention (values also in `heads.core.fields`).

Semantics follow the OD API's ArgMaxMatcher (negatives_lower_than_unmatched=True), plus COCO crowd rows.
Deliberate difference: a row whose similarity is 0 with every anchor (e.g. an empty box) is not
force-matched, because its regression target would be log(1e-8)-sized. Not here: bipartite matching.
"""
import tensorflow.compat.v1 as tf

from heads.core import fields

_FILL = tf.float32.min  # similarity of excluded (padded) rows: below any threshold


def _append_row(matrix, value):
  """matrix [N, M] -> [N + 1, M]; the extra row keeps argmax over rows defined when N == 0."""
  return tf.concat([matrix, tf.fill([1, tf.shape(matrix)[1]], tf.cast(value, matrix.dtype))], axis=0)


def _row_mask(mask, num_rows, default, name):
  if mask is None:
    return tf.fill([num_rows], default)
  mask = tf.convert_to_tensor(mask)
  if mask.dtype != tf.bool:
    raise ValueError('argmax_match: %s must be a bool tensor, got %s' % (name, mask.dtype))
  return mask


def _force_match(similarity, matches, force_rows):
  """Gives each row in force_rows its best column, overriding `matches`; the lowest row wins ties."""
  num_cols = tf.shape(similarity)[1]
  best_cols = tf.argmax(similarity, axis=1, output_type=tf.int32)
  indicators = tf.one_hot(best_cols, num_cols, dtype=tf.float32) * tf.cast(force_rows, tf.float32)[:, None]
  indicators = _append_row(indicators, 0.0)
  forced_rows = tf.argmax(indicators, axis=0, output_type=tf.int32)
  is_forced = tf.reduce_max(indicators, axis=0) > 0.0
  return tf.where(is_forced, forced_rows, matches)


def argmax_match(similarity, matched_threshold=0.5, unmatched_threshold=0.5, force_match_for_each_row=True,
                 valid_rows=None, ignore_rows=None):
  """Matches each anchor to its most similar ground-truth row, with thresholds and forced matches.

  For each column, with v its best similarity over valid rows: v >= matched_threshold -> that row;
  v < unmatched_threshold -> -1; otherwise -2. A column whose best row is an ignore (crowd) row and that
  would be positive becomes -2. Then, if force_match_for_each_row, every valid, non-ignored row with a
  positive similarity somewhere claims its best column (overriding the above).

  Args:
    similarity: float32 [N_gt, N_anchors] similarities (e.g. IoU in [0, 1]); N_gt may be 0.
    matched_threshold: float, lowest similarity of a positive.
    unmatched_threshold: float <= matched_threshold; similarities below it are negatives.
    force_match_for_each_row: bool, whether each ground truth keeps at least its best anchor.
    valid_rows: optional bool [N_gt]; False rows (zero padding) are excluded from everything.
    ignore_rows: optional bool [N_gt]; True rows (COCO iscrowd) never produce positives: anchors they
      would win are ignored (-2) and they are never force-matched.

  Returns:
    int32 [N_anchors] match vector: >= 0 row index, -1 negative, -2 ignored. All -1 if no valid row.

  Raises:
    ValueError: if unmatched_threshold > matched_threshold or a mask is not bool.
  """
  if unmatched_threshold > matched_threshold:
    raise ValueError('argmax_match: unmatched_threshold (%r) must be <= matched_threshold (%r)'
                     % (unmatched_threshold, matched_threshold))
  similarity = tf.convert_to_tensor(similarity, dtype=tf.float32)
  num_rows = tf.shape(similarity)[0]
  valid = _row_mask(valid_rows, num_rows, True, 'valid_rows')
  ignore = _row_mask(ignore_rows, num_rows, False, 'ignore_rows')
  masked = _append_row(tf.where(valid, similarity, tf.fill(tf.shape(similarity), _FILL)), _FILL)
  best_rows = tf.argmax(masked, axis=0, output_type=tf.int32)
  best_vals = tf.reduce_max(masked, axis=0)
  has_valid_best = tf.gather(tf.concat([valid, [False]], 0), best_rows)
  best_is_ignored = tf.gather(tf.concat([ignore, [False]], 0), best_rows)

  negatives = tf.fill(tf.shape(best_rows), fields.UNMATCHED)
  ignored = tf.fill(tf.shape(best_rows), fields.IGNORED)
  positive = tf.logical_and(best_vals >= matched_threshold, tf.logical_not(best_is_ignored))
  matches = tf.where(best_vals < unmatched_threshold, negatives, ignored)
  matches = tf.where(positive, best_rows, matches)
  matches = tf.where(has_valid_best, matches, negatives)
  if force_match_for_each_row:
    row_has_overlap = tf.reduce_max(similarity, axis=1) > 0.0
    force_rows = tf.logical_and(tf.logical_and(valid, tf.logical_not(ignore)), row_has_overlap)
    matches = _force_match(similarity, matches, force_rows)
  return matches
