"""Tests for datasets.segmentation_preprocessing: DeepLab's random scale, pad, crop and flip; eval padding."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from datasets import segmentation_preprocessing

H, W = 24, 32


def _stripes(values, height=H, width=W):
  """[height, width] uint8 mask of vertical stripes cycling through `values`."""
  return np.array([values[(x // 4) % len(values)] for x in range(width)], np.uint8)[None].repeat(height, 0)


def _label_image(labels):
  """uint8 image whose pixels are label * 10 in all channels, so alignment is checkable after augmenting."""
  return np.repeat(labels[:, :, None] * 10, 3, axis=2).astype(np.uint8)


def test_train_crop_and_flip_keep_image_and_label_aligned(graph):
  labels = np.random.RandomState(1).randint(0, 13, (20, 30)).astype(np.uint8)
  image, label = segmentation_preprocessing.preprocess_for_train(
      tf.constant(_label_image(labels)), tf.constant(labels[:, :, None]), crop_size=16, min_scale=1.0,
      max_scale=1.0, seed=3)
  assert image.shape.as_list() == [16, 16, 3] and label.shape.as_list() == [16, 16, 1]
  assert image.dtype == tf.float32 and label.dtype == tf.int32
  windows = {}
  for oy in range(20 - 15):
    for ox in range(30 - 15):
      windows[labels[oy:oy + 16, ox:ox + 16].tobytes()] = (oy, ox, False)
      windows[labels[oy:oy + 16, ox:ox + 16][:, ::-1].tobytes()] = (oy, ox, True)
  seen = set()
  with tf.Session() as sess:
    for _ in range(20):
      img, lab = sess.run([image, label])
      np.testing.assert_allclose((img + 1.0) * 127.5, np.repeat(lab * 10, 3, axis=2), atol=1e-3)
      key = lab[:, :, 0].astype(np.uint8).tobytes()
      assert key in windows
      seen.add(windows[key])
  assert len(seen) > 5 and {flip for _, _, flip in seen} == {False, True}


def test_train_pads_with_mean_and_ignore(graph):
  labels = np.random.RandomState(2).randint(1, 13, (5, 7)).astype(np.uint8)
  image, label = segmentation_preprocessing.preprocess_for_train(
      tf.constant(_label_image(labels)), tf.constant(labels[:, :, None]), crop_size=12, min_scale=1.0,
      max_scale=1.0)
  with tf.Session() as sess:
    for _ in range(6):
      img, lab = sess.run([image, label])
      pad = lab[:, :, 0] == 255
      assert pad.sum() == 144 - 35 and pad[5:].all()
      assert pad[:, 7:].all() or pad[:, :5].all()
      np.testing.assert_array_equal(img[pad], 0.0)
      np.testing.assert_allclose((img[~pad] + 1.0) * 127.5, np.repeat(lab[~pad] * 10, 3, axis=1), atol=1e-3)


def test_train_random_scale_shapes_and_values(graph):
  labels = _stripes([0, 3, 9, 255])
  image, label = segmentation_preprocessing.preprocess_for_train(
      tf.constant(_label_image(labels % 20)), tf.constant(labels[:, :, None]), crop_size=40, seed=7)
  with tf.Session() as sess:
    for _ in range(8):
      img, lab = sess.run([image, label])
      assert img.shape == (40, 40, 3) and lab.shape == (40, 40, 1)
      assert set(np.unique(lab)) <= {0, 3, 9, 255}
      assert img.min() >= -1.0 and img.max() <= 1.0


def test_random_scale_factor_is_on_deeplab_grid(graph):
  discrete = segmentation_preprocessing.random_scale_factor(0.5, 2.0, 0.25, seed=1)
  continuous = segmentation_preprocessing.random_scale_factor(0.5, 2.0, 0, seed=1)
  with tf.Session() as sess:
    values = [sess.run([discrete, continuous]) for _ in range(150)]
  grid = set(np.round(np.arange(0.5, 2.01, 0.25), 4))
  assert set(np.round([v[0] for v in values], 4)) == grid
  cont = np.array([v[1] for v in values])
  assert cont.min() >= 0.5 and cont.max() <= 2.0 and len(set(np.round(cont, 4)) - grid) > 100


def test_eval_pads_bottom_right_and_rejects_large_images(graph):
  labels = np.random.RandomState(3).randint(0, 21, (5, 7)).astype(np.uint8)
  image, label = segmentation_preprocessing.preprocess_for_eval(
      tf.constant(_label_image(labels)), tf.constant(labels[:, :, None]), crop_size=9)
  with pytest.raises(ValueError, match='crop_size=9'):
    segmentation_preprocessing.preprocess_for_eval(tf.zeros([10, 4, 3], tf.uint8), None, crop_size=9)
  big = tf.placeholder(tf.uint8, [None, None, 3])
  big_image, _ = segmentation_preprocessing.preprocess_for_eval(big, tf.zeros_like(big[:, :, :1]), crop_size=9)
  with tf.Session() as sess:
    img, lab = sess.run([image, label])
    with pytest.raises(tf.errors.InvalidArgumentError, match='crop_size=9'):
      sess.run(big_image, {big: np.zeros((4, 10, 3), np.uint8)})
  expected = np.full((9, 9), 255)
  expected[:5, :7] = labels
  np.testing.assert_array_equal(lab[:, :, 0], expected)
  np.testing.assert_allclose(img[:5, :7, 0], labels * 10 / 127.5 - 1.0, atol=1e-6)
  assert (img[5:] == 0).all() and (img[:, 7:] == 0).all()
