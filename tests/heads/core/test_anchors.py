"""SSD anchor specs, grid sizes, anchor counts and hand-computed anchor coordinates."""
import math

import numpy as np
import pytest

from heads.core import anchors


def test_default_specs_match_ssdlite_config():
  specs = anchors.ssd_anchor_specs()
  assert specs[0] == [(0.1, 1.0), (0.2, 2.0), (0.2, 0.5)]
  scales = [0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0]
  for layer in range(1, 6):
    got_scales = [s for s, _ in specs[layer]]
    got_ratios = [r for _, r in specs[layer]]
    np.testing.assert_allclose(got_scales[:5], [scales[layer]] * 5)
    np.testing.assert_allclose(got_scales[5], math.sqrt(scales[layer] * scales[layer + 1]))
    np.testing.assert_allclose(got_ratios, [1.0, 2.0, 0.5, 3.0, 1.0 / 3, 1.0])
  assert anchors.num_anchors_per_location(specs) == [3, 6, 6, 6, 6, 6]
  assert anchors.num_anchors_per_location() == [3, 6, 6, 6, 6, 6]


def test_specs_without_reduction_or_interpolation():
  specs = anchors.ssd_anchor_specs(num_layers=2, min_scale=0.1, max_scale=0.9, aspect_ratios=(1.0, 2.0),
                                   interpolated_scale_aspect_ratio=0.0, reduce_boxes_in_lowest_layer=False)
  assert specs == [[(0.1, 1.0), (0.1, 2.0)], [(0.9, 1.0), (0.9, 2.0)]]
  with pytest.raises(ValueError, match='num_layers'):
    anchors.ssd_anchor_specs(num_layers=0)

# SSDLite-MobileNetV2's feature-map strides (tests/heads/test_ssdlite.py checks them against feature_info).
SSDLITE_STRIDES = (16, 32, 64, 128, 256, 512)


@pytest.mark.parametrize('size,shapes,count', [
    (320, [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)], 2034),
    (300, [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)], 1917)])
def test_feature_map_shapes_and_anchor_counts(size, shapes, count):
  assert anchors.feature_map_shapes(size, SSDLITE_STRIDES) == shapes
  boxes = anchors.generate_anchors(shapes)
  assert boxes.shape == (count, 4) and boxes.dtype == np.float32


def test_feature_map_shapes_non_square():
  assert anchors.feature_map_shapes((320, 480), SSDLITE_STRIDES)[:2] == [(20, 30), (10, 15)]
  with pytest.raises(ValueError, match='image_size'):
    anchors.feature_map_shapes(0, SSDLITE_STRIDES)
  with pytest.raises(ValueError, match='strides'):
    anchors.feature_map_shapes(320, [16, 0])


def test_anchor_values_by_hand():
  boxes = anchors.generate_anchors(anchors.feature_map_shapes(320, SSDLITE_STRIDES))
  r2 = math.sqrt(2.0)
  expected = {
      0: [-0.025, -0.025, 0.075, 0.075],                               # layer 0, cell (0, 0), (0.1, 1)
      1: [0.025 - 0.1 / r2, 0.025 - 0.1 * r2, 0.025 + 0.1 / r2, 0.025 + 0.1 * r2],  # (0.2, 2.0)
      2: [0.025 - 0.1 * r2, 0.025 - 0.1 / r2, 0.025 + 0.1 * r2, 0.025 + 0.1 / r2],  # (0.2, 0.5)
      3: [-0.025, 0.025, 0.075, 0.125],                                 # cell (0, 1): next column
      60: [0.025, -0.025, 0.125, 0.075],                                # cell (1, 0): next row
      1200: [-0.125, -0.125, 0.225, 0.225],                             # layer 1, cell (0, 0), (0.35, 1)
      2028: [0.025, 0.025, 0.975, 0.975],                               # layer 5, (0.95, 1)
      2033: [0.5 - math.sqrt(0.95) / 2] * 2 + [0.5 + math.sqrt(0.95) / 2] * 2,  # interpolated scale
  }
  for index, box in expected.items():
    np.testing.assert_allclose(boxes[index], box, rtol=1e-5, atol=1e-6, err_msg='anchor %d' % index)


def test_non_square_image_scales_base_size():
  boxes = anchors.generate_anchors([(1, 1)], specs=[[(0.5, 1.0)]], image_shape=(200, 400))
  np.testing.assert_allclose(boxes, [[0.25, 0.375, 0.75, 0.625]])


def test_mismatched_layers_raise():
  with pytest.raises(ValueError, match='feature_map_shapes'):
    anchors.generate_anchors([(2, 2)])
