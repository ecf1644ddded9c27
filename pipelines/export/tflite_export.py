"""TFLite conversion of frozen MobileNetV2 graphs: classification, SSDLite detection, DeepLab segmentation.

Pipeline: a task's inference graph frozen with `pipelines.export.freeze.freeze` (EMA weights, batch norm
folded into the convs; `pipelines.export.tflite_task` builds it from the task) -> `convert` turns the frozen
GraphDef into a .tflite flatbuffer with `tf.compat.v1.lite.TFLiteConverter` (the same class on TF 1.15 and
TF 2.15) -> `export` writes `model.tflite` and `model.json` (input / output description, both written
atomically) -> `pipelines.export.tflite_runtime.TFLiteModel` runs it on a uint8 HxWx3 image.

Signatures (S = image size, K = classes without background for detection):

  classification  input [1, S, S, 3] -> probabilities float32 [1, num_classes]
  detection       input [1, S, S, 3] -> detection_boxes float32 [1, N, 4] normalized ymin, xmin, ymax,
                  xmax; detection_classes float32 [1, N] zero-based over the object classes (label id - 1);
                  detection_scores float32 [1, N]; num_detections float32 [1] -- the Object Detection API's
                  TFLite layout, from TFLite's built-in custom op `TFLite_Detection_PostProcess` fed by the
                  box encodings [1, A, 4], the sigmoid scores [1, A, K + 1] (column 0 = background, which
                  the op skips) and the anchors [A, 4] (ycenter, xcenter, h, w) as a constant.
  segmentation    input [1, S, S, 3] -> class_map int32 [1, S, S] (logits resized bilinearly to the input
                  size, corners aligned, then argmax inside the model).

Input: float32 in [-1, 1] (the training preprocessing) for quantize `none` and `float16`; uint8 for
`int8`, whose scale / zero point (the [-1, 1] range as calibrated) are in model.json, so a client
quantizes the [-1, 1] image with them (`tflite_runtime.TFLiteModel` does). Quantize modes: `none` (float32), `float16`
(weights stored as float16, computation in float32), `int8` (full-integer post-training quantization
calibrated on representative images; uint8 input, uint8 classification probabilities, while the
detection post-processing outputs and the segmentation class map stay float32 / int32). A graph trained
quantization-aware (fake quantization, `pipelines.training.quantization`) converts int8 with its learned ranges,
no calibration: uint8 on both stacks (TOCO's path), int8 on TF 2.15 (`tflite_aware`). Not available: int8 of a float detection graph on TF 1.15
(`convert` raises ValueError, see TF1_INT8_DETECTION_UNSUPPORTED).

The detection post-processing op is inserted as a NodeDef of op `TFLite_Detection_PostProcess` into the
frozen GraphDef (TensorFlow does not know the op, so the converter gets array names instead of tensors)
and converted with `allow_custom_ops`, on both stacks.
"""
import collections
import contextlib
import json
import logging
import os
import shutil
import sys

import numpy as np
import tensorflow.compat.v1 as tf

from datasets import tfrecord
from pipelines.export import edgetpu
from pipelines.export import freeze as freeze_lib
from pipelines.export import tflite_aware
from pipelines.export import tflite_runtime

QUANTIZE_MODES = ('none', 'float16', 'int8')
MODEL_NAME = 'model.tflite'
METADATA_NAME = tflite_runtime.METADATA_NAME
METADATA_VERSION = 1
INPUT_RANGE = (-1.0, 1.0)
DETECTION_POSTPROCESS_OP = 'TFLite_Detection_PostProcess'
DEFAULT_SCALE_FACTORS = (10.0, 10.0, 5.0, 5.0)
# TF 1.15's post-training quantizer (a float checkpoint, calibrated) refuses the custom op with TFLITE_BUILTINS_INT8 only ("Quantization not
# yet supported for op: CUSTOM"); with float fallback (+ TFLITE_BUILTINS) it converts, the op gets correct
# dequantized inputs, but its outputs are never written (num_detections 0, garbage boxes), in TF 1.15's
# and in TF 2.15's interpreter alike.
TF1_INT8_DETECTION_UNSUPPORTED = ('quantize=int8 of a float detection checkpoint (TFLite_Detection_PostProcess) is '
                                  'not supported on TensorFlow 1.15; train quantization-aware (train.quantization), '
                                  'use TensorFlow 2.15, or quantize=float16 / none')

PROBABILITIES = 'probabilities'
BOX_ENCODINGS = 'box_encodings'
CLASS_LOGITS = 'class_predictions_with_background'
CLASS_SCORES = 'class_scores'
DETECTION_BOXES = 'detection_boxes'
DETECTION_CLASSES = 'detection_classes'
DETECTION_SCORES = 'detection_scores'
NUM_DETECTIONS = 'num_detections'
LOGITS = 'logits'
CLASS_MAP = 'class_map'

_MEANINGS = {
    PROBABILITIES: 'class probabilities (softmax), index = class id of the training labels',
    DETECTION_BOXES: 'boxes [ymin, xmin, ymax, xmax] normalized to the input image, rows sorted by score',
    DETECTION_CLASSES: 'zero-based object class per box (label id - 1; background excluded)',
    DETECTION_SCORES: 'sigmoid score per box',
    NUM_DETECTIONS: 'number of valid rows of the detection outputs',
    CLASS_MAP: 'class id per pixel at the input resolution (argmax of bilinearly resized logits)',
    BOX_ENCODINGS: 'raw box-coder offsets (ty, tx, th, tw) per anchor',
    CLASS_SCORES: 'sigmoid scores per anchor, column 0 = background',
}


# ------------------------------------------------------------------------------------------ detection


def anchors_center_size(anchors):
  """float32 [A, 4] (ycenter, xcenter, height, width) from [A, 4] (ymin, xmin, ymax, xmax)."""
  anchors = np.asarray(anchors, np.float64)
  heights = anchors[:, 2] - anchors[:, 0]
  widths = anchors[:, 3] - anchors[:, 1]
  return np.stack([anchors[:, 0] + heights / 2, anchors[:, 1] + widths / 2, heights, widths], 1).astype(np.float32)


def _postprocess_node(name, inputs, num_classes, max_detections, max_classes_per_detection, detections_per_class,
                      use_regular_nms, score_threshold, iou_threshold, scale_factors):
  node = tf.NodeDef()
  node.name = name
  node.op = DETECTION_POSTPROCESS_OP
  node.input.extend(inputs)
  ints = {'max_detections': max_detections, 'max_classes_per_detection': max_classes_per_detection,
          'detections_per_class': detections_per_class, 'num_classes': num_classes}
  floats = {'nms_score_threshold': score_threshold, 'nms_iou_threshold': iou_threshold,
            'y_scale': scale_factors[0], 'x_scale': scale_factors[1], 'h_scale': scale_factors[2],
            'w_scale': scale_factors[3]}
  for key, value in ints.items():
    node.attr[key].i = int(value)
  for key, value in floats.items():
    node.attr[key].f = float(value)
  node.attr['use_regular_nms'].b = bool(use_regular_nms)
  # As the OD API's TF1 exporter: outputs stay float even in a quantized model.
  node.attr['_output_quantized'].b = True
  node.attr['_support_output_type_float_in_quantized_op'].b = True
  node.attr['_output_types'].list.type.extend([tf.float32.as_datatype_enum] * 4)
  return node


def add_detection_postprocess(raw, anchors, num_classes, max_detections=10, detections_per_class=100,
                              score_threshold=1e-8, iou_threshold=0.6, use_regular_nms=False,
                              max_classes_per_detection=1, scale_factors=DEFAULT_SCALE_FACTORS,
                              name=DETECTION_POSTPROCESS_OP):
  """Appends TFLite's `TFLite_Detection_PostProcess` custom op to a `detection_raw_graph`.

  Args:
    raw: FrozenGraph of the SSD network (outputs BOX_ENCODINGS [1, A, 4], CLASS_SCORES [1, A, K + 1]).
    anchors: float [A, 4] normalized anchors [ymin, xmin, ymax, xmax] (`heads.core.anchors`).
    num_classes: K, object classes without background (the scores have K + 1 columns).
    max_detections: N, rows of the outputs.
    detections_per_class: boxes kept per class by regular NMS (ignored by the fast NMS).
    score_threshold, iou_threshold: NMS thresholds (scores must exceed score_threshold).
    use_regular_nms: per-class NMS (slower) instead of the fast class-agnostic one.
    max_classes_per_detection: classes reported per box by the fast NMS.
    scale_factors: box-coder (y, x, h, w) scale factors.
    name: the op's node name (also the output tensors' names).

  Returns:
    FrozenGraph with outputs DETECTION_BOXES, DETECTION_CLASSES, DETECTION_SCORES, NUM_DETECTIONS
    ('<name>', '<name>:1', '<name>:2', '<name>:3'). Only TFLite can run it.

  Raises:
    ValueError: anchors and box encodings differ in count, or the score columns are not K + 1.
  """
  graph_def = tf.GraphDef()
  graph_def.CopyFrom(raw.graph_def)
  nodes = dict((n.name, n) for n in graph_def.node)
  boxes_name, scores_name = raw.outputs[BOX_ENCODINGS], raw.outputs[CLASS_SCORES]
  boxes_shape = _static_shape(nodes, boxes_name)
  scores_shape = _static_shape(nodes, scores_name)
  anchors = anchors_center_size(anchors)
  if boxes_shape and boxes_shape[1] != len(anchors):
    raise ValueError('the network predicts %d boxes but there are %d anchors' % (boxes_shape[1], len(anchors)))
  if scores_shape and scores_shape[2] != num_classes + 1:
    raise ValueError('scores have %d columns, expected num_classes + 1 = %d' % (scores_shape[2], num_classes + 1))
  anchors_name = name + '/anchors'
  graph_def.node.extend([freeze_lib.const_node(anchors_name, anchors)])
  graph_def.node.extend([_postprocess_node(
      name, [boxes_name.split(':')[0], scores_name.split(':')[0], anchors_name], num_classes, max_detections,
      max_classes_per_detection, detections_per_class, use_regular_nms, score_threshold, iou_threshold,
      scale_factors)])
  outputs = collections.OrderedDict([
      (DETECTION_BOXES, name + ':0'), (DETECTION_CLASSES, name + ':1'), (DETECTION_SCORES, name + ':2'),
      (NUM_DETECTIONS, name + ':3')])
  return raw._replace(graph_def=graph_def, outputs=outputs)


def _static_shape(nodes, tensor_name):
  node = nodes.get(tensor_name.split(':')[0])
  if node is None or '_output_shapes' not in node.attr:
    return None
  return [d.size for d in node.attr['_output_shapes'].list.shape[0].dim]


# ------------------------------------------------------------------------------------------ conversion


def _array_name(tensor_name):
  """TOCO / MLIR array name: 'node' for output 0, 'node:i' otherwise."""
  return tensor_name[:-2] if tensor_name.endswith(':0') else tensor_name


def _make_converter(frozen):
  """tf.compat.v1 TFLiteConverter on tensors when TF can import the graph, on array names otherwise."""
  names = list(frozen.outputs.values())
  if not _has_postprocess(frozen):
    graph = tf.Graph()
    with graph.as_default():
      tf.import_graph_def(frozen.graph_def, name='')
    inputs = [graph.get_tensor_by_name(frozen.input_name + ':0')]
    outputs = [graph.get_tensor_by_name(n) for n in names]
    return tf.lite.TFLiteConverter(graph.as_graph_def(), inputs, outputs)
  # TensorFlow cannot import the custom op: give the converter the GraphDef with array names and shapes.
  converter = tf.lite.TFLiteConverter(
      frozen.graph_def, None, None, input_arrays_with_shape=[(frozen.input_name, frozen.input_shape)],
      output_arrays=[_array_name(n) for n in names])
  converter.allow_custom_ops = True
  return converter


def _has_postprocess(frozen):
  return any(n.op == DETECTION_POSTPROCESS_OP for n in frozen.graph_def.node)


def is_tf1():
  return tf.__version__.startswith('1.')


def representative_dataset(images):
  """Generator function over float32 [H, W, 3] (or [1, H, W, 3]) images in [-1, 1] for calibration."""
  def generate():
    for image in images:
      image = np.asarray(image, np.float32)
      yield [image if image.ndim == 4 else image[None]]
  return generate


IO_TYPES = ('uint8', 'int8', 'float32')
is_quantization_aware = tflite_aware.is_quantization_aware


def _tf_type(name):
  return {'uint8': tf.uint8, 'int8': tf.int8, 'float32': tf.float32}[name]


def default_output_type(frozen):
  """uint8 probabilities (scale 1/256) for a classifier; float32 otherwise (boxes, scores and class maps are not
  quantized by their ops)."""
  return 'uint8' if PROBABILITIES in frozen.outputs else 'float32'


def convert(frozen, quantize='none', representative_images=None, input_type=None, output_type=None):
  """Converts a FrozenGraph to a .tflite flatbuffer.

  Args:
    frozen: FrozenGraph (`pipelines.export.freeze.freeze`), float32 input.
    quantize: 'none', 'float16' or 'int8'.
    representative_images: for 'int8': sequence of float32 [S, S, 3] images in [-1, 1] (a few dozen to a
      few hundred real images; the input range calibrated from them sets the uint8 input's scale).

    input_type, output_type: 'int8' only: the model's input / output dtype, 'uint8', 'int8' or 'float32'
      (default uint8 input; uint8 probabilities, float32 otherwise). Detection outputs stay float32 (the
      post-process op's), segmentation's class map int32.

  A graph with fake quantization (trained with `train.quantization`) converts with its learned ranges and needs
  no images (`pipelines.export.tflite_aware`): uint8 on both stacks (TOCO's path, detection included: the OD
  API's quantized SSD route), int8 ends on TF 2.15 from symmetric weight ranges.

  Returns:
    bytes, the flatbuffer.

  Raises:
    ValueError: unknown mode, 'int8' without images, or a mode this stack cannot convert (one line).
  """
  if quantize not in QUANTIZE_MODES:
    raise ValueError('quantize must be one of %s, got %r' % (', '.join(QUANTIZE_MODES), quantize))
  for name, value in (('input_type', input_type), ('output_type', output_type)):
    if value is not None and value not in IO_TYPES:
      raise ValueError('%s must be one of %s, got %r' % (name, ', '.join(IO_TYPES), value))
    if value is not None and quantize != 'int8':
      raise ValueError('%s applies to quantize=int8 only (quantize is %r)' % (name, quantize))
  if quantize == 'int8' and is_quantization_aware(frozen):
    from pipelines.training import quantization  # pylint: disable=g-import-not-at-top
    inference, input_type, output_type = tflite_aware.end_types(
        frozen, input_type, output_type, classifier=PROBABILITIES in frozen.outputs, tf1=is_tf1())
    converter = tflite_aware.configure(_make_converter(frozen), _array_name(frozen.input_name + ':0'),
                                       quantization.input_quantization(), inference, input_type, output_type, is_tf1())
    with _toco_on_path():
      return converter.convert()
  input_type, output_type = input_type or 'uint8', output_type or default_output_type(frozen)
  if quantize == 'int8' and is_tf1() and _has_postprocess(frozen):
    raise ValueError(TF1_INT8_DETECTION_UNSUPPORTED)
  converter = _make_converter(frozen)
  if quantize == 'float16':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  elif quantize == 'int8':
    if representative_images is None or not len(representative_images):  # pylint: disable=g-explicit-length-test
      raise ValueError('quantize=int8 needs representative_images (calibration images in [-1, 1])')
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = tf.lite.RepresentativeDataset(representative_dataset(representative_images))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = _tf_type(input_type)
    # Probabilities become uint8 (scale 1/256) by default; box / score / class-map outputs are not quantized.
    converter.inference_output_type = _tf_type(output_type)
  with _toco_on_path():
    return converter.convert()


@contextlib.contextmanager
def _toco_on_path():
  """TF 1.15 converts in a `toco_from_protos` subprocess found on PATH; a virtualenv used without being
  activated has it beside its python only, so put that directory on PATH while converting."""
  bin_dir = os.path.dirname(sys.executable)
  if not is_tf1() or shutil.which('toco_from_protos') or \
      not tf.io.gfile.exists(os.path.join(bin_dir, 'toco_from_protos')):
    yield
    return
  old = os.environ.get('PATH')
  os.environ['PATH'] = bin_dir + os.pathsep + (old or '')
  try:
    yield
  finally:
    if old is None:
      del os.environ['PATH']
    else:
      os.environ['PATH'] = old


# ------------------------------------------------------------------------------------------ files


def _quantization(detail):
  scale, zero_point = detail.get('quantization', (0.0, 0))
  if not scale:
    return None
  return {'scale': float(scale), 'zero_point': int(zero_point)}


def _output_details(interpreter, frozen):
  """The interpreter's output details in the order of `frozen.outputs` (matched by name, else position)."""
  details = interpreter.get_output_details()
  by_name = dict((d['name'], d) for d in details)
  names = [_array_name(t) for t in frozen.outputs.values()]
  if all(n in by_name for n in names):
    return [by_name[n] for n in names]
  return details


def describe(model_content, frozen, task, quantize, extra=None):
  """The model.json dict: task, input (name, dtype, shape, value range, quantization) and outputs."""
  interpreter = tf.lite.Interpreter(model_content=model_content)
  interpreter.allocate_tensors()
  (inp,) = interpreter.get_input_details()
  outputs = []
  for key, detail in zip(frozen.outputs, _output_details(interpreter, frozen)):
    outputs.append({'key': key, 'name': detail['name'], 'dtype': np.dtype(detail['dtype']).name,
                    'shape': [int(d) for d in detail['shape']], 'quantization': _quantization(detail),
                    'meaning': _MEANINGS.get(key, '')})
  meta = {
      'format_version': METADATA_VERSION,
      'task': task,
      'quantize': quantize,
      'tensorflow_version': tf.__version__,
      'input': {
          'name': inp['name'], 'dtype': np.dtype(inp['dtype']).name, 'shape': [int(d) for d in inp['shape']],
          'layout': 'NHWC, RGB',
          'value_range': list(INPUT_RANGE),
          'preprocessing': 'resize to HxW (bilinear), then x = pixel / 127.5 - 1; quantized inputs take '
                           'round(x / scale + zero_point)',
          'quantization': _quantization(inp),
      },
      'outputs': outputs,
  }
  meta.update(extra or {})
  return meta


def export(frozen, output_dir, task, quantize='none', representative_images=None, extra_metadata=None,
           input_type=None, output_type=None):
  """Converts and writes `<output_dir>/model.tflite` and `<output_dir>/model.json` (each atomically).

  Args:
    frozen: FrozenGraph of a task's inference model (`pipelines.export.tflite_task.frozen_graph`).
    output_dir: created if missing.
    task: the task's name (recorded in the JSON).
    quantize, representative_images, input_type, output_type: see `convert`.
    extra_metadata: dict merged into the JSON (e.g. class names, num_classes).

  Returns:
    (model path, metadata path).
  """
  content = convert(frozen, quantize, representative_images, input_type, output_type)
  meta = describe(content, frozen, task, quantize, extra_metadata)
  if quantize == 'int8':  # what Coral's boards need: checked against their documented requirements
    meta['edgetpu'] = edgetpu.check(content)
    logging.getLogger('mnv2').info('tflite export: %s', edgetpu.summary(meta['edgetpu']))
  if not tf.gfile.IsDirectory(output_dir):
    tf.gfile.MakeDirs(output_dir)
  model_path = os.path.join(output_dir, MODEL_NAME)
  meta_path = os.path.join(output_dir, METADATA_NAME)
  tfrecord.atomic_write(model_path, content)
  tfrecord.atomic_write(meta_path, (json.dumps(meta, indent=2, sort_keys=True) + '\n').encode('utf-8'))
  return model_path, meta_path
