"""What runs with or without TensorFlow: whether it is installed, and file I/O that needs it only for remote paths.

A `lite` install (`pip install ".[lite]"`: a TFLite runtime and ONNX Runtime, no TensorFlow) predicts with
exported model.tflite / model.onnx files (`pipelines.export.runtime_predict`). The modules on that path import
this one instead of TensorFlow:

- `tensorflow_available()`: whether `import tensorflow` would work, without importing it (TensorFlow takes
  seconds to import);
- `files(path)`: `tf.io.gfile` for paths with a scheme (`gs://`, `ram://`, ...) or once TensorFlow is imported
  anyway, else the same few functions on local files (`open`, `os.path`), so a local path never imports it.

Not here: which TFLite interpreter runs a model (`pipelines.export.tflite_runtime`).
"""
import glob
import importlib.util
import os
import shutil
import sys

CPU_EXTRA_HINT = 'pip install ".[cpu]" (TensorFlow 2.15; a `lite` install only predicts with --tflite / --onnx)'


def tensorflow_available():
  """True if TensorFlow is imported or importable (found without importing it)."""
  if 'tensorflow' in sys.modules:
    return True
  try:
    return importlib.util.find_spec('tensorflow') is not None
  except (ImportError, ValueError):
    return False


def require_tensorflow(what):
  """Raises ValueError in one line naming the `cpu` extra unless TensorFlow is importable."""
  if not tensorflow_available():
    raise ValueError('%s needs TensorFlow, which is not installed here: %s' % (what, CPU_EXTRA_HINT))


def is_remote(path):
  return '://' in str(path)


class _LocalFiles(object):
  """The part of `tf.io.gfile`'s API the TF-free modules use, on local files."""

  GFile = staticmethod(open)
  exists = staticmethod(os.path.exists)
  isdir = staticmethod(os.path.isdir)
  listdir = staticmethod(os.listdir)
  glob = staticmethod(glob.glob)

  @staticmethod
  def makedirs(path):
    os.makedirs(path, exist_ok=True)

  @staticmethod
  def rename(source, target, overwrite=False):
    if overwrite:
      os.replace(source, target)
    else:
      os.rename(source, target)

  @staticmethod
  def copy(source, target, overwrite=False):
    if not overwrite and os.path.exists(target):
      raise OSError('%s exists' % target)
    shutil.copyfile(source, target)


LOCAL = _LocalFiles()


def files(path=None):
  """`tf.io.gfile` where TensorFlow is needed or already imported, else local-file equivalents.

  Raises:
    ValueError: `path` is remote (has a scheme) and TensorFlow is not installed.
  """
  if 'tensorflow' in sys.modules or (path is not None and is_remote(path)):
    if not tensorflow_available():
      raise ValueError('%s: paths with a scheme are read through TensorFlow, which is not installed here: %s'
                       % (path, CPU_EXTRA_HINT))
    import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile
  return LOCAL
