"""Tests for datasets.classification_preprocessing: TF-Slim's eval resize and the Inception training crop."""
import numpy as np
import tensorflow.compat.v1 as tf

from datasets import classification_preprocessing


def _resize_bilinear_reference(image, size):
  """numpy ResizeBilinear with align_corners=False, half_pixel_centers=False (TF-Slim's resize)."""
  h, w = image.shape[:2]
  ys, xs = np.arange(size) * (h / float(size)), np.arange(size) * (w / float(size))
  y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
  y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
  dy, dx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
  top = image[y0][:, x0] * (1 - dx) + image[y0][:, x1] * dx
  bottom = image[y1][:, x0] * (1 - dx) + image[y1][:, x1] * dx
  return top * (1 - dy) + bottom * dy


def test_preprocess_for_eval_matches_numpy(graph):
  image = np.random.RandomState(0).randint(0, 256, (40, 48, 3)).astype(np.uint8)
  out = classification_preprocessing.preprocess_for_eval(tf.constant(image), 24)
  assert out.shape.as_list() == [24, 24, 3] and out.dtype == tf.float32
  with tf.Session() as sess:
    value = sess.run(out)
  # central_crop(0.875): 40 rows -> offset int(2.5) = 2, 36 rows; 48 cols -> offset 3, 42 cols.
  crop = image[2:38, 3:45].astype(np.float64)
  expected = _resize_bilinear_reference(crop, 24) * (2.0 / 255.0) - 1.0
  np.testing.assert_allclose(value, expected, atol=1e-4)
  assert value.min() >= -1.0 and value.max() <= 1.0


def test_preprocess_for_train_whole_image_crop_is_image_or_its_flip(graph):
  image = np.random.RandomState(1).randint(0, 256, (32, 32, 3)).astype(np.uint8)
  out = classification_preprocessing.preprocess_for_train(tf.constant(image), 32, area_range=(1.0, 1.0),
                                                          aspect_ratio_range=(1.0, 1.0), seed=3, color_distortion='none')
  random_out = classification_preprocessing.preprocess_for_train(tf.constant(image), 16, seed=4)
  assert out.shape.as_list() == [32, 32, 3] and random_out.shape.as_list() == [16, 16, 3]
  scaled = image * (2.0 / 255.0) - 1.0
  with tf.Session() as sess:
    for _ in range(4):
      value, other = sess.run([out, random_out])
      assert (np.abs(value - scaled).max() < 1e-5) or (np.abs(value - scaled[:, ::-1]).max() < 1e-5)
      assert other.dtype == np.float32 and other.min() >= -1.0 and other.max() <= 1.0


def test_slim_colour_distortion(graph):
  """TF-Slim's fast mode: brightness (+-32/255) then saturation (0.5-1.5), clipped; full: one of 4 orderings
  of brightness, saturation, hue and contrast; none: the image as it is."""
  grey = np.full([8, 8, 3], 0.5, np.float32)  # no saturation to change: only the brightness moves it
  fast = classification_preprocessing.distort_color(tf.constant(grey), 'fast', seed=1)
  full = classification_preprocessing.distort_color(tf.constant(np.random.RandomState(0).uniform(
      size=[8, 8, 3]).astype(np.float32)), 'full', seed=2)
  assert classification_preprocessing.distort_color(tf.constant(grey), 'none') is not None
  with tf.Session() as sess:
    shifts = [float(sess.run(fast).mean() - 0.5) for _ in range(30)]
    outs = [sess.run(full) for _ in range(10)]
  assert max(abs(d) for d in shifts) <= 32.0 / 255.0 + 1e-5 and len(set(round(d, 5) for d in shifts)) > 10
  assert all(o.min() >= 0.0 and o.max() <= 1.0 for o in outs)
  train = classification_preprocessing.preprocess_for_train(tf.constant(np.zeros([20, 20, 3], np.uint8) + 128), 16)
  with tf.Session() as sess:
    value = sess.run(train)
  assert value.min() >= -1.0 and value.max() <= 1.0
  import pytest  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match='color distortion'):
    classification_preprocessing.distort_color(tf.constant(grey), 'strong')
