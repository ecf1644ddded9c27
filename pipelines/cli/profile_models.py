"""Parameter and multiply-add profiles of the SSDLite and DeepLabv3 MobileNetV2 models (batch of 1).

Each profile builds the task's own model -- `build_outputs` of the task, so the backbone comes from
`pipelines.tasks.model_builder` exactly as in training and export -- in inference mode in a throwaway graph,
and counts it with `nets.profile.profile_graph` (convolutions only, atrous convolutions at the cost of
regular ones).

Reference counts of the public models: SSDLite 320x320, 90 classes: 4,500,543 parameters, 804.4M
multiply-adds; DeepLabv3 513x513, OS16, 21 classes, no atrous branches: 2,113,557 parameters,
2,740,709,056 multiply-adds.

Not here: timing, the classifier's profile (`nets.profile.profile_mobilenet`).
"""
import dataclasses

import tensorflow.compat.v1 as tf

from nets import profile
from pipelines import config as config_schema
from pipelines.training import runner


def profile_config(config, image_size):
  """Profile of `config`'s model on one image_size x image_size RGB image (eval mode, single scale)."""
  with tf.Graph().as_default() as graph:
    images = tf.placeholder(tf.float32, [1, image_size, image_size, 3])
    runner.make_task(config).build_outputs({'image': images}, False)
    return profile.profile_graph(graph)


def profile_ssdlite(image_size=320, num_classes=90, depth_multiplier=1.0):
  """Profile of SSDLite-MobileNetV2 (feature extractor + box predictor), public config otherwise.

  Returns:
    nets.profile.Profile.
  """
  config = config_schema.Config(
      task='detection', model=config_schema.ModelConfig(depth_multiplier=depth_multiplier),
      detection=config_schema.DetectionConfig(num_classes=num_classes, image_size=image_size))
  return profile_config(config, image_size)


def profile_deeplab(image_size=513, output_stride=16, num_classes=21, aspp_rates=None, depth_multiplier=1.0):
  """Profile of DeepLabv3-MobileNetV2 (backbone + ASPP + logits, no decoder) on one image_size^2 image.

  Args:
    image_size: int, input height and width.
    output_stride: 8, 16 or 32.
    num_classes: segmentation classes (21 for PASCAL VOC).
    aspp_rates: atrous rates of the 3x3 ASPP branches; None = none (the MobileNetV2 setting).
    depth_multiplier: backbone width multiplier.

  Returns:
    nets.profile.Profile.
  """
  seg = dataclasses.replace(config_schema.SegmentationConfig(), num_classes=num_classes, output_stride=output_stride,
                            aspp_rates=list(aspp_rates or []))
  config = config_schema.Config(task='segmentation', model=config_schema.ModelConfig(depth_multiplier=depth_multiplier),
                                segmentation=seg)
  return profile_config(config, image_size)


def multitask_config(depth_multiplier=1.0, image_size=320, output_stride=None, members=None):
  """A multitask config of the public heads (90 COCO classes, 21 VOC classes, 1001 ImageNet classes)."""
  member = config_schema.MemberConfig()
  members = config_schema.MultitaskConfig.member_names() if members is None else members
  return config_schema.Config(
      task='multitask', model=config_schema.ModelConfig(depth_multiplier=depth_multiplier),
      classification=dataclasses.replace(config_schema.ClassificationConfig(), image_size=image_size),
      detection=dataclasses.replace(config_schema.DetectionConfig(), image_size=image_size),
      multitask=config_schema.MultitaskConfig(output_stride=output_stride,
                                              **dict((name, member) for name in members)))


def profile_multitask(image_size=320, depth_multiplier=1.0, output_stride=None):
  """The one-pass multitask model next to the separate single-task models, all at image_size^2.

  Returns:
    (combined nets.profile.Profile, {task: Profile of the single-task model as its own config builds it}).
  """
  config = multitask_config(depth_multiplier, image_size, output_stride)
  separate = {}
  for name, member in config.member_configs():
    separate[name] = profile_config(member, image_size)
  return profile_config(config, image_size), separate
