"""Shared test set-up: quiet TensorFlow logs, a fresh graph per test, the reference data folder."""
import os

from pipelines.cli import environment  # noqa: E402

environment.configure()  # as the `mnv2` command does, before TensorFlow is imported

import pytest  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

import nets  # noqa: E402,F401  (installs the tf-slim compat shim)

tf.logging.set_verbosity(tf.logging.ERROR)
DATA_DIR = os.path.join(os.path.dirname(__file__), 'data')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_in_child(module, function, *args, timeout=300):
  """Runs `module.function(*args)` (string arguments) in a fresh Python process -- a fresh TensorFlow, whose
  devices are not fixed yet -- and returns its combined output; asserts it exited 0."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = 'import sys; import %s as t; t.%s(*sys.argv[1:])' % (module, function)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run([sys.executable, '-c', code] + [str(a) for a in args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=timeout)
  assert result.returncode == 0, result.stdout[-4000:]
  return result.stdout


@pytest.fixture
def graph():
  """A fresh default graph, so tests never see each other's variables."""
  with tf.Graph().as_default() as g:
    yield g


def read_tsv(name):
  """Rows of a tab-separated reference file in tests/data (copied from the public models' manifests)."""
  with open(os.path.join(DATA_DIR, name)) as f:
    return [line.rstrip('\n').split('\t') for line in f if line.strip()]


def tiny_imagenet_records(root, num_classes, images_per_class=4):
  """Converts a tiny ImageNet-style folder dataset (brightness differs per class) under `root`.

  Returns the records directory (shards `train-*` and `labels.txt`).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from datasets import imagenet  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  for c in range(num_classes):
    folder = os.path.join(str(root), 'raw', 'n%03d' % (c + 1))
    os.makedirs(folder)
    for i in range(images_per_class):
      pixels = (rng.uniform(0, 60, [36, 40, 3]) + 60 * c).astype(np.uint8)
      Image.fromarray(pixels).save(os.path.join(folder, '%d.JPEG' % i))
  records = os.path.join(str(root), 'records')
  imagenet.convert(os.path.join(str(root), 'raw'), records, 'train', num_shards=2, num_workers=1)
  return records


def config_from_text(tmp_path, text, overrides=(), name='config.yaml', mode=None):
  """Writes YAML `text` to tmp_path/name and loads it like the CLI (with `mode`: its files checked too)."""
  from pipelines.training import runner  # pylint: disable=g-import-not-at-top
  path = os.path.join(str(tmp_path), name)
  with open(path, 'w') as f:
    f.write(text)
  return runner.load_config(path, list(overrides), mode)


TINY_SHAPES_COUNTS = {'imagenet': {'train': 8, 'val': 4}, 'coco': {'train': 4, 'val': 3}, 'voc': {'train': 4, 'val': 2}}


def tiny_shapes_records(root, counts=None, image_size=64):
  """The demo's shapes world, tiny, converted by the real converters into the three record formats.

  Returns (records directory with classification/, detection/ and segmentation/ each holding train-* and
  val-* shards and their labels file, the raw data dict of `datasets.shapes.generate`).
  """
  from datasets import coco, imagenet, shapes, voc  # pylint: disable=g-import-not-at-top
  raw = shapes.generate(os.path.join(str(root), 'raw'), seed=0, image_size=image_size,
                        counts=counts or TINY_SHAPES_COUNTS)
  out = os.path.join(str(root), 'records')
  for split in ('train', 'val'):
    imagenet.convert(raw['imagenet'][split + '_dir'], os.path.join(out, 'classification'), split,
                     labels_file=raw['imagenet']['labels_file'], num_shards=1, num_workers=1)
    coco.convert(raw['coco'][split + '_images'], raw['coco'][split + '_annotations'], os.path.join(out, 'detection'),
                 split, num_shards=1, num_workers=1)
    voc.convert(raw['voc']['devkit_dir'], os.path.join(out, 'segmentation'), split, num_shards=1, num_workers=1,
                num_classes=5, class_names=('background',) + tuple(shapes.CLASSES))
  return out, raw


@pytest.fixture(autouse=True)
def _mnv2_logs_reach_caplog():
  """`mnv2` CLI calls stop the 'mnv2' logger from propagating (it prints through its own handler); tests that
  read its records with caplog need them to reach the root logger whatever test ran before."""
  import logging  # pylint: disable=g-import-not-at-top
  logging.getLogger('mnv2').propagate = True
  yield
