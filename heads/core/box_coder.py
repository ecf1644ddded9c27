"""Center-size box coder of Faster R-CNN / SSD: boxes <-> regression targets relative to anchors.

encode: ty = (yc - yc_a) / h_a * sy, tx = (xc - xc_a) / w_a * sx, th = log(h / h_a) * sh,
tw = log(w / w_a) * sw, with (sy, sx, sh, sw) = (10, 10, 5, 5) by default, as in the SSD configs.
Not here: other coders (keypoints, square, mean-stddev) or any matching.
"""
import tensorflow.compat.v1 as tf

from heads.core import box_ops

DEFAULT_SCALE_FACTORS = (10.0, 10.0, 5.0, 5.0)
# Added to heights and widths before dividing / taking the log, as the OD API does, so empty boxes
# give large finite codes instead of -inf / NaN.
EPSILON = 1e-8


def _check_scale_factors(scale_factors):
  if scale_factors is not None and (len(scale_factors) != 4 or any(s <= 0 for s in scale_factors)):
    raise ValueError('box_coder: scale_factors must be 4 positive floats or None, got %r' % (scale_factors,))


def encode(boxes, anchors, scale_factors=DEFAULT_SCALE_FACTORS):
  """Regression targets of `boxes` relative to `anchors` (row i against row i).

  Args:
    boxes: float32 [N, 4] boxes [ymin, xmin, ymax, xmax].
    anchors: float32 [N, 4] anchors, same layout.
    scale_factors: 4 positive floats (y, x, h, w) multiplying the codes, or None for no scaling.

  Returns:
    float32 [N, 4] codes (ty, tx, th, tw), unbounded.
  """
  _check_scale_factors(scale_factors)
  yc_a, xc_a, h_a, w_a = box_ops.to_center_size(anchors)
  yc, xc, h, w = box_ops.to_center_size(boxes)
  h_a, w_a, h, w = h_a + EPSILON, w_a + EPSILON, h + EPSILON, w + EPSILON
  codes = [(yc - yc_a) / h_a, (xc - xc_a) / w_a, tf.log(h / h_a), tf.log(w / w_a)]
  if scale_factors is not None:
    codes = [c * s for c, s in zip(codes, scale_factors)]
  return tf.stack(codes, axis=-1)


def decode(rel_codes, anchors, scale_factors=DEFAULT_SCALE_FACTORS):
  """Boxes from regression codes relative to `anchors`; the inverse of `encode`.

  Args:
    rel_codes: float32 [..., N, 4] codes (ty, tx, th, tw); leading batch dimensions broadcast.
    anchors: float32 [N, 4] anchors [ymin, xmin, ymax, xmax].
    scale_factors: the 4 floats given to `encode`, or None.

  Returns:
    float32 [..., N, 4] boxes [ymin, xmin, ymax, xmax], not clipped.
  """
  _check_scale_factors(scale_factors)
  yc_a, xc_a, h_a, w_a = box_ops.to_center_size(anchors)
  ty, tx, th, tw = tf.unstack(rel_codes, num=4, axis=-1)
  if scale_factors is not None:
    ty, tx, th, tw = [c / s for c, s in zip((ty, tx, th, tw), scale_factors)]
  return box_ops.from_center_size(ty * h_a + yc_a, tx * w_a + xc_a, tf.exp(th) * h_a, tf.exp(tw) * w_a)
