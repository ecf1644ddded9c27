"""pipelines.inputs.segmentation_input: the one segmentation input pipeline (records -> batches) and serving input."""
import io

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image

from pipelines.inputs import segmentation_input
from tests.conftest import config_from_text
from tests.datasets.test_voc import H  # the converted images are H x W
from tests.datasets.test_voc import W
from tests.datasets.test_voc import converted  # noqa: F401  pylint: disable=unused-import  (fixture)
from tests.datasets.test_voc import devkit  # noqa: F401  pylint: disable=unused-import  (fixture)

ModeKeys = tf.estimator.ModeKeys
CONFIG = """
task: segmentation
segmentation: {crop_size: 20, eval_crop_size: 40}
data: {train_files: '%(data)s/train-*', eval_files: '%(data)s/train-*'}
train: {batch_size: 2, steps: 1, learning_rate: {schedule: constant}}
eval: {batch_size: 2}
runtime: {seed: 0}
"""


def _config(tmp_path, data_dir, overrides=()):
  return config_from_text(tmp_path, CONFIG % {'data': data_dir}, overrides)


def test_dataset_batches(converted, tmp_path):  # noqa: F811  pylint: disable=redefined-outer-name
  out, _ = converted
  config = _config(tmp_path, out)
  with tf.Graph().as_default():
    train = tf.data.make_one_shot_iterator(segmentation_input.dataset(config, ModeKeys.TRAIN)).get_next()
    evaluation = tf.data.make_one_shot_iterator(segmentation_input.dataset(config, ModeKeys.EVAL)).get_next()
    with tf.Session() as sess:
      features, labels = sess.run(train)
      assert features['image'].shape == (2, 20, 20, 3) and labels.shape == (2, 20, 20, 1)
      assert features['image'].dtype == np.float32 and labels.dtype == np.int32
      np.testing.assert_array_equal(features['height'], [H, H])
      sizes = []
      for _ in range(2):
        features, labels = sess.run(evaluation)
        sizes.append(len(labels))
        assert features['image'].shape[1:] == (40, 40, 3)
        assert (labels[:, H:] == 255).all() and (labels[:, :, W:] == 255).all()
      assert sorted(sizes) == [1, 2]


def test_training_scales_follow_scale_step(converted, tmp_path):  # noqa: F811  pylint: disable=redefined-outer-name
  # scale_step 1.5 on [0.5, 2] allows only the factors 0.5 and 2: an H-row image becomes H/2 or 2H rows.
  # The crop (64) holds the largest scaled image (48 x 64) whole, so the labelled rows give the factor.
  out, _ = converted
  config = _config(tmp_path, out, ['segmentation.crop_size=64', 'segmentation.min_scale=0.5',
                                   'segmentation.max_scale=2.0', 'segmentation.scale_step=1.5'])
  heights = []
  with tf.Graph().as_default():
    _, labels = tf.data.make_one_shot_iterator(segmentation_input.dataset(config, ModeKeys.TRAIN)).get_next()
    with tf.Session() as sess:
      for _ in range(8):
        for label in sess.run(labels):
          heights.append(int((label[:, :, 0] != 255).any(axis=1).sum()))
  assert set(heights) == {H // 2, 2 * H}, heights  # scale_step 0.25 would also give 0.75 H, H, 1.25 H, ...


def test_features_from_bytes_fits_and_pads(graph, tmp_path):
  pixels = np.random.RandomState(0).randint(0, 256, (30, 50, 3)).astype(np.uint8)
  png = io.BytesIO()
  Image.fromarray(pixels).save(png, format='PNG')
  config = _config(tmp_path, '/data')  # eval_crop_size 40: the 50-pixel side is shrunk to 40
  features = segmentation_input.features_from_bytes(config, tf.constant([png.getvalue()]))
  assert features['image'].shape.as_list() == [1, 40, 40, 3]
  with tf.Session() as sess:
    values = sess.run(features)
  assert (values['height'].tolist(), values['width'].tolist()) == ([30], [50])
  assert (values['valid_height'].tolist(), values['valid_width'].tolist()) == ([24], [40])
  image = values['image'][0]
  assert (image[24:] == 0.0).all() and image.min() >= -1.0 and image.max() <= 1.0
  np.testing.assert_allclose(image[0, 0], pixels[0, 0] / 127.5 - 1.0, atol=1e-5)  # corners aligned
