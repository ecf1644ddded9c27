"""Contract tests of the MobileNetV2 backbone: shapes, names, counts, checkpoints and argument errors."""
import math

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim

from nets import mobilenet_spec
from nets import mobilenet_v2
from nets import profile
from tests.conftest import read_tsv


def _shape_str(shape):
  return 'x'.join(str(d) for d in shape)


def test_variables_match_public_checkpoint_manifest(graph):
  images = tf.placeholder(tf.float32, [1, 224, 224, 3])
  mobilenet_v2.mobilenet(images, num_classes=1001)
  got = [(v.op.name, _shape_str(v.get_shape().as_list())) for v in tf.global_variables()]
  expected = [tuple(row) for row in read_tsv('manifest_mnv2_1.0_224.tsv')]
  assert got == expected


def test_endpoints_match_public_model(graph):
  images = tf.placeholder(tf.float32, [1, 224, 224, 3])
  _, end_points = mobilenet_v2.mobilenet(images, num_classes=1001)
  expected = {name: shape for name, shape, _ in read_tsv('mnv2_endpoints_1.0_224.tsv')}
  got = {name: str(t.get_shape().as_list()) for name, t in end_points.items()}
  assert got == expected
  tensor_names = {name: tensor for name, _, tensor in read_tsv('mnv2_endpoints_1.0_224.tsv')}
  for name in ('layer_1', 'layer_3/expansion_output', 'layer_3/depthwise_output', 'layer_18/output', 'Logits'):
    assert end_points[name].name == tensor_names[name]


@pytest.mark.parametrize('size,output_stride,multiplier', [
    (224, None, 1.0), (224, 32, 0.35), (160, 16, 1.0), (97, 8, 0.5), (128, 16, 1.4), (65, 32, 0.75)])
def test_feature_info_equals_real_shapes(graph, size, output_stride, multiplier):
  images = tf.placeholder(tf.float32, [2, size, size, 3])
  _, end_points = mobilenet_v2.mobilenet_base(images, depth_multiplier=multiplier, output_stride=output_stride)
  infos = mobilenet_v2.feature_info(multiplier, output_stride)
  assert sorted(info.name for info in infos) == sorted(end_points)
  for info in infos:
    expected_hw = int(math.ceil(size / float(info.stride)))
    assert end_points[info.name].get_shape().as_list() == [2, expected_hw, expected_hw, info.channels], info.name
  if output_stride:
    assert max(info.stride for info in infos) == output_stride


def test_output_stride_uses_atrous_convolution(graph):
  images = tf.placeholder(tf.float32, [1, 129, 129, 3])
  net, _ = mobilenet_v2.mobilenet_base(images, output_stride=8, final_endpoint='layer_18')
  assert net.get_shape().as_list() == [1, 17, 17, 320]
  rates = []
  for op in graph.get_operations():
    if op.type == 'DepthwiseConv2dNative':
      # TF implements a dilated depthwise conv as SpaceToBatchND(block=rate) -> conv -> BatchToSpaceND.
      source = op.inputs[0].op
      if source.type == 'SpaceToBatchND':
        rates.append(int(tf.get_static_value(source.inputs[1])[0]))
      else:
        rates.append(op.get_attr('dilations')[1])
  # Blocks at stride 8 run at rate 1; the two later stride-2 stages become rates 2 and 4.
  assert sorted(set(rates)) == [1, 2, 4]


def test_explicit_padding_keeps_shapes(graph):
  images = tf.placeholder(tf.float32, [1, 96, 96, 3])
  _, end_points = mobilenet_v2.mobilenet_base(images, use_explicit_padding=True)
  assert end_points['layer_19'].get_shape().as_list() == [1, 3, 3, 1280]
  assert not [op for op in graph.get_operations()
              if op.type in ('Conv2D', 'DepthwiseConv2dNative') and op.get_attr('padding') == b'SAME' and
              op.inputs[1].get_shape().as_list()[0] > 1]


def test_conv_op_count_equals_spec(graph):
  images = tf.placeholder(tf.float32, [1, 64, 64, 3])
  mobilenet_v2.mobilenet(images, num_classes=10)
  spec = mobilenet_spec.V2_SPEC
  blocks = [s for s in spec if s.kind == mobilenet_spec.INVERTED_RESIDUAL]
  expanded = [s for s in blocks if s.expansion > 1]
  convs = [s for s in spec if s.kind == mobilenet_spec.CONV]
  ops = [op.type for op in graph.get_operations()]
  # conv layers + (expand + project) per expanding block + project of the first block + logits
  assert ops.count('Conv2D') == len(convs) + 2 * len(expanded) + (len(blocks) - len(expanded)) + 1
  assert ops.count('DepthwiseConv2dNative') == len(blocks) == 17
  assert len(spec) == 19


@pytest.mark.parametrize('multiplier,finegrain,params,madds', [
    (1.0, False, 3506153, 300775552),
    (1.4, False, 6110569, 582197616),
    (0.75, False, 2239945, 204987552),
    (0.35, False, 750729, 53888240),
    (0.35, True, 1678409, 59287088),
])
def test_pinned_parameter_and_madd_counts(multiplier, finegrain, params, madds):
  result = profile.profile_mobilenet(multiplier, 224, 1001, finegrain)
  assert result.params == params
  assert result.madds == madds


@pytest.mark.parametrize('size,madds_millions', [(192, 221.3), (160, 154.1), (128, 99.1), (96, 56.3)])
def test_madds_at_smaller_resolutions(size, madds_millions):
  assert round(profile.profile_mobilenet(1.0, size).madds / 1e6, 1) == madds_millions


def test_checkpoint_restores_into_fresh_graph(tmp_path):
  path = str(tmp_path / 'model.ckpt')
  image = np.random.RandomState(0).uniform(-1, 1, [1, 64, 64, 3]).astype(np.float32)
  with tf.Graph().as_default():
    logits, _ = mobilenet_v2.mobilenet(tf.constant(image), num_classes=7, depth_multiplier=0.35)
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      # Give the moving statistics non-default values so restoring them is observable.
      for var in tf.global_variables():
        if 'moving' in var.op.name:
          sess.run(var.assign(var + 0.5))
      expected = sess.run(logits)
      tf.train.Saver().save(sess, path)
  with tf.Graph().as_default():
    logits, _ = mobilenet_v2.mobilenet(tf.constant(image), num_classes=7, depth_multiplier=0.35)
    with tf.Session() as sess:
      tf.train.Saver().restore(sess, path)
      np.testing.assert_allclose(sess.run(logits), expected, rtol=1e-5, atol=1e-5)


def test_training_scope_sets_mode_and_regularization(graph):
  images = tf.placeholder(tf.float32, [2, 64, 64, 3])
  with slim.arg_scope(mobilenet_v2.training_scope(is_training=True, weight_decay=1e-4)):
    mobilenet_v2.mobilenet(images, num_classes=5, depth_multiplier=0.5)
  reg = tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)
  # every conv (35 in the base + logits) is regularized, depthwise weights are not
  assert len(reg) == 36
  assert len(tf.get_collection(tf.GraphKeys.UPDATE_OPS)) == 2 * 52
  assert any(op.type == 'RandomUniform' for op in graph.get_operations())  # dropout is active


def test_eval_mode_has_no_updates(graph):
  images = tf.placeholder(tf.float32, [2, 64, 64, 3])
  with slim.arg_scope(mobilenet_v2.training_scope(is_training=False)):
    mobilenet_v2.mobilenet(images, num_classes=5, depth_multiplier=0.5)
  assert not tf.get_collection(tf.GraphKeys.UPDATE_OPS)


def test_reuse_shares_variables(graph):
  images = tf.placeholder(tf.float32, [1, 64, 64, 3])
  mobilenet_v2.mobilenet(images, num_classes=5, depth_multiplier=0.35)
  count = len(tf.global_variables())
  mobilenet_v2.mobilenet(images, num_classes=5, depth_multiplier=0.35, reuse=True)
  assert len(tf.global_variables()) == count


def test_unknown_spatial_size(graph):
  images = tf.placeholder(tf.float32, [None, None, None, 3])
  logits, end_points = mobilenet_v2.mobilenet(images, num_classes=5, depth_multiplier=0.35)
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    out = sess.run(logits, {images: np.zeros([3, 70, 50, 3], np.float32)})
  assert out.shape == (3, 5)
  assert end_points['global_pool'].get_shape().as_list() == [None, 1, 1, 448]


@pytest.mark.parametrize('kwargs,message', [
    (dict(output_stride=4), 'output_stride'),
    (dict(depth_multiplier=0), 'depth_multiplier'),
    (dict(depth_multiplier=-1.0), 'depth_multiplier'),
    (dict(final_endpoint='layer_20'), 'final_endpoint'),
    (dict(final_endpoint='Logits'), 'final_endpoint'),
])
def test_bad_arguments_raise_clear_errors(graph, kwargs, message):
  images = tf.placeholder(tf.float32, [1, 64, 64, 3])
  with pytest.raises(ValueError, match=message):
    mobilenet_v2.mobilenet_base(images, **kwargs)
  assert not tf.global_variables()


def test_rank_3_input_is_rejected(graph):
  with pytest.raises(ValueError, match='rank 4'):
    mobilenet_v2.mobilenet(tf.placeholder(tf.float32, [64, 64, 3]))


def test_feature_info_rejects_bad_arguments():
  with pytest.raises(ValueError, match='output_stride'):
    mobilenet_v2.feature_info(1.0, output_stride=12)
  with pytest.raises(ValueError, match='depth_multiplier'):
    mobilenet_v2.feature_info(0)


def test_activation_fn_override(graph):
  images = tf.placeholder(tf.float32, [1, 32, 32, 3])
  mobilenet_v2.mobilenet_base(images, depth_multiplier=0.35, activation_fn=tf.nn.relu)
  types = {op.type for op in graph.get_operations()}
  assert 'Relu' in types and 'Relu6' not in types
