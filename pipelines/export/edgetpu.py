"""An Edge TPU compatibility report of a .tflite model, from Coral's documented requirements.

The Edge TPU compiler (`edgetpu_compiler`) is not installable everywhere (x86-64 Debian only), so every int8
TFLite export checks its model against what Coral documents ("TensorFlow models on the Edge TPU"):

* operators: only those of the Edge TPU's list (`SUPPORTED_OPS`); the compiler maps the graph up to the first
  other operator and leaves the rest to the CPU. Post-processing that always runs on the CPU at the end of a
  graph (`CPU_TAIL_OPS`: SSD's `TFLite_Detection_PostProcess`, the class map's ARG_MAX, a DEQUANTIZE feeding
  them) is allowed there and listed as the model's CPU tail;
* full-integer: no float tensor between the input and the CPU tail (the input included);
* static shapes: no dimension unknown until run time (`shape_signature` -1);
* batch 1;
* tensor size: activations of more than 3 dimensions may have only the 3 innermost ones greater than 1;
* parameters (weights, biases) are compile-time constants.

`check(content)` returns the report (model.json's `edgetpu` entry); an empty `problems` list means the model
meets all of them. It is a check against the documentation, not the compiler: the compiler may still keep an
op on the CPU for reasons of its own (e.g. a resize whose sizes lose precision).
"""
from pipelines.export import tflite_model

SUPPORTED_OPS = frozenset([
    'ADD', 'AVERAGE_POOL_2D', 'CONCATENATION', 'CONV_2D', 'DEPTHWISE_CONV_2D', 'EXPAND_DIMS', 'FULLY_CONNECTED',
    'L2_NORMALIZATION', 'LOGISTIC', 'LSTM', 'MAXIMUM', 'MAX_POOL_2D', 'MEAN', 'MINIMUM', 'MUL', 'PACK', 'PAD',
    'PRELU', 'QUANTIZE', 'REDUCE_MAX', 'REDUCE_MIN', 'RELU', 'RELU_N1_TO_1', 'RELU6', 'RESHAPE',
    'RESIZE_BILINEAR', 'RESIZE_NEAREST_NEIGHBOR', 'RSQRT', 'SLICE', 'SOFTMAX', 'SPACE_TO_DEPTH', 'SPLIT',
    'SQUEEZE', 'STRIDED_SLICE', 'SUB', 'SUM', 'SQUARED_DIFFERENCE', 'TANH', 'TRANSPOSE', 'TRANSPOSE_CONV'])
CPU_TAIL_OPS = frozenset(['TFLite_Detection_PostProcess', 'ARG_MAX', 'DEQUANTIZE'])
_INTEGER = ('uint8', 'int8', 'int32')  # int32: biases and shape operands
_PARAMETRIZED = ('CONV_2D', 'DEPTHWISE_CONV_2D', 'FULLY_CONNECTED')  # weights and bias: inputs 1 and 2


def _cpu_tail(model):
  """Indices of the operators that form the CPU tail: tail-type ops whose outputs reach only other tail ops or
  the model's outputs."""
  consumers = {}
  for op in model.operators:
    for index in op.inputs:
      consumers.setdefault(index, []).append(op.index)
  tail = set()
  for op in reversed(model.operators):  # execution order: consumers come after producers
    if op.name not in CPU_TAIL_OPS:
      continue
    if all(consumer in tail for index in op.outputs for consumer in consumers.get(index, [])):
      tail.add(op.index)
  return tail


def check(content):
  """The report of a .tflite model (bytes): dict(problems=[str], cpu_tail=[op names], edgetpu_ops=int,
  requirements=str)."""
  model = tflite_model.read(content)
  tail = _cpu_tail(model)
  problems = []
  for op in model.operators:
    if op.index in tail:
      continue
    if op.name not in SUPPORTED_OPS:
      problems.append('operator %d %s is not supported by the Edge TPU' % (op.index, op.name))
  seen = set()
  for op in model.operators:
    if op.index in tail:
      continue
    for index in op.inputs + op.outputs:
      if index < 0 or index in seen:
        continue
      seen.add(index)
      tensor = model.tensor(index)
      if tensor.dtype not in _INTEGER:
        problems.append('tensor %s (%s) of operator %d %s is not integer' % (tensor.name, tensor.dtype, op.index,
                                                                             op.name))
      if tensor.shape_signature and any(d < 0 for d in tensor.shape_signature):
        problems.append('tensor %s has a dynamic shape %s' % (tensor.name, tensor.shape_signature))
      if not tensor.is_constant and len(tensor.shape) > 3 and any(d != 1 for d in tensor.shape[:-3]):
        problems.append('tensor %s of shape %s: only its 3 innermost dimensions may exceed 1' % (tensor.name,
                                                                                                 tensor.shape))
    if op.name in _PARAMETRIZED:
      for index in op.inputs[1:]:
        if index >= 0 and not model.tensor(index).is_constant:
          problems.append('operator %d %s: its parameter %s is not a compile-time constant' % (
              op.index, op.name, model.tensor(index).name))
  for index in model.inputs:
    tensor = model.tensor(index)
    if tensor.dtype not in ('uint8', 'int8'):
      problems.append('input %s is %s, not uint8 / int8' % (tensor.name, tensor.dtype))
    if not tensor.shape or tensor.shape[0] != 1:
      problems.append('input %s has batch %s, not 1' % (tensor.name, tensor.shape[:1] or 'unknown'))
  return {'problems': problems, 'cpu_tail': [model.operators[i].name for i in sorted(tail)],
          'edgetpu_ops': len(model.operators) - len(tail),
          'requirements': "Coral's documented Edge TPU requirements (pipelines/export/edgetpu.py), not the compiler"}


def summary(report):
  """One line for a person."""
  tail = (', CPU tail: %s' % ', '.join(report['cpu_tail'])) if report['cpu_tail'] else ''
  if not report['problems']:
    return 'Edge TPU check: meets the documented requirements (%d ops for the Edge TPU%s)' % (
        report['edgetpu_ops'], tail)
  more = ' (and %d more)' % (len(report['problems']) - 3) if len(report['problems']) > 3 else ''
  return 'Edge TPU check: %d problem(s): %s%s' % (len(report['problems']), '; '.join(report['problems'][:3]), more)
