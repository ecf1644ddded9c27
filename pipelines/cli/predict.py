"""Predictions on image files, from an exported SavedModel or from a checkpoint in a model_dir.

Both paths return the same dicts (numpy arrays, one dict per image) so the CLI formats them the same way:
`Predictor` loads a SavedModel's `encoded_image` signature (encoded image bytes in; `serving_default` of an
export made before it had that name), whatever input type its `serving_default` takes; the checkpoint path goes
through `Estimator.predict` with the task's `predict_input_fn`.
"""
import tensorflow.compat.v1 as tf

from pipelines.export import runtime_predict
from pipelines.export import saved_model_export
from pipelines.training import checkpoints
from pipelines.training import runner

SERVING_TAG = 'serve'
ENCODED_SIGNATURE = saved_model_export.ENCODED_SIGNATURE


class Predictor(object):
  """Runs a SavedModel signature that takes encoded images (`encoded_image`: string [B])."""

  def __init__(self, export_dir, signature=None):
    self._graph = tf.Graph()
    self._session = tf.Session(graph=self._graph)
    with self._graph.as_default():
      meta = tf.saved_model.loader.load(self._session, [SERVING_TAG], export_dir)
    if signature is None:
      signature = ENCODED_SIGNATURE if ENCODED_SIGNATURE in meta.signature_def else 'serving_default'
    if signature not in meta.signature_def:
      raise ValueError('SavedModel %s has no signature %r (has: %s)' % (
          export_dir, signature, ', '.join(sorted(meta.signature_def))))
    sig = meta.signature_def[signature]
    self.input_name = sorted(sig.inputs)[0]
    self._input = sig.inputs[self.input_name].name
    self._outputs = {k: v.name for k, v in sig.outputs.items()}

  def __call__(self, encoded_images):
    """dict output name -> numpy array with a leading batch dimension."""
    return self._session.run(self._outputs, {self._input: list(encoded_images)})

  def one(self, encoded):
    """The prediction dict of one encoded image (no batch dimension)."""
    return dict((k, v[0]) for k, v in self([encoded]).items())

  def close(self):
    self._session.close()


def _read(path):
  with tf.gfile.GFile(path, 'rb') as f:
    return f.read()


def predict_saved_model(export_dir, image_paths):
  """One prediction dict per image from a SavedModel."""
  predictor = Predictor(export_dir)
  try:
    results = []
    for path in image_paths:
      try:
        results.append(predictor.one(_read(path)))
      except tf.errors.InvalidArgumentError as e:
        raise ValueError('%s: cannot predict on this image: %s' % (path, e.message.split('\n')[0]))
    return results
  finally:
    predictor.close()


def predict_checkpoint(config, model_dir, image_paths, checkpoint_path=None):
  """One prediction dict per image from the latest (or given) checkpoint of `model_dir`."""
  task = runner.make_task(config, model_dir)
  with checkpoints.held(model_dir, checkpoint_path, what='predict with') as path:
    estimator = runner.make_estimator(task, model_dir, path)
    return list(estimator.predict(task.predict_input_fn(image_paths), checkpoint_path=path,
                                  yield_single_examples=True))


# Checked before any model loads; in the TF-free module, since `predict --tflite / --onnx` runs without TensorFlow.
check_images = runtime_predict.check_images
