"""SSD multiple-grid anchors, as the OD API's `ssd_anchor_generator` builds them for SSDLite.

`ssd_anchor_specs` turns the anchor-generator hyper-parameters into per-layer (scale, aspect ratio)
lists; `generate_anchors` tiles them over the feature-map grids; `feature_map_shapes` gives the grid
sizes of feature maps of known strides (for SSDLite the strides come from `heads.ssdlite.feature_map_info`,
i.e. from the backbone's `feature_info`). Anchors depend only on static Python numbers, so this module is
numpy: the result is a constant the model and the input pipeline share.
Not here: anchors on dynamic shapes, clipping of anchors (the OD API does not clip SSD anchors either).
"""
import math

import numpy as np


def ssd_anchor_specs(num_layers=6, min_scale=0.2, max_scale=0.95, aspect_ratios=(1.0, 2.0, 0.5, 3.0, 1.0 / 3),
                     interpolated_scale_aspect_ratio=1.0, reduce_boxes_in_lowest_layer=True):
  """Per-layer anchor shapes of an SSD anchor generator (defaults: the SSDLite configs).

  Scales are spaced linearly from min_scale to max_scale over the layers, and 1.0 is appended so the
  last layer has a "next" scale for its interpolated anchor.

  Args:
    num_layers: int >= 1, number of feature maps.
    min_scale: float, scale of the lowest layer, relative to the (shorter) image side.
    max_scale: float, scale of the highest layer.
    aspect_ratios: sequence of float > 0 (width / height) used at every layer but a reduced lowest one.
    interpolated_scale_aspect_ratio: float; if > 0, each layer also gets an anchor of scale
      sqrt(s_i * s_{i+1}) with this aspect ratio.
    reduce_boxes_in_lowest_layer: bool; if True the lowest layer has only (0.1, 1.0), (s0, 2.0), (s0, 0.5).

  Returns:
    List of num_layers lists of (scale, aspect_ratio) float pairs.

  Raises:
    ValueError: if num_layers < 1 or an aspect ratio is not positive.
  """
  if num_layers < 1:
    raise ValueError('ssd_anchor_specs: num_layers must be >= 1, got %r' % (num_layers,))
  if any(ar <= 0 for ar in aspect_ratios):
    raise ValueError('ssd_anchor_specs: aspect_ratios must be > 0, got %r' % (aspect_ratios,))
  if num_layers == 1:
    scales = [min_scale]
  else:
    scales = [min_scale + (max_scale - min_scale) * i / (num_layers - 1.0) for i in range(num_layers)]
  scales.append(1.0)
  specs = []
  for layer in range(num_layers):
    scale, next_scale = scales[layer], scales[layer + 1]
    if layer == 0 and reduce_boxes_in_lowest_layer:
      specs.append([(0.1, 1.0), (scale, 2.0), (scale, 0.5)])
      continue
    layer_specs = [(scale, ar) for ar in aspect_ratios]
    if interpolated_scale_aspect_ratio > 0.0:
      layer_specs.append((math.sqrt(scale * next_scale), interpolated_scale_aspect_ratio))
    specs.append(layer_specs)
  return specs


def num_anchors_per_location(specs=None):
  """Anchors per grid cell of every layer ([3, 6, 6, 6, 6, 6] for the default specs).

  Args:
    specs: output of `ssd_anchor_specs`; None means `ssd_anchor_specs()`.

  Returns:
    List of int, one per layer: the number of box-predictor outputs per cell.
  """
  if specs is None:
    specs = ssd_anchor_specs()
  return [len(layer_specs) for layer_specs in specs]


def feature_map_shapes(image_size, strides):
  """(height, width) of feature maps of the given strides for an input size.

  A stride-s map of 'SAME' (or explicitly padded) stride-2 convolutions has ceil(n / s) rows: each stride-2
  layer maps n to ceil(n / 2), and ceil(ceil(n / a) / b) = ceil(n / ab). E.g. 300 at strides 16..512 ->
  19, 10, 5, 3, 2, 1.

  Args:
    image_size: int, or (height, width) pair of ints, > 0.
    strides: sequence of int > 0, one per feature map (SSDLite: 16, 32, 64, 128, 256, 512).

  Returns:
    List of (height, width) int pairs, one per stride. 320 -> [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2),
    (1, 1)] for SSDLite's strides.

  Raises:
    ValueError: a non-positive image size or stride.
  """
  if isinstance(image_size, (int, np.integer)):
    image_size = (image_size, image_size)
  height, width = (int(s) for s in image_size)
  if height <= 0 or width <= 0:
    raise ValueError('feature_map_shapes: image_size must be positive, got %r' % (image_size,))
  if any(int(s) <= 0 for s in strides):
    raise ValueError('feature_map_shapes: strides must be positive, got %r' % (strides,))
  return [(-(-height // int(s)), -(-width // int(s))) for s in strides]


def _tile_layer(grid_shape, layer_specs, base_size):
  """Anchors of one layer, float64 [H * W * len(layer_specs), 4], ordered row, column, spec."""
  grid_h, grid_w = grid_shape
  scales = np.array([s for s, _ in layer_specs], dtype=np.float64)
  ratio_sqrts = np.sqrt(np.array([ar for _, ar in layer_specs], dtype=np.float64))
  heights = scales / ratio_sqrts * base_size[0]
  widths = scales * ratio_sqrts * base_size[1]
  # Stride 1/H (1/W) and offset half a stride: cell centers in normalized coordinates.
  y_centers = (np.arange(grid_h) + 0.5) / grid_h
  x_centers = (np.arange(grid_w) + 0.5) / grid_w
  yc = np.broadcast_to(y_centers[:, None, None], (grid_h, grid_w, len(layer_specs)))
  xc = np.broadcast_to(x_centers[None, :, None], (grid_h, grid_w, len(layer_specs)))
  hh = np.broadcast_to(heights[None, None, :] / 2.0, yc.shape)
  hw = np.broadcast_to(widths[None, None, :] / 2.0, xc.shape)
  return np.stack([yc - hh, xc - hw, yc + hh, xc + hw], axis=-1).reshape(-1, 4)


def generate_anchors(feature_map_shapes, specs=None, image_shape=None, base_anchor_size=(1.0, 1.0)):
  """All anchors of an SSD model, normalized [ymin, xmin, ymax, xmax], not clipped.

  Order: layer, then grid cell in row-major order, then the layer's (scale, aspect ratio) spec -- the
  order of the box predictor's reshaped outputs. Anchor height = scale / sqrt(ar), width = scale * sqrt(ar).

  Args:
    feature_map_shapes: list of (height, width) int pairs, one per layer.
    specs: output of `ssd_anchor_specs`, one list per layer; None means `ssd_anchor_specs()`.
    image_shape: optional (height, width) of a non-square input; as in the OD API, the base size is then
      scaled by min(h, w) / h and min(h, w) / w so anchors keep their aspect ratio in pixels.
    base_anchor_size: (height, width) floats multiplying every anchor's size.

  Returns:
    np.float32 array [A, 4], A = sum over layers of H * W * len(specs[layer]).

  Raises:
    ValueError: if feature_map_shapes and specs have different lengths.
  """
  if specs is None:
    specs = ssd_anchor_specs()
  if len(feature_map_shapes) != len(specs):
    raise ValueError('generate_anchors: %d feature_map_shapes but %d layers of specs'
                     % (len(feature_map_shapes), len(specs)))
  base = [float(base_anchor_size[0]), float(base_anchor_size[1])]
  if image_shape is not None:
    shorter = float(min(image_shape))
    base = [base[0] * shorter / image_shape[0], base[1] * shorter / image_shape[1]]
  layers = [_tile_layer(shape, layer_specs, base) for shape, layer_specs in zip(feature_map_shapes, specs)]
  return np.concatenate(layers, axis=0).astype(np.float32)
