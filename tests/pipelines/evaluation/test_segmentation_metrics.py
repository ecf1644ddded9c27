"""Split-level segmentation metrics against a numpy confusion-matrix reference (ignore pixels, absent class)."""
import math

import numpy as np
import tensorflow.compat.v1 as tf

from pipelines.evaluation import segmentation_metrics as sm

NUM_CLASSES = 4  # class 3 never occurs in labels nor predictions


def _numpy_reference(labels, predictions, num_classes):
  """(confusion matrix, miou, per-class iou with NaN for absent, pixel accuracy), by explicit loops."""
  matrix = np.zeros([num_classes, num_classes])
  for label, prediction in zip(labels.ravel(), predictions.ravel()):
    if 0 <= label < num_classes:
      matrix[label, prediction] += 1
  ious = []
  for c in range(num_classes):
    union = matrix[c, :].sum() + matrix[:, c].sum() - matrix[c, c]
    ious.append(matrix[c, c] / union if union else float('nan'))
  present = [v for v in ious if not math.isnan(v)]
  return matrix, sum(present) / len(present), ious, np.trace(matrix) / matrix.sum()


def _batches():
  rng = np.random.RandomState(3)
  # Batch 1: many pixels, mostly right; batch 2: few labelled pixels, all wrong. A per-batch average of
  # mIoU would weigh them equally; the split-level matrix must not.
  labels1 = rng.randint(0, 3, [2, 6, 5])
  preds1 = np.where(rng.uniform(size=labels1.shape) < 0.8, labels1, rng.randint(0, 3, labels1.shape))
  labels1[0, :2, :] = 255  # ignored (eval padding)
  labels2 = np.full([2, 6, 5], 255)
  labels2[1, 0, :3] = [0, 1, 2]
  labels2[0, 5, 4] = 7  # out of range: skipped as well
  preds2 = np.full([2, 6, 5], 1)
  preds2[1, 0, :3] = [1, 2, 0]
  return [(labels1, preds1), (labels2, preds2)]


def test_streaming_metrics_match_numpy_reference(graph):
  labels_in = tf.placeholder(tf.int32, [None, 6, 5, 1])
  preds_in = tf.placeholder(tf.int32, [None, 6, 5])
  ops = sm.eval_metric_ops(labels_in, preds_in, ['background', 'cat', 'dog house', 'absent'])
  assert sorted(ops) == ['IoU/absent', 'IoU/background', 'IoU/cat', 'IoU/dog_house', 'miou', 'pixel_accuracy']
  update = ops['miou'][1]
  assert all(op[1] is update for op in ops.values())  # one accumulator for all values
  batches = _batches()
  with tf.Session() as sess:
    sess.run(tf.local_variables_initializer())
    for labels, preds in batches:
      sess.run(update, {labels_in: labels[..., None], preds_in: preds})
    values = sess.run({k: v[0] for k, v in ops.items()})
  all_labels = np.concatenate([b[0] for b in batches])
  all_preds = np.concatenate([b[1] for b in batches])
  _, miou, ious, accuracy = _numpy_reference(all_labels, all_preds, NUM_CLASSES)
  np.testing.assert_allclose(values['miou'], miou, rtol=1e-6)
  np.testing.assert_allclose(values['pixel_accuracy'], accuracy, rtol=1e-6)
  for name, iou in zip(['IoU/background', 'IoU/cat', 'IoU/dog_house'], ious):
    np.testing.assert_allclose(values[name], iou, rtol=1e-6)
  assert math.isnan(values['IoU/absent']) and math.isnan(ious[3])
  # Not a mean of per-batch values (batch 2 alone has mIoU 0).
  first_miou = _numpy_reference(*batches[0], num_classes=NUM_CLASSES)[1]
  assert abs(values['miou'] - first_miou / 2) > 0.05


def test_batch_confusion_matrix_by_hand(graph):
  labels = tf.constant([[0, 0, 1, 255], [2, 1, 1, 9]])
  preds = tf.constant([[0, 1, 1, 2], [2, 0, 1, 2]])
  with tf.Session() as sess:
    matrix = sess.run(sm.batch_confusion_matrix(labels, preds, 3))
  np.testing.assert_array_equal(matrix, [[1, 1, 0], [1, 2, 0], [0, 0, 1]])


def test_metrics_from_hand_matrix_and_empty_matrix(graph):
  # IoU: class 0 = 3 / (4 + 5 - 3) = 0.5; class 1 = 0 / (1 + 0) = 0; class 2 absent.
  values = sm.metrics_from_confusion(tf.constant([[3., 1., 0.], [2., 0., 0.], [0., 0., 0.]]))
  empty = sm.metrics_from_confusion(tf.zeros([2, 2]))
  with tf.Session() as sess:
    values, empty = sess.run([values, empty])
  np.testing.assert_allclose(values['iou'][:2], [0.5, 0.0])
  assert math.isnan(values['iou'][2])
  np.testing.assert_allclose(values['miou'], 0.25)
  np.testing.assert_allclose(values['pixel_accuracy'], 0.5)
  assert empty['miou'] == 0.0 and empty['pixel_accuracy'] == 0.0


def test_metric_names_are_summary_safe_and_unique():
  assert sm.metric_names(['a b', 'a_b', '', 'ok-1.x']) == ['IoU/a_b', 'IoU/a_b_1', 'IoU/2', 'IoU/ok-1.x']
