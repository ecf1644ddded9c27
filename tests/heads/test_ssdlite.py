"""Contract tests of the SSDLite-MobileNetV2 network: public names, counts, output layout and errors."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim

from heads import ssdlite
from nets import mobilenet_spec
from nets import mobilenet_v2
from tests.conftest import read_tsv


def _build(size, num_classes=90, batch=1, is_training=False, depth_multiplier=1.0, use_explicit_padding=False):
  """The public SSDLite model: backbone (min_depth 16, up to layer_19) and the head on its end_points."""
  images = tf.placeholder(tf.float32, [batch, size, size, 3])
  with slim.arg_scope(mobilenet_v2.training_scope(is_training=is_training)):
    with tf.variable_scope(ssdlite.FEATURE_EXTRACTOR_SCOPE) as scope:
      _, end_points = mobilenet_v2.mobilenet_base(
          images, depth_multiplier=depth_multiplier, min_depth=16, final_endpoint=mobilenet_spec.LAYER_19,
          use_explicit_padding=use_explicit_padding, scope=scope)
      maps = ssdlite.extra_feature_maps(end_points, depth_multiplier=depth_multiplier, min_depth=16,
                                        use_explicit_padding=use_explicit_padding)
    return images, maps, ssdlite.box_predictor(maps, num_classes)


def _check_shapes(maps, out, batch, grids, num_anchors, num_classes):
  assert [m.get_shape().as_list() for m in maps] == [
      [batch, g, g, c] for g, c in zip(grids, [576, 1280, 512, 256, 256, 128])]
  assert out[ssdlite.BOX_ENCODINGS].get_shape().as_list() == [batch, num_anchors, 4]
  assert out[ssdlite.CLASS_PREDICTIONS_WITH_BACKGROUND].get_shape().as_list() == [
      batch, num_anchors, num_classes + 1]
  assert out[ssdlite.BOX_ENCODINGS].dtype == tf.float32


def test_variables_match_public_manifest_and_shapes_at_320(graph):
  _, maps, out = _build(320, batch=2)
  got = [(v.op.name, 'x'.join(str(d) for d in v.get_shape().as_list())) for v in tf.global_variables()]
  assert got == [tuple(row) for row in read_tsv('manifest_ssdlite.tsv')]
  _check_shapes(maps, out, 2, [20, 10, 5, 3, 2, 1], 2034, 90)
  assert not tf.get_collection(tf.GraphKeys.UPDATE_OPS)  # eval mode


@pytest.mark.parametrize('size,depth_multiplier', [(320, 1.0), (300, 1.0), (64, 0.5), (96, 0.35)])
def test_feature_map_info_equals_built_maps(graph, size, depth_multiplier):
  _, maps, _ = _build(size, depth_multiplier=depth_multiplier)
  info = ssdlite.feature_map_info(mobilenet_spec.feature_info_by_name(depth_multiplier=depth_multiplier, min_depth=16),
                                  depth_multiplier=depth_multiplier)
  assert [i.stride for i in info] == [16, 32, 64, 128, 256, 512]
  assert [m.get_shape().as_list()[1:] for m in maps] == [[-(-size // i.stride)] * 2 + [i.channels] for i in info]
  assert info[2].name == 'layer_19_2_Conv2d_2_3x3_s2_%d' % info[2].channels
  with pytest.raises(ValueError, match='layer_15/expansion_output'):
    ssdlite.feature_map_info({})


def test_output_shapes_at_300_with_unknown_batch(graph):
  _, maps, out = _build(300, num_classes=3, batch=None)
  _check_shapes(maps, out, None, [19, 10, 5, 3, 2, 1], 1917, 3)


def test_predictions_are_ordered_cells_then_anchors(graph):
  images, _, out = _build(64, num_classes=2)
  raw_box = graph.get_tensor_by_name('BoxPredictor_0/BoxEncodingPredictor/BiasAdd:0')
  raw_cls = graph.get_tensor_by_name('BoxPredictor_1/ClassPredictor/BiasAdd:0')
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    feed = {images: np.random.RandomState(0).uniform(-1, 1, [1, 64, 64, 3])}
    box, cls, raw_box, raw_cls = sess.run(
        [out[ssdlite.BOX_ENCODINGS], out[ssdlite.CLASS_PREDICTIONS_WITH_BACKGROUND], raw_box, raw_cls], feed)
  # Map 0 is 4x4 with 3 anchors: anchor a of cell (y, x) is row (y * 4 + x) * 3 + a, code k is channel a*4+k.
  assert box.shape == (1, 4 * 4 * 3 + 2 * 2 * 6 + 4 * 6, 4)
  np.testing.assert_array_equal(box[0, (2 * 4 + 1) * 3 + 2], raw_box[0, 2, 1, 8:12])
  # Map 1 (2x2, 6 anchors) starts after map 0's 48 rows; 3 columns per anchor.
  np.testing.assert_array_equal(cls[0, 48 + (1 * 2 + 0) * 6 + 5], raw_cls[0, 1, 0, 15:18])


def test_class_bias_init(graph):
  maps = [tf.zeros([1, 2, 2, 8])]
  ssdlite.box_predictor(maps, 4, num_anchors_per_location=[2], class_prediction_bias_init=-4.6)
  biases = {v.op.name: v for v in tf.global_variables() if v.op.name.endswith('biases')}
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    np.testing.assert_allclose(sess.run(biases['BoxPredictor_0/ClassPredictor/biases']), np.full(10, -4.6),
                               rtol=1e-6)
    np.testing.assert_array_equal(sess.run(biases['BoxPredictor_0/BoxEncodingPredictor/biases']), np.zeros(8))


def test_missing_endpoint_lists_valid_names(graph):
  end_points = {'layer_19': tf.zeros([1, 2, 2, 8]), 'layer_14': tf.zeros([1, 4, 4, 8])}
  with pytest.raises(ValueError, match=r"'layer_15/expansion_output'.*valid endpoints: layer_14, layer_19"):
    ssdlite.extra_feature_maps(end_points)


def test_mismatched_anchor_counts_raise(graph):
  with pytest.raises(ValueError, match='2 feature maps but 6 num_anchors_per_location'):
    ssdlite.box_predictor([tf.zeros([1, 2, 2, 8])] * 2, 3)
  with pytest.raises(ValueError, match='num_classes'):
    ssdlite.box_predictor([tf.zeros([1, 2, 2, 8])], 0, num_anchors_per_location=[1])


def test_training_mode_adds_bn_updates_and_weight_decay(graph):
  _build(64, num_classes=2, is_training=True)
  updates = [op.name for op in tf.get_collection(tf.GraphKeys.UPDATE_OPS)]
  # 52 backbone BN layers (2 moving averages each, like the backbone's test) + 4 extra layers x 3 BN layers
  # + 6 maps x 2 depthwise predictors.
  assert len(updates) == 2 * (52 + 4 * 3 + 6 * 2)
  assert any(name.startswith('BoxPredictor_5/ClassPredictor_depthwise/') for name in updates)
  assert any(name.startswith('FeatureExtractor/MobilenetV2/layer_19_2_Conv2d_5_3x3_s2_128/') for name in updates)
  decayed = ' '.join(t.op.name for t in tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES))
  assert 'BoxPredictor_0/ClassPredictor/kernel/' in decayed
  assert 'layer_19_1_Conv2d_2_1x1_256/kernel/' in decayed


def test_half_width_follows_public_extractor(graph):
  _, maps, _ = _build(64, num_classes=2, depth_multiplier=0.5, use_explicit_padding=True)
  # No finegrain mode: Conv_1 is 1280 * 0.5; extra layers max(int(d * 0.5), 16).
  assert [m.get_shape().as_list()[3] for m in maps] == [288, 640, 256, 128, 128, 64]
  names = {v.op.name for v in tf.global_variables()}
  assert 'FeatureExtractor/MobilenetV2/layer_19_1_Conv2d_5_1x1_32/weights' in names
