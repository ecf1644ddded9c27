"""Tiny MobileNetV2 models (width 0.35) with random weights and non-trivial batch-norm statistics.

Shared by the freeze and TFLite export tests: each `*_build` is the `build(images) -> dict` callable the
exporters take, and `save_random_checkpoint` writes a checkpoint for it (optionally with moving-average
shadow variables) in a fresh graph.
"""
import os

import numpy as np
import tensorflow.compat.v1 as tf
import tf_slim as slim

from heads import deeplab
from heads import ssdlite
from heads.core import anchors as anchors_lib
from nets import mobilenet_v2

DEPTH = 0.35


def classification_build(num_classes=5, depth_multiplier=DEPTH, use_explicit_padding=False):
  def build(images):
    with slim.arg_scope(mobilenet_v2.training_scope(is_training=False)):
      _, end_points = mobilenet_v2.mobilenet(images, num_classes=num_classes, depth_multiplier=depth_multiplier,
                                             use_explicit_padding=use_explicit_padding)
    return {'probabilities': end_points['Predictions']}
  return build


def detection_build(num_classes=3, depth_multiplier=DEPTH):
  def build(images):
    with slim.arg_scope(mobilenet_v2.training_scope(is_training=False)):
      maps = ssdlite.feature_maps(images, depth_multiplier=depth_multiplier, is_training=False)
      out = ssdlite.box_predictor(maps, num_classes, anchors_lib.num_anchors_per_location(), is_training=False)
    return {ssdlite.BOX_ENCODINGS: out[ssdlite.BOX_ENCODINGS],
            ssdlite.CLASS_PREDICTIONS_WITH_BACKGROUND: out[ssdlite.CLASS_PREDICTIONS_WITH_BACKGROUND]}
  return build


def segmentation_build(num_classes=4, depth_multiplier=DEPTH, output_stride=16):
  def build(images):
    with slim.arg_scope(mobilenet_v2.training_scope(is_training=False)):
      features, end_points = deeplab.features(images, output_stride=output_stride,
                                              depth_multiplier=depth_multiplier, is_training=False)
      with slim.arg_scope([slim.batch_norm], epsilon=1e-5):
        out = deeplab.aspp_head(features, num_classes, depth=32, is_training=False, end_points=end_points)
    return {'logits': out[deeplab.LOGITS]}
  return build


def _random_value(name, shape, rng):
  """Random BN statistics / affine parameters; None for other variables (they keep their initial value)."""
  if name.endswith('moving_mean'):
    return rng.normal(0.0, 0.2, shape)
  if name.endswith('moving_variance'):
    return rng.uniform(0.3, 2.0, shape)
  if name.endswith('BatchNorm/gamma'):
    return rng.uniform(0.5, 1.5, shape)
  if name.endswith('BatchNorm/beta'):
    return rng.normal(0.0, 0.2, shape)
  return None


def save_random_checkpoint(build, input_shape, directory, seed=0, with_ema=False, overrides=None):
  """Builds `build`, randomizes it, saves `<directory>/model.ckpt`; returns the prefix.

  with_ema: also save `<name>/ExponentialMovingAverage` for every trainable variable, equal to 0.5 x
    the raw value (so a test can tell which one was restored).
  overrides: dict variable name -> numpy value (or callable (rng, shape) -> value) set last (e.g. a
    class-predictor bias).

  The values are computed in numpy and written by one SaveV2 op: on TF 1.15 each new session-run
  signature (or tf.train.ExponentialMovingAverage.apply) costs seconds on this graph.
  """
  rng = np.random.RandomState(seed)
  if not os.path.isdir(str(directory)):
    os.makedirs(str(directory))
  with tf.Graph().as_default():
    tf.set_random_seed(seed)
    build(tf.placeholder(tf.float32, input_shape))
    variables = tf.global_variables()
    trainable = [v.op.name for v in tf.trainable_variables()]
    with tf.Session() as session:
      session.run(tf.variables_initializer(variables))
      values = session.run(dict((v.op.name, v) for v in variables))
  for name in sorted(values):
    random = _random_value(name, list(values[name].shape), rng)
    if random is not None:
      values[name] = random
  for name, value in (overrides or {}).items():
    if name not in values:
      raise KeyError('override of unknown variable %r' % (name,))
    values[name] = value(rng, values[name].shape) if callable(value) else value
  if with_ema:
    for name in trainable:
      values[name + '/ExponentialMovingAverage'] = 0.5 * np.asarray(values[name])
  prefix = os.path.join(str(directory), 'model.ckpt')
  names = sorted(values)
  with tf.Graph().as_default():
    save = tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[''] * len(names),
                             tensors=[tf.constant(np.asarray(values[n], np.float32)) for n in names])
    with tf.Session() as session:
      session.run(save)
  tf.train.update_checkpoint_state(str(directory), prefix)
  return prefix


def random_images(shape, seed=0):
  """float32 images in [-1, 1] with some smooth structure (not pure noise)."""
  rng = np.random.RandomState(seed)
  base = rng.uniform(-1, 1, shape).astype(np.float32)
  ramp = np.linspace(-1, 1, shape[-2], dtype=np.float32)[:, None]
  return np.clip(0.5 * base + 0.5 * ramp, -1, 1)
