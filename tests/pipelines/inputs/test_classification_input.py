"""pipelines.inputs.classification_input: the one classification input pipeline (records -> batches) and serving input."""
import io

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from datasets import classification_preprocessing
from datasets import imagenet
from pipelines.inputs import classification_input
from pipelines.inputs import input_common
from tests.conftest import config_from_text
from tests.datasets.test_imagenet import folders  # noqa: F401  pylint: disable=unused-import  (fixture)

ModeKeys = tf.estimator.ModeKeys
CONFIG = """
task: classification
classification: {image_size: 24}
data: {train_files: '%(data)s/train-*', eval_files: '%(data)s/train-*'}
train: {batch_size: 2, steps: 1, learning_rate: {schedule: constant}}
eval: {batch_size: 2}
runtime: {seed: 0}
"""


def _config(tmp_path, data_dir, overrides=()):
  return config_from_text(tmp_path, CONFIG % {'data': data_dir}, overrides)


def test_split_follows_the_mode(tmp_path):
  config = _config(tmp_path, '/data', ['data.eval_files=/data/val-*', 'eval.batch_size=3'])
  assert input_common.split(config, ModeKeys.TRAIN) == ('/data/train-*', 2, True)
  assert input_common.split(config, ModeKeys.EVAL) == ('/data/val-*', 3, False)
  assert input_common.split(config, ModeKeys.PREDICT) == ('/data/val-*', 3, False)


def test_dataset_static_shapes(folders, graph, tmp_path):  # noqa: F811  pylint: disable=redefined-outer-name
  raw, words, out = folders
  imagenet.convert(raw, out, 'train', labels_file=words, num_shards=2, num_workers=1)
  config = _config(tmp_path, out)
  train = classification_input.dataset(config, ModeKeys.TRAIN)
  evals = classification_input.dataset(config, ModeKeys.EVAL)
  (features, labels) = tf.data.make_one_shot_iterator(train).get_next()
  assert features['image'].shape.as_list() == [2, 24, 24, 3] and labels.shape.as_list() == [2]
  assert features['image'].dtype == tf.float32 and labels.dtype == tf.int32
  eval_features, eval_labels = tf.data.make_one_shot_iterator(evals).get_next()
  assert eval_features['image'].shape.as_list() == [None, 24, 24, 3]
  with tf.Session() as sess:
    images, values = sess.run([features['image'], labels])
    assert images.min() >= -1.0 and images.max() <= 1.0 and set(values) <= {1, 2, 3}
    seen = []
    with pytest.raises(tf.errors.OutOfRangeError):
      while True:
        seen.extend(sess.run(eval_labels).tolist())
  assert sorted(seen) == [1, 1, 2, 2, 3]


def test_features_from_bytes_is_the_eval_preprocessing(graph, tmp_path):
  pixels = np.random.RandomState(0).randint(0, 256, (30, 44, 3)).astype(np.uint8)
  png = io.BytesIO()
  Image.fromarray(pixels).save(png, format='PNG')
  config = _config(tmp_path, '/data')
  features = classification_input.features_from_bytes(config, tf.constant([png.getvalue()] * 2))
  assert sorted(features) == ['image'] and features['image'].shape.as_list() == [2, 24, 24, 3]
  expected = classification_preprocessing.preprocess_for_eval(tf.constant(pixels), 24)
  with tf.Session() as sess:
    images, reference = sess.run([features['image'], expected])
  np.testing.assert_array_equal(images[0], reference)
  np.testing.assert_array_equal(images[1], reference)
