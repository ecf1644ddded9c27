"""One compatibility shim between tf-slim 1.1.0 and TensorFlow 2.15; a no-op on TensorFlow 1.15.

Why: tf-slim's `batch_norm` builds `tensorflow.python.layers.normalization.BatchNormalization`. In TF 2.15
that module lazily imports `tf_keras.legacy_tf_layers.normalization`, a package Keras 2.15 no longer
ships under that name (the same code lives in `keras.src.legacy_tf_layers`). Without the shim every
`slim.batch_norm` call, hence the whole backbone, fails with `No module named 'tf_keras'`.

What: if `tf_keras` is not installed, point TensorFlow's lazy alias at the module Keras 2.15 does ship.
Nothing else is patched; installing `tf_keras` makes this a no-op too. Importing this module is enough
(every package of this project imports it once from its `__init__`). Without TensorFlow (a `lite` install,
which runs only the TF-free prediction modules) it does nothing, so those packages still import.
"""
import importlib

try:
  import tensorflow.compat.v1 as tf
except ImportError:  # a TensorFlow-free install (the `lite` extra) imports only TF-free modules: nothing to patch
  tf = None

_KERAS_LEGACY_BN_MODULES = ('keras.src.legacy_tf_layers.normalization', 'keras.legacy_tf_layers.normalization')


def _install():
  if tf is None or tf.__version__.startswith('1.'):
    return False
  try:
    importlib.import_module('tf_keras.legacy_tf_layers.normalization')
    return False
  except ImportError:
    pass
  from tensorflow.python.layers import normalization as tf_normalization  # pylint: disable=g-direct-tensorflow-import
  for name in _KERAS_LEGACY_BN_MODULES:
    try:
      tf_normalization.normalization = importlib.import_module(name)
      return True
    except ImportError:
      continue
  raise ImportError('tf-slim batch_norm needs one of tf_keras or keras 2.x (%s); neither imports with '
                    'TensorFlow %s' % (', '.join(_KERAS_LEGACY_BN_MODULES), tf.__version__))


INSTALLED = _install()
