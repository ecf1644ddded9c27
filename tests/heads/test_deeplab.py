"""Contract tests of the DeepLabv3-MobileNetV2 network: public names, counts, shapes, decoder and errors."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim

from heads import deeplab
from nets import mobilenet_v2
from nets import profile
from tests.conftest import read_tsv


def _build(size, output_stride=16, is_training=False, batch=1, **kwargs):
  """The public DeepLabv3 model: backbone (multiplier 1.0, up to layer_18, atrous) + the head on its end_points."""
  images = tf.placeholder(tf.float32, [batch, size, size, 3])
  with slim.arg_scope(mobilenet_v2.training_scope(is_training=is_training)):
    _, end_points = mobilenet_v2.mobilenet_base(images, output_stride=output_stride,
                                                final_endpoint=deeplab.FEATURE_ENDPOINT)
    return deeplab.aspp_head(end_points, 21, **kwargs)[deeplab.LOGITS]


def _variables():
  return [(v.op.name, 'x'.join(str(d) for d in v.get_shape().as_list())) for v in tf.global_variables()]


def test_profile_counts_atrous_at_full_cost():
  """nets.profile counts a dilated conv (TF builds it as SpaceToBatchND -> conv) like a regular one."""
  with tf.Graph().as_default() as graph:
    slim.separable_conv2d(tf.zeros([1, 8, 8, 1]), None, 3, depth_multiplier=1, rate=2, normalizer_fn=None)
    assert profile.profile_graph(graph).madds == 8 * 8 * 9


def test_variables_match_public_manifest_and_logits_shape_os16(graph):
  logits = _build(513, batch=2)
  assert _variables() == [tuple(row) for row in read_tsv('manifest_deeplab_full_os16.tsv')]
  assert logits.get_shape().as_list() == [2, 33, 33, 21]
  assert logits.dtype == tf.float32
  assert not tf.get_collection(tf.GraphKeys.UPDATE_OPS)  # eval mode


def test_logits_shape_os8(graph):
  assert _build(513, output_stride=8).get_shape().as_list() == [1, 65, 65, 21]


def test_separable_aspp_and_decoder_names_and_shape(graph):
  logits = _build(65, aspp_rates=(2,), separable_aspp=True, decoder_endpoint=deeplab.DECODER_ENDPOINT)
  # The decoder works at the stride-4 endpoint layer_4/depthwise_output (144 channels): ceil(65 / 4) = 17.
  assert logits.get_shape().as_list() == [1, 17, 17, 21]
  got = [(name, shape) for name, shape in _variables()
         if name.startswith(('aspp1', 'decoder', 'concat_projection/weights')) and 'moving' not in name
         and 'beta' not in name]
  assert got == [
      ('aspp1_depthwise/depthwise_weights', '3x3x320x1'), ('aspp1_depthwise/BatchNorm/gamma', '320'),
      ('aspp1_pointwise/weights', '1x1x320x256'), ('aspp1_pointwise/BatchNorm/gamma', '256'),
      ('concat_projection/weights', '1x1x768x256'),
      ('decoder/feature_projection0/weights', '1x1x144x48'), ('decoder/feature_projection0/BatchNorm/gamma', '48'),
      ('decoder/decoder_conv0_depthwise/depthwise_weights', '3x3x304x1'),
      ('decoder/decoder_conv0_depthwise/BatchNorm/gamma', '304'),
      ('decoder/decoder_conv0_pointwise/weights', '1x1x304x256'),
      ('decoder/decoder_conv0_pointwise/BatchNorm/gamma', '256'),
      ('decoder/decoder_conv1_depthwise/depthwise_weights', '3x3x256x1'),
      ('decoder/decoder_conv1_depthwise/BatchNorm/gamma', '256'),
      ('decoder/decoder_conv1_pointwise/weights', '1x1x256x256'),
      ('decoder/decoder_conv1_pointwise/BatchNorm/gamma', '256')]


@pytest.mark.parametrize('decoder_stride,low_level_channels', [(8, 192), (16, 576)])
def test_decoder_output_stride_and_widths(graph, decoder_stride, low_level_channels):
  """DeepLab's decoder endpoints by stride (layer_7 / layer_14 depthwise outputs), with its
  aspp_convs_filters and decoder_filters as the head's depth and decoder_depth."""
  images = tf.placeholder(tf.float32, [1, 65, 65, 3])
  with slim.arg_scope(mobilenet_v2.training_scope(is_training=False)):
    _, end_points = mobilenet_v2.mobilenet_base(images, output_stride=32, final_endpoint=deeplab.FEATURE_ENDPOINT)
    logits = deeplab.aspp_head(end_points, 21, depth=64, decoder_depth=32,
                               decoder_endpoint=deeplab.DECODER_ENDPOINTS[decoder_stride])[deeplab.LOGITS]
  size = -(-65 // decoder_stride)
  assert logits.get_shape().as_list() == [1, size, size, 21]
  shapes = dict(_variables())
  assert shapes['concat_projection/weights'] == '1x1x128x64'
  assert shapes['decoder/feature_projection0/weights'] == '1x1x%dx48' % low_level_channels
  assert shapes['decoder/decoder_conv0_depthwise/depthwise_weights'] == '3x3x112x1'  # 64 + 48
  assert shapes['decoder/decoder_conv0_pointwise/weights'] == '1x1x112x32'
  assert shapes['decoder/decoder_conv1_pointwise/weights'] == '1x1x32x32'
  assert shapes['logits/semantic/weights'] == '1x1x32x21'


def test_missing_endpoints_list_valid_names(graph):
  features = tf.zeros([1, 4, 4, 8])
  end_points = {'layer_2': features, 'layer_18': features}
  with pytest.raises(ValueError, match=r"'layer_4/depthwise_output'.*valid endpoints: layer_18, layer_2"):
    deeplab.aspp_head(end_points, 21, decoder_endpoint=deeplab.DECODER_ENDPOINT)
  with pytest.raises(ValueError, match=r"'layer_18'.*valid endpoints: layer_2"):
    deeplab.aspp_head({'layer_2': features}, 21)
  with pytest.raises(ValueError, match='no end_points given'):
    deeplab.aspp_head(None, 21)
  with pytest.raises(ValueError, match='num_classes'):
    deeplab.aspp_head(end_points, 0)


def test_training_mode_adds_bn_updates_dropout_and_decay(graph):
  _build(33, is_training=True)
  updates = [op.name for op in tf.get_collection(tf.GraphKeys.UPDATE_OPS)]
  # Backbone to layer_18: 52 BN layers minus Conv_1's; head: image_pooling, aspp0, concat_projection.
  assert len(updates) == 2 * (51 + 3)
  assert any(name.startswith('concat_projection/') for name in updates)
  assert any(op.name.startswith('concat_projection_dropout/') for op in graph.get_operations())
  decayed = ' '.join(t.op.name for t in tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES))
  assert 'logits/semantic/' in decayed and 'aspp0/' in decayed


def test_image_pooling_branch_is_global(graph):
  # With all-equal features every branch is spatially constant, so logits are too; a non-global pooling
  # or a misaligned resize would break that at the borders.
  features = tf.placeholder(tf.float32, [1, 5, 7, 8])
  logits = deeplab.aspp_head({deeplab.FEATURE_ENDPOINT: features}, 3, is_training=False)[deeplab.LOGITS]
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    out = sess.run(logits, {features: np.full([1, 5, 7, 8], 0.7)})
  assert out.shape == (1, 5, 7, 3)
  np.testing.assert_allclose(out, np.broadcast_to(out[:, :1, :1], out.shape), rtol=1e-5, atol=1e-6)


def test_upsample_logits_aligns_corners(graph):
  logits = tf.constant(np.array([[0., 1.], [2., 3.]], np.float32).reshape([1, 2, 2, 1]))
  static = deeplab.upsample_logits(logits, [3, 3])
  dynamic = deeplab.upsample_logits(logits, tf.constant([3, 3]))
  assert static.get_shape().as_list() == [1, 3, 3, 1]
  expected = np.array([[0., .5, 1.], [1., 1.5, 2.], [2., 2.5, 3.]]).reshape([1, 3, 3, 1])
  with tf.Session() as sess:
    for tensor in (static, dynamic):
      np.testing.assert_allclose(sess.run(tensor), expected, atol=1e-6)
