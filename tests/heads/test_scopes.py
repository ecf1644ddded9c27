"""The head arg_scope: batch norm (centered, scaled) + the given activation, SAME padding, stride 1."""
import tensorflow.compat.v1 as tf
import tf_slim as slim

from heads import scopes


def _op_types(graph, prefix):
  return [op.type for op in graph.get_operations() if op.name.startswith(prefix + '/')]


def test_conv_gets_batch_norm_and_activation(graph):
  with scopes.conv_bn_scope(tf.nn.relu6, is_training=False):
    net = slim.conv2d(tf.zeros([1, 5, 5, 2]), 4, 3, scope='head_conv')
  assert net.get_shape().as_list() == [1, 5, 5, 4]  # SAME, stride 1
  names = {v.op.name for v in tf.global_variables()}
  assert {'head_conv/weights', 'head_conv/BatchNorm/gamma', 'head_conv/BatchNorm/beta',
          'head_conv/BatchNorm/moving_mean', 'head_conv/BatchNorm/moving_variance'} <= names
  assert 'head_conv/biases' not in names  # batch norm replaces the bias
  assert 'Relu6' in _op_types(graph, 'head_conv')
  assert not tf.get_collection(tf.GraphKeys.UPDATE_OPS)  # inference mode


def test_training_mode_and_callers_scope(graph):
  with slim.arg_scope([slim.batch_norm], is_training=True):
    with scopes.conv_bn_scope(tf.nn.relu):  # None keeps the caller's training mode
      slim.separable_conv2d(tf.zeros([1, 4, 4, 3]), None, 3, depth_multiplier=1, scope='dw')
  assert tf.get_collection(tf.GraphKeys.UPDATE_OPS)
  assert 'Relu' in _op_types(graph, 'dw')
  with scopes.conv_bn_scope(tf.nn.relu, is_training=False):
    slim.conv2d(tf.zeros([1, 4, 4, 3]), 2, 1, scope='frozen')
  assert not [op for op in tf.get_collection(tf.GraphKeys.UPDATE_OPS) if op.name.startswith('frozen/')]
