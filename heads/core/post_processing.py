"""Batched per-class non-maximum suppression of decoded SSD boxes, inside the graph.

A thin wrapper over `tf.image.combined_non_max_suppression` (TF >= 1.14): boxes are shared by all
classes, NMS runs per class, then the best `max_total_detections` over all classes are kept, sorted by
score and zero-padded. Not here: decoding box codes (`box_coder.decode`), score conversion (sigmoid /
softmax and dropping the background column is the caller's job), masks or keypoints.
"""
import tensorflow.compat.v1 as tf

from heads.core import box_ops
from heads.core import fields


def batch_multiclass_nms(boxes, scores, score_threshold=1e-8, iou_threshold=0.6, max_detections_per_class=100,
                         max_total_detections=100, clip_window=None, return_anchor_indices=False):
  """Per-class NMS for a batch of images.

  A box is suppressed by a higher-scoring box of the same class when their IoU is > iou_threshold;
  only scores > score_threshold are considered.

  Args:
    boxes: float32 [B, A, 4] decoded boxes [ymin, xmin, ymax, xmax], shared by every class.
    scores: float32 [B, A, K] per-class scores in [0, 1], background column already removed.
    score_threshold: float, scores at or below it are dropped.
    iou_threshold: float in [0, 1], NMS overlap threshold.
    max_detections_per_class: int > 0, boxes kept per class and image after NMS.
    max_total_detections: int > 0, boxes kept per image over all classes.
    clip_window: optional float32 [4] window [ymin, xmin, ymax, xmax] (e.g. [0, 0, 1, 1]) the output
      boxes are clipped to after NMS (NMS sees the unclipped boxes).
    return_anchor_indices: also return `detection_anchor_indices` int32 [B, max_total_detections], the index
      in A of the box each detection came from (0 on padding), as the OD API's NMS reports it.

  Returns:
    Dict (keys in `heads.core.fields`), rows sorted by decreasing score, zero-padded after num_detections:
      detection_boxes: float32 [B, max_total_detections, 4].
      detection_scores: float32 [B, max_total_detections].
      detection_classes: float32 [B, max_total_detections], 0-based class index into K (as the OD API
        exports it; add 1 for 1-based label ids).
      num_detections: int32 [B], number of valid rows.
  """
  if max_detections_per_class <= 0 or max_total_detections <= 0:
    raise ValueError('batch_multiclass_nms: max_detections_per_class (%r) and max_total_detections (%r) '
                     'must be > 0' % (max_detections_per_class, max_total_detections))
  boxes = tf.convert_to_tensor(boxes, dtype=tf.float32)
  scores = tf.convert_to_tensor(scores, dtype=tf.float32)
  nmsed_boxes, nmsed_scores, nmsed_classes, num_detections = tf.image.combined_non_max_suppression(
      boxes[:, :, None, :], scores, max_output_size_per_class=max_detections_per_class,
      max_total_size=max_total_detections, iou_threshold=iou_threshold, score_threshold=score_threshold,
      pad_per_class=False, clip_boxes=False)
  num_detections = tf.cast(num_detections, tf.int32)
  valid = tf.range(max_total_detections)[None, :] < num_detections[:, None]
  extra = {}
  if return_anchor_indices:
    # Combined NMS gathers each kept box and score from one input box: the one whose (unclipped) box and
    # class score are the detection's, at distance 0.
    class_scores = tf.gather(tf.transpose(scores, [0, 2, 1]), tf.cast(nmsed_classes, tf.int32), batch_dims=1)
    distance = (tf.reduce_sum(tf.abs(nmsed_boxes[:, :, None, :] - boxes[:, None, :, :]), axis=-1) +
                tf.abs(class_scores - nmsed_scores[:, :, None]))
    extra[fields.DETECTION_ANCHOR_INDICES] = tf.argmin(distance, axis=2, output_type=tf.int32) * tf.cast(
        valid, tf.int32)
  if clip_window is not None:
    nmsed_boxes = box_ops.clip_to_window(nmsed_boxes, clip_window)
    # Clipping would move the zero padding onto the window's corner; keep padding zero.
    nmsed_boxes *= tf.cast(valid, tf.float32)[:, :, None]
  return dict({
      fields.DETECTION_BOXES: nmsed_boxes,
      fields.DETECTION_SCORES: nmsed_scores,
      fields.DETECTION_CLASSES: nmsed_classes,
      fields.NUM_DETECTIONS: num_detections,
  }, **extra)
