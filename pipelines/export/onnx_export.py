"""ONNX export (tf2onnx) and ONNX Runtime prediction: the `onnx` extra (`pip install ".[cpu,onnx]"`).

`mnv2 export --format onnx` freezes the task's inference network (batch norm folded, moving-average weights,
as for TFLite) with its post-processing in TensorFlow ops (`Task.onnx_outputs`: detection decodes its boxes and
runs the SavedModel's per-class NMS, which tf2onnx turns into ONNX NonMaxSuppression), converts it with tf2onnx
and writes, in the export directory:

  model.onnx    input `input:0` float32 [1, S, S, 3] NHWC RGB in [-1, 1]; outputs as the TFLite model's
                (classification probabilities [1, K + 1]; detection detection_boxes [1, D, 4] normalized,
                detection_classes [1, D] 0-based, detection_scores [1, D], num_detections [1]; segmentation
                class_map int32 [1, S, S]; a multi-task model `<member>/<key>`)
  model.json    format `onnx`, task, opset, input (name, dtype, shape, layout, value range, preprocessing),
                outputs (key, name, dtype, shape), the task's class names and decoding settings
  config.yaml   the training config;   the labels file

`runtime_predict.ONNXModel` runs model.onnx with ONNX Runtime (CPU, `num_threads` intra-op threads) and
`predict` turns its outputs into the SavedModel's prediction dicts (`runtime_predict` imports no TensorFlow). tf2onnx 1.16 needs
TensorFlow 2.x: on TF 1.15 (Python 3.7, whose TensorFlow pins numpy < 1.19 while every onnxruntime wheel for it
wants numpy >= 1.21.6) the export is refused in one line.
"""
import json
import logging
import os

import numpy as np
import tensorflow.compat.v1 as tf

from datasets import tfrecord
from pipelines import config as config_schema
from pipelines.export import freeze as freeze_lib
from pipelines.export import runtime_predict
from pipelines.export import tflite_export
from pipelines.export import tflite_task
from pipelines.tasks import registry
from pipelines.training import checkpoints

LOG = logging.getLogger('mnv2')
MODEL_NAME = 'model.onnx'
METADATA_NAME = tflite_export.METADATA_NAME
FORMAT = runtime_predict.ONNX_FORMAT
DEFAULT_OPSET = 13
INSTALL_HINT = 'pip install ".[cpu,onnx]" on the TensorFlow 2.15 stack (Python 3.9-3.11)'


def _tf2onnx():
  """The tf2onnx module, or ValueError in one line saying what to install / which stack to use."""
  if tf.__version__.startswith('1.'):
    raise ValueError('--format onnx needs TensorFlow 2.15 (this is TensorFlow %s, for which no tf2onnx / '
                     'onnxruntime pair installs beside its numpy): %s' % (tf.__version__, INSTALL_HINT))
  try:
    import tf2onnx  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError('--format onnx needs tf2onnx (the `onnx` extra): %s' % INSTALL_HINT)
  return tf2onnx


onnx_runtime = runtime_predict.onnx_runtime


def frozen_graph(config, checkpoint_path):
  """FrozenGraph of the task's inference network with its post-processing (`Task.onnx_outputs`)."""
  task = registry.make_task(config)
  size = task.serving_size()
  return freeze_lib.freeze(lambda images: task.onnx_outputs(task.model({'image': images}, False)),
                           checkpoint_path, [1, size, size, 3])


def convert(frozen, opset=DEFAULT_OPSET):
  """The ONNX ModelProto of a FrozenGraph (float32 input), converted by tf2onnx."""
  tf2onnx = _tf2onnx()
  with tf.Graph().as_default():
    model, _ = tf2onnx.convert.from_graph_def(
        frozen.graph_def, input_names=[frozen.input_name + ':0'], output_names=list(frozen.outputs.values()),
        opset=opset)
  return model


def describe(model, frozen, task, opset, extra):
  """The model.json dict of an ONNX model (`pipelines.export.tflite_export.describe`'s layout)."""
  shapes = {o.name: [d.dim_value or None for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
  from onnx import helper  # pylint: disable=g-import-not-at-top
  dtypes = {o.name: np.dtype(helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type)).name
            for o in model.graph.output}
  meta = {
      'format': FORMAT, 'format_version': tflite_export.METADATA_VERSION, 'task': task, 'opset': opset,
      'tensorflow_version': tf.__version__,
      'input': {'name': frozen.input_name + ':0', 'dtype': 'float32', 'shape': frozen.input_shape,
                'layout': 'NHWC, RGB', 'value_range': list(tflite_export.INPUT_RANGE),
                'preprocessing': 'resize to HxW (bilinear), then x = pixel / 127.5 - 1', 'quantization': None},
      'outputs': [{'key': key, 'name': name, 'dtype': dtypes.get(name), 'shape': shapes.get(name),
                   'quantization': None} for key, name in frozen.outputs.items()],
  }
  meta.update(extra)
  return meta


def export(config, model_dir, export_dir=None, checkpoint_path=None, opset=DEFAULT_OPSET):
  """Writes model.onnx, model.json, config.yaml and the labels file (each atomically); returns the model path.

  Default directory: `<model_dir>/export/onnx`.
  """
  _tf2onnx()  # before any work: the one-line error on a stack without it
  output_dir = export_dir or os.path.join(model_dir, 'export', FORMAT)
  with checkpoints.held(model_dir, checkpoint_path, what='export') as held_path:
    frozen = frozen_graph(config, held_path)
    checkpoint_path = held_path
  LOG.info('onnx export: %s, %d batch norms folded, opset %d', checkpoint_path, frozen.folded, opset)
  model = convert(frozen, opset)
  if not tf.gfile.IsDirectory(output_dir):
    tf.gfile.MakeDirs(output_dir)
  task = registry.make_task(config)
  extra = {'checkpoint': os.path.basename(checkpoint_path), 'config': config_schema.FILE_NAME,
           'batch_norms_folded': frozen.folded}
  extra.update(tflite_task.task_metadata(task, output_dir))
  config_schema.save(config, os.path.join(output_dir, config_schema.FILE_NAME))
  meta = describe(model, frozen, config.task, opset, extra)
  model_path = os.path.join(output_dir, MODEL_NAME)
  tfrecord.atomic_write(model_path, model.SerializeToString())
  tfrecord.atomic_write(os.path.join(output_dir, METADATA_NAME),
                        (json.dumps(meta, indent=2, sort_keys=True) + '\n').encode('utf-8'))
  return model_path


# ------------------------------------------------------------------------------------------ run


# Running model.onnx lives where it imports no TensorFlow (a `lite` install runs it: `runtime_predict`, with
# `ONNXModel` and `read_metadata`); `predict` stays here for the callers that import it from this module.
predict = runtime_predict.predict_onnx
