"""SSDLite-MobileNetV2 network: the Object Detection API's `ssdlite_mobilenet_v2_coco` feature maps and predictor.

Variables carry the public model's names (`FeatureExtractor/MobilenetV2/...`, `BoxPredictor_N/...`), so
its checkpoint restores with a plain `tf.train.Saver`:

  feature maps   `layer_15/expansion_output` (stride 16), `layer_19` (stride 32), then 4 extra layers
                 `layer_19_1_Conv2d_N_1x1_<d/2>` (1x1) -> `layer_19_2_Conv2d_N_3x3_s2_<d>_depthwise`
                 (3x3 depthwise, stride 2) -> `layer_19_2_Conv2d_N_3x3_s2_<d>` (1x1), d = 512, 256, 256, 128.
  predictor      per map: `BoxPredictor_N/{BoxEncodingPredictor,ClassPredictor}_depthwise` (3x3 depthwise)
                 -> `BoxPredictor_N/{BoxEncodingPredictor,ClassPredictor}` (1x1 with biases, linear).

The head is a function of the backbone's end_points: the caller builds MobileNetV2 (under
`FeatureExtractor/MobilenetV2`, up to `layer_19`, without finegrain mode, as the public extractor; see
`pipelines.tasks.model_builder`) and passes its end_points here. `feature_map_info` describes the six maps
(stride, channels) without a graph, from `nets.mobilenet_spec.feature_info`, so anchors and checks need
no forward pass.

Batch norm and the activation (ReLU6) of the head's layers are set here, as the public config's
`conv_hyperparams` did; weight decay, initializers, batch-norm decay and the training mode come from the
caller's arg_scope (`nets.mobilenet_v2.training_scope`). Extra layers have max(int(d x multiplier),
min_depth) channels (min_depth 16 in the public config, which also builds the backbone with it).

Not here: the backbone, anchors (`heads.core.anchors`), box decoding, losses, post-processing, input
preprocessing.
"""
import tensorflow.compat.v1 as tf
import tf_slim as slim

from heads import scopes
from heads.core import anchors as anchors_lib
from nets import mobilenet_spec

# Variable scope of the public model's backbone + extra layers (`FeatureExtractor/MobilenetV2/...`).
FEATURE_EXTRACTOR_SCOPE = 'FeatureExtractor/' + 'MobilenetV2'
# Backbone endpoints of the first two feature maps (strides 16 and 32).
FEATURE_ENDPOINTS = (mobilenet_spec.LAYER_15_EXPANSION, mobilenet_spec.LAYER_19)
EXTRA_LAYER_DEPTHS = (512, 256, 256, 128)
BOX_CODE_SIZE = 4

# Result keys of `box_predictor` (the Object Detection API's prediction dict keys).
BOX_ENCODINGS = 'box_encodings'
CLASS_PREDICTIONS_WITH_BACKGROUND = 'class_predictions_with_background'

_BOX_SCOPE = 'BoxEncodingPredictor'
_CLASS_SCOPE = 'ClassPredictor'


def _fixed_padding_3x3(net):
  """Pads H and W by 1 so a VALID 3x3 conv has SAME's output size whatever the input parity."""
  return tf.pad(net, [[0, 0], [1, 1], [1, 1], [0, 0]])


def _check_endpoints(end_points, names):
  """Raises ValueError naming the first of `names` missing from `end_points` (a dict keyed by name)."""
  for name in names:
    if name not in end_points:
      raise ValueError('SSDLite needs backbone endpoint %r, which is missing; valid endpoints: %s'
                       % (name, ', '.join(sorted(end_points))))


def extra_feature_maps(end_points, from_layers=FEATURE_ENDPOINTS, layer_depths=EXTRA_LAYER_DEPTHS,
                       depth_multiplier=1.0, min_depth=16, use_explicit_padding=False,
                       activation_fn=tf.nn.relu6, is_training=None):
  """The 6 SSD feature maps: the backbone's `from_layers`, then one stride-2 extra layer per `layer_depths`.

  Builds variables in the current variable scope (FEATURE_EXTRACTOR_SCOPE for the public names).

  Args:
    end_points: dict endpoint name -> float32 [B, h, w, c] tensor, from `mobilenet_v2.mobilenet_base`.
    from_layers: endpoint names of the first maps; the last one names the extra layers ('layer_19_...').
    layer_depths: output depths of the extra layers before the multiplier.
    depth_multiplier: float > 0 applied to the extra layers' depths.
    min_depth: smallest depth of an extra layer.
    use_explicit_padding: pad explicitly + VALID instead of SAME in the strided depthwise convs.
    activation_fn: activation after each batch norm.
    is_training: batch-norm mode; None keeps the arg_scope's.

  Returns:
    list of float32 [B, h_i, w_i, c_i] tensors, strides 16, 32, 64, 128, 256, 512 (>= 0 after ReLU6).

  Raises:
    ValueError: an endpoint of `from_layers` is missing (the message lists the valid ones).
  """
  _check_endpoints(end_points, from_layers)
  maps = [end_points[name] for name in from_layers]
  base = from_layers[-1]

  def depth_fn(depth):
    return extra_layer_depth(depth, depth_multiplier, min_depth)

  with scopes.conv_bn_scope(activation_fn, is_training):
    for index, depth in enumerate(layer_depths, len(from_layers)):
      net = slim.conv2d(maps[-1], depth_fn(depth // 2), 1,
                        scope='%s_1_Conv2d_%d_1x1_%d' % (base, index, depth_fn(depth // 2)))
      name = '%s_2_Conv2d_%d_3x3_s2_%d' % (base, index, depth_fn(depth))
      padding = 'SAME'
      if use_explicit_padding:
        net, padding = _fixed_padding_3x3(net), 'VALID'
      net = slim.separable_conv2d(net, None, 3, depth_multiplier=1, stride=2, padding=padding,
                                  scope=name + '_depthwise')
      maps.append(slim.conv2d(net, depth_fn(depth), 1, scope=name))
  return maps


def extra_layer_depth(depth, depth_multiplier=1.0, min_depth=16):
  """Channels of an extra layer of nominal `depth`: max(int(depth x multiplier), min_depth)."""
  return max(int(depth * depth_multiplier), min_depth)


def feature_map_info(backbone_info, from_layers=FEATURE_ENDPOINTS, layer_depths=EXTRA_LAYER_DEPTHS,
                     depth_multiplier=1.0, min_depth=16):
  """(name, stride, channels) of every SSD feature map, from the backbone's static description alone.

  Args:
    backbone_info: dict endpoint name -> `nets.mobilenet_spec.FeatureInfo` (`feature_info_by_name`) of the
      backbone the maps are built on.
    from_layers, layer_depths, depth_multiplier, min_depth: as `extra_feature_maps`.

  Returns:
    list of FeatureInfo, one per map: the `from_layers` endpoints, then each extra layer at twice the
    previous stride (names as its variable scope, e.g. 'layer_19_2_Conv2d_2_3x3_s2_512').

  Raises:
    ValueError: an endpoint of `from_layers` is not in `backbone_info`.
  """
  _check_endpoints(backbone_info, from_layers)
  maps = [backbone_info[name] for name in from_layers]
  for index, depth in enumerate(layer_depths, len(from_layers)):
    channels = extra_layer_depth(depth, depth_multiplier, min_depth)
    name = '%s_2_Conv2d_%d_3x3_s2_%d' % (from_layers[-1], index, channels)
    maps.append(mobilenet_spec.FeatureInfo(name, maps[-1].stride * 2, channels))
  return maps


def _flatten(prediction, size):
  """[B, h, w, A * size] -> [B, h * w * A, size]: cells row-major, then anchors (the API's order)."""
  shape = prediction.get_shape().as_list()
  if None not in shape[1:]:
    # Static rows keep the anchor count known even when the batch size is not.
    return tf.reshape(prediction, [-1, shape[1] * shape[2] * shape[3] // size, size])
  return tf.reshape(prediction, tf.stack([tf.shape(prediction)[0], -1, size]))


def _predict(net, num_outputs, scope, bias_init):
  net = slim.separable_conv2d(net, None, 3, depth_multiplier=1, scope=scope + '_depthwise')
  return slim.conv2d(net, num_outputs, 1, activation_fn=None, normalizer_fn=None,
                     biases_initializer=tf.constant_initializer(bias_init), scope=scope)


def box_predictor(feature_map_list, num_classes, num_anchors_per_location=None,
                  class_prediction_bias_init=0.0, activation_fn=tf.nn.relu6, is_training=None):
  """SSDLite's convolutional box predictor (`use_depthwise: true`, kernel 3, no extra layers, no dropout).

  Builds `BoxPredictor_<i>` scopes in the current variable scope (top level for the public names).

  Args:
    feature_map_list: list of float32 [B, h_i, w_i, c_i] tensors (from `extra_feature_maps`).
    num_classes: int >= 1, object classes without the background.
    num_anchors_per_location: int per feature map; None = `heads.core.anchors.num_anchors_per_location()`
      (the SSDLite anchor generator's [3, 6, 6, 6, 6, 6]).
    class_prediction_bias_init: initial bias of the class logits; the public SSDLite config uses the
      proto default 0.0 (focal-loss configs use a negative prior such as -4.6).
    activation_fn: activation of the depthwise layers.
    is_training: batch-norm mode; None keeps the arg_scope's.

  Returns:
    dict with BOX_ENCODINGS: float32 [B, A, 4] (unbounded box-coder offsets) and
    CLASS_PREDICTIONS_WITH_BACKGROUND: float32 [B, A, num_classes + 1] logits (column 0 = background),
    A = sum_i h_i * w_i * anchors_i (2034 at 320x320, 1917 at 300x300).

  Raises:
    ValueError: feature maps and anchor counts differ in number, or num_classes < 1.
  """
  if num_anchors_per_location is None:
    num_anchors_per_location = anchors_lib.num_anchors_per_location()
  if len(feature_map_list) != len(num_anchors_per_location):
    raise ValueError('box_predictor got %d feature maps but %d num_anchors_per_location entries'
                     % (len(feature_map_list), len(num_anchors_per_location)))
  if num_classes < 1:
    raise ValueError('num_classes must be >= 1, got %r' % (num_classes,))
  boxes, classes = [], []
  with scopes.conv_bn_scope(activation_fn, is_training):
    for i, (net, num_anchors) in enumerate(zip(feature_map_list, num_anchors_per_location)):
      with tf.variable_scope('BoxPredictor_%d' % i):
        box = _predict(net, num_anchors * BOX_CODE_SIZE, _BOX_SCOPE, 0.0)
        cls = _predict(net, num_anchors * (num_classes + 1), _CLASS_SCOPE, class_prediction_bias_init)
      boxes.append(_flatten(box, BOX_CODE_SIZE))
      classes.append(_flatten(cls, num_classes + 1))
  return {BOX_ENCODINGS: tf.concat(boxes, 1, name='box_encodings'),
          CLASS_PREDICTIONS_WITH_BACKGROUND: tf.concat(classes, 1, name='class_predictions_with_background')}
