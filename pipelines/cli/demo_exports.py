"""The demo's exports, measured: each trained model's SavedModel, TFLite float32 / int8 and quantization-aware
int8 export scored on the held-out split by the task's own metric code (`pipelines.evaluation.exported_eval`),
timed on one held-out image and weighed. `pipelines.cli.demo` runs these and reports the rows.
"""
import collections
import dataclasses
import logging
import os

from pipelines.cli import predict
from pipelines.evaluation import exported_eval
from pipelines.tasks import registry
from pipelines.training import runner

LOG = logging.getLogger('mnv2')
CALIBRATION_IMAGES = 32  # int8 calibration, drawn from the training split (the held-out split stays unseen)
LATENCY_RUNS = 30
# (row name, `mnv2 export` format, --quantize)
EXPORTS = (('SavedModel', 'saved_model', None), ('TFLite float32', 'tflite', 'none'), ('TFLite int8', 'tflite', 'int8'))
# One exported model measured on the held-out split: metrics (dict, the Estimator's keys) or `error` (why
# this export does not exist on this stack); latency_ms from encoded image to prediction dict; model_ms the
# TFLite interpreter alone.
Export = collections.namedtuple('Export', ['name', 'path', 'metrics', 'size_bytes', 'latency_ms', 'model_ms',
                                           'error'])


def _read(path):
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  with tf.io.gfile.GFile(path, 'rb') as f:
    return f.read()


def _train_split_config(config):
  """`config` with each eval split replaced by its training split: int8 calibrates on training images."""
  members = config.member_configs()
  if members[0][0] is None:
    return dataclasses.replace(config, data=dataclasses.replace(config.data, eval_files=config.data.train_files))
  section = config.section()
  swapped = dict((name, dataclasses.replace(getattr(section, name), data=dataclasses.replace(
      member.data, eval_files=member.data.train_files))) for name, member in members)
  return dataclasses.replace(config, **{config.task: dataclasses.replace(section, **swapped)})


def _tflite_threads():
  from pipelines.export import tflite_runtime  # pylint: disable=g-import-not-at-top
  return os.cpu_count() if tflite_runtime.interpreter_supports_num_threads() else None


def measure_exports(config, model_dir, saved_model_dir, sample_image):
  """The SavedModel and the TFLite float32 / int8 exports of one trained model: each scored on the
  held-out split by `exported_eval` (the task's metric code), timed on one held-out image, and weighed.

  Returns a list of `Export`, in EXPORTS order; an export this stack cannot make has `error` set.
  """
  from pipelines.export import tflite_task  # pylint: disable=g-import-not-at-top
  encoded = _read(sample_image)
  rows = []
  for name, fmt, quantize in EXPORTS:
    model_only = None
    if fmt == 'saved_model':
      path, loaded = saved_model_dir, predict.Predictor(saved_model_dir)
      predict_one = loaded.one
    else:
      reason = tflite_task.unsupported(config, quantize)
      if reason:
        LOG.warning('%s not made: %s', name, reason)
        rows.append(Export(name, None, None, None, None, None, reason))
        continue
      path = tflite_task.export(config, model_dir, quantize=quantize, num_calibration_images=CALIBRATION_IMAGES,
                                calibration_config=_train_split_config(config))
      loaded = predict_one = tflite_task.TFLitePredictor(path, num_threads=_tflite_threads())
      model_only = loaded.interpreter_call(encoded)
    rows.append(_measured(config, name, path, loaded, predict_one, encoded, model_only))
  return rows


def _measured(config, name, path, loaded, predict_one, encoded, model_only):
  """`Export` row of one loaded model (closed after): scored on the held-out split, timed, weighed."""
  try:
    metrics = exported_eval.evaluate(config, predict_one)
    latency = exported_eval.latency_ms(lambda: predict_one(encoded), LATENCY_RUNS)
    model_ms = exported_eval.latency_ms(model_only, LATENCY_RUNS) if model_only else None
  finally:
    loaded.close()
  row = Export(name, path, metrics, exported_eval.size_bytes(path), latency, model_ms, None)
  LOG.info('  %s: %s, %.1f ms per image, %s', name, ', '.join(
      '%s %s' % (key, _value(metrics.get(key))) for key in _headline_keys(config)), latency,
           _megabytes(row.size_bytes))
  return row


QAT_NAME = 'TFLite int8 (quantization-aware)'
# The quantization-aware fine-tune of a demo model: this fraction of its float steps, at this fraction of its
# base learning rate (`quantization.fine_tune_config`).
QAT_STEP_FRACTION = 0.03
QAT_LEARNING_RATE_FRACTION = 0.1


def measure_quantization_aware(config, float_model_dir, model_dir, sample_image):
  """Fine-tunes the float model quantization-aware, exports it to TFLite int8 with its learned ranges and
  measures that export as `measure_exports` does its rows: an `Export` named QAT_NAME."""
  from pipelines.export import tflite_task  # pylint: disable=g-import-not-at-top
  from pipelines.training import quantization  # pylint: disable=g-import-not-at-top
  qat = quantization.fine_tune_config(config, float_model_dir, QAT_STEP_FRACTION, QAT_LEARNING_RATE_FRACTION)
  # An intermediate model dir: no graph.pbtxt / TensorBoard graph (seconds per start on TF 1.15).
  qat = dataclasses.replace(qat, runtime=dataclasses.replace(qat.runtime, save_graph_def=False))
  runner.train(qat, model_dir)
  path = tflite_task.export(qat, model_dir, quantize='int8')
  encoded = _read(sample_image)
  loaded = tflite_task.TFLitePredictor(path, num_threads=_tflite_threads())
  return _measured(qat, QAT_NAME, path, loaded, loaded, encoded, loaded.interpreter_call(encoded))


def _headlines(config):
  """(row name, single task, metrics.json key, DemoMetric) of the demo's targets for this config: one per
  member for a config that combines tasks (`<task> (<member>)`, keys `<member>/<key>`)."""
  rows = []
  for name, member in config.member_configs():
    demo = registry.task_class(member.task).DEMO
    if name is None:
      rows.append((config.task, config.task, demo.key, demo))
    else:
      rows.append(('%s (%s)' % (config.task, name), name, '%s/%s' % (name, demo.key), demo))
  return rows


def _headline_keys(config):
  """The metrics.json keys of the demo's targets for this config (one per member for multitask)."""
  return [key for _, _, key, _ in _headlines(config)]


def _value(value):
  """A metric for a person: COCO's -1 (no such objects in the split) is n/a."""
  if value is None or (isinstance(value, float) and value != value):
    return 'n/a'
  if isinstance(value, (int, float)) and value == -1:
    return 'n/a'
  return '%.3f' % value if isinstance(value, float) else str(value)


def _megabytes(size):
  return 'n/a' if size is None else '%.2f MB' % (size / 1e6)
