"""Running an exported model.tflite: the interpreter (threads where the stack has them) and `TFLiteModel`.

The interpreter is TensorFlow's `tf.lite.Interpreter` where TensorFlow is installed, else a standalone TFLite
runtime (`ai_edge_litert`, then `tflite_runtime`: the `lite` extra), so a TensorFlow-free install runs the
same models, the SSD post-processing op included. `TFLiteModel` reads model.tflite with its model.json
(`pipelines.export.tflite_export.describe`) and runs it on a uint8 RGB image or an already preprocessed input,
dequantizing quantized outputs. Not here: making the model (`tflite_export`), turning its outputs into a
task's predictions (`runtime_predict.TFLitePredictor`).
"""
import importlib
import json
import os

import numpy as np

from pipelines import tf_optional

METADATA_NAME = 'model.json'
# Standalone TFLite runtimes, in the order tried where TensorFlow is not installed.
STANDALONE_RUNTIMES = ('ai_edge_litert.interpreter', 'tflite_runtime.interpreter')


def interpreter_class():
  """`tf.lite.Interpreter` where TensorFlow is installed, else the first standalone runtime that imports.

  Raises:
    ValueError: in one line naming the extras, when there is none.
  """
  if tf_optional.tensorflow_available():
    import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
    return tf.lite.Interpreter
  for module in STANDALONE_RUNTIMES:
    try:
      return importlib.import_module(module).Interpreter
    except ImportError:
      continue
  raise ValueError('TFLite prediction needs a TFLite runtime: pip install ".[lite]" (ai-edge-litert, no '
                   'TensorFlow) or ".[cpu]" (TensorFlow\'s own interpreter)')


def interpreter_supports_num_threads():
  """True if this stack's interpreter takes `num_threads` (TF >= 2.x and the standalone runtimes, not TF 1.15)."""
  import inspect  # pylint: disable=g-import-not-at-top
  try:
    return 'num_threads' in inspect.signature(interpreter_class().__init__).parameters
  except (TypeError, ValueError):
    return False


def make_interpreter(model_path=None, model_content=None, num_threads=None):
  """The interpreter (`interpreter_class`) with `num_threads` where it supports it (ignored on TF 1.15)."""
  kwargs = {}
  if num_threads and interpreter_supports_num_threads():
    kwargs['num_threads'] = int(num_threads)
  interpreter = interpreter_class()(model_path=model_path, model_content=model_content, **kwargs)
  interpreter.allocate_tensors()
  return interpreter


def _resize(image, height, width):
  image = np.asarray(image)
  if image.shape[:2] == (height, width):
    return image
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def quantize_input(x, input_meta):
  """float32 [1, S, S, 3] in the model's value range -> its input dtype (quantized for integer inputs)."""
  quant = input_meta.get('quantization')
  dtype = np.dtype(input_meta['dtype'])
  x = np.asarray(x, np.float32)
  if quant:
    info = np.iinfo(dtype)
    x = np.clip(np.round(x / quant['scale'] + quant['zero_point']), info.min, info.max)
  return x.astype(dtype)


def preprocess(image, input_meta):
  """uint8 [H, W, 3] -> the model input [1, S, S, 3] as described by model.json's `input`."""
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
    raise ValueError('expected a uint8 [H, W, 3] RGB image, got %s %s' % (image.dtype, image.shape))
  _, height, width, _ = input_meta['shape']
  low, high = input_meta['value_range']
  x = _resize(image, height, width).astype(np.float32) * ((high - low) / 255.0) + low
  return quantize_input(x[None], input_meta)


class TFLiteModel(object):
  """Runs an exported model.tflite with its model.json: uint8 image in, dict key -> numpy out.

  Quantized outputs (int8 probabilities) are dequantized to float32 with the JSON's scale / zero point.
  """

  def __init__(self, model_path, metadata_path=None, num_threads=None):
    if metadata_path is None:
      metadata_path = os.path.join(os.path.dirname(model_path), METADATA_NAME)
    with tf_optional.files(metadata_path).GFile(metadata_path, 'r') as f:
      self.metadata = json.load(f)
    # Read through tf.io.gfile (gs:// and other file systems), handed to the interpreter as content.
    with tf_optional.files(model_path).GFile(model_path, 'rb') as f:
      self.content = f.read()
    self.interpreter = make_interpreter(model_content=self.content, num_threads=num_threads)
    self._input = self.interpreter.get_input_details()[0]['index']
    by_name = dict((d['name'], d['index']) for d in self.interpreter.get_output_details())
    self._outputs = [(o['key'], by_name[o['name']], o.get('quantization')) for o in self.metadata['outputs']]

  def run(self, model_input):
    """Runs on an already preprocessed [1, S, S, 3] input; dict key -> numpy (dequantized)."""
    self.interpreter.set_tensor(self._input, model_input)
    self.interpreter.invoke()
    results = {}
    for key, index, quant in self._outputs:
      value = self.interpreter.get_tensor(index)
      if quant:
        value = (value.astype(np.float32) - quant['zero_point']) * quant['scale']
      results[key] = value
    return results

  def __call__(self, image):
    """uint8 [H, W, 3] RGB image -> dict key -> numpy array (batch dimension 1 kept)."""
    return self.run(preprocess(image, self.metadata['input']))
