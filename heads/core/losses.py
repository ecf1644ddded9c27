"""Per-anchor SSD losses and hard-negative mining; nothing is reduced or normalized here.

Each loss returns a per-element tensor already multiplied by its weights, so the caller reduces and
normalizes (e.g. by the number of positives) exactly once.
Not here: focal loss, loss normalization, summaries. Hard-negative mining keeps the top-k highest-loss
negatives per image; the OD API's miner additionally runs NMS over the anchors' decoded boxes before
choosing them, which this simpler version deliberately skips.
"""
import tensorflow.compat.v1 as tf

from heads.core import fields


def weighted_smooth_l1(predictions, targets, weights, delta=1.0):
  """Smooth L1 (Huber) loss summed over the 4 box coordinates.

  Per coordinate with x = prediction - target: 0.5 * x^2 if |x| <= delta, else delta * (|x| - 0.5 * delta).

  Args:
    predictions: float32 [B, A, 4] predicted box codes.
    targets: float32 [B, A, 4] target box codes.
    weights: float32 [B, A] anchor weights (1 for positives, 0 elsewhere).
    delta: float > 0, where the loss turns from quadratic to linear.

  Returns:
    float32 [B, A] weighted loss, >= 0.
  """
  abs_diff = tf.abs(predictions - targets)
  quadratic = tf.minimum(abs_diff, delta)
  # 0.5 q^2 + delta (|x| - q) equals both branches of the Huber loss.
  per_coord = 0.5 * tf.square(quadratic) + delta * (abs_diff - quadratic)
  return tf.reduce_sum(per_coord, axis=2) * weights


def weighted_sigmoid_ce(logits, targets, weights):
  """Sigmoid cross-entropy per class.

  Args:
    logits: float32 [B, A, K + 1] class logits (column 0: background).
    targets: float32 [B, A, K + 1] targets in [0, 1].
    weights: float32 [B, A] anchor weights.

  Returns:
    float32 [B, A, K + 1] weighted loss, >= 0.
  """
  losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
  return losses * weights[:, :, None]


def weighted_softmax_ce(logits, targets, weights):
  """Softmax cross-entropy over the K + 1 classes.

  Args:
    logits: float32 [B, A, K + 1] class logits (column 0: background).
    targets: float32 [B, A, K + 1] one-hot (or soft) targets; an all-zero row gives loss 0.
    weights: float32 [B, A] anchor weights.

  Returns:
    float32 [B, A] weighted loss, >= 0.
  """
  losses = -tf.reduce_sum(tf.stop_gradient(targets) * tf.nn.log_softmax(logits, axis=-1), axis=-1)
  return losses * weights


def _num_negatives_to_keep(num_pos, num_neg, neg_pos_ratio, min_negatives, max_negatives):
  """int32 [B]: min(max(floor(ratio * num_pos), min_negatives), max_negatives, num_neg)."""
  keep = tf.cast(tf.floor(neg_pos_ratio * tf.cast(num_pos, tf.float32)), tf.int32)
  keep = tf.maximum(keep, min_negatives)
  if max_negatives is not None:
    keep = tf.minimum(keep, max_negatives)
  return tf.minimum(keep, num_neg)


def hard_negative_mining(cls_losses, reg_losses, matches, neg_pos_ratio=3.0, min_negatives_per_image=0,
                         max_negatives_per_image=None):
  """Keeps, per image, all positives and the highest-loss negatives.

  Per image, k = min(max(floor(neg_pos_ratio * num_positives), min_negatives_per_image),
  max_negatives_per_image, num_negatives). Ignored anchors (match -2) are never kept nor counted.

  Args:
    cls_losses: float32 [B, A] per-anchor classification losses (e.g. `weighted_softmax_ce`).
    reg_losses: float32 [B, A] per-anchor regression losses (e.g. `weighted_smooth_l1`).
    matches: int32 [B, A] match vectors (>= 0 positive, -1 negative, -2 ignored).
    neg_pos_ratio: float >= 0, negatives kept per positive.
    min_negatives_per_image: int >= 0, negatives kept even in images without positives.
    max_negatives_per_image: optional int, cap on negatives per image.

  Returns:
    Tuple of
      cls_losses_kept: float32 [B, A], cls_losses on positives and kept negatives, 0 elsewhere.
      reg_losses: float32 [B, A], reg_losses on positives, 0 elsewhere.
      num_positives: float32 [B] positives per image.
      num_negatives: float32 [B] kept negatives per image.
  """
  if neg_pos_ratio < 0 or min_negatives_per_image < 0:
    raise ValueError('hard_negative_mining: neg_pos_ratio (%r) and min_negatives_per_image (%r) must be >= 0'
                     % (neg_pos_ratio, min_negatives_per_image))
  matches = tf.convert_to_tensor(matches, dtype=tf.int32)
  positive = matches >= 0
  negative = tf.equal(matches, fields.UNMATCHED)
  num_pos = tf.reduce_sum(tf.cast(positive, tf.int32), axis=1)
  num_neg = tf.reduce_sum(tf.cast(negative, tf.int32), axis=1)
  keep = _num_negatives_to_keep(num_pos, num_neg, neg_pos_ratio, min_negatives_per_image, max_negatives_per_image)

  # Rank negatives by loss (non-negatives sort last); rank < k selects the top-k, ties by anchor index.
  sort_key = tf.where(negative, cls_losses, tf.fill(tf.shape(cls_losses), -float('inf')))
  order = tf.argsort(sort_key, axis=1, direction='DESCENDING', stable=True)
  ranks = tf.argsort(order, axis=1, stable=True)
  kept_negative = tf.logical_and(negative, ranks < keep[:, None])

  kept = tf.cast(tf.logical_or(positive, kept_negative), cls_losses.dtype)
  return (cls_losses * kept, reg_losses * tf.cast(positive, reg_losses.dtype), tf.cast(num_pos, tf.float32),
          tf.reduce_sum(tf.cast(kept_negative, tf.float32), axis=1))
