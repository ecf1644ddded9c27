"""Parameter and multiply-add counts of a built graph, grouped by layer type.

Counts are read from the graph's static shapes, so they work for any model built from this library
(backbone, SSDLite, DeepLab) and for users' own slim models. Multiply-adds follow the MobileNet papers'
convention: convolutions, depthwise convolutions and fully-connected layers only (batch norm, biases,
activations, pooling and resizing are not counted); atrous convolutions cost the same as regular ones.

Not here: timing (see bench/), FLOPs of element-wise ops.
"""
import collections

import numpy as np
import tensorflow.compat.v1 as tf

_MADD_OPS = {'Conv2D': 'conv', 'DepthwiseConv2dNative': 'depthwise', 'MatMul': 'fully_connected'}

Profile = collections.namedtuple('Profile', ['params', 'madds', 'params_by_type', 'madds_by_type'])


def _param_type(name):
  if 'depthwise_weights' in name:
    return 'depthwise'
  if '/BatchNorm/' in name:
    return 'batch_norm'
  if name.endswith('biases:0') or name.endswith('bias:0'):
    return 'biases'
  return 'conv'


def _op_madds(op):
  """Multiply-adds of one op per batch element, 0 when shapes are not static."""
  out_shape = op.outputs[0].get_shape()
  kernel_shape = op.inputs[1].get_shape()
  if not out_shape.is_fully_defined() or not kernel_shape.is_fully_defined():
    return 0
  out = out_shape.as_list()
  kernel = kernel_shape.as_list()
  if op.type == 'MatMul':
    return int(np.prod(kernel))
  # Conv2D kernel [kh, kw, cin, cout] and depthwise [kh, kw, cin, mult] both cost prod(kernel) per output pixel.
  hw = out[1] * out[2]
  # TF builds an atrous conv as SpaceToBatchND -> conv -> BatchToSpaceND; the conv then sees rate^2 smaller
  # blocks, so count the pixels of the reassembled output (atrous costs the same as a regular conv).
  for consumer in op.outputs[0].consumers():
    shape = consumer.outputs[0].get_shape() if consumer.type == 'BatchToSpaceND' else None
    if shape is not None and shape[1:3].is_fully_defined():
      hw = int(np.prod(shape.as_list()[1:3]))
  return int(hw * np.prod(kernel))


def profile_graph(graph=None, scope=None):
  """Counts trainable parameters and multiply-adds (for one image) of `graph`.

  Args:
    graph: a tf.Graph built with a batch dimension of 1 or more; default graph if None.
    scope: only count variables and ops whose names start with this prefix.

  Returns:
    Profile(params, madds, params_by_type, madds_by_type) with int counts.
  """
  graph = graph or tf.get_default_graph()
  params_by_type, madds_by_type = collections.Counter(), collections.Counter()
  for var in graph.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES):
    if scope and not var.op.name.startswith(scope):
      continue
    params_by_type[_param_type(var.name)] += int(np.prod(var.get_shape().as_list()))
  for op in graph.get_operations():
    kind = _MADD_OPS.get(op.type)
    if kind is None or (scope and not op.name.startswith(scope)):
      continue
    madds_by_type[kind] += _op_madds(op)
  return Profile(sum(params_by_type.values()), sum(madds_by_type.values()), dict(params_by_type),
                 dict(madds_by_type))


def format_profile(profile, title):
  """A small table: parameters and multiply-adds per layer type, then totals."""
  lines = [title, '%-16s %14s %16s' % ('layer type', 'parameters', 'multiply-adds')]
  for kind in sorted(set(profile.params_by_type) | set(profile.madds_by_type)):
    lines.append('%-16s %14s %16s' % (kind, '{:,}'.format(profile.params_by_type.get(kind, 0)),
                                      '{:,}'.format(profile.madds_by_type.get(kind, 0))))
  lines.append('%-16s %14s %16s' % ('total', '{:,}'.format(profile.params), '{:,}'.format(profile.madds)))
  lines.append('= %.3fM parameters, %.1fM multiply-adds' % (profile.params / 1e6, profile.madds / 1e6))
  return '\n'.join(lines)


def profile_mobilenet(depth_multiplier=1.0, image_size=224, num_classes=1001, finegrain_classification_mode=False):
  """Profile of the MobileNetV2 classifier at one width and input size (builds a throwaway graph)."""
  from nets import mobilenet_v2  # pylint: disable=g-import-not-at-top
  with tf.Graph().as_default() as graph:
    images = tf.placeholder(tf.float32, [1, image_size, image_size, 3])
    mobilenet_v2.mobilenet(images, num_classes=num_classes, depth_multiplier=depth_multiplier,
                           finegrain_classification_mode=finegrain_classification_mode)
    return profile_graph(graph)
