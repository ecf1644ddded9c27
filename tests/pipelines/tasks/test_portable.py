"""Issue #22 item 2: each task's TF-free half (`pipelines.tasks.portable`) computes the serving features of its
TensorFlow half, so a `lite` install (no TensorFlow) feeds a model what the SavedModel's path feeds it.

PNG: the same pixels on both paths, so the model input agrees to float rounding. JPEG: Pillow decodes with the
accurate DCT; segmentation and the multi-task model decode so on TensorFlow too (equal up to libjpeg builds),
classification and detection with TensorFlow's fast DCT (TF-Slim's and the OD API's): a few levels per pixel.
"""
import io

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from datasets import numpy_preprocessing as npp
from pipelines.tasks import portable
from pipelines.tasks import registry
from tests.conftest import config_from_text

SECTIONS = {'classification': 'classification: {image_size: 48, num_classes: 5}\n',
            'detection': 'detection: {image_size: 64, num_classes: 7}\n',
            'segmentation': 'segmentation: {num_classes: 5, crop_size: 49, eval_crop_size: 64}\n'}
MULTITASK = """
multitask:
  classification: {data: {train_files: x, eval_files: x}}
  detection: {data: {train_files: x, eval_files: x}}
  segmentation: {data: {train_files: x, eval_files: x}}
"""


def _config_text(task_name):
  text = 'task: %s\nmodel: {depth_multiplier: 0.35}\ntrain: {steps: 1, learning_rate: {schedule: constant, base: 0.001}}\n' % task_name
  if task_name == 'multitask':
    return text + ''.join(SECTIONS.values()) + MULTITASK
  return text + SECTIONS[task_name]


LEVEL = 2.0 / 255.0  # one pixel level in the model's [-1, 1] range


def _photo(height, width, seed=0):
  """A smooth picture with edges and noise (what JPEG's DCT differences show on)."""
  rng = np.random.RandomState(seed)
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  image = np.stack([128 + 100 * np.sin(x / 7.0), 128 + 100 * np.cos(y / 5.0), (x + y) % 256], -1)
  image[height // 3:height // 2, width // 4:width // 2] = (250, 20, 40)
  return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)


def _encode(image, fmt):
  out = io.BytesIO()
  Image.fromarray(image).save(out, format=fmt, **({'quality': 85} if fmt == 'JPEG' else {}))
  return out.getvalue()


def _tf_features(task, encoded):
  with tf.Graph().as_default():
    features = task.features_from_bytes(tf.constant([encoded]))
    with tf.Session() as session:
      return {k: v[0] for k, v in session.run(features).items()}


@pytest.mark.parametrize('shape', [(37, 53), (80, 31), (48, 48)])
@pytest.mark.parametrize('align_corners', [False, True])
def test_resize_bilinear_is_tensorflows(shape, align_corners):
  image = _photo(*shape)
  for size in ((48, 48), (64, 20), (1, 5), (shape[0] * 2, shape[1])):
    with tf.Graph().as_default(), tf.Session() as session:
      want = session.run(tf.image.resize_bilinear(image[None], size, align_corners=align_corners))[0]
    np.testing.assert_allclose(npp.resize_bilinear(image, size[0], size[1], align_corners), want, atol=1e-4)


@pytest.mark.parametrize('task_name', ['classification', 'detection', 'segmentation', 'multitask'])
@pytest.mark.parametrize('shape', [(90, 70), (50, 120), (30, 40)])
def test_numpy_features_are_the_serving_features(tmp_path, task_name, shape):
  config = config_from_text(tmp_path, _config_text(task_name))
  task = registry.make_task(config)
  lite = registry.portable_class(task_name)(config)
  assert type(lite).__name__ != type(task).__name__ and isinstance(task, type(lite))
  assert lite.serving_size() == task.serving_size()
  image = _photo(*shape, seed=shape[0])
  for fmt in ('PNG', 'JPEG'):
    encoded = _encode(image, fmt)
    want = _tf_features(task, encoded)
    got = lite.numpy_features(npp.decode(encoded))
    assert sorted(got) == sorted(want), (sorted(got), sorted(want))
    for key in want:
      if key != 'image':
        assert int(got[key]) == int(want[key]), (fmt, key, got[key], want[key])
    assert got['image'].shape == want['image'].shape and got['image'].dtype == np.float32
    difference = np.abs(got['image'] - want['image'])
    if fmt == 'PNG':
      assert difference.max() < 1e-5, (fmt, difference.max())
    elif task_name in ('segmentation', 'multitask'):  # the accurate DCT on both paths
      assert difference.max() <= LEVEL + 1e-5, (fmt, difference.max() / LEVEL)
    else:  # TensorFlow's fast DCT against Pillow's accurate one
      assert difference.mean() < 1.5 * LEVEL and difference.max() < 12 * LEVEL, (
          fmt, difference.mean() / LEVEL, difference.max() / LEVEL)


def test_decode_names_the_image():
  with pytest.raises(ValueError, match='holiday.jpg: not a decodable image'):
    npp.decode(b'\xff\xd8\xff not really', 'holiday.jpg')
  rgba = np.zeros((4, 5, 4), np.uint8)
  rgba[..., 0], rgba[..., 3] = 200, 10
  assert npp.decode(_encode(rgba, 'PNG')).shape == (4, 5, 3)
  assert npp.decode(_encode(rgba, 'PNG'))[0, 0].tolist() == [200, 0, 0]  # alpha dropped, as TensorFlow does


def test_a_task_without_a_portable_half_says_so():
  registry.register('no_lite', 'pipelines.tasks.classification:ClassificationTask')
  try:
    with pytest.raises(ValueError, match="task 'no_lite' has no TensorFlow-free predictor"):
      registry.portable_class('no_lite')
  finally:
    registry.unregister('no_lite')
  assert registry.prediction_class('detection') is portable.Detection
