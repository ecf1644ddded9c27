"""Prediction with an exported model.tflite or model.onnx, with or without TensorFlow installed.

`TFLitePredictor` (`ONNXPredictor`: ONNX Runtime) reads the model, its model.json and the config.yaml beside
it, preprocesses encoded images as the task's serving path does, runs the runtime and decodes its outputs
into the SavedModel's prediction dicts (`task.decode_tflite`), which `pipelines.cli.render` draws.

Two ways to preprocess, one decoding:

- TensorFlow installed: the task's own `features_from_bytes` graph, so the model input is the SavedModel's to
  the bit (`pipelines.tasks.<task>`);
- TensorFlow not installed (a `lite` install: `pip install ".[lite]"`): the task's numpy twin
  (`pipelines.tasks.portable`, `datasets.numpy_preprocessing`), the same arithmetic on Pillow's decoding.
  TensorFlow is then never imported: `mnv2 predict --tflite / --onnx` runs on ai-edge-litert (or
  tflite-runtime) and onnxruntime alone.

Not here: the exports (`tflite_task`, `onnx_export`), the TFLite interpreter and its model wrapper
(`tflite_runtime`).
"""
import json
import os

from datasets import numpy_preprocessing
from pipelines import config as config_schema
from pipelines import tf_optional
from pipelines.export import tflite_runtime
from pipelines.tasks import registry

CONFIG_NAME = config_schema.FILE_NAME
METADATA_NAME = tflite_runtime.METADATA_NAME
ONNX_FORMAT = 'onnx'
LITE_HINT = 'pip install ".[lite]" (onnxruntime without TensorFlow) or ".[cpu,onnx]"'
_MAGIC = ((b'\xff\xd8\xff', 'JPEG'), (b'\x89PNG\r\n\x1a\n', 'PNG'), (b'GIF87a', 'GIF'), (b'GIF89a', 'GIF'),
          (b'BM', 'BMP'))


def check_images(image_paths):
  """Raises ValueError naming the file for a missing file or one that is not a JPEG/PNG/GIF/BMP image."""
  missing = [p for p in image_paths if not tf_optional.files(p).exists(p)]
  if missing:
    raise ValueError('image file not found: %s' % ', '.join(missing))
  for path in image_paths:
    with tf_optional.files(path).GFile(path, 'rb') as f:
      head = f.read(8)
    if not any(head.startswith(magic) for magic, _ in _MAGIC):
      raise ValueError('%s: not a JPEG, PNG, GIF or BMP image (predict reads image files)' % path)


def read_metadata(model_path, expected_format):
  """model.json beside `model_path`; ValueError naming the file if it is missing, not JSON, or of another
  format."""
  path = os.path.join(os.path.dirname(model_path), METADATA_NAME)
  gfile = tf_optional.files(path)
  if not gfile.exists(path):
    raise ValueError('%s: no %s beside it (export the model with mnv2 export, which writes both)' % (
        model_path, METADATA_NAME))
  try:
    with gfile.GFile(path, 'r') as f:
      meta = json.load(f)
  except ValueError as e:
    raise ValueError('%s: not a model.json (%s)' % (path, e))
  found = meta.get('format', 'tflite') if isinstance(meta, dict) else None
  if found != expected_format or 'input' not in meta or 'outputs' not in meta:
    raise ValueError('%s: describes a %s model, not the %s model %s' % (path, found, expected_format, model_path))
  return meta


def onnx_runtime():
  """The onnxruntime module, or ValueError in one line naming the extras."""
  try:
    import onnxruntime  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError('ONNX prediction needs onnxruntime (the `lite` or `onnx` extra): %s' % LITE_HINT)
  return onnxruntime


class ONNXModel(object):
  """model.onnx + model.json on ONNX Runtime (CPU): a preprocessed input in, dict key -> numpy out, as
  `pipelines.export.tflite_runtime.TFLiteModel`."""

  def __init__(self, model_path, num_threads=None):
    runtime = onnx_runtime()
    self.metadata = read_metadata(model_path, ONNX_FORMAT)
    with tf_optional.files(model_path).GFile(model_path, 'rb') as f:
      content = f.read()
    options = runtime.SessionOptions()
    if num_threads:
      options.intra_op_num_threads = int(num_threads)
    try:
      self.session = runtime.InferenceSession(content, options, providers=['CPUExecutionProvider'])
    except Exception as e:  # onnxruntime raises its own exception types  # pylint: disable=broad-except
      raise ValueError('%s: not a loadable ONNX model (%s)' % (model_path, str(e).split('\n')[0]))
    self._input = self.metadata['input']['name']
    self._outputs = [(o['key'], o['name']) for o in self.metadata['outputs']]

  def run(self, model_input):
    values = self.session.run([name for _, name in self._outputs], {self._input: model_input})
    return dict((key, value) for (key, _), value in zip(self._outputs, values))


class TFLitePredictor(object):
  """model.tflite + model.json + config.yaml -> the SavedModel's prediction dicts for encoded images.

  Args:
    model_path: the exported model file.
    num_threads: the runtime's threads (None: its default).
    use_tensorflow: preprocess with the task's TensorFlow graph (True) or its numpy twin (False); None: with
      TensorFlow where it is installed.
  """

  def __init__(self, model_path, num_threads=None, use_tensorflow=None):
    self.model = self.make_model(model_path, num_threads)
    self.metadata = self.model.metadata
    directory = os.path.dirname(model_path if tf_optional.is_remote(model_path) else os.path.abspath(model_path))
    config_path = os.path.join(directory, self.metadata.get('config', CONFIG_NAME))
    config = config_schema.load(config_path)
    if self.metadata.get('task') != config.task:
      raise ValueError('%s: model.json is of a %s model but %s is a %s config' % (
          model_path, self.metadata.get('task'), config_path, config.task))
    self.use_tensorflow = tf_optional.tensorflow_available() if use_tensorflow is None else use_tensorflow
    self._session = None
    if self.use_tensorflow:
      import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
      self.task = registry.make_task(config)
      self._graph = tf.Graph()
      with self._graph.as_default():
        self._encoded = tf.placeholder(tf.string, [None])
        self._features = self.task.features_from_bytes(self._encoded)
      self._session = tf.Session(graph=self._graph)
    else:
      self.task = registry.portable_class(config.task)(config)

  def make_model(self, model_path, num_threads):
    """The runtime model (`.metadata`, `.run(input) -> dict`): TFLite's here, ONNX Runtime's in a subclass."""
    return tflite_runtime.TFLiteModel(model_path, num_threads=num_threads)

  def close(self):
    if self._session is not None:
      self._session.close()

  def features(self, encoded, name='image'):
    """The task's serving features (numpy, batch of one) of one encoded image."""
    if self._session is None:
      return self.task.numpy_features(numpy_preprocessing.decode(encoded, name))
    return {k: v[0] for k, v in self._session.run(self._features, {self._encoded: [encoded]}).items()}

  def model_input(self, image):
    """float32 [S, S, 3] in [-1, 1] -> the model's input [1, S, S, 3] (quantized for integer inputs)."""
    return tflite_runtime.quantize_input(image[None], self.metadata['input'])

  def interpreter_call(self, encoded):
    """A no-argument function that runs the interpreter alone on this image (preprocessing done once):
    what "model only" latencies time."""
    x = self.model_input(self.features(encoded)['image'])
    return lambda: self.model.run(x)

  def __call__(self, encoded, name='image'):
    features = self.features(encoded, name)
    outputs = self.model.run(self.model_input(features['image']))
    return self.task.decode_tflite(self.metadata, outputs, features)


class ONNXPredictor(TFLitePredictor):
  """model.onnx + model.json + config.yaml -> the SavedModel's prediction dicts for encoded images."""

  def make_model(self, model_path, num_threads):
    return ONNXModel(model_path, num_threads=num_threads)


def predict(model_path, image_paths, num_threads=None, predictor_class=TFLitePredictor, use_tensorflow=None):
  """One prediction dict per image file from a model.tflite (keys as `pipelines.cli.predict`'s)."""
  predictor = predictor_class(model_path, num_threads, use_tensorflow)
  try:
    results = []
    for path in image_paths:
      with tf_optional.files(path).GFile(path, 'rb') as f:
        results.append(predictor(f.read(), path))
    return results
  finally:
    predictor.close()


def predict_onnx(model_path, image_paths, num_threads=None, use_tensorflow=None):
  """One prediction dict per image file from a model.onnx."""
  return predict(model_path, image_paths, num_threads, ONNXPredictor, use_tensorflow)
