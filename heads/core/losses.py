"""Per-anchor SSD losses and hard-negative mining; nothing is reduced or normalized here.

Each loss returns a per-element tensor already multiplied by its weights, so the caller reduces and
normalizes (e.g. by the number of positives) exactly once.
`hard_example_miner` is the Object Detection API's HardExampleMiner: NMS over the anchors' decoded boxes
with their loss as score, then a negatives-per-positive cap. Not here: focal loss, loss normalization
(the task divides by the number of matches), summaries.
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


LOSS_TYPES = ('classification', 'localization', 'both')
# The OD API's HardExampleMiner weights of the two losses in its `both` score.
BOTH_CLS_WEIGHT, BOTH_LOC_WEIGHT = 0.05, 0.06


def _mined_mask(cls_loss, reg_loss, boxes, matches, num_hard_examples, iou_threshold, loss_type,
                max_negatives_per_positive, min_negatives_per_image):
  """float32 [A] 1 on the anchors one image's miner selects (see `hard_example_miner`)."""
  score = {'classification': cls_loss, 'localization': reg_loss,
           'both': BOTH_CLS_WEIGHT * cls_loss + BOTH_LOC_WEIGHT * reg_loss}[loss_type]
  num_anchors = tf.shape(score)[0]
  count = num_anchors if num_hard_examples is None else tf.minimum(num_hard_examples, num_anchors)
  selected = tf.image.non_max_suppression(boxes, score, count, iou_threshold=iou_threshold)  # by loss, desc
  if max_negatives_per_positive is not None:
    picked = tf.gather(matches, selected)
    positive = picked >= 0
    negative = tf.equal(picked, fields.UNMATCHED)
    num_positives = tf.reduce_sum(tf.cast(positive, tf.int32))
    max_negatives = tf.maximum(min_negatives_per_image, tf.cast(
        max_negatives_per_positive * tf.cast(num_positives, tf.float32), tf.int32))
    top_negatives = tf.logical_and(negative, tf.cumsum(tf.cast(negative, tf.int32)) <= max_negatives)
    selected = tf.gather(selected, tf.reshape(tf.where_v2(tf.logical_or(positive, top_negatives)), [-1]))
  return tf.scatter_nd(tf.cast(selected[:, None], tf.int32), tf.ones(tf.shape(selected), tf.float32),
                       tf.reshape(num_anchors, [1]))


def hard_example_miner(cls_losses, reg_losses, boxes, matches, num_hard_examples=3000, iou_threshold=0.99,
                       loss_type='classification', max_negatives_per_positive=3.0, min_negatives_per_image=3):
  """The Object Detection API's `HardExampleMiner` (its SSD configs' values as defaults), per image.

  The anchors' decoded boxes go through non-maximum suppression with the per-anchor loss as score
  (`loss_type`: the classification loss, the localization loss, or 0.05 x cls + 0.06 x loc), keeping at most
  `num_hard_examples` (None: every anchor) in loss order; of those, every positive and the first
  max(min_negatives_per_image, floor(max_negatives_per_positive x positives)) negatives are kept (all of
  them when `max_negatives_per_positive` is None). Ignored anchors (match -2) are never kept. With
  num_hard_examples None and iou_threshold 1.0 (NMS suppresses nothing) this is plain top-k negative mining.

  Args:
    cls_losses: float32 [B, A] per-anchor classification losses.
    reg_losses: float32 [B, A] per-anchor localization losses (0 on non-positives).
    boxes: float32 [B, A, 4] the predicted boxes, decoded ([ymin, xmin, ymax, xmax]).
    matches: int32 [B, A] match vectors (>= 0 positive, -1 negative, -2 ignored).
    num_hard_examples: int > 0 or None.
    iou_threshold: float in (0, 1], NMS overlap above which a lower-loss box is suppressed.
    loss_type: one of LOSS_TYPES.
    max_negatives_per_positive: float >= 0 or None.
    min_negatives_per_image: int >= 0.

  Returns:
    (cls_losses_kept float32 [B, A], reg_losses_kept float32 [B, A] -- the losses on the kept anchors, 0
    elsewhere --, num_positives float32 [B] and num_negatives float32 [B] among the kept).
  """
  if loss_type not in LOSS_TYPES:
    raise ValueError('hard_example_miner: loss_type must be one of %s, got %r' % (', '.join(LOSS_TYPES), loss_type))
  if (max_negatives_per_positive is not None and max_negatives_per_positive < 0) or min_negatives_per_image < 0:
    raise ValueError('hard_example_miner: max_negatives_per_positive (%r) and min_negatives_per_image (%r) must '
                     'be >= 0' % (max_negatives_per_positive, min_negatives_per_image))
  matches = tf.convert_to_tensor(matches, dtype=tf.int32)

  def one(args):
    return _mined_mask(*(tuple(args) + (num_hard_examples, iou_threshold, loss_type, max_negatives_per_positive,
                                        min_negatives_per_image)))
  mask = tf.map_fn(one, (cls_losses, reg_losses, boxes, matches), dtype=tf.float32, back_prop=False)
  mask = tf.stop_gradient(mask * tf.cast(tf.not_equal(matches, fields.IGNORED), tf.float32))
  positive = tf.cast(matches >= 0, tf.float32) * mask
  negative = tf.cast(tf.equal(matches, fields.UNMATCHED), tf.float32) * mask
  return (cls_losses * mask, reg_losses * mask, tf.reduce_sum(positive, axis=1), tf.reduce_sum(negative, axis=1))
