"""TFLite conversion of a quantization-aware graph: the fake quantization's learned ranges, no calibration.

Two integer paths, chosen by the model's end types:
  uint8 (default)  TOCO's QUANTIZED_UINT8 path (`inference_type` uint8), which TF 1.15 and TF 2.15 both have:
                   the OD API's and TF-Slim's quantized models, and the Edge TPU's uint8 models. It takes the
                   asymmetric weight ranges contrib learns (`train.quantization.symmetric: false`).
  int8             TF 2.15's int8 path (`inference_type` int8): TFLite's int8 kernels take weights with zero
                   point 0 only, so the weights must have been quantized symmetrically
                   (`train.quantization.symmetric: true`); TF 1.15's converter has no int8 path for it.
Either way the input's quantization is the graph's input fake quantization ([-1, 1], scale 2/255: zero point 128
as uint8, 0 as int8) and outputs come as their ops make them: classification probabilities in the inference
type (or float32 with a float32 input), detection boxes / scores float32, the segmentation class map int32.
Per-channel weight ranges convert on neither path here.

Used by `pipelines.export.tflite_export.convert`.
"""
import numpy as np
import tensorflow.compat.v1 as tf

WEIGHTS_QUANT = '/weights_quant/'


def is_quantization_aware(frozen):
  """Whether the frozen graph carries fake quantization (a quantization-aware checkpoint's ranges)."""
  return any(node.op.startswith('FakeQuant') for node in frozen.graph_def.node)


def _const(nodes, name):
  """The value of the Const a tensor name resolves to through Identity nodes, or None."""
  node = nodes.get(name.split(':')[0].lstrip('^'))
  while node is not None and node.op == 'Identity':
    node = nodes.get(node.input[0].split(':')[0])
  if node is None or node.op != 'Const':
    return None
  return tf.make_ndarray(node.attr['value'].tensor)


def symmetric_weights(frozen):
  """Whether every weight fake quantization of the frozen graph has a range symmetric around 0 (min = -max)."""
  nodes = {node.name: node for node in frozen.graph_def.node}
  for node in frozen.graph_def.node:
    if node.op.startswith('FakeQuantWithMinMaxVars') and WEIGHTS_QUANT in node.name:
      low, high = _const(nodes, node.input[1]), _const(nodes, node.input[2])
      if low is None or high is None or not np.allclose(low, -high, rtol=1e-6, atol=1e-9):
        return False
  return True


def end_types(frozen, input_type, output_type, classifier, tf1):
  """(inference type, input type, output type) of the conversion; ValueError naming what to change."""
  if any(node.op == 'FakeQuantWithMinMaxVarsPerChannel' for node in frozen.graph_def.node):
    raise ValueError('train.quantization.per_channel: per-channel weight ranges do not convert from learned ranges '
                     'here (per-tensor ranges only); train with per_channel false')
  inference = 'int8' if 'int8' in (input_type, output_type) else 'uint8'
  if inference == 'int8' and tf1:
    raise ValueError('int8 ends of a quantization-aware model need TensorFlow 2.15 (TF %s converts fake '
                     'quantization to uint8 only): use --input-type uint8, or export on TF 2.15' % tf.__version__)
  if inference == 'int8' and not symmetric_weights(frozen):
    raise ValueError('int8 ends need symmetric weight ranges (TFLite\'s int8 kernels take weights with zero point '
                     '0) but this checkpoint trained train.quantization.symmetric: false; export uint8, or train '
                     'with symmetric: true')
  input_type = input_type or inference
  supported = (inference,) if tf1 else (inference, 'float32')
  natural = inference if classifier and input_type == inference else 'float32'
  if input_type not in supported or (output_type or natural) != natural:
    raise ValueError('a quantization-aware model converts with %s input and its outputs as they come (%s with %s '
                     'input) on TensorFlow %s; got input %s, output %s' % (
                         ' or '.join(supported), natural, input_type, tf.__version__, input_type, output_type))
  return inference, input_type, natural


def configure(converter, input_array, input_scale_zero_point, inference, input_type, output_type, tf1):
  """Sets a TF1-API converter to the learned ranges: the inference type, the input's quantization (its uint8
  zero point shifted by -128 as int8) and the end types."""
  types = {'uint8': tf.uint8, 'int8': tf.int8, 'float32': tf.float32}
  scale, zero_point = input_scale_zero_point
  if inference == 'int8':
    zero_point -= 128
  converter.inference_type = types[inference]
  converter.quantized_input_stats = {input_array: (float(zero_point), 1.0 / scale)}
  converter.inference_input_type = types[input_type]
  if not tf1:  # TOCO's outputs follow the inference type (float where the op's output is float)
    converter.inference_output_type = types[output_type]
  return converter
