"""Shared test set-up: quiet TensorFlow logs, a fresh graph per test, the reference data folder."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

import nets  # noqa: E402,F401  (installs the tf-slim compat shim)

tf.logging.set_verbosity(tf.logging.ERROR)
DATA_DIR = os.path.join(os.path.dirname(__file__), 'data')


@pytest.fixture
def graph():
  """A fresh default graph, so tests never see each other's variables."""
  with tf.Graph().as_default() as g:
    yield g


def read_tsv(name):
  """Rows of a tab-separated reference file in tests/data (copied from the public models' manifests)."""
  with open(os.path.join(DATA_DIR, name)) as f:
    return [line.rstrip('\n').split('\t') for line in f if line.strip()]
