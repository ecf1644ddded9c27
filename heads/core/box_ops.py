"""Geometry of axis-aligned boxes as plain tensors: area, pairwise intersection / IoU, clipping.

Boxes are float32 `[..., 4]` tensors `[ymin, xmin, ymax, xmax]`, normally in normalized image coordinates
([0, 1], though anchors may reach outside). Everything is graph-mode TensorFlow and works inside tf.data.
Not here: a BoxList container, coordinate-frame changes, pruning of boxes, or numpy twins.
"""
import tensorflow.compat.v1 as tf


def _split(boxes):
  """The four coordinate columns of `boxes` [..., 4], each [...]."""
  return tf.unstack(boxes, num=4, axis=-1)


def area(boxes):
  """Areas of boxes.

  Args:
    boxes: float32 [..., 4] boxes [ymin, xmin, ymax, xmax]; ymax >= ymin and xmax >= xmin expected.

  Returns:
    float32 [...], >= 0 for well-formed boxes.
  """
  ymin, xmin, ymax, xmax = _split(boxes)
  return (ymax - ymin) * (xmax - xmin)


def intersection(boxes_a, boxes_b):
  """Pairwise intersection areas.

  Args:
    boxes_a: float32 [N, 4] boxes.
    boxes_b: float32 [M, 4] boxes.

  Returns:
    float32 [N, M], >= 0: area of the overlap of boxes_a[i] and boxes_b[j].
  """
  ymin_a, xmin_a, ymax_a, xmax_a = [c[:, None] for c in _split(boxes_a)]
  ymin_b, xmin_b, ymax_b, xmax_b = [c[None, :] for c in _split(boxes_b)]
  heights = tf.maximum(0.0, tf.minimum(ymax_a, ymax_b) - tf.maximum(ymin_a, ymin_b))
  widths = tf.maximum(0.0, tf.minimum(xmax_a, xmax_b) - tf.maximum(xmin_a, xmin_b))
  return heights * widths


def iou(boxes_a, boxes_b):
  """Pairwise intersection-over-union.

  Args:
    boxes_a: float32 [N, 4] boxes (N may be 0).
    boxes_b: float32 [M, 4] boxes (M may be 0).

  Returns:
    float32 [N, M] in [0, 1]; 0 where the union is 0 (two empty boxes), instead of NaN.
  """
  inter = intersection(boxes_a, boxes_b)
  union = area(boxes_a)[:, None] + area(boxes_b)[None, :] - inter
  # Dividing by a safe denominator, not tf.where on the quotient, keeps NaN out of the gradient too.
  safe_union = tf.where(union > 0.0, union, tf.ones_like(union))
  return tf.where(union > 0.0, inter / safe_union, tf.zeros_like(union))


def clip_to_window(boxes, window):
  """Clips every coordinate of `boxes` into `window`; boxes outside the window collapse to zero area.

  Unlike the OD API's op of the same name this keeps every box (no filtering), so shapes stay static.

  Args:
    boxes: float32 [..., 4] boxes.
    window: float32 [4] window [ymin, xmin, ymax, xmax] (a tensor or a sequence of 4 floats).

  Returns:
    float32 [..., 4], same shape as `boxes`, every box inside the window.
  """
  win_ymin, win_xmin, win_ymax, win_xmax = tf.unstack(tf.cast(window, boxes.dtype), num=4)
  ymin, xmin, ymax, xmax = _split(boxes)
  clipped = [tf.clip_by_value(ymin, win_ymin, win_ymax), tf.clip_by_value(xmin, win_xmin, win_xmax),
             tf.clip_by_value(ymax, win_ymin, win_ymax), tf.clip_by_value(xmax, win_xmin, win_xmax)]
  return tf.stack(clipped, axis=-1)


def to_center_size(boxes):
  """Centers and sizes of boxes.

  Args:
    boxes: float32 [..., 4] boxes [ymin, xmin, ymax, xmax].

  Returns:
    Tuple (y_center, x_center, height, width) of float32 [...] tensors.
  """
  ymin, xmin, ymax, xmax = _split(boxes)
  return (ymin + ymax) / 2.0, (xmin + xmax) / 2.0, ymax - ymin, xmax - xmin


def from_center_size(y_center, x_center, height, width):
  """Inverse of `to_center_size`: float32 [...] centers and sizes -> float32 [..., 4] corner boxes."""
  half_h, half_w = height / 2.0, width / 2.0
  return tf.stack([y_center - half_h, x_center - half_w, y_center + half_h, x_center + half_w], axis=-1)
