"""Tests for datasets.decoders: each task's record decoder on our records and the reference tools' records."""
import io

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from datasets import coco
from datasets import decoders
from datasets import tfrecord

SIZE = (40, 32)  # Pillow's (width, height)


def _stripes(values, height, width):
  """[height, width] uint8 mask of vertical stripes cycling through `values`."""
  return np.array([values[(x // 4) % len(values)] for x in range(width)], np.uint8)[None].repeat(height, 0)


# ------------------------------------------------------------------------------------------ classification


def _tf_slim_record(with_text):
  out = io.BytesIO()
  Image.new('RGB', SIZE, (10, 200, 30)).save(out, format='JPEG')
  feature = {
      'image/encoded': tfrecord.bytes_feature(out.getvalue()), 'image/format': tfrecord.bytes_feature('JPEG'),
      'image/class/label': tfrecord.int64_feature(7), 'image/class/synset': tfrecord.bytes_feature('n0007'),
      'image/height': tfrecord.int64_feature(32), 'image/width': tfrecord.int64_feature(40),
      'image/colorspace': tfrecord.bytes_feature('RGB'), 'image/channels': tfrecord.int64_feature(3)}
  if with_text:
    feature['image/class/text'] = tfrecord.bytes_feature('seven')
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.mark.parametrize('with_text,text', [(True, b'seven'), (False, b'n0007')])
def test_decode_classification_tf_slim_record(graph, with_text, text):
  decoded = decoders.decode_classification(tf.constant(_tf_slim_record(with_text)))
  assert decoded['image'].shape.as_list() == [None, None, 3]
  assert decoded['label'].dtype == tf.int32
  with tf.Session() as sess:
    value = sess.run(decoded)
  assert value['image'].shape == (32, 40, 3)
  assert np.abs(value['image'].astype(int) - np.array([10, 200, 30])).max() <= 8
  assert (value['label'], value['text'], value['filename']) == (7, text, b'')


# ----------------------------------------------------------------------------------------------- detection


def _od_api_record(encoded):
  """A record as the OD API writes it, but without image/object/area and image/object/is_crowd."""
  feature = {
      coco.ENCODED: tfrecord.bytes_feature(encoded),
      coco.FORMAT: tfrecord.bytes_feature('png'),
      coco.SOURCE_ID: tfrecord.bytes_feature('42'),
      coco.HEIGHT: tfrecord.int64_feature(6),
      coco.WIDTH: tfrecord.int64_feature(4),
      coco.XMIN: tfrecord.float_feature([0.0, 0.5]),
      coco.XMAX: tfrecord.float_feature([0.25, 1.0]),
      coco.YMIN: tfrecord.float_feature([0.1, 0.2]),
      coco.YMAX: tfrecord.float_feature([0.3, 0.9]),
      coco.CLASS_LABEL: tfrecord.int64_feature([3, 88]),
      coco.CLASS_TEXT: tfrecord.bytes_feature(['car', 'teddy bear']),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_decode_detection_defaults_missing_area_and_crowd(graph):
  pixels = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3)
  png = io.BytesIO()
  Image.fromarray(pixels).save(png, format='PNG')
  decoded = decoders.decode_detection(tf.constant(_od_api_record(png.getvalue())))
  with tf.Session() as sess:
    out = sess.run(decoded)
  np.testing.assert_array_equal(out['image'], pixels)
  np.testing.assert_allclose(out['boxes'], [[0.1, 0.0, 0.3, 0.25], [0.2, 0.5, 0.9, 1.0]], rtol=1e-6)
  assert out['classes'].tolist() == [3, 88] and out['classes'].dtype == np.int32
  assert out['is_crowd'].tolist() == [False, False] and out['area'].tolist() == [0.0, 0.0]
  assert out['source_id'] == b'42' and (out['height'], out['width']) == (6, 4)


# -------------------------------------------------------------------------------------------- segmentation


def test_decode_segmentation_deeplab_record():
  # Smooth, so the JPEG round trip is close to lossless whatever the decoder's DCT method.
  yy, xx = np.mgrid[0:6, 0:10]
  image = np.stack([xx * 20, yy * 30, 200 - xx * 10 - yy * 5], axis=2).astype(np.uint8)
  label = _stripes([0, 5, 255], 6, 10)
  jpeg, png = io.BytesIO(), io.BytesIO()
  Image.fromarray(image).save(jpeg, format='JPEG', quality=100, subsampling=0)
  Image.fromarray(label, mode='L').save(png, format='PNG')

  def feature(**kw):
    return tf.train.Feature(**kw)
  example = tf.train.Example(features=tf.train.Features(feature={
      'image/encoded': feature(bytes_list=tf.train.BytesList(value=[jpeg.getvalue()])),
      'image/filename': feature(bytes_list=tf.train.BytesList(value=[b'2007_000032.jpg'])),
      'image/format': feature(bytes_list=tf.train.BytesList(value=[b'jpeg'])),
      'image/height': feature(int64_list=tf.train.Int64List(value=[6])),
      'image/width': feature(int64_list=tf.train.Int64List(value=[10])),
      'image/channels': feature(int64_list=tf.train.Int64List(value=[3])),
      'image/segmentation/class/encoded': feature(bytes_list=tf.train.BytesList(value=[png.getvalue()])),
      'image/segmentation/class/format': feature(bytes_list=tf.train.BytesList(value=[b'png'])),
  }))
  as_png = tf.train.Example.FromString(example.SerializeToString())
  png_image = io.BytesIO()
  Image.fromarray(image).save(png_image, format='PNG')
  as_png.features.feature['image/encoded'].bytes_list.value[0] = png_image.getvalue()
  with tf.Graph().as_default():
    decoded = decoders.decode_segmentation(tf.constant(example.SerializeToString()))
    assert decoded['image'].dtype == tf.uint8 and decoded['label'].dtype == tf.uint8
    with tf.Session() as sess:
      values = sess.run(decoded)
      png_decoded = decoders.decode_segmentation(tf.constant(as_png.SerializeToString()))
      np.testing.assert_array_equal(sess.run(png_decoded['image']), image)
  np.testing.assert_array_equal(values['label'][:, :, 0], label)
  error = np.abs(values['image'].astype(int) - image)
  assert values['image'].shape == (6, 10, 3) and error.mean() < 0.5 and error.max() <= 2
  assert (values['filename'], values['height'], values['width']) == (b'2007_000032.jpg', 6, 10)
