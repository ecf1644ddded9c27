"""DeepLabv3 head on MobileNetV2 endpoints: tensorflow/models research/deeplab's ASPP, decoder and logits.

Variable names are the public checkpoints' (`MobilenetV2/...`, `image_pooling`, `aspp0`, `aspp1..`,
`concat_projection`, `decoder/feature_projection0`, `decoder/decoder_conv{0,1}_{depthwise,pointwise}`,
`logits/semantic`), so e.g. `deeplabv3_mnv2_pascal_train_aug` restores with a plain `tf.train.Saver`.

ASPP branches, in concat order: image pooling (global average -> 1x1 conv -> bilinear resize back),
`aspp0` (1x1 conv), `aspp<i>` (3x3 atrous conv per rate; none in the MobileNetV2 setting), then
`concat_projection` (1x1 conv) and dropout. Every conv but the logits has batch norm + ReLU (DeepLab's
activation, not ReLU6), set here; weight decay, batch-norm decay/epsilon (DeepLab: 0.9997 / 1e-5) and
the training mode come from the caller's arg_scope.

The head is a function of the backbone's end_points: the caller builds MobileNetV2 under `MobilenetV2`
up to `layer_18`, atrous past the output stride, with DeepLab's channel rounding (min_depth and
divisible_by 8 at multiplier 1.0, 1 otherwise; see `pipelines.tasks.model_builder`).

Not here: the backbone, losses, label handling, input preprocessing and cropping, multi-scale inference,
the dense-prediction cell, squeeze-and-excitation ASPP.
"""
import tensorflow.compat.v1 as tf
import tf_slim as slim

from heads import scopes
from nets import mobilenet_spec

# DeepLab's MobileNetV2 taps: the features (stride = output stride, 320 ch at 1.0) and the decoder's
# low-level features, by decoder output stride (its `networks_to_feature_maps`; 4 is DeepLabv3+'s).
FEATURE_ENDPOINT = mobilenet_spec.LAYER_18
DECODER_ENDPOINTS = {4: mobilenet_spec.LAYER_4_DEPTHWISE, 8: mobilenet_spec.LAYER_7_DEPTHWISE,
                     16: mobilenet_spec.LAYER_14_DEPTHWISE}
DECODER_ENDPOINT = DECODER_ENDPOINTS[4]
# Result key of `aspp_head`.
LOGITS = 'logits'

IMAGE_POOLING_SCOPE = 'image_pooling'
ASPP_SCOPE = 'aspp'
CONCAT_PROJECTION_SCOPE = 'concat_projection'
DECODER_SCOPE = 'decoder'
LOGITS_SCOPE = 'logits'
SEMANTIC_SCOPE = 'semantic'
DECODER_PROJECTION_DEPTH = 48
# DeepLab's initializers of its own layers (split separable convs and logits).
_DEPTHWISE_STDDEV = 0.33
_POINTWISE_STDDEV = 0.06
_LOGITS_STDDEV = 0.01


def _resize_bilinear(net, size):
  """Bilinear resize with align_corners=True (DeepLab's), keeping static sizes when known."""
  resized = tf.image.resize_bilinear(net, size, align_corners=True)
  static = [s if isinstance(s, int) else None for s in size]
  resized.set_shape([None] + static + [None])
  return tf.cast(resized, net.dtype)


def _spatial_size(net):
  height, width = net.get_shape().as_list()[1:3]
  dynamic = tf.shape(net)
  return [height if height is not None else dynamic[1], width if width is not None else dynamic[2]]


def split_separable_conv2d(net, depth, rate=1, scope=None):
  """DeepLab's separable conv: 3x3 depthwise (`<scope>_depthwise`, no decay) + 1x1 (`<scope>_pointwise`).

  Args:
    net: float32 [B, h, w, c].
    depth: output channels.
    rate: atrous rate of the depthwise conv.
    scope: name prefix of the two layers.

  Returns:
    float32 [B, h, w, depth].
  """
  net = slim.separable_conv2d(net, None, 3, depth_multiplier=1, rate=rate, weights_regularizer=None,
                              weights_initializer=tf.truncated_normal_initializer(stddev=_DEPTHWISE_STDDEV),
                              scope=scope + '_depthwise')
  return slim.conv2d(net, depth, 1, weights_initializer=tf.truncated_normal_initializer(stddev=_POINTWISE_STDDEV),
                     scope=scope + '_pointwise')


def _aspp(net, depth=256, aspp_rates=None, image_pooling=True, separable=False, dropout_keep_prob=0.9,
         is_training=None):
  """Atrous spatial pyramid pooling, projected to `depth` channels, then dropout.

  Args:
    net: float32 [B, h, w, c] backbone features.
    depth: channels of every branch and of the projection.
    aspp_rates: atrous rates of the 3x3 branches `aspp1..`; None or () = no atrous branch (MobileNetV2).
    image_pooling: add the global-average-pooling branch.
    separable: 3x3 branches as `split_separable_conv2d` instead of regular convs.
    dropout_keep_prob: keep probability of the dropout after the projection.
    is_training: dropout mode; None keeps the arg_scope's.

  Returns:
    float32 [B, h, w, depth], >= 0.
  """
  branches = []
  if image_pooling:
    size = _spatial_size(net)
    pooled = tf.reduce_mean(net, [1, 2], keepdims=True)
    pooled = slim.conv2d(pooled, depth, 1, scope=IMAGE_POOLING_SCOPE)
    branches.append(_resize_bilinear(pooled, size))
  branches.append(slim.conv2d(net, depth, 1, scope=ASPP_SCOPE + '0'))
  for i, rate in enumerate(aspp_rates or (), 1):
    scope = ASPP_SCOPE + str(i)
    if separable:
      branches.append(split_separable_conv2d(net, depth, rate=rate, scope=scope))
    else:
      branches.append(slim.conv2d(net, depth, 3, rate=rate, scope=scope))
  net = slim.conv2d(tf.concat(branches, 3), depth, 1, scope=CONCAT_PROJECTION_SCOPE)
  dropout_args = {} if is_training is None else {'is_training': is_training}
  return slim.dropout(net, keep_prob=dropout_keep_prob, scope=CONCAT_PROJECTION_SCOPE + '_dropout',
                      **dropout_args)


def _check_endpoint(end_points, name):
  if end_points is None or name not in end_points:
    valid = ', '.join(sorted(end_points)) if end_points else '(no end_points given)'
    raise ValueError('DeepLab needs backbone endpoint %r, which is missing; valid endpoints: %s'
                     % (name, valid))


def _decoder(net, end_points, decoder_endpoint=DECODER_ENDPOINT, depth=256):
  """DeepLabv3+ decoder: upsample to the low-level endpoint, concat its 48-channel projection, 2 separable convs.

  Args:
    net: float32 [B, h, w, c] ASPP output.
    end_points: dict endpoint name -> tensor of the backbone.
    decoder_endpoint: low-level endpoint name (`layer_4/depthwise_output`, stride 4, for MobileNetV2; see
      DECODER_ENDPOINTS).
    depth: channels of the decoder convs (DeepLab's `decoder_filters`, 256).

  Returns:
    float32 [B, h_low, w_low, depth], >= 0, at the low-level endpoint's resolution.

  Raises:
    ValueError: `decoder_endpoint` is not in `end_points` (the message lists the valid ones).
  """
  _check_endpoint(end_points, decoder_endpoint)
  low_level = end_points[decoder_endpoint]
  with tf.variable_scope(DECODER_SCOPE, DECODER_SCOPE, [net, low_level]):
    size = _spatial_size(low_level)
    projection = slim.conv2d(low_level, DECODER_PROJECTION_DEPTH, 1, scope='feature_projection0')
    net = tf.concat([_resize_bilinear(net, size), _resize_bilinear(projection, size)], 3)
    net = split_separable_conv2d(net, depth, scope='decoder_conv0')
    return split_separable_conv2d(net, depth, scope='decoder_conv1')


def semantic_logits(net, num_classes):
  """`logits/semantic`: 1x1 conv with biases, no batch norm, no activation.

  Args:
    net: float32 [B, h, w, c].
    num_classes: int >= 1.

  Returns:
    float32 [B, h, w, num_classes] unnormalized logits.
  """
  with tf.variable_scope(LOGITS_SCOPE, LOGITS_SCOPE, [net]):
    return slim.conv2d(net, num_classes, 1, activation_fn=None, normalizer_fn=None,
                       weights_initializer=tf.truncated_normal_initializer(stddev=_LOGITS_STDDEV),
                       biases_initializer=tf.zeros_initializer(), scope=SEMANTIC_SCOPE)


def aspp_head(end_points, num_classes, aspp_rates=None, image_pooling=True, depth=256, dropout_keep_prob=0.9,
              is_training=None, decoder_endpoint=None, separable_aspp=False, feature_endpoint=FEATURE_ENDPOINT,
              decoder_depth=256):
  """ASPP (+ optional decoder) + logits on the backbone's end_points: DeepLab's `multi_scale_logits` at one scale.

  Args:
    end_points: dict endpoint name -> float32 [B, h, w, c] backbone tensors.
    num_classes: int >= 1 (21 for PASCAL VOC).
    aspp_rates, image_pooling, depth, dropout_keep_prob, separable_aspp: see `_aspp` (`depth` is DeepLab's
      `aspp_convs_filters`).
    is_training: batch-norm and dropout mode; None keeps the arg_scope's.
    decoder_endpoint: None (DeepLabv3) or a low-level endpoint name such as DECODER_ENDPOINT (v3+).
    decoder_depth: channels of the decoder's two separable convs (DeepLab's `decoder_filters`).
    feature_endpoint: the endpoint ASPP runs on (FEATURE_ENDPOINT, `layer_18`, for MobileNetV2).

  Returns:
    dict with LOGITS: float32 [B, h, w, num_classes] at the feature endpoint's resolution (or the decoder
    endpoint's).

  Raises:
    ValueError: num_classes < 1, or an endpoint is missing (the message lists the valid ones).
  """
  if num_classes < 1:
    raise ValueError('num_classes must be >= 1, got %r' % (num_classes,))
  _check_endpoint(end_points, feature_endpoint)
  if decoder_endpoint is not None:
    _check_endpoint(end_points, decoder_endpoint)
  with scopes.conv_bn_scope(tf.nn.relu, is_training):
    net = _aspp(end_points[feature_endpoint], depth, aspp_rates, image_pooling, separable_aspp, dropout_keep_prob,
                is_training)
    if decoder_endpoint is not None:
      net = _decoder(net, end_points, decoder_endpoint, decoder_depth)
    return {LOGITS: semantic_logits(net, num_classes)}


def upsample_logits(logits, size):
  """Bilinear upsampling of logits to the label size (align_corners=True, as DeepLab).

  Args:
    logits: float32 [B, h, w, C].
    size: [height, width] ints or an int32 [2] tensor.

  Returns:
    float32 [B, height, width, C].
  """
  if isinstance(size, (list, tuple)):
    return _resize_bilinear(logits, list(size))
  return tf.cast(tf.image.resize_bilinear(logits, size, align_corners=True), logits.dtype)
