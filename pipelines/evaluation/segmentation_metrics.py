"""Semantic-segmentation metrics from ONE confusion matrix accumulated over a whole evaluation split.

Each eval batch adds its pixel counts to a float64 [C, C] local variable (rows: ground truth, columns:
prediction); the metric values are computed from the final matrix, so mIoU is the split-level
`mean_c TP_c / (TP_c + FP_c + FN_c)` of DeepLab's `tf.metrics.mean_iou`, not a mean of per-batch values.

Conventions:
* A pixel counts only if its label is in [0, num_classes) and is not `ignore_label`
  (`segmentation.ignore_label`, also the padding of eval images); the input pipeline rejects other values.
* A class absent from both the labels and the predictions of the whole split has no IoU: its
  `IoU/<name>` is NaN and it is excluded from the mean (as `tf.metrics.mean_iou`). A class present in the
  labels but never predicted (or predicted but absent) has IoU 0 and counts.
* Pixel accuracy is sum(TP) / (counted pixels); 0 when no pixel counted.

Not here: the model, the argmax of logits, multi-scale inference (see `pipelines.tasks.segmentation`).
"""
import re

import tensorflow.compat.v1 as tf

MIOU = 'miou'
PIXEL_ACCURACY = 'pixel_accuracy'
IOU_PREFIX = 'IoU/'
_SUMMARY_UNSAFE = re.compile(r'[^A-Za-z0-9_.\-]')


def batch_confusion_matrix(labels, predictions, num_classes, ignore_label=None):
  """Pixel counts of one batch.

  Args:
    labels: integer tensor of any shape, class ids; ids outside [0, num_classes) are skipped.
    predictions: integer tensor of labels' size, class ids in [0, num_classes).
    num_classes: int >= 1.
    ignore_label: int or None, a label whose pixels are skipped (even when it is < num_classes).

  Returns:
    float64 [num_classes, num_classes]: entry [i, j] counts pixels of label i predicted as j.
  """
  labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
  predictions = tf.reshape(tf.cast(predictions, tf.int32), [-1])
  valid = tf.logical_and(labels >= 0, labels < num_classes)
  if ignore_label is not None:
    valid = tf.logical_and(valid, tf.not_equal(labels, ignore_label))
  weights = tf.cast(valid, tf.float64)
  # Skipped pixels still need an in-range index; their weight is 0 so they add nothing.
  labels = tf.where(valid, labels, tf.zeros_like(labels))
  predictions = tf.clip_by_value(predictions, 0, num_classes - 1)
  counts = tf.math.unsorted_segment_sum(weights, labels * num_classes + predictions, num_classes * num_classes)
  return tf.reshape(counts, [num_classes, num_classes])


def streaming_confusion_matrix(labels, predictions, num_classes, name='segmentation_confusion_matrix',
                               ignore_label=None):
  """A local-variable accumulator of `batch_confusion_matrix` (reset by local_variables_initializer).

  Args:
    labels, predictions, num_classes, ignore_label: as `batch_confusion_matrix`.
    name: variable scope of the accumulator.

  Returns:
    (total, update_op): float64 [C, C] value of the accumulator, and the op adding this batch to it.
  """
  with tf.variable_scope(None, default_name=name):
    total = tf.Variable(lambda: tf.zeros([num_classes, num_classes], tf.float64), trainable=False,
                        collections=[tf.GraphKeys.LOCAL_VARIABLES, tf.GraphKeys.METRIC_VARIABLES],
                        name='total')
    update_op = tf.assign_add(total, batch_confusion_matrix(labels, predictions, num_classes, ignore_label))
    return tf.identity(total), update_op


def metrics_from_confusion(matrix):
  """mIoU, per-class IoU and pixel accuracy of a confusion matrix (see the module docstring).

  Args:
    matrix: float [C, C] counts, rows ground truth, columns prediction.

  Returns:
    dict: MIOU float32 [] in [0, 1]; PIXEL_ACCURACY float32 [] in [0, 1]; 'iou' float32 [C], in [0, 1]
    or NaN for a class absent from labels and predictions.
  """
  matrix = tf.cast(matrix, tf.float64)
  true_positive = tf.diag_part(matrix)
  union = tf.reduce_sum(matrix, 0) + tf.reduce_sum(matrix, 1) - true_positive
  present = union > 0
  safe_union = tf.where(present, union, tf.ones_like(union))
  nan = tf.fill(tf.shape(union), tf.constant(float('nan'), tf.float64))
  iou = tf.where(present, true_positive / safe_union, nan)
  num_present = tf.reduce_sum(tf.cast(present, tf.float64))
  miou = tf.reduce_sum(tf.where(present, iou, tf.zeros_like(iou))) / tf.maximum(num_present, 1.0)
  accuracy = tf.reduce_sum(true_positive) / tf.maximum(tf.reduce_sum(matrix), 1.0)
  return {MIOU: tf.cast(miou, tf.float32), PIXEL_ACCURACY: tf.cast(accuracy, tf.float32),
          'iou': tf.cast(iou, tf.float32)}


def metric_names(class_names):
  """'IoU/<name>' per class, made safe as TensorBoard summary names and unique.

  Args:
    class_names: list of str, one per class.

  Returns:
    list of str, same length.
  """
  names, seen = [], set()
  for index, raw in enumerate(class_names):
    name = IOU_PREFIX + (_SUMMARY_UNSAFE.sub('_', str(raw)) or str(index))
    if name in seen:
      name = '%s_%d' % (name, index)
    seen.add(name)
    names.append(name)
  return names


def eval_metric_ops(labels, predictions, class_names, ignore_label=None):
  """Estimator eval_metric_ops: MIOU, PIXEL_ACCURACY and 'IoU/<class name>', all from one accumulator.

  Args:
    labels: integer tensor [B, H, W] or [B, H, W, 1], ids (255 and other out-of-range ids skipped).
    predictions: integer tensor [B, H, W], ids in [0, len(class_names)).
    class_names: list of str, one per class (its length is the class count).
    ignore_label: int or None, label skipped by the metrics (`segmentation.ignore_label`).

  Returns:
    dict name -> (value float32 [], update_op); every entry shares the same update op.
  """
  labels = tf.reshape(labels, tf.shape(predictions))
  total, update_op = streaming_confusion_matrix(labels, predictions, len(class_names),
                                                 ignore_label=ignore_label)
  values = metrics_from_confusion(total)
  ops = {MIOU: (values[MIOU], update_op), PIXEL_ACCURACY: (values[PIXEL_ACCURACY], update_op)}
  for index, name in enumerate(metric_names(class_names)):
    ops[name] = (values['iou'][index], update_op)
  return ops
