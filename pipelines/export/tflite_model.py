"""Reads a .tflite flatbuffer without TensorFlow: its operators, their tensors (dtype, shape, quantization),
and the model's inputs and outputs -- what the Edge TPU report and the exports' tests inspect.

Only the fields of TFLite's `schema.fbs` read here are decoded (Model.operator_codes / subgraphs / buffers,
SubGraph.tensors / inputs / outputs / operators, Tensor.shape / type / buffer / name / quantization /
shape_signature, Operator.opcode_index / inputs / outputs, OperatorCode's builtin and custom codes), with the
flatbuffer rules: a table starts with a signed offset back to its vtable, whose uint16 entries give each
field's offset in the table (0 = absent, the schema's default); vectors and strings are a uint32 length
followed by their elements. Nothing here imports TensorFlow, so the `lite` install can use it too.
"""
import collections
import struct

# TensorType of schema.fbs -> numpy-style dtype name.
TENSOR_TYPES = {0: 'float32', 1: 'float16', 2: 'int32', 3: 'uint8', 4: 'int64', 5: 'string', 6: 'bool',
                7: 'int16', 8: 'complex64', 9: 'int8', 10: 'float64', 11: 'complex128', 12: 'uint64',
                13: 'resource', 14: 'variant', 15: 'uint32', 16: 'uint16', 17: 'int4'}

# BuiltinOperator of schema.fbs (the codes these models and the Edge TPU's list use).
BUILTIN_OPERATORS = {
    0: 'ADD', 1: 'AVERAGE_POOL_2D', 2: 'CONCATENATION', 3: 'CONV_2D', 4: 'DEPTHWISE_CONV_2D', 5: 'DEPTH_TO_SPACE',
    6: 'DEQUANTIZE', 7: 'EMBEDDING_LOOKUP', 8: 'FLOOR', 9: 'FULLY_CONNECTED', 10: 'HASHTABLE_LOOKUP',
    11: 'L2_NORMALIZATION', 12: 'L2_POOL_2D', 13: 'LOCAL_RESPONSE_NORMALIZATION', 14: 'LOGISTIC',
    15: 'LSH_PROJECTION', 16: 'LSTM', 17: 'MAX_POOL_2D', 18: 'MUL', 19: 'RELU', 20: 'RELU_N1_TO_1', 21: 'RELU6',
    22: 'RESHAPE', 23: 'RESIZE_BILINEAR', 24: 'RNN', 25: 'SOFTMAX', 26: 'SPACE_TO_DEPTH', 27: 'SVDF', 28: 'TANH',
    29: 'CONCAT_EMBEDDINGS', 30: 'SKIP_GRAM', 31: 'CALL', 32: 'CUSTOM', 33: 'EMBEDDING_LOOKUP_SPARSE', 34: 'PAD',
    35: 'UNIDIRECTIONAL_SEQUENCE_RNN', 36: 'GATHER', 37: 'BATCH_TO_SPACE_ND', 38: 'SPACE_TO_BATCH_ND',
    39: 'TRANSPOSE', 40: 'MEAN', 41: 'SUB', 42: 'DIV', 43: 'SQUEEZE', 44: 'UNIDIRECTIONAL_SEQUENCE_LSTM',
    45: 'STRIDED_SLICE', 46: 'BIDIRECTIONAL_SEQUENCE_RNN', 47: 'EXP', 48: 'TOPK_V2', 49: 'SPLIT', 50: 'LOG_SOFTMAX',
    51: 'DELEGATE', 52: 'BIDIRECTIONAL_SEQUENCE_LSTM', 53: 'CAST', 54: 'PRELU', 55: 'MAXIMUM', 56: 'ARG_MAX',
    57: 'MINIMUM', 58: 'LESS', 59: 'NEG', 60: 'PADV2', 61: 'GREATER', 62: 'GREATER_EQUAL', 63: 'LESS_EQUAL',
    64: 'SELECT', 65: 'SLICE', 66: 'SIN', 67: 'TRANSPOSE_CONV', 68: 'SPARSE_TO_DENSE', 69: 'TILE',
    70: 'EXPAND_DIMS', 71: 'EQUAL', 72: 'NOT_EQUAL', 73: 'LOG', 74: 'SUM', 75: 'SQRT', 76: 'RSQRT', 77: 'SHAPE',
    78: 'POW', 79: 'ARG_MIN', 80: 'FAKE_QUANT', 81: 'REDUCE_PROD', 82: 'REDUCE_MAX', 83: 'PACK', 84: 'LOGICAL_OR',
    85: 'ONE_HOT', 86: 'LOGICAL_AND', 87: 'LOGICAL_NOT', 88: 'UNPACK', 89: 'REDUCE_MIN', 90: 'FLOOR_DIV',
    91: 'REDUCE_ANY', 92: 'SQUARE', 93: 'ZEROS_LIKE', 94: 'FILL', 95: 'FLOOR_MOD', 96: 'RANGE',
    97: 'RESIZE_NEAREST_NEIGHBOR', 98: 'LEAKY_RELU', 99: 'SQUARED_DIFFERENCE', 100: 'MIRROR_PAD', 101: 'ABS',
    102: 'SPLIT_V', 103: 'UNIQUE', 104: 'CEIL', 105: 'REVERSE_V2', 106: 'ADD_N', 107: 'GATHER_ND', 108: 'COS',
    109: 'WHERE', 110: 'RANK', 111: 'ELU', 112: 'REVERSE_SEQUENCE', 113: 'MATRIX_DIAG', 114: 'QUANTIZE',
    115: 'MATRIX_SET_DIAG', 116: 'ROUND', 117: 'HARD_SWISH', 118: 'IF', 119: 'WHILE', 120: 'NON_MAX_SUPPRESSION_V4',
    121: 'NON_MAX_SUPPRESSION_V5', 122: 'SCATTER_ND', 123: 'SELECT_V2', 124: 'DENSIFY', 125: 'SEGMENT_SUM',
    126: 'BATCH_MATMUL',
}

Tensor = collections.namedtuple('Tensor', ['index', 'name', 'dtype', 'shape', 'shape_signature', 'quantization',
                                           'is_constant'])
Operator = collections.namedtuple('Operator', ['index', 'name', 'inputs', 'outputs'])


class Model(collections.namedtuple('Model', ['tensors', 'operators', 'inputs', 'outputs'])):
  """The first subgraph of a .tflite file: `tensors` (list of Tensor), `operators` (list of Operator, in
  execution order; inputs / outputs are tensor indices, -1 = an omitted optional input), model `inputs` /
  `outputs` (tensor indices)."""

  def tensor(self, index):
    return self.tensors[index]


class _Reader(object):

  def __init__(self, data):
    self.data = bytes(data)

  def u8(self, pos):
    return self.data[pos]

  def i32(self, pos):
    return struct.unpack_from('<i', self.data, pos)[0]

  def u32(self, pos):
    return struct.unpack_from('<I', self.data, pos)[0]

  def u16(self, pos):
    return struct.unpack_from('<H', self.data, pos)[0]

  def field(self, table, index):
    """Absolute position of field `index` of the table at `table`, or None when absent."""
    vtable = table - self.i32(table)
    size = self.u16(vtable)
    entry = 4 + 2 * index
    if entry >= size:
      return None
    offset = self.u16(vtable + entry)
    return table + offset if offset else None

  def indirect(self, pos):
    return pos + self.u32(pos)

  def table(self, table, index):
    pos = self.field(table, index)
    return None if pos is None else self.indirect(pos)

  def vector(self, table, index):
    """(start of the elements, length) of a vector field, or (None, 0)."""
    pos = self.field(table, index)
    if pos is None:
      return None, 0
    start = self.indirect(pos)
    return start + 4, self.u32(start)

  def ints(self, table, index, fmt='<i', size=4):
    start, count = self.vector(table, index)
    return [struct.unpack_from(fmt, self.data, start + size * i)[0] for i in range(count)] if start else []

  def tables(self, table, index):
    start, count = self.vector(table, index)
    return [self.indirect(start + 4 * i) for i in range(count)] if start else []

  def string(self, table, index):
    pos = self.field(table, index)
    if pos is None:
      return ''
    start = self.indirect(pos)
    return self.data[start + 4:start + 4 + self.u32(start)].decode('utf-8', 'replace')

  def scalar(self, table, index, fmt, default):
    pos = self.field(table, index)
    return default if pos is None else struct.unpack_from(fmt, self.data, pos)[0]


def _quantization(reader, table):
  if table is None:
    return None
  start, count = reader.vector(table, 2)  # scale: [float]
  scales = [struct.unpack_from('<f', reader.data, start + 4 * i)[0] for i in range(count)] if start else []
  zero_points = reader.ints(table, 3, '<q', 8)  # zero_point: [long]
  if not scales:
    return None
  return {'scale': scales, 'zero_point': zero_points}


def read(content):
  """Model of a .tflite flatbuffer (bytes). Raises ValueError when `content` is not a TFLite model."""
  content = bytes(content)
  if len(content) < 8 or content[4:8] != b'TFL3':
    raise ValueError('not a TFLite flatbuffer (no TFL3 identifier)')
  reader = _Reader(content)
  model = reader.indirect(0)
  codes = []
  for code in reader.tables(model, 1):
    builtin = max(reader.scalar(code, 0, '<b', 0), reader.scalar(code, 3, '<i', 0))
    custom = reader.string(code, 1)
    codes.append(custom if builtin == 32 and custom else BUILTIN_OPERATORS.get(builtin, 'BUILTIN_%d' % builtin))
  buffers = reader.tables(model, 4)
  subgraphs = reader.tables(model, 2)
  if not subgraphs:
    raise ValueError('the TFLite model has no subgraph')
  graph = subgraphs[0]
  tensors = []
  for index, tensor in enumerate(reader.tables(graph, 0)):
    buffer_index = reader.scalar(tensor, 2, '<I', 0)
    constant = False
    if 0 < buffer_index < len(buffers):
      constant = reader.vector(buffers[buffer_index], 0)[1] > 0
    tensors.append(Tensor(index, reader.string(tensor, 3), TENSOR_TYPES.get(reader.scalar(tensor, 1, '<b', 0), '?'),
                          reader.ints(tensor, 0), reader.ints(tensor, 7) or None,
                          _quantization(reader, reader.table(tensor, 4)), constant))
  operators = []
  for index, op in enumerate(reader.tables(graph, 3)):
    operators.append(Operator(index, codes[reader.scalar(op, 0, '<I', 0)], reader.ints(op, 1), reader.ints(op, 2)))
  return Model(tensors, operators, reader.ints(graph, 1), reader.ints(graph, 2))
