"""Frozen inference graphs: build, restore (moving averages first), freeze to constants, fold batch norm.

`freeze` turns a graph-building callable and a checkpoint into a self-contained `tf.GraphDef` whose
variables are constants, the starting point of every exporter (TFLite, a plain frozen .pb). Weights come
from the checkpoint's `<name>/ExponentialMovingAverage` shadow variables when it has them (the values a
model trained with `train.moving_average_decay` is evaluated with), the raw values otherwise (with a
warning). `fold_batch_norms` then rewrites the frozen graph in numpy: every inference-mode
`FusedBatchNorm` / `FusedBatchNormV3` that follows a `Conv2D` or `DepthwiseConv2dNative` (slim's
`separable_conv2d` with `num_outputs=None`), directly or through a `BiasAdd`, is merged into that conv's
weights and one `BiasAdd`:

  s = gamma / sqrt(variance + epsilon)       per output channel (depthwise: in_channels x multiplier)
  w' = w * s                                 b' = beta + (b - mean) * s      (b = 0 without a BiasAdd)

Any other batch norm becomes a constant `Mul` + `BiasAdd`, so no `FusedBatchNorm*` op is left. Explicit
padding (`tf.pad` before a VALID conv, `use_explicit_padding`) sits before the conv, so it does not get
in the way.

Works on TF 1.15 (where slim may emit `FusedBatchNorm` or `FusedBatchNormV3`) and TF 2.15 (`V3`).
Not here: conversion to TFLite (`pipelines.export.tflite_export`), quantization, graphs with batch norm in
training mode (rejected: their statistics depend on the batch).
"""
import collections
import logging
import re

import numpy as np
import tensorflow.compat.v1 as tf

from nets import compat  # noqa: F401  (tf-slim batch_norm shim for TF 2.15)

LOG = logging.getLogger('mnv2')
EMA_SUFFIX = '/ExponentialMovingAverage'
BATCH_NORM_OPS = ('FusedBatchNorm', 'FusedBatchNormV3')
CONV_OPS = ('Conv2D', 'DepthwiseConv2dNative')
DEFAULT_INPUT_NAME = 'input'

# graph_def: tf.GraphDef with constants only; input_name: the placeholder's node name; input_shape and
# input_dtype: its static shape (list) and tf.DType; outputs: OrderedDict output key -> tensor name
# ('<node>:0') in the graph_def; folded: number of batch norms merged into a conv.
FrozenGraph = collections.namedtuple('FrozenGraph', 'graph_def input_name input_shape input_dtype outputs folded')


def _node_name(key):
  """A valid, readable node name for an output key ('detection_boxes', 'logits/semantic' -> as is)."""
  name = re.sub(r'[^A-Za-z0-9_./-]', '_', str(key))
  return name if re.match(r'[A-Za-z0-9.]', name) else 'output_' + name


def restore_map(checkpoint_path, variables, use_moving_averages=True):
  """Which checkpoint entry restores each variable.

  Args:
    checkpoint_path: checkpoint prefix (or a directory: its latest checkpoint).
    variables: list of tf.Variable to restore.
    use_moving_averages: prefer `<name>/ExponentialMovingAverage` when the checkpoint has it.

  Returns:
    (dict checkpoint name -> variable, list of variable names restored from raw values although other
    variables had a moving average, bool whether any moving average was used).

  Raises:
    ValueError: a variable is missing from the checkpoint, or has another shape there.
  """
  shapes = dict(tf.train.list_variables(checkpoint_path))
  mapping, raw, used_ema = {}, [], False
  for var in variables:
    name = var.op.name
    shape = var.get_shape().as_list()
    candidates = ([name + EMA_SUFFIX] if use_moving_averages else []) + [name]
    found = [c for c in candidates if c in shapes]
    if not found:
      raise ValueError('the checkpoint %s does not match the model this config builds: it has no variable %r '
                       '(nor %r; it has e.g. %s); use the config it was trained with' % (
                           checkpoint_path, name, name + EMA_SUFFIX, ', '.join(sorted(shapes)[:5])))
    if list(shapes[found[0]]) != shape:
      raise ValueError('the checkpoint %s does not match the model this config builds: %r has shape %s there but '
                       '%s in the model; use the config it was trained with' % (
                           checkpoint_path, found[0], list(shapes[found[0]]), shape))
    mapping[found[0]] = var
    if found[0].endswith(EMA_SUFFIX):
      used_ema = True
    else:
      raw.append(name)
  return mapping, raw, used_ema


def _resolve_checkpoint(path):
  if tf.gfile.IsDirectory(path):
    latest = tf.train.latest_checkpoint(path)
    if not latest:
      raise ValueError('no checkpoint in directory %r' % (path,))
    return latest
  return path


def freeze(build, checkpoint_path, input_shape, input_dtype=tf.float32, input_name=DEFAULT_INPUT_NAME,
           use_moving_averages=True, fold_batch_norm=True):
  """Builds `build(images)` in a fresh graph, restores it from a checkpoint, and freezes it.

  Args:
    build: callable float/uint8 tensor [input_shape] -> dict key -> tensor (the outputs to keep). It runs
      inside a fresh tf.Graph and must build its model in inference mode (batch norm not training).
    checkpoint_path: checkpoint prefix, or a directory (its latest checkpoint).
    input_shape: static input shape, e.g. [1, 224, 224, 3].
    input_dtype: tf.DType of the input placeholder.
    input_name: the placeholder's node name.
    use_moving_averages: restore `<name>/ExponentialMovingAverage` where the checkpoint has one.
    fold_batch_norm: merge batch norm into the convs (`fold_batch_norms`).

  Returns:
    FrozenGraph. Each output is an Identity node named after its key (sanitized).

  Raises:
    ValueError: `build` returned no outputs, or the checkpoint does not match the graph.
  """
  checkpoint_path = _resolve_checkpoint(checkpoint_path)
  with tf.Graph().as_default() as graph:
    images = tf.placeholder(input_dtype, input_shape, name=input_name)
    built = build(images)
    if not built:
      raise ValueError('freeze: build() returned no outputs')
    outputs = collections.OrderedDict()
    for key in sorted(built) if not isinstance(built, collections.OrderedDict) else built:
      outputs[key] = tf.identity(built[key], name=_node_name(key)).name
    variables = tf.global_variables()
    mapping, raw, used_ema = restore_map(checkpoint_path, variables, use_moving_averages)
    if use_moving_averages and not used_ema:
      LOG.warning('freeze: checkpoint %s has no ExponentialMovingAverage variables; using the raw weights',
                  checkpoint_path)
    elif used_ema:
      trainable_raw = sorted(set(raw) & set(v.op.name for v in tf.trainable_variables()))
      if trainable_raw:
        LOG.warning('freeze: %d trainable variables have no moving average in %s, raw values used: %s',
                    len(trainable_raw), checkpoint_path, ', '.join(trainable_raw[:5]))
    saver = tf.train.Saver(mapping) if mapping else None
    output_nodes = [name.split(':')[0] for name in outputs.values()]
    with tf.Session(graph=graph) as session:
      if saver is not None:
        saver.restore(session, checkpoint_path)
      graph_def = tf.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), output_nodes)
  graph_def = tf.graph_util.extract_sub_graph(graph_def, output_nodes + [input_name])
  folded = 0
  if fold_batch_norm:
    graph_def, folded = fold_batch_norms(graph_def, output_nodes)
  return FrozenGraph(graph_def, input_name, list(input_shape), tf.as_dtype(input_dtype), outputs, folded)


# ------------------------------------------------------------------------------------------ folding


def _input_name(name):
  """'^ctrl' / 'node:1' / 'node' -> ('node', output index)."""
  if name.startswith('^'):
    return name[1:], -1
  if ':' in name:
    node, index = name.rsplit(':', 1)
    return node, int(index)
  return name, 0


def rename_node(graph_def, old, new):
  """Renames node `old` of `graph_def` to `new` in place, with every reference to it (data and control)."""
  names = set(n.name for n in graph_def.node)
  if old not in names:
    raise ValueError('no node %s in the graph' % old)
  if new in names:
    raise ValueError('the graph has a node %s already' % new)
  for node in graph_def.node:
    if node.name == old:
      node.name = new
    for i, ref in enumerate(node.input):
      if _input_name(ref)[0] == old:  # 'old', 'old:1' or '^old': keep the port or control mark
        node.input[i] = ref.replace(old, new, 1)


def const_node(name, value, dtype=None):
  """A Const NodeDef holding numpy `value` (cast to `dtype` if given)."""
  node = tf.NodeDef()
  node.name = name
  node.op = 'Const'
  value = np.asarray(value)
  dtype = tf.as_dtype(dtype or value.dtype)
  node.attr['dtype'].type = dtype.as_datatype_enum
  node.attr['value'].tensor.CopyFrom(tf.make_tensor_proto(value.astype(dtype.as_numpy_dtype), dtype=dtype))
  return node


class _Graph(object):
  """Name -> node and name -> consumers views of a GraphDef being rewritten."""

  def __init__(self, graph_def):
    self.nodes = collections.OrderedDict((n.name, n) for n in graph_def.node)
    self.consumers = collections.defaultdict(list)  # node name -> [(consumer name, output index)]
    for node in graph_def.node:
      for inp in node.input:
        src, index = _input_name(inp)
        self.consumers[src].append((node.name, index))

  def const_value(self, name):
    """numpy value of a Const reached through Identity nodes, or None."""
    node = self.nodes.get(_input_name(name)[0])
    while node is not None and node.op == 'Identity':
      node = self.nodes.get(_input_name(node.input[0])[0])
    if node is None or node.op != 'Const':
      return None
    return tf.make_ndarray(node.attr['value'].tensor)

  def only_consumer(self, name, consumer):
    """True if `consumer` is the only node reading `name` (any output, control inputs included)."""
    return [c for c, _ in self.consumers[name]] == [consumer]

  def unique(self, base):
    name, i = base, 1
    while name in self.nodes:
      name, i = '%s_%d' % (base, i), i + 1
    return name


def _bn_params(graph, node):
  """(scale, offset) float64 [C] of an inference batch norm: y = x * scale + offset, or None."""
  if node.attr['is_training'].b:
    raise ValueError('fold_batch_norms: %s is in training mode (is_training=True); build the graph for '
                     'inference' % node.name)
  if node.attr['data_format'].s not in (b'', b'NHWC'):
    return None
  values = [graph.const_value(name) for name in node.input[1:5]]
  if any(v is None for v in values):
    return None
  gamma, beta, mean, variance = [v.astype(np.float64) for v in values]
  epsilon = node.attr['epsilon'].f if 'epsilon' in node.attr else 1e-3
  scale = gamma / np.sqrt(variance + epsilon)
  return scale, beta - mean * scale


def _uses_only_first_output(graph, name):
  return all(index == 0 for _, index in graph.consumers[name])


def _fold_into_conv(graph, bn, scale, offset):
  """Rewrites conv [-> BatchToSpaceND] [-> BiasAdd] -> `bn` as conv(w * scale) [-> BatchToSpaceND] -> BiasAdd.

  The new BiasAdd keeps `bn`'s name, so its consumers are unchanged. BatchToSpaceND (the tail of an atrous
  conv: SpaceToBatchND -> conv -> BatchToSpaceND) only moves pixels, so the per-channel scale commutes.
  Every link of the chain must feed only the next one. Returns False if the pattern does not match.
  """
  def producer(node):
    return graph.nodes.get(_input_name(node.input[0])[0])

  def single_link(node, consumer):
    return node is not None and graph.only_consumer(node.name, consumer.name)

  src, bias, head = producer(bn), None, bn
  if src is not None and src.op == 'BiasAdd' and single_link(src, bn):
    bias = graph.const_value(src.input[1])
    if bias is None:
      return False
    src, head = producer(src), src
  bias_input = src
  if src is not None and src.op == 'BatchToSpaceND' and single_link(src, head):
    src, head = producer(src), src
  if not single_link(src, head) or src.op not in CONV_OPS or src.attr['data_format'].s not in (b'', b'NHWC'):
    return False
  weights = graph.const_value(src.input[1])
  if weights is None:
    return False
  dtype = weights.dtype
  if src.op == 'Conv2D':
    folded = weights.astype(np.float64) * scale
  else:  # depthwise [kh, kw, in, multiplier]: output channel c = in_index * multiplier + m
    channels, multiplier = weights.shape[2:]
    folded = weights.astype(np.float64) * scale.reshape(channels, multiplier)
  if bias is not None:
    offset = offset + bias.astype(np.float64) * scale
  weights_name = graph.unique(src.name + '/folded_weights')
  graph.nodes[weights_name] = const_node(weights_name, folded, dtype)
  src.input[1] = weights_name
  bias_name = graph.unique(bn.name + '/folded_bias')
  graph.nodes[bias_name] = const_node(bias_name, offset, dtype)
  _rewrite_as_bias_add(bn, bias_input.name, bias_name, dtype)
  return True


def _rewrite_as_bias_add(node, input_name, bias_name, dtype):
  node.op = 'BiasAdd'
  del node.input[:]
  node.input.extend([input_name, bias_name])
  node.ClearField('attr')
  node.attr['T'].type = tf.as_dtype(dtype).as_datatype_enum
  node.attr['data_format'].s = b'NHWC'


def fold_batch_norms(graph_def, protected=()):
  """Merges inference batch norms into the preceding convs of a frozen GraphDef (see module docstring).

  Args:
    graph_def: tf.GraphDef whose batch-norm parameters and conv weights are constants (through
      Identity nodes is fine), e.g. from `tf.graph_util.convert_variables_to_constants`.
    protected: node names to keep even if nothing reads them (the outputs); unused nodes are dropped.

  Returns:
    (new tf.GraphDef without FusedBatchNorm / FusedBatchNormV3 nodes, number folded into a conv). A
    batch norm that cannot be folded (no conv before it, the conv also feeds other nodes, non-constant
    parameters) becomes a constant Mul + BiasAdd under the batch norm's name.

  Raises:
    ValueError: a batch norm is in training mode, or one that is not foldable has non-constant
      parameters or NCHW data.
  """
  result = tf.GraphDef()
  result.CopyFrom(graph_def)
  graph = _Graph(result)
  folded = 0
  for node in list(graph.nodes.values()):
    if node.op not in BATCH_NORM_OPS:
      continue
    if not _uses_only_first_output(graph, node.name):
      raise ValueError('fold_batch_norms: outputs 1.. of %s (batch statistics) are used' % node.name)
    params = _bn_params(graph, node)
    if params is None:
      raise ValueError('fold_batch_norms: %s has non-constant parameters or NCHW data; freeze the graph first'
                       % node.name)
    scale, offset = params
    if _fold_into_conv(graph, node, scale, offset):
      folded += 1
      continue
    dtype = tf.as_dtype(node.attr['T'].type).as_numpy_dtype
    mul_name = graph.unique(node.name + '/scale_mul')
    scale_name = graph.unique(node.name + '/scale')
    bias_name = graph.unique(node.name + '/offset')
    mul = tf.NodeDef()
    mul.name, mul.op = mul_name, 'Mul'
    mul.input.extend([node.input[0], scale_name])
    mul.attr['T'].type = tf.as_dtype(dtype).as_datatype_enum
    graph.nodes[scale_name] = const_node(scale_name, scale, dtype)
    graph.nodes[bias_name] = const_node(bias_name, offset, dtype)
    graph.nodes[mul_name] = mul
    _rewrite_as_bias_add(node, mul_name, bias_name, dtype)
  del result.node[:]
  result.node.extend(graph.nodes.values())
  keep = [n for n in protected] or [n.name for n in result.node if not graph.consumers[n.name]]
  keep += [n.name for n in result.node if n.op == 'Placeholder']
  result = tf.graph_util.extract_sub_graph(result, keep)
  return result, folded


# ------------------------------------------------------------------------------------------ running


def run(frozen, images, graph_def=None):
  """Runs a FrozenGraph (or `graph_def` with its input / outputs) on numpy input; dict key -> array."""
  with tf.Graph().as_default() as graph:
    tf.import_graph_def(graph_def if graph_def is not None else frozen.graph_def, name='')
    fetches = dict((k, graph.get_tensor_by_name(v)) for k, v in frozen.outputs.items())
    with tf.Session(graph=graph) as session:
      return session.run(fetches, {frozen.input_name + ':0': images})
