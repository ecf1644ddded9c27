"""Per-image SSD training targets: match anchors to ground truth by IoU, then encode classes and boxes.

`assign` is pure graph TensorFlow with static shapes ([A] anchors, [G] possibly zero-padded ground
truth), so it runs inside a `tf.data` map and its outputs batch without padding.
Not here: the losses, batching, hard-negative mining or any image / box augmentation.
"""
import tensorflow.compat.v1 as tf

from heads.core import box_coder
from heads.core import box_ops
from heads.core import fields
from heads.core import matcher

# Box gathered for anchors that are not positive, so G == 0 still gathers something; its codes are
# discarded. A unit box keeps them finite.
_DUMMY_BOX = [[0.0, 0.0, 1.0, 1.0]]


def _valid_rows(num_gt, num_valid):
  if num_valid is None:
    return None
  return tf.range(num_gt) < tf.cast(num_valid, tf.int32)


def _check_labels(gt_labels, num_classes):
  """gt_labels int32 [G] with an assertion that they lie in [0, num_classes] (0 = padding)."""
  checks = [tf.assert_non_negative(gt_labels, message='target_assigner.assign: gt_labels must be >= 0'),
            tf.assert_less_equal(gt_labels, tf.constant(num_classes, tf.int32),
                                 message='target_assigner.assign: gt_labels must be <= num_classes=%d'
                                 % num_classes)]
  with tf.control_dependencies(checks):
    return tf.identity(gt_labels)


def assign(anchors, gt_boxes, gt_labels, num_classes, gt_is_crowd=None, num_valid=None,
           matched_threshold=0.5, unmatched_threshold=0.5, scale_factors=box_coder.DEFAULT_SCALE_FACTORS):
  """SSD classification and regression targets of one image.

  Args:
    anchors: float32 [A, 4] anchors [ymin, xmin, ymax, xmax] (normalized), A static.
    gt_boxes: float32 [G, 4] ground-truth boxes, normalized; G may be 0; rows >= num_valid are padding.
    gt_labels: int32 [G] classes in 1..num_classes (0 only on padding rows).
    num_classes: int, number of object classes K (without background).
    gt_is_crowd: optional bool [G]; crowd boxes make the anchors they would match ignored (not negatives).
    num_valid: optional int32 scalar (Python int or tensor), number of real rows of gt_*; None = all G.
    matched_threshold: float, IoU from which an anchor is positive.
    unmatched_threshold: float, IoU below which an anchor is negative (between the two: ignored).
    scale_factors: 4 floats for `box_coder.encode`.

  Returns:
    Dict (keys in `heads.core.fields`):
      cls_targets: float32 [A, K + 1] one-hot; column 0 (background) for negatives, all zeros if ignored.
      cls_weights: float32 [A], 1 for positives and negatives, 0 for ignored anchors.
      reg_targets: float32 [A, 4] encoded matched boxes for positives, zeros elsewhere.
      reg_weights: float32 [A], 1 for positives, 0 elsewhere.
      matches: int32 [A] match vector (see `heads.core.matcher`).
      num_positives: float32 [] number of positive anchors.
  """
  anchors = tf.convert_to_tensor(anchors, dtype=tf.float32)
  gt_boxes = tf.convert_to_tensor(gt_boxes, dtype=tf.float32)
  gt_labels = _check_labels(tf.cast(gt_labels, tf.int32), num_classes)
  num_anchors = anchors.get_shape()[0]
  num_gt = tf.shape(gt_boxes)[0]
  if gt_is_crowd is not None:
    gt_is_crowd = tf.cast(gt_is_crowd, tf.bool)

  matches = matcher.argmax_match(box_ops.iou(gt_boxes, anchors), matched_threshold=matched_threshold,
                                 unmatched_threshold=unmatched_threshold, valid_rows=_valid_rows(num_gt, num_valid),
                                 ignore_rows=gt_is_crowd)
  positive = matches >= 0
  not_ignored = tf.not_equal(matches, fields.IGNORED)
  gather_idx = tf.where(positive, matches, tf.fill(tf.shape(matches), num_gt))

  boxes = tf.gather(tf.concat([gt_boxes, _DUMMY_BOX], 0), gather_idx)
  codes = box_coder.encode(boxes, anchors, scale_factors)
  reg_targets = tf.where(positive, codes, tf.zeros_like(codes))
  # Non-positives gather label 0, i.e. the background one-hot; ignored anchors are then zeroed.
  labels = tf.gather(tf.concat([gt_labels, [0]], 0), gather_idx)
  cls_targets = tf.one_hot(labels, num_classes + 1, dtype=tf.float32) * tf.cast(not_ignored, tf.float32)[:, None]
  reg_weights = tf.cast(positive, tf.float32)

  result = {
      fields.CLS_TARGETS: cls_targets,
      fields.CLS_WEIGHTS: tf.cast(not_ignored, tf.float32),
      fields.REG_TARGETS: reg_targets,
      fields.REG_WEIGHTS: reg_weights,
      fields.MATCHES: matches,
      fields.NUM_POSITIVES: tf.reduce_sum(reg_weights),
  }
  for key in (fields.CLS_TARGETS, fields.CLS_WEIGHTS, fields.REG_TARGETS, fields.REG_WEIGHTS, fields.MATCHES):
    result[key].set_shape([num_anchors] + result[key].get_shape().as_list()[1:])
  return result
