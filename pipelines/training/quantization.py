"""Quantization-aware training: a graph rewrite that behaves the same on TF 1.15 and TF 2.15.

TF-Slim (`--quantize_delay`), the Object Detection API (`graph_rewriter { quantization { delay } }`) and
DeepLab (`--quantize_delay_step`) trained their published uint8 models with `tf.contrib.quantize`, which
TF 2.x does not have. This module is this project's own rewrite of the same recipe (Jacob et al., 2018), run
on both stacks, so a graph and its variable names do not depend on the TensorFlow version:

* Batch norm folded into the weights while training. For a conv / depthwise conv (optionally atrous:
  SpaceToBatchND -> conv -> BatchToSpaceND) followed by a fused batch norm, the layer becomes
  conv(x, FQ(w * gamma / sigma_moving)) followed by
    - before `freeze_bn_delay` (batch norm training): * sigma_moving / sigma_batch + beta - gamma * mu_batch / sigma_batch,
      i.e. the batch statistics' normalization, as contrib's correction factors give;
    - after it, and in eval / export: + beta - gamma * mu_moving / sigma_moving (the folded inference layer).
  The original conv and batch norm stay in the training graph only to update the moving statistics (which stop
  changing after `freeze_bn_delay`); in inference graphs they are dead and pruned by freezing.
* Fake quantization (`FakeQuantWithMinMaxVars`) of every conv's (folded) weights, ranges = the last value
  (`<layer>/weights_quant/min|max`), and of every activation TFLite's integer kernels quantize: each conv
  layer's output after its ReLU / ReLU6 (or after its bias / folded batch norm when it has none: the
  projections, the heads' predictions), each residual add (`<block>/add_quant/min|max`) and each spatial mean
  (DeepLab's image pooling, `<scope>/Mean/act_quant`). Concatenations,
  reshapes, pooling and resizes take their inputs' ranges, so their inputs are all quantized. Activation
  ranges are moving averages of the batch min / max (decay `ema_decay`; the first batch sets them).
* Before `delay` the fake quantization is bypassed (ranges already follow the data); eval and export graphs
  always quantize: `mnv2 eval` then reports the simulated-quantized metric, as the anchors do.

Variable names follow contrib's (`<layer>/weights_quant/min`, `<layer>/act_quant/max`, `<block>/add_quant/min`),
so a contrib-trained checkpoint's ranges warm-start into this graph. The rewrite reroutes the consumers of each
rewritten tensor with `Operation._update_input` (what contrib's graph editor did); call it after the model is
built and before gradients (`pipelines.tasks.base.Task.model` does).
"""
import collections
import dataclasses
import re

import tensorflow.compat.v1 as tf

from pipelines.training import fake_quant

_CONV_TYPES = ('Conv2D', 'DepthwiseConv2dNative')
_BATCH_NORM_TYPES = ('FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3')
_ACTIVATION_TYPES = ('Relu6', 'Relu')
_ADD_TYPES = ('Add', 'AddV2')
_READ_TYPES = ('Identity', 'ReadVariableOp', 'Enter', 'Switch')
_VARIABLE_TYPES = ('VariableV2', 'Variable', 'VarHandleOp')
_REPLICA = re.compile(r'/replica_\d+$')


def enabled(config):
  """Whether `config` trains (and evaluates, exports) quantization-aware: `train.quantization.delay` is set."""
  quantization = getattr(config.train, 'quantization', None)
  return quantization is not None and quantization.delay is not None


class _Context(object):
  """State of one rewrite: options, the global step, name-scope -> variable-scope prefixes, replacements."""

  def __init__(self, options, is_training):
    self.options = options
    self.is_training = is_training
    self.step = tf.train.get_or_create_global_step() if is_training else None
    self.prefixes = {}  # op name-scope prefix -> variable-scope prefix (a re-used backbone's second pass)
    self.replaced = {}  # old tensor's name -> new tensor
    self._reached = {}  # step -> bool tensor "global step >= step", one per rewrite

  def _step_reached(self, step):
    if step not in self._reached:
      self._reached[step] = tf.greater_equal(self.step, tf.cast(step, self.step.dtype))
    return self._reached[step]

  def quantize_now(self):
    """bool tensor: the fake quantization is on (training past `delay`), or None = always on."""
    if not self.is_training or not self.options.delay:
      return None
    return self._step_reached(self.options.delay)

  def bn_frozen(self):
    """bool tensor: batch norm uses (and stops updating) its moving statistics; None = never."""
    delay = self.options.freeze_bn_delay
    if not self.is_training or delay is None:
      return None
    return self._step_reached(delay)


def _variable_op(tensor):
  """The variable op (VariableV2 / VarHandleOp) a tensor reads, or None."""
  op = tensor.op
  for _ in range(8):
    if op.type in _VARIABLE_TYPES:
      return op
    if op.type not in _READ_TYPES or not op.inputs:
      return None
    op = op.inputs[0].op
  return None


def _variable_name(tensor):
  op = _variable_op(tensor)
  return None if op is None else _REPLICA.sub('', op.name)


def _read(graph, variable_op_name):
  """A float tensor of the variable whose op is `variable_op_name` (a ref or a resource variable)."""
  op = graph.get_operation_by_name(variable_op_name)
  if op.type == 'VarHandleOp':
    from tensorflow.python.ops import gen_resource_variable_ops  # pylint: disable=g-import-not-at-top
    return gen_resource_variable_ops.read_variable_op(op.outputs[0], tf.float32)
  return tf.identity(op.outputs[0])


def _scope_of(name):
  return name.rsplit('/', 1)[0] if '/' in name else ''


def _learn_prefix(context, op_name, variable_scope):
  """Records that ops under `_scope_of(op_name)` belong to `variable_scope` (they differ in their first part
  when a backbone is built a second time with reuse: `MobilenetV2_1/Conv` vs `MobilenetV2/Conv`)."""
  op_parts, var_parts = _scope_of(op_name).split('/'), variable_scope.split('/')
  while op_parts and var_parts and op_parts[-1] == var_parts[-1]:
    op_parts.pop()
    var_parts.pop()
  if op_parts or var_parts:
    context.prefixes['/'.join(op_parts)] = '/'.join(var_parts)


def _variable_scope_of(context, op_name):
  """The variable scope of an op without variables (a residual add), from the prefixes learned on convs."""
  scope = _scope_of(op_name)
  for prefix in sorted(context.prefixes, key=len, reverse=True):
    if prefix and (scope == prefix or scope.startswith(prefix + '/')):
      return (context.prefixes[prefix] + scope[len(prefix):]).lstrip('/')
  return scope


def _consumers(tensor):
  return list(tensor.consumers())


def _reroute(old, new, exclude=()):
  """Every consumer of `old` except the ops in `exclude` reads `new` instead."""
  excluded = set(exclude)
  for op in _consumers(old):
    if op in excluded:
      continue
    for index, tensor in enumerate(op.inputs):
      if tensor is old:
        op._update_input(index, new)  # pylint: disable=protected-access


def _new_ops_since(graph, count):
  return graph.get_operations()[count:]


def _replace(context, old, new, created_from):
  """Reroutes `old`'s consumers (not the ops created since op index `created_from`) to `new`."""
  graph = old.graph
  _reroute(old, new, exclude=_new_ops_since(graph, created_from))
  context.replaced[old.name] = new
  for key, value in list(context.replaced.items()):
    if value is old:
      context.replaced[key] = new


def _conv_like(conv, x, weights):
  """A copy of `conv` (Conv2D / DepthwiseConv2dNative) on `x` with `weights`."""
  def text(value):
    return value.decode('ascii') if isinstance(value, bytes) else value
  kwargs = dict(strides=list(conv.get_attr('strides')), padding=text(conv.get_attr('padding')),
                data_format=text(conv.get_attr('data_format')), dilations=list(conv.get_attr('dilations')))
  if conv.type == 'Conv2D':
    return tf.nn.conv2d(x, weights, **kwargs)
  return tf.nn.depthwise_conv2d_native(x, weights, **kwargs)


def _single_consumer(tensor, types):
  consumers = _consumers(tensor)
  if len(consumers) == 1 and consumers[0].type in types:
    return consumers[0]
  return None


Layer = collections.namedtuple('Layer', ['conv', 'batch_to_space', 'batch_norm', 'bias_add', 'scope'])


def _find_layers(ops):
  """Conv layers among `ops`: conv [-> BatchToSpaceND] [-> fused batch norm | BiasAdd], weights from a variable."""
  layers = []
  for op in ops:
    if op.type not in _CONV_TYPES:
      continue
    weights_name = _variable_name(op.inputs[1])
    if weights_name is None:
      continue
    out = op.outputs[0]
    batch_to_space = _single_consumer(out, ('BatchToSpaceND',))
    if batch_to_space is not None:
      out = batch_to_space.outputs[0]
    batch_norm = _single_consumer(out, _BATCH_NORM_TYPES)
    bias_add = None if batch_norm is not None else _single_consumer(out, ('BiasAdd',))
    layers.append(Layer(op, batch_to_space, batch_norm, bias_add, _scope_of(weights_name)))
  return layers


def _batch_norm_statistics(graph, batch_norm):
  """(moving mean, moving variance) tensors of a fused batch norm (its inputs in inference mode; read from
  the variables beside its beta in training mode, where TensorFlow passes empty tensors)."""
  if not batch_norm.get_attr('is_training'):
    return batch_norm.inputs[3], batch_norm.inputs[4]
  beta = _variable_op(batch_norm.inputs[2])
  if beta is None:
    raise ValueError('quantization: cannot find the variables of batch norm %s' % batch_norm.name)
  base = beta.name[:-len('beta')] if beta.name.endswith('beta') else None
  replica = ''
  match = _REPLICA.search(beta.name)
  if match:
    replica, base = match.group(0), _REPLICA.sub('', beta.name)[:-len('beta')]
  if base is None:
    raise ValueError('quantization: batch norm %s has no beta variable' % batch_norm.name)
  return _read(graph, base + 'moving_mean' + replica), _read(graph, base + 'moving_variance' + replica)


def _fold(context, layer):
  """The folded layer (see the module docstring); returns its output, which replaces the batch norm's."""
  graph, conv, bn = layer.conv.graph, layer.conv, layer.batch_norm
  depthwise = conv.type == 'DepthwiseConv2dNative'
  op_scope = _scope_of(conv.name)
  x, weights = conv.inputs[0], conv.inputs[1]
  gamma, beta = bn.inputs[1], bn.inputs[2]
  epsilon = bn.get_attr('epsilon')
  with tf.name_scope(op_scope + '/'):
    mean, variance = _batch_norm_statistics(graph, bn)
    moving_inv = tf.rsqrt(variance + epsilon, name='moving_inv_std')
    scale = gamma * moving_inv
    if depthwise:
      shape = weights.get_shape().as_list()
      folded = tf.multiply(weights, tf.reshape(scale, [1, 1, shape[2], shape[3]]), name='mul_fold')
    else:
      folded = tf.multiply(weights, scale, name='mul_fold')
  quantized = fake_quant.quantize_weights(context, folded, layer.scope, op_scope, depthwise)
  with tf.name_scope(op_scope + '/'):
    net = _conv_like(conv, x, quantized)
    if layer.batch_to_space is not None:
      b2s = layer.batch_to_space
      net = tf.batch_to_space_nd(net, b2s.inputs[1], b2s.inputs[2])
    moving_bias = beta - mean * scale
    if not bn.get_attr('is_training'):
      return tf.add(net, moving_bias, name='add_fold')
    if context.options.freeze_bn_delay == 0:
      # Frozen from the first step (the fine-tuning recipe): the inference fold; the statistics' updates read the
      # moving values themselves, which leaves the float conv and its batch norm out of the step entirely.
      _freeze_statistics_updates(bn, None, mean, variance)
      return tf.add(net, moving_bias, name='add_fold')
    # Batch statistics of the float layer (what the batch norm normalizes with).
    batch_mean, batch_variance = tf.nn.moments(bn.inputs[0], [0, 1, 2], name='batch_moments')
    batch_inv = tf.rsqrt(batch_variance + epsilon)
    correction = tf.divide(batch_inv, moving_inv, name='correction_mult')
    batch_bias = beta - batch_mean * gamma * batch_inv
    frozen = context.bn_frozen()
    if frozen is not None:
      correction = tf.where(frozen, tf.ones_like(correction), correction)
      batch_bias = tf.where(frozen, moving_bias, batch_bias)
      _freeze_statistics_updates(bn, frozen, mean, variance)
    return tf.add(net * correction, batch_bias, name='add_fold')


def _freeze_statistics_updates(batch_norm, frozen, moving_mean, moving_variance):
  """After `freeze_bn_delay` (`frozen` true; None = always) the moving-average updates read the moving statistics
  themselves (no change)."""
  start = len(batch_norm.graph.get_operations())
  for index, moving in ((1, moving_mean), (2, moving_variance)):
    batch_value = batch_norm.outputs[index]
    if not _consumers(batch_value):
      continue
    held = moving if frozen is None else tf.where(frozen, moving, batch_value)
    _reroute(batch_value, held, exclude=_new_ops_since(batch_norm.graph, start))


def _quantize_input(context, images, ops):
  """The model reads its input as the integer model does: fake-quantized over `INPUT_RANGE` (no variables), so
  the simulated-quantized graph and the exported model round the input alike."""
  quantized = tf.quantization.fake_quant_with_min_max_args(images, fake_quant.INPUT_RANGE[0], fake_quant.INPUT_RANGE[1],
                                                           num_bits=context.options.activation_bits, name=fake_quant.INPUT_QUANT)
  quantized = fake_quant.delayed(context, quantized, images)
  model_ops = set(ops)
  for op in _consumers(images):
    if op in model_ops:
      for index, tensor in enumerate(op.inputs):
        if tensor is images:
          op._update_input(index, quantized)  # pylint: disable=protected-access


def rewrite(ops, outputs, options, is_training, inputs=()):
  """Rewrites the model built by `ops` (the ops it created, in order) for quantization-aware training.

  Args:
    ops: list of tf.Operation, the ops the model's build created (`graph.get_operations()[start:]`).
    outputs: the model's outputs (a dict, possibly nested, of tensors).
    options: `pipelines.config.QuantizationConfig`.
    is_training: training graph (ranges updated, delay honoured) or eval / export graph.
    inputs: the model's float input images; the model's ops read them fake-quantized as the integer model does.

  Returns:
    `outputs` with each rewritten tensor replaced by its quantized version.
  """
  if not ops:
    return outputs
  graph = ops[0].graph
  context = _Context(options, is_training)
  with graph.as_default():
    layers = _find_layers(ops)
    if not layers:
      raise ValueError('train.quantization: the model has no conv layer to quantize')
    for layer in layers:
      _learn_prefix(context, layer.conv.name, layer.scope)
    for images in inputs:
      _quantize_input(context, images, ops)
    adds = [op for op in ops if op.type in _ADD_TYPES and _is_residual(op)]
    # A spatial mean (DeepLab's image pooling) rescales: TFLite's integer MEAN takes its own output range.
    means = [op for op in ops if op.type == 'Mean' and op.outputs[0].get_shape().ndims == 4]
    for layer in layers:
      op_scope = _scope_of(layer.conv.name)
      start = len(graph.get_operations())
      if layer.batch_norm is not None:
        out = layer.batch_norm.outputs[0]
        _replace(context, out, _fold(context, layer), start)
        out = context.replaced[out.name]
      else:
        quantized = fake_quant.quantize_weights(context, layer.conv.inputs[1], layer.scope, op_scope,
                                      layer.conv.type == 'DepthwiseConv2dNative')
        layer.conv._update_input(1, quantized)  # pylint: disable=protected-access
        out = (layer.bias_add or layer.batch_to_space or layer.conv).outputs[0]
      activation = _single_consumer(out, _ACTIVATION_TYPES)
      if activation is not None:
        out = activation.outputs[0]
      start = len(graph.get_operations())
      _replace(context, out, fake_quant.quantize_activation(context, out, layer.scope + '/act_quant', op_scope + '/act_quant'),
               start)
    for add in adds:
      out = add.outputs[0]
      start = len(graph.get_operations())
      var_scope = _variable_scope_of(context, add.name)
      _replace(context, out, fake_quant.quantize_activation(context, out, var_scope + '/add_quant',
                                                  _scope_of(add.name) + '/add_quant'), start)
    for mean in means:
      out = mean.outputs[0]
      start = len(graph.get_operations())
      var_scope = _variable_scope_of(context, mean.name)
      leaf = mean.name.rsplit('/', 1)[-1]
      _replace(context, out, fake_quant.quantize_activation(context, out, '/'.join(filter(None, [var_scope, leaf, 'act_quant'])),
                                                  mean.name + '/act_quant'), start)
  return _remap(outputs, context.replaced)


def _is_residual(add):
  """An add of two same-shape 4-D activations (a bypass), not a bias or a constant offset."""
  if len(add.inputs) != 2:
    return False
  shapes = [t.get_shape() for t in add.inputs]
  if any(s.ndims != 4 for s in shapes):
    return False
  return all(t.op.type != 'Const' and _variable_op(t) is None for t in add.inputs)


def _remap(outputs, replaced):
  if isinstance(outputs, dict):
    return type(outputs)((k, _remap(v, replaced)) for k, v in outputs.items())
  if isinstance(outputs, (list, tuple)):
    return type(outputs)(_remap(v, replaced) for v in outputs)
  return replaced.get(outputs.name, outputs) if isinstance(outputs, tf.Tensor) else outputs


def fine_tune_config(config, float_model_dir, step_fraction=0.1, rate_fraction=0.1, freeze_bn_delay=0):
  """The recipe's fine-tune of a trained float model as a config: warm-started from every variable of the
  model in `float_model_dir`, fake quantization from the first step, batch norm folded with its moving
  statistics from `freeze_bn_delay` (0: from the start, as inference folds it), `step_fraction` of its steps at
  a constant `rate_fraction` of its base learning rate (one checkpoint, at the end)."""
  train = config.train
  steps = max(1, int(round(train.steps * step_fraction)))
  rate = dataclasses.replace(train.learning_rate, schedule='constant', base=train.learning_rate.base * rate_fraction,
                             warmup_steps=0)
  warm = dataclasses.replace(train.warm_start, checkpoint=float_model_dir, include=['.*'], exclude=[], scope_map={})
  train = dataclasses.replace(train, steps=steps, learning_rate=rate, warm_start=warm,
                              quantization=dataclasses.replace(train.quantization, delay=0,
                                                               freeze_bn_delay=freeze_bn_delay))
  return dataclasses.replace(config, train=train, runtime=dataclasses.replace(config.runtime,
                                                                              save_checkpoints_steps=steps))


INPUT_RANGE, INPUT_QUANT = fake_quant.INPUT_RANGE, fake_quant.INPUT_QUANT
input_quantization = fake_quant.input_quantization
range_variables = fake_quant.range_variables
