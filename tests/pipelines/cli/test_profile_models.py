"""Parameters and multiply-adds of the SSDLite and DeepLabv3 models as the tasks build them, pinned to the
public models' counts (the backbone comes from `pipelines.tasks.model_builder`, the heads from `heads/`)."""
from pipelines.cli import profile_models


def test_pinned_counts_at_320():
  coco = profile_models.profile_ssdlite(320, 90)
  assert coco.params == 4500543
  assert round(coco.madds / 1e5) / 10 == 804.4
  # 10 fewer classes drop 10 output channels per anchor from each ClassPredictor (weights + biases):
  # weights: inputs 576*3 + (1280+512+256+256+128)*6, biases 3 + 5*6; madds: sum_i h_i*w_i*c_i*anchors_i.
  fewer_params = 10 * (576 * 3 + (1280 + 512 + 256 + 256 + 128) * 6 + 3 + 5 * 6)
  fewer_madds = 10 * (20 * 20 * 576 * 3 + 10 * 10 * 1280 * 6 + 5 * 5 * 512 * 6 + 3 * 3 * 256 * 6
                      + 2 * 2 * 256 * 6 + 1 * 1 * 128 * 6)
  smaller = profile_models.profile_ssdlite(320, 80)
  assert smaller.params == coco.params - fewer_params
  assert smaller.madds == coco.madds - fewer_madds
  assert round(smaller.params / 1e4) / 100 == 4.34 and round(smaller.madds / 1e5) / 10 == 788.8


def test_pinned_deeplab_parameter_counts():
  assert profile_models.profile_deeplab().params == 2113557
  # 3 regular 3x3 atrous branches (3 x (9*320*256 + 2*256 trainable BN)), 3*256 more concat_projection inputs.
  assert profile_models.profile_deeplab(aspp_rates=(6, 12, 18)).params == 2113557 + 3 * (9 * 320 * 256 + 512) \
      + 3 * 256 * 256


def test_pinned_deeplab_madds():
  assert profile_models.profile_deeplab().madds == 2740709056
  # 3 atrous branches at 33x33 (9*320*256 each) + 3*256 more concat_projection inputs (x256 outputs).
  atrous = profile_models.profile_deeplab(aspp_rates=(6, 12, 18)).madds
  assert atrous == 2740709056 + 33 * 33 * (3 * 9 * 320 * 256 + 3 * 256 * 256)
  assert round(atrous / 1e7) / 100 == 5.36
