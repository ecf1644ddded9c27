"""The fake quantizers of quantization-aware training and their range variables (`pipelines.training.quantization`
places them): weights with their last range, activations with a moving average of the batch ranges, the model
input with a fixed [-1, 1] range; each bypassed before the rewrite's `delay` while training.

`context` is the rewrite's state: `options` (`pipelines.config.QuantizationConfig`), `is_training`, and
`quantize_now()` (a bool tensor, or None when quantization is always on).
"""
import tensorflow.compat.v1 as tf

RANGES_COLLECTION = 'quantization_ranges'


def make_range_variables(scope, channels=None):
  """`<scope>/min` and `<scope>/max`, 0 until first set (scalars, or [channels] per channel), shared by every
  pass of a layer (a re-used backbone), outside the weight average, saved in the checkpoint."""
  made = []
  with tf.variable_scope(tf.VariableScope(tf.AUTO_REUSE, name=''), auxiliary_name_scope=False):
    with tf.variable_scope(scope, reuse=tf.AUTO_REUSE, auxiliary_name_scope=False):
      for name in ('min', 'max'):
        made.append(tf.get_variable(
            name, [] if channels is None else [channels], tf.float32, initializer=tf.zeros_initializer(),
            trainable=False, aggregation=tf.VariableAggregation.MEAN,  # a mirrored strategy assigns them per replica
            collections=[tf.GraphKeys.GLOBAL_VARIABLES, tf.GraphKeys.MODEL_VARIABLES, RANGES_COLLECTION]))
  return made


def fake_quant(x, lo, hi, bits, narrow_range, per_channel):
  if per_channel:
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(x, lo, hi, num_bits=bits,
                                                                    narrow_range=narrow_range)
  return tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=bits, narrow_range=narrow_range)


def quantize_weights(context, weights, layer_scope, op_scope, depthwise):
  """FQ of (folded) weights, range = their last value (`<layer>/weights_quant/min|max`)."""
  opts = context.options
  per_channel = opts.per_channel
  with tf.name_scope(op_scope + '/weights_quant/'):
    shape = weights.get_shape().as_list()
    flat = weights
    if per_channel and depthwise:  # [h, w, C, m] -> [h, w, C * m]: one range per output channel
      flat = tf.reshape(weights, shape[:2] + [shape[2] * shape[3]])
    channels = flat.get_shape().as_list()[-1] if per_channel else None
    lo_var, hi_var = make_range_variables(layer_scope + '/weights_quant', channels)
    axes = list(range(len(flat.get_shape()) - 1)) if per_channel else None
    if opts.symmetric:
      bound = tf.reduce_max(tf.abs(flat), axis=axes)
      lo_now, hi_now = -bound, bound
    else:
      lo_now = tf.minimum(tf.reduce_min(flat, axis=axes), 0.0)
      hi_now = tf.maximum(tf.reduce_max(flat, axis=axes), 0.0)
    if context.is_training:
      updates = [tf.assign(lo_var, lo_now), tf.assign(hi_var, hi_now)]
      with tf.control_dependencies(updates):
        lo, hi = tf.identity(lo_now), tf.identity(hi_now)
      lo, hi = tf.stop_gradient(lo), tf.stop_gradient(hi)
    else:
      lo, hi = lo_var, hi_var
    # Narrow range [1, 2^bits - 1] for weights, as contrib: TFLite's uint8 kernels need it (TOCO refuses weights
    # that use 0 too often), and it makes a symmetric range's zero exact.
    quantized = fake_quant(flat, lo, hi, opts.weight_bits, True, per_channel)
    if quantized is not flat and per_channel and depthwise:
      quantized = tf.reshape(quantized, shape)
    return delayed(context, quantized, weights)


def quantize_activation(context, x, var_scope, op_scope):
  """FQ of an activation; range = moving average of the batch min / max (`<var_scope>/min|max`)."""
  opts = context.options
  with tf.name_scope(op_scope + '/'):
    lo_var, hi_var = make_range_variables(var_scope)
    if context.is_training:
      lo_now = tf.minimum(tf.reduce_min(x), 0.0)
      hi_now = tf.maximum(tf.reduce_max(x), 0.0)
      fresh = tf.logical_and(tf.equal(lo_var, 0.0), tf.equal(hi_var, 0.0))
      decay = opts.ema_decay
      lo_new = tf.where(fresh, lo_now, lo_var * decay + lo_now * (1.0 - decay))
      hi_new = tf.where(fresh, hi_now, hi_var * decay + hi_now * (1.0 - decay))
      with tf.control_dependencies([tf.assign(lo_var, lo_new), tf.assign(hi_var, hi_new)]):
        lo, hi = tf.identity(lo_new), tf.identity(hi_new)
      lo, hi = tf.stop_gradient(lo), tf.stop_gradient(hi)
    else:
      lo, hi = lo_var, hi_var
    quantized = fake_quant(x, lo, hi, opts.activation_bits, False, False)
    return delayed(context, quantized, x)


def delayed(context, quantized, original):
  on = context.quantize_now()
  if on is None:
    return quantized
  return tf.where(on, quantized, original)  # a scalar condition selects the whole tensor


INPUT_RANGE = (-1.0, 1.0)  # the models' float input (pixel / 127.5 - 1)
INPUT_QUANT = 'input_quant'


def input_quantization(bits=8):
  """(scale, zero point) of the quantized model input: [-1, 1] over 2^bits - 1 steps, zero point nudged to an
  integer as FakeQuant nudges it (8 bits: 2/255, 128). The TFLite converter's input stats are (zp, 1 / scale)."""
  lo, hi = INPUT_RANGE
  steps = 2 ** bits - 1
  scale = (hi - lo) / steps
  zero_point = int(min(max(round(-lo / scale), 0), steps))
  return scale, zero_point


def range_variables(graph=None):
  """The quantization range variables of a graph."""
  return (graph or tf.get_default_graph()).get_collection(RANGES_COLLECTION)
