"""MobileNetV2 (Sandler et al., 2018) with TF-Slim's public API, variable names and endpoints.

A drop-in replacement for TF-Slim's `nets/mobilenet/mobilenet_v2.py`: `mobilenet`, `mobilenet_base` and
`training_scope` take the same arguments, and the variables carry the names of the public ImageNet
checkpoints (`mobilenet_v2_1.0_224.ckpt` and siblings), so they restore with a plain `tf.train.Saver`.
The architecture is data (`nets.mobilenet_spec.V2_SPEC`); `_build_base` is the one loop that builds it.

Endpoint <-> variable scope table (scopes under `MobilenetV2/`):

  layer_1            Conv                 3x3 conv, stride 2
  layer_2            expanded_conv        expansion 1 (no `expand` conv, no expansion_output)
  layer_3 .. 18      expanded_conv_1..16  inverted residual: expand / depthwise / project
  layer_19           Conv_1               1x1 conv to 1280 (x multiplier unless finegrain)
  global_pool, Logits, Predictions        Logits/AvgPool, Logits/Conv2d_1c_1x1, softmax

Per inverted-residual block: `layer_N/expansion_output`, `layer_N/depthwise_output`, `layer_N/output`.

Not here: losses, input preprocessing, other MobileNet versions. `conv_defs` takes this module's own
spec (a list of `nets.mobilenet_spec.LayerSpec`), not TF-Slim's op objects.
"""
import contextlib

import tensorflow.compat.v1 as tf
import tf_slim as slim

from nets import compat  # noqa: F401  (tf-slim batch_norm shim for TF 2.15)
from nets import mobilenet_spec as spec_lib
from nets.mobilenet_spec import feature_info  # noqa: F401  (public API)

DEFAULT_SCOPE = 'MobilenetV2'
# Widths of the public TF-Slim checkpoints.
DEPTH_MULTIPLIERS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
_FINAL_ENDPOINTS_HINT = 'layer_1 .. layer_%d'


def _fixed_padding(inputs, kernel_size, rate=1):
  """Pads H and W so a VALID conv matches SAME's output size independently of the input's parity.

  `use_explicit_padding` exists for exporters (e.g. TFLite) that need padding that does not depend on
  the input size; the split of the padding is TF-Slim's, so the numbers match its checkpoints.
  """
  effective = kernel_size + (kernel_size - 1) * (rate - 1)
  pad_total = effective - 1
  pad_beg = pad_total // 2
  return tf.pad(inputs, [[0, 0], [pad_beg, pad_total - pad_beg], [pad_beg, pad_total - pad_beg], [0, 0]])


def _conv(net, num_outputs, kernel_size, stride, rate, scope, explicit_padding):
  padding = 'SAME'
  if explicit_padding and kernel_size > 1:
    net, padding = _fixed_padding(net, kernel_size, rate), 'VALID'
  return slim.conv2d(net, num_outputs, kernel_size, stride=stride, rate=rate, padding=padding, scope=scope)


def _inverted_residual(net, plan_entry, scope, explicit_padding, end_points, prefix):
  """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection [+ identity shortcut]."""
  layer, out_ch, inner, stride, rate, _ = plan_entry
  input_tensor = net
  in_ch = net.get_shape().as_list()[3]
  with tf.variable_scope(scope):
    if spec_lib.has_expansion(inner, in_ch):
      net = slim.conv2d(net, inner, 1, scope='expand')
      end_points[prefix + spec_lib.EXPANSION_OUTPUT] = net = tf.identity(net, name=spec_lib.EXPANSION_OUTPUT)
    padding = 'SAME'
    if explicit_padding:
      net, padding = _fixed_padding(net, layer.kernel_size, rate), 'VALID'
    net = slim.separable_conv2d(net, None, layer.kernel_size, depth_multiplier=1, stride=stride, rate=rate,
                                padding=padding, scope='depthwise')
    end_points[prefix + spec_lib.DEPTHWISE_OUTPUT] = net = tf.identity(net, name=spec_lib.DEPTHWISE_OUTPUT)
    # Linear bottleneck (paper section 3.2): no activation after the projection.
    net = slim.conv2d(net, out_ch, 1, activation_fn=None, scope='project')
    if stride == 1 and in_ch == out_ch:
      net += input_tensor
    net = tf.identity(net, name=spec_lib.OUTPUT)
    end_points[prefix + spec_lib.OUTPUT] = net
  return net


def _scope_name(kind, counters):
  """TF-Slim's default scope names: Conv, Conv_1, expanded_conv, expanded_conv_1, ..."""
  base = 'Conv' if kind == spec_lib.CONV else 'expanded_conv'
  count = counters.get(kind, 0)
  counters[kind] = count + 1
  return base if count == 0 else '%s_%d' % (base, count)


def _build_base(net, plan, final_endpoint, explicit_padding):
  """The build loop: one spec entry -> one layer, recording endpoints as it goes."""
  end_points, counters = {}, {}
  for i, entry in enumerate(plan):
    layer, out_ch, _, stride, rate, _ = entry
    name = spec_lib.layer_name(i)
    scope = _scope_name(layer.kind, counters)
    if layer.kind == spec_lib.CONV:
      net = _conv(net, out_ch, layer.kernel_size, stride, rate, scope, explicit_padding)
    else:
      net = _inverted_residual(net, entry, scope, explicit_padding, end_points, name + '/')
    end_points[name] = net
    if name == final_endpoint:
      break
  return net, end_points


@contextlib.contextmanager
def _arch_scope(activation_fn, normalizer_fn=None):
  """Inference-graph defaults of the architecture (TF-Slim's V2_DEF `defaults`).

  `normalizer_fn` replaces slim.batch_norm after every conv (e.g. a cross-replica batch norm with the same
  signature and arg_scope entry); None = slim.batch_norm.
  """
  conv_args = {'normalizer_fn': normalizer_fn or slim.batch_norm, 'activation_fn': activation_fn or tf.nn.relu6}
  with slim.arg_scope([slim.conv2d, slim.fully_connected, slim.separable_conv2d], **conv_args), \
      slim.arg_scope([slim.batch_norm], center=True, scale=True):
    yield


def _check_input(input_tensor):
  shape = input_tensor.get_shape()
  if shape.ndims != 4:
    raise ValueError('Expected rank 4 input [batch, height, width, 3], was: %s' % (shape,))


def _base_network(input_tensor, depth_multiplier, conv_defs, finegrain_classification_mode, min_depth,
                  divisible_by, options):
  """Checks arguments, then builds the base inside the current variable scope."""
  spec = spec_lib.resolve_spec(conv_defs, depth_multiplier, finegrain_classification_mode)
  final_endpoint = options.get('final_endpoint')
  valid = [spec_lib.layer_name(i) for i in range(len(spec))]
  if final_endpoint is not None and final_endpoint not in valid:
    raise ValueError('Unknown final_endpoint %r; valid: %s' % (
        final_endpoint, _FINAL_ENDPOINTS_HINT % len(spec)))
  plan = spec_lib.layer_plan(spec, depth_multiplier, options.get('output_stride'), min_depth, divisible_by)
  _check_input(input_tensor)
  with _arch_scope(options.get('activation_fn'), options.get('normalizer_fn')), \
      slim.arg_scope([slim.batch_norm], is_training=options.get('is_training', False)):
    return _build_base(input_tensor, plan, final_endpoint, options.get('use_explicit_padding', False))


@slim.add_arg_scope
def _mobilenet(input_tensor, num_classes, depth_multiplier, scope, conv_defs, finegrain_classification_mode,
               min_depth, divisible_by, activation_fn, is_training=False, reuse=None, prediction_fn=slim.softmax,
               base_only=False, output_stride=None, final_endpoint=None, use_explicit_padding=False,
               normalizer_fn=None):
  options = dict(activation_fn=activation_fn, is_training=is_training, output_stride=output_stride,
                 final_endpoint=final_endpoint, use_explicit_padding=use_explicit_padding,
                 normalizer_fn=normalizer_fn)
  with tf.variable_scope(scope, DEFAULT_SCOPE, [input_tensor], reuse=reuse):
    input_tensor = tf.identity(input_tensor, name='input')
    net, end_points = _base_network(input_tensor, depth_multiplier, conv_defs, finegrain_classification_mode,
                                    min_depth, divisible_by, options)
    if base_only:
      return net, end_points
    net = tf.identity(net, name='embedding')
    return classifier(net, num_classes, is_training, end_points, prediction_fn)


def classifier(net, num_classes, is_training, end_points, prediction_fn=slim.softmax):
  """TF-Slim's classifier: global average pool, dropout, 1x1 conv logits (scope `Logits/Conv2d_1c_1x1`).

  Call inside the backbone's variable scope so the names match the public checkpoints.

  Args:
    net: float32 [B, H, W, C] features (normally `layer_19`).
    num_classes: logits size; falsy returns the pooled features.
    is_training: bool, dropout mode (its keep probability comes from `training_scope`).
    end_points: dict updated in place with `global_pool`, `Logits` and `Predictions`.
    prediction_fn: logits -> probabilities, or None.

  Returns:
    (logits float32 [B, num_classes] or pooled float32 [B, 1, 1, C], end_points).
  """
  with tf.variable_scope('Logits'):
    net = _global_pool(net)
    end_points[spec_lib.GLOBAL_POOL] = net
    if not num_classes:
      return net, end_points
    net = slim.dropout(net, scope='Dropout', is_training=is_training)
    logits = slim.conv2d(net, num_classes, [1, 1], activation_fn=None, normalizer_fn=None,
                         biases_initializer=tf.zeros_initializer(), scope='Conv2d_1c_1x1')
    logits = tf.identity(tf.squeeze(logits, [1, 2]), name='output')
  end_points[spec_lib.LOGITS] = logits
  if prediction_fn:
    end_points[spec_lib.PREDICTIONS] = prediction_fn(logits, scope=spec_lib.PREDICTIONS)
  return logits, end_points


def _global_pool(net):
  """Average pool over H and W, keeping dims ([B, 1, 1, C]); works for unknown spatial sizes too."""
  height, width = net.get_shape().as_list()[1:3]
  if height is None or width is None:
    return tf.reduce_mean(net, [1, 2], keepdims=True, name='AvgPool')
  return slim.avg_pool2d(net, [height, width], stride=1, padding='VALID', scope='AvgPool')


def mobilenet(input_tensor, num_classes=1001, depth_multiplier=1.0, scope=DEFAULT_SCOPE, conv_defs=None,
              finegrain_classification_mode=False, min_depth=None, divisible_by=None, activation_fn=None,
              **kwargs):
  """MobileNetV2 classifier, TF-Slim's signature.

  Args:
    input_tensor: float32 [B, H, W, 3], scaled to [-1, 1]; any H, W.
    num_classes: logits size (1001 = ImageNet + background); 0 or None returns the pooled features.
    depth_multiplier: width multiplier > 0 (public checkpoints: 0.35, 0.5, 0.75, 1.0, 1.3, 1.4).
    scope: variable scope, 'MobilenetV2' for the public checkpoints.
    conv_defs: list of `LayerSpec`, default `nets.mobilenet_spec.V2_SPEC`.
    finegrain_classification_mode: keep the last layer at 1280 channels when depth_multiplier < 1.
    min_depth, divisible_by: channel rounding (defaults 8 and 8).
    activation_fn: replaces ReLU6 in every conv.
    **kwargs: is_training (default False, or set by `training_scope`), reuse, prediction_fn, base_only,
      output_stride (8/16/32), final_endpoint ('layer_N'), use_explicit_padding, normalizer_fn (the batch
      norm after every conv, default slim.batch_norm; e.g. `pipelines.training.sync_batch_norm.sync_batch_norm`).

  Returns:
    logits: float32 [B, num_classes] (or pooled features [B, 1, 1, C] when num_classes is falsy).
    end_points: dict endpoint name -> tensor (see module docstring).
  """
  return _mobilenet(input_tensor, num_classes, depth_multiplier, scope, conv_defs, finegrain_classification_mode,
                    min_depth, divisible_by, activation_fn, **kwargs)


def mobilenet_base(input_tensor, depth_multiplier=1.0, **kwargs):
  """The feature extractor without the classifier: (last endpoint tensor, end_points).

  Takes `mobilenet`'s arguments; typical ones are `output_stride` (8, 16 or 32 via atrous convolution),
  `final_endpoint` (e.g. 'layer_18' for DeepLab) and `use_explicit_padding`.
  """
  return mobilenet(input_tensor, depth_multiplier=depth_multiplier, base_only=True, **kwargs)


def training_scope(is_training=True, weight_decay=0.00004, stddev=0.09, dropout_keep_prob=0.8, bn_decay=0.997):
  """arg_scope with the paper's training defaults (TF-Slim's `training_scope`).

  Args:
    is_training: batch norm and dropout mode; None leaves whatever an outer scope set.
    weight_decay: L2 on conv and fully-connected weights; depthwise weights are not regularized (as
      TF-Slim and the paper: they have few parameters and decaying them hurts).
    stddev: truncated-normal init stddev; < 0 uses Xavier.
    dropout_keep_prob: keep probability of the classifier dropout.
    bn_decay: batch-norm moving-average decay.

  Returns:
    An arg_scope dict, used as TF-Slim's: `with slim.arg_scope(training_scope()): ...`.
  """
  if stddev < 0:
    initializer = slim.initializers.xavier_initializer()
  else:
    initializer = tf.truncated_normal_initializer(stddev=stddev)
  mode = {} if is_training is None else {'is_training': is_training}
  with slim.arg_scope([_mobilenet], **mode), \
      slim.arg_scope([slim.conv2d, slim.fully_connected, slim.separable_conv2d], weights_initializer=initializer), \
      slim.arg_scope([slim.batch_norm], decay=bn_decay, **mode), \
      slim.arg_scope([slim.dropout], keep_prob=dropout_keep_prob, **mode), \
      slim.arg_scope([slim.conv2d], weights_regularizer=slim.l2_regularizer(weight_decay)), \
      slim.arg_scope([slim.separable_conv2d], weights_regularizer=None) as scope:
    return scope
