"""Tests for datasets.tfrecord: shard names, features, temp names, image normalisation, reading."""
import io
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from datasets import shard_writer
from datasets import tfrecord


def _encode(item):
  """Module-level encode_fn for write_sharded: items are (name, value)."""
  name, value = item
  example = tf.train.Example(features=tf.train.Features(feature={
      'name': tfrecord.bytes_feature(name), 'value': tfrecord.int64_feature(value)}))
  return [example.SerializeToString()]


def _items(n):
  return [('img-%d' % i, i) for i in range(n)]


def test_shard_name_and_features():
  assert tfrecord.shard_name('train', 0, 4) == 'train-00000-of-00004'
  assert tfrecord.shard_name('validation', 12, 128) == 'validation-00012-of-00128'
  assert list(tfrecord.bytes_feature(u'caf\u00e9').bytes_list.value) == [b'caf\xc3\xa9']
  assert list(tfrecord.bytes_feature([b'a', 'b']).bytes_list.value) == [b'a', b'b']
  assert list(tfrecord.int64_feature(np.array([1, 2])).int64_list.value) == [1, 2]
  assert list(tfrecord.float_feature(0.5).float_list.value) == [0.5]


def test_temp_names():
  tmp = tfrecord.temp_path('/out/train-00000-of-00002')
  assert tmp == '/out/train-00000-of-00002.tmp-%d' % os.getpid()
  assert tfrecord.is_temp_file(tmp) and tfrecord.is_temp_file('labels.txt.tmp-7')
  assert not tfrecord.is_temp_file('/out/train-00000-of-00002')
  assert not tfrecord.is_temp_file('a.tmp-') and not tfrecord.is_temp_file('a.tmp-1/b')


def _image_bytes(mode, color, fmt, size=(40, 32)):
  out = io.BytesIO()
  Image.new(mode, size, color).save(out, format=fmt)
  return out.getvalue()


def _decoded(data):
  img = Image.open(io.BytesIO(data))
  assert img.format == 'JPEG' and img.mode == 'RGB'
  return np.asarray(img).astype(np.int32)


@pytest.mark.parametrize('mode,color,fmt,expected', [
    ('RGB', (200, 30, 60), 'PNG', (200, 30, 60)),
    ('L', 90, 'JPEG', (90, 90, 90)),
    ('CMYK', (0, 255, 255, 0), 'JPEG', (255, 0, 0)),  # pure red in CMYK
    ('RGBA', (10, 20, 30, 0), 'PNG', (255, 255, 255)),  # fully transparent -> white background
    ('P', 3, 'PNG', None),
])
def test_to_rgb_jpeg_reencodes(mode, color, fmt, expected):
  data = _image_bytes(mode, color, fmt)
  jpeg, height, width = tfrecord.to_rgb_jpeg(data, 'x.' + fmt.lower())
  assert (height, width) == (32, 40)
  pixels = _decoded(jpeg)
  assert pixels.shape == (32, 40, 3)
  if expected is not None:
    assert np.abs(pixels - np.array(expected)).max() <= 6


def test_to_rgb_jpeg_keeps_rgb_baseline_bytes():
  data = _image_bytes('RGB', (1, 2, 3), 'JPEG')
  assert tfrecord.to_rgb_jpeg(data, 'a.jpg') == (data, 32, 40)


@pytest.mark.parametrize('data', [b'', b'not an image at all', None])
def test_to_rgb_jpeg_corrupt_names_path(data):
  if data is None:  # a truncated JPEG: the header parses, the full decode must fail
    full = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3)).astype(np.uint8)).save(full, 'JPEG')
    data = full.getvalue()[:400]
  with pytest.raises(tfrecord.ConversionError, match='dir/broken.JPEG'):
    tfrecord.to_rgb_jpeg(data, 'dir/broken.JPEG')


def _decode_value(serialized):
  parsed = tf.parse_single_example(serialized, {'value': tf.FixedLenFeature([], tf.int64)})
  return parsed['value']


def test_read_dataset_round_trip(tmp_path, graph):
  out = str(tmp_path)
  shard_writer.write_sharded(_items(10), _encode, out, 'train', 3, num_workers=1)
  with open(os.path.join(out, 'train-00000-of-00003.tmp-123'), 'wb') as f:
    f.write(b'garbage')  # a killed run's leftover must not be read
  pattern = os.path.join(out, 'train-*')
  train = tfrecord.read_dataset(pattern, _decode_value, lambda v: v * 2, 4, True, seed=1)
  evals = tfrecord.read_dataset(pattern, _decode_value, None, 4, False, drop_remainder=False)
  train_next = tf.data.make_one_shot_iterator(train).get_next()
  eval_next = tf.data.make_one_shot_iterator(evals).get_next()
  assert train_next.shape.as_list() == [4]
  with tf.Session() as sess:
    seen = np.concatenate([sess.run(train_next) for _ in range(5)])  # 20 > 10: repeats
    batches = []
    with pytest.raises(tf.errors.OutOfRangeError):
      while True:
        batches.append(sess.run(eval_next))
  assert set(seen.tolist()) == set(range(0, 20, 2))
  assert [len(b) for b in batches] == [4, 4, 2]
  assert sorted(np.concatenate(batches).tolist()) == list(range(10))


def test_read_dataset_no_match_names_pattern(tmp_path):
  pattern = os.path.join(str(tmp_path), 'nothing-*')
  with pytest.raises(ValueError, match='nothing-'):
    tfrecord.read_dataset(pattern, _decode_value, None, 4, True)


def test_label_file_round_trip(tmp_path):
  path = str(tmp_path / 'labels.txt')
  labels = {0: 'background', 2: 'goldfish, Carassius auratus', 1: u'tench: a fish \u00e9'}
  tfrecord.write_label_file(labels, path)
  with io.open(path, encoding='utf-8') as f:
    assert f.read() == u'0:background\n1:tench: a fish \u00e9\n2:goldfish, Carassius auratus\n'
  assert tfrecord.read_label_file(path) == labels
  assert os.listdir(str(tmp_path)) == ['labels.txt']
  with open(path, 'a') as f:
    f.write('three\n')
  with pytest.raises(ValueError, match=r'labels.txt:4'):
    tfrecord.read_label_file(path)
