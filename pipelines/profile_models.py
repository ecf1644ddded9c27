"""Parameter and multiply-add profiles of the SSDLite and DeepLabv3 MobileNetV2 models (batch of 1).

Each builder makes a throwaway graph with the inference arg_scope and counts it with
`nets.profile.profile_graph`, so the numbers follow that module's conventions (convolutions only,
atrous convolutions at the cost of regular ones).

Reference counts of the public models: SSDLite 320x320, 90 classes: 4,500,543 parameters, 804.4M
multiply-adds; DeepLabv3 513x513, OS16, 21 classes, no atrous branches: 2,113,557 parameters,
2,740,709,056 multiply-adds.

Not here: timing, the classifier's profile (`nets.profile.profile_mobilenet`).
"""
import tensorflow.compat.v1 as tf
import tf_slim as slim

from heads import deeplab
from heads import ssdlite
from nets import mobilenet_v2
from nets import profile


def profile_ssdlite(image_size=320, num_classes=90, depth_multiplier=1.0):
  """Profile of SSDLite-MobileNetV2 (feature extractor + box predictor) on one image_size^2 RGB image.

  Args:
    image_size: int >= 33, input height and width.
    num_classes: object classes without the background.
    depth_multiplier: width multiplier of the backbone and the extra layers.

  Returns:
    nets.profile.Profile.
  """
  with tf.Graph().as_default() as graph:
    images = tf.placeholder(tf.float32, [1, image_size, image_size, 3])
    with slim.arg_scope(mobilenet_v2.training_scope(is_training=False)):
      maps = ssdlite.feature_maps(images, depth_multiplier=depth_multiplier)
      ssdlite.box_predictor(maps, num_classes)
    return profile.profile_graph(graph)


def profile_deeplab(image_size=513, output_stride=16, num_classes=21, aspp_rates=None, depth_multiplier=1.0):
  """Profile of DeepLabv3-MobileNetV2 (features + ASPP + logits, no decoder) on one image_size^2 image.

  Args:
    image_size: int, input height and width.
    output_stride: 8, 16 or 32.
    num_classes: segmentation classes (21 for PASCAL VOC).
    aspp_rates: atrous rates of the 3x3 ASPP branches; None = none (the MobileNetV2 setting).
    depth_multiplier: backbone width multiplier.

  Returns:
    nets.profile.Profile.
  """
  with tf.Graph().as_default() as graph:
    images = tf.placeholder(tf.float32, [1, image_size, image_size, 3])
    with slim.arg_scope(mobilenet_v2.training_scope(is_training=False)):
      features, _ = deeplab.features(images, output_stride=output_stride, depth_multiplier=depth_multiplier)
      deeplab.aspp_head(features, num_classes, aspp_rates=aspp_rates)
    return profile.profile_graph(graph)
