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
  def build(images, is_training=False):
    with slim.arg_scope(mobilenet_v2.training_scope(is_training=is_training)):
      _, end_points = mobilenet_v2.mobilenet(images, num_classes=num_classes, depth_multiplier=depth_multiplier,
                                             use_explicit_padding=use_explicit_padding)
    return {'probabilities': end_points['Predictions']}
  return build


def detection_build(num_classes=3, depth_multiplier=DEPTH):
  def build(images, is_training=False):
    with slim.arg_scope(mobilenet_v2.training_scope(is_training=is_training)):
      with tf.variable_scope(ssdlite.FEATURE_EXTRACTOR_SCOPE) as scope:
        _, end_points = mobilenet_v2.mobilenet_base(images, depth_multiplier=depth_multiplier, min_depth=16,
                                                    final_endpoint='layer_19', scope=scope, is_training=is_training)
        maps = ssdlite.extra_feature_maps(end_points, depth_multiplier=depth_multiplier, is_training=is_training)
      out = ssdlite.box_predictor(maps, num_classes, anchors_lib.num_anchors_per_location(),
                                  is_training=is_training)
    return {ssdlite.BOX_ENCODINGS: out[ssdlite.BOX_ENCODINGS],
            ssdlite.CLASS_PREDICTIONS_WITH_BACKGROUND: out[ssdlite.CLASS_PREDICTIONS_WITH_BACKGROUND]}
  return build


def segmentation_build(num_classes=4, depth_multiplier=DEPTH, output_stride=16, center_logits=False):
  """center_logits: subtract each class's spatial mean from its logits. A random model's class offsets
  dwarf its spatial variation (one class everywhere); centered, its class map has structure to compare."""
  def build(images, is_training=False):
    with slim.arg_scope(mobilenet_v2.training_scope(is_training=is_training)):
      # DeepLab's rounding below width 1.0 (min_depth and divisible_by 1), as pipelines.tasks.model_builder.
      _, end_points = mobilenet_v2.mobilenet_base(images, depth_multiplier=depth_multiplier, output_stride=output_stride,
                                                  final_endpoint=deeplab.FEATURE_ENDPOINT, min_depth=1, divisible_by=1,
                                                  scope=mobilenet_v2.DEFAULT_SCOPE, is_training=is_training)
      with slim.arg_scope([slim.batch_norm], epsilon=1e-5):
        out = deeplab.aspp_head(end_points, num_classes, depth=32, is_training=is_training)
    logits = out[deeplab.LOGITS]
    if center_logits:
      logits -= tf.reduce_mean(logits, [1, 2], keepdims=True)
    return {'logits': logits}
  return build


def _initial_value(name, shape, rng):
  """float32 initial value of a model variable, from numpy (identical on both stacks for one seed)."""
  leaf = name.rsplit('/', 1)[-1]
  if leaf in ('weights', 'depthwise_weights', 'pointwise_weights'):
    fan_in = int(np.prod(shape[:2])) * (1 if leaf == 'depthwise_weights' else shape[2])
    return (np.clip(rng.normal(0.0, 1.0, shape), -2, 2) / np.sqrt(fan_in)).astype(np.float32)
  if leaf in ('gamma', 'moving_variance'):
    return np.ones(shape, np.float32)
  if leaf in ('biases', 'beta', 'moving_mean'):
    return np.zeros(shape, np.float32)
  raise ValueError('no initial value rule for variable %r' % (name,))


def _batch_norm_statistics(graph):
  """dict BN variable scope -> (batch mean, batch variance) tensors of the training-mode batch norms."""
  stats = {}
  for op in graph.get_operations():
    if op.type in ('FusedBatchNorm', 'FusedBatchNormV3'):
      # The scope of the gamma variable (op names may carry a re-entered name scope, variables do not).
      source = op.inputs[1].op
      while source.type in ('Identity', 'ReadVariableOp') and source.inputs:
        source = source.inputs[0].op
      stats[source.name.rsplit('/', 1)[0]] = (op.outputs[1], op.outputs[2])
  return stats


def _randomize_batch_norms(values, stats, rng, jitter=1.0, residual_gain=1.0):
  """Moving statistics near the real batch statistics (so activations stay alive and input-dependent)
  but off by a random amount, and random gamma / beta: folding has non-trivial numbers to get right."""
  matched = 0
  for scope, (mean, variance) in sorted(stats.items()):
    if scope + '/moving_mean' not in values:
      continue
    matched += 1
    std = np.sqrt(variance + 1e-3)
    values[scope + '/moving_mean'] = mean + rng.normal(0.0, 0.2 * jitter, mean.shape) * std
    values[scope + '/moving_variance'] = variance * np.exp(rng.uniform(-0.5, 0.5, variance.shape) * jitter) + 1e-3
    if scope + '/gamma' in values:
      values[scope + '/gamma'] = np.exp(rng.uniform(-0.35, 0.35, mean.shape) * jitter) * (
          residual_gain if scope.endswith('project/BatchNorm') else 1.0)
    if scope + '/beta' in values:
      values[scope + '/beta'] = rng.normal(0.0, 0.2 * jitter, mean.shape)
  if matched != sum(1 for name in values if name.endswith('/moving_mean')):
    raise AssertionError('batch statistics found for %d of the batch norms' % matched)


def save_random_checkpoint(build, input_shape, directory, seed=0, with_ema=False, overrides=None, jitter=1.0,
                           residual_gain=1.0):
  """Builds `build` in training mode, randomizes it, saves `<directory>/model.ckpt`; returns the prefix.

  Conv weights are numpy truncated normals (std 1 / sqrt(fan-in)), so both TensorFlow stacks get the
  same model from the same seed; batch-norm moving statistics are set near the batch statistics of 4
  random images (randomly perturbed), gamma / beta random.
  with_ema: also save `<name>/ExponentialMovingAverage` for every trainable variable: the raw value times
    uniform(0.8, 1.2) noise (so a test can tell which one was restored, and the network stays alive).
  overrides: dict variable name -> numpy value (or callable (rng, shape) -> value) set last (e.g. a
    class-predictor bias).
  jitter: scale of the batch-norm randomization (0 = the batch statistics, gamma 1, beta 0). Each layer's
    random gain compounds through ~50 layers: quantization tests want it smaller than folding tests.
  residual_gain: multiplies gamma of every `project` batch norm (the end of an inverted-residual branch).
    Random batch-normalized networks are chaotic: they amplify any perturbation (float16 or int8 rounding)
    layer after layer, unlike trained ones. Smaller residual branches keep more of the signal on the
    identity shortcuts: 0.5 is less chaotic yet input-dependent (0.2 makes the output almost constant).

  The values are computed in numpy and written by one SaveV2 op: on TF 1.15 each new session-run
  signature (or tf.train.ExponentialMovingAverage.apply) costs seconds on this graph.
  """
  rng = np.random.RandomState(seed)
  if not os.path.isdir(str(directory)):
    os.makedirs(str(directory))
  batch = [4] + list(input_shape[1:])
  with tf.Graph().as_default() as graph:
    tf.set_random_seed(seed)
    images = tf.placeholder(tf.float32, batch)
    build(images, is_training=True)
    variables = tf.global_variables()
    trainable = [v.op.name for v in tf.trainable_variables()]
    stats = _batch_norm_statistics(graph)
    values = dict((v.op.name, _initial_value(v.op.name, v.get_shape().as_list(), rng)) for v in variables)
    with tf.Session() as session:
      session.run(tf.variables_initializer(variables), dict((v.initial_value, values[v.op.name]) for v in variables))
      stats = session.run(stats, {images: random_images(batch, seed=seed + 1000)})
  _randomize_batch_norms(values, stats, rng, jitter, residual_gain)
  for name, value in (overrides or {}).items():
    if name not in values:
      raise KeyError('override of unknown variable %r' % (name,))
    values[name] = value(rng, values[name].shape) if callable(value) else value
  if with_ema:
    for name in trainable:
      values[name + '/ExponentialMovingAverage'] = np.asarray(values[name]) * rng.uniform(0.8, 1.2, values[name].shape)
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


def replace_constant(frozen, name, value):
  """A copy of a FrozenGraph whose Const node `name` holds `value` (e.g. rebalanced logit biases)."""
  graph_def = tf.GraphDef()
  graph_def.CopyFrom(frozen.graph_def)
  (node,) = [n for n in graph_def.node if n.name == name and n.op == 'Const']
  node.attr['value'].tensor.CopyFrom(tf.make_tensor_proto(np.asarray(value, np.float32)))
  return frozen._replace(graph_def=graph_def)


def constant_value(frozen, name):
  (node,) = [n for n in frozen.graph_def.node if n.name == name and n.op == 'Const']
  return tf.make_ndarray(node.attr['value'].tensor)
