"""Tests of the COCO converter (with its label maps), decoder and the SSD-style detection preprocessing."""
import argparse
import glob
import io
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from datasets import coco
from datasets import detection_augment
from datasets import label_maps
from datasets import tfrecord


def _save(path, mode, size, fmt, color):
  Image.new(mode, size, color).save(path, format=fmt)


@pytest.fixture
def raw_coco(tmp_path):
  """Four images (one CMYK JPEG, one PNG), one entry whose file is missing, and annotations covering
  crowd, clipping, degenerate and orphan cases. Category ids 1 and 90 are not contiguous."""
  images_dir = tmp_path / 'images'
  images_dir.mkdir()
  _save(str(images_dir / 'a.jpg'), 'RGB', (40, 20), 'JPEG', (200, 10, 10))  # width 40, height 20
  _save(str(images_dir / 'b.png'), 'RGB', (30, 30), 'PNG', (10, 200, 10))
  _save(str(images_dir / 'c.jpg'), 'CMYK', (16, 8), 'JPEG', (0, 0, 0, 0))
  (images_dir / 'd.jpg').write_bytes(b'this is not a jpeg')
  data = {
      'images': [
          {'id': 1, 'file_name': 'a.jpg', 'width': 40, 'height': 20},
          {'id': 2, 'file_name': 'b.png', 'width': 30, 'height': 30},
          {'id': 3, 'file_name': 'c.jpg', 'width': 16, 'height': 8},
          {'id': 4, 'file_name': 'gone.jpg', 'width': 10, 'height': 10},
          {'id': 5, 'file_name': 'd.jpg', 'width': 10, 'height': 10},
      ],
      'annotations': [
          # Inside the image: x 4..24 of 40, y 2..12 of 20.
          {'id': 10, 'image_id': 1, 'category_id': 90, 'bbox': [4, 2, 20, 10], 'area': 150.0, 'iscrowd': 0,
           'segmentation': [[4, 2, 24, 2, 24, 12, 4, 12]]},
          # Crosses the right and top borders: clipped to x 30..40, y 0..5.
          {'id': 11, 'image_id': 1, 'category_id': 1, 'bbox': [30, -5, 20, 10], 'area': 60.0, 'iscrowd': 1,
           'segmentation': {'size': [20, 40], 'counts': [600, 5, 15, 5, 175]}},
          # Zero width: dropped and counted.
          {'id': 12, 'image_id': 1, 'category_id': 1, 'bbox': [5, 5, 0, 4], 'area': 0.0, 'iscrowd': 0},
          # Entirely right of the image: empty after clipping.
          {'id': 13, 'image_id': 2, 'category_id': 1, 'bbox': [35, 5, 4, 4], 'area': 16.0, 'iscrowd': 0},
          # Image 99 does not exist.
          {'id': 14, 'image_id': 99, 'category_id': 1, 'bbox': [1, 1, 2, 2], 'area': 4.0, 'iscrowd': 0},
          # Image 4's file is missing: dropped with its image, not reported twice.
          {'id': 15, 'image_id': 4, 'category_id': 1, 'bbox': [1, 1, 2, 2], 'area': 4.0, 'iscrowd': 0},
          {'id': 16, 'image_id': 3, 'category_id': 90, 'bbox': [0, 0, 16, 8], 'area': 128.0, 'iscrowd': 0},
      ],
      'categories': [{'id': 1, 'name': 'person'}, {'id': 90, 'name': 'tooth "brush"'}],
  }
  annotations = tmp_path / 'instances_tiny.json'
  annotations.write_text(json.dumps(data))
  return str(images_dir), str(annotations), str(tmp_path / 'out')


def _read_examples(output_dir, split):
  examples = {}
  for path in sorted(glob.glob(os.path.join(output_dir, split + '-*'))):
    for record in tf.python_io.tf_record_iterator(path):
      example = tf.train.Example.FromString(record)
      examples[example.features.feature[coco.SOURCE_ID].bytes_list.value[0].decode()] = example
  return examples


def _floats(example, key):
  return list(example.features.feature[key].float_list.value)


def _ints(example, key):
  return list(example.features.feature[key].int64_list.value)


def test_convert_writes_od_api_records(raw_coco, capsys):
  images_dir, annotations, output_dir = raw_coco
  stats = coco.convert(images_dir, annotations, output_dir, 'val', num_shards=2, num_workers=1)
  err = capsys.readouterr().err
  assert 'gone.jpg' in err and 'image id 99' in err and 'd.jpg' in err
  assert stats['written'] == 3 and stats['skipped'] == 1 and stats['images'] == 5
  assert stats['missing_files'] == 1 and stats['orphan_annotations'] == 1 and stats['degenerate_boxes'] == 2
  assert stats['objects'] == 3 and stats['crowd_objects'] == 1 and stats['images_without_objects'] == 1
  assert [path for path, _ in stats['errors']] == [os.path.join(images_dir, 'd.jpg')]
  examples = _read_examples(output_dir, 'val')
  assert sorted(examples) == ['1', '2', '3']
  a = examples['1']
  np.testing.assert_allclose(_floats(a, coco.XMIN), [0.1, 0.75], rtol=1e-6)
  np.testing.assert_allclose(_floats(a, coco.XMAX), [0.6, 1.0], rtol=1e-6)
  np.testing.assert_allclose(_floats(a, coco.YMIN), [0.1, 0.0], rtol=1e-6)
  np.testing.assert_allclose(_floats(a, coco.YMAX), [0.6, 0.25], rtol=1e-6)
  assert _ints(a, coco.CLASS_LABEL) == [90, 1]
  assert _ints(a, coco.IS_CROWD) == [0, 1]
  assert _floats(a, coco.AREA) == [150.0, 60.0]
  assert list(a.features.feature[coco.CLASS_TEXT].bytes_list.value) == [b'tooth "brush"', b'person']
  assert _ints(a, coco.HEIGHT) == [20] and _ints(a, coco.WIDTH) == [40]
  assert a.features.feature[coco.FILENAME].bytes_list.value == [b'a.jpg']
  assert a.features.feature[coco.FORMAT].bytes_list.value == [b'jpeg']
  assert _floats(examples['2'], coco.XMIN) == [] and _ints(examples['2'], coco.CLASS_LABEL) == []
  for example in examples.values():  # PNG and CMYK inputs came out as RGB JPEGs
    encoded = example.features.feature[coco.ENCODED].bytes_list.value[0]
    image = Image.open(io.BytesIO(encoded))
    assert (image.format, image.mode) == ('JPEG', 'RGB')
  assert _floats(examples['3'], coco.XMAX) == [1.0]


def test_convert_with_masks(raw_coco):
  images_dir, annotations, output_dir = raw_coco
  stats = coco.convert(images_dir, annotations, output_dir, 'm', num_shards=1, num_workers=1, include_masks=True)
  assert stats['written'] == 3
  examples = _read_examples(output_dir, 'm')
  pngs = examples['1'].features.feature[coco.MASK].bytes_list.value
  masks = [np.asarray(Image.open(io.BytesIO(png))) for png in pngs]
  assert [m.shape for m in masks] == [(20, 40), (20, 40)]
  # The polygon covers x 4..24, y 2..12; COCO RLE is column-major: columns 30 and 31, rows 0..4.
  assert 180 <= masks[0].sum() <= 231 and masks[0][7, 14] == 1 and masks[0][15, 14] == 0
  expected = np.zeros((20, 40), np.uint8)
  expected[0:5, 30:32] = 1
  np.testing.assert_array_equal(masks[1], expected)
  # Image 3's object has no segmentation: its box (the whole 8x16 image) is the mask.
  png = examples['3'].features.feature[coco.MASK].bytes_list.value[0]
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), np.ones((8, 16), np.uint8))


def test_label_maps_round_trip(raw_coco):
  images_dir, annotations, output_dir = raw_coco
  coco.convert(images_dir, annotations, output_dir, 'val', num_shards=1, num_workers=1)
  expected = {1: 'person', 90: 'tooth "brush"'}
  assert label_maps.read_label_map(os.path.join(output_dir, coco.LABEL_MAP_NAME)) == expected
  assert tfrecord.read_label_file(os.path.join(output_dir, coco.LABELS_NAME)) == expected
  with open(os.path.join(output_dir, coco.LABEL_MAP_NAME)) as f:
    assert f.read().startswith('item {\n  id: 1\n  name: "person"\n  display_name: "person"\n}\n')


def test_cli_fatal_errors_name_the_file(tmp_path, capsys):
  parser = argparse.ArgumentParser()
  coco.add_arguments(parser)
  base = ['--images-dir', str(tmp_path), '--output-dir', str(tmp_path / 'out'), '--split', 'val']
  missing = str(tmp_path / 'nope.json')
  assert coco.run(parser.parse_args(base + ['--annotations', missing])) == 1
  assert missing in capsys.readouterr().err
  bad = tmp_path / 'bad.json'
  bad.write_text('{"images": [')
  assert coco.run(parser.parse_args(base + ['--annotations', str(bad)])) == 1
  err = capsys.readouterr().err
  assert str(bad) in err and 'Traceback' not in err


def test_cli_summary_counts(raw_coco, capsys):
  images_dir, annotations, output_dir = raw_coco
  parser = argparse.ArgumentParser()
  coco.add_arguments(parser)
  args = parser.parse_args(['--images-dir', images_dir, '--annotations', annotations, '--output-dir',
                            output_dir, '--split', 'val', '--num-shards', '1', '--num-workers', '1'])
  assert coco.run(args) == 0
  out = capsys.readouterr().out
  assert '3 records written' in out and 'degenerate boxes: 2' in out and 'missing files: 1' in out


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


def test_decode_defaults_missing_area_and_crowd(graph):
  pixels = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3)
  png = io.BytesIO()
  Image.fromarray(pixels).save(png, format='PNG')
  decoded = coco.decode(tf.constant(_od_api_record(png.getvalue())))
  with tf.Session() as sess:
    out = sess.run(decoded)
  np.testing.assert_array_equal(out['image'], pixels)
  np.testing.assert_allclose(out['boxes'], [[0.1, 0.0, 0.3, 0.25], [0.2, 0.5, 0.9, 1.0]], rtol=1e-6)
  assert out['classes'].tolist() == [3, 88] and out['classes'].dtype == np.int32
  assert out['is_crowd'].tolist() == [False, False] and out['area'].tolist() == [0.0, 0.0]
  assert out['source_id'] == b'42' and (out['height'], out['width']) == (6, 4)


def test_decode_reads_converted_records(raw_coco, graph):
  images_dir, annotations, output_dir = raw_coco
  coco.convert(images_dir, annotations, output_dir, 'val', num_shards=1, num_workers=1)
  record = _read_examples(output_dir, 'val')['1'].SerializeToString()
  with tf.Session() as sess:
    out = sess.run(coco.decode(tf.constant(record)))
  np.testing.assert_allclose(out['boxes'], [[0.1, 0.1, 0.6, 0.6], [0.0, 0.75, 0.25, 1.0]], rtol=1e-6)
  assert out['is_crowd'].tolist() == [False, True] and out['area'].tolist() == [150.0, 60.0]
  assert out['image'].shape == (20, 40, 3) and out['classes'].tolist() == [90, 1]


def test_ssd_random_crop_keeps_boxes_and_flags_consistent(graph):
  image = tf.placeholder(tf.uint8, [None, None, 3])
  boxes = tf.placeholder(tf.float32, [None, 4])
  crowd = tf.placeholder(tf.bool, [None])
  labels = tf.placeholder(tf.int32, [None])
  out = detection_augment.ssd_random_crop(image, boxes, labels, crowd)
  # Label i is odd exactly for the crowd boxes, so the flags must follow their boxes.
  feed_boxes = np.array([[0.1, 0.1, 0.4, 0.5], [0.3, 0.2, 0.9, 0.7], [0.5, 0.5, 1.0, 1.0],
                         [0.0, 0.6, 0.3, 0.9]], np.float32)
  feed = {image: np.zeros([50, 70, 3], np.uint8), boxes: feed_boxes, labels: [0, 1, 2, 3],
          crowd: [False, True, False, True]}
  sizes = set()
  with tf.Session() as sess:
    for _ in range(25):
      img, b, l, c = sess.run(out, feed)
      sizes.add(img.shape[:2])
      assert b.shape == (len(l), 4) and c.shape == (len(l),)
      assert np.all(b >= 0.0) and np.all(b <= 1.0) and np.all(b[:, 2:] >= b[:, :2])
      assert c.tolist() == [bool(i % 2) for i in l]
      if img.shape[:2] == (50, 70):
        np.testing.assert_allclose(b, feed_boxes[l], rtol=1e-6)
  assert len(sizes) > 1, 'over 25 samples every crop was the whole image'


def test_ssd_random_crop_golden_window(graph):
  # A single choice with IoU >= 0.9 against a box covering the whole image forces the patch to be (almost)
  # the whole image; area_range (1, 1) makes it exact, so box values can be checked by hand.
  image = tf.zeros([40, 40, 3], tf.uint8)
  boxes = tf.constant([[0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.6]])
  out = detection_augment.ssd_random_crop(image, boxes, tf.constant([5, 7]), tf.constant([False, False]),
                                          min_iou_choices=(0.9,), area_range=(1.0, 1.0),
                                          aspect_ratio_range=(1.0, 1.0))
  with tf.Session() as sess:
    img, b, l, c = sess.run(out)
  assert img.shape == (40, 40, 3) and l.tolist() == [5, 7] and c.tolist() == [False, False]
  np.testing.assert_allclose(b, [[0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.6]], atol=1e-6)


def test_sampled_patches_meet_the_iou_threshold(graph):
  ref = np.array([[0.1, 0.1, 0.6, 0.5], [0.5, 0.4, 1.0, 1.0]], np.float32)
  begin, size = detection_augment._sample_patch(tf.constant([50, 70, 3]), tf.constant(ref), tf.constant(0.7),
                                                ((0.5, 2.0), (0.1, 1.0), 100), None)
  whole = 0
  with tf.Session() as sess:
    for _ in range(20):
      b, s = sess.run([begin, size])
      if s[0] == 50 and s[1] == 70:
        whole += 1
        continue
      y0, x0, y1, x1 = b[0] / 50.0, b[1] / 70.0, (b[0] + s[0]) / 50.0, (b[1] + s[1]) / 70.0
      inter = (np.clip(np.minimum(y1, ref[:, 2]) - np.maximum(y0, ref[:, 0]), 0, None) *
               np.clip(np.minimum(x1, ref[:, 3]) - np.maximum(x0, ref[:, 1]), 0, None))
      union = (y1 - y0) * (x1 - x0) + (ref[:, 2] - ref[:, 0]) * (ref[:, 3] - ref[:, 1]) - inter
      assert np.max(inter / union) >= 0.7 - 1e-6
  assert whole < 20


def test_boxes_in_window_golden(graph):
  boxes = tf.constant([[0.1, 0.1, 0.3, 0.3], [0.4, 0.4, 0.8, 0.9], [0.0, 0.0, 1.0, 1.0]])
  keep, local = detection_augment._boxes_in_window(boxes, tf.constant([0.2, 0.4, 0.7, 0.9]))
  with tf.Session() as sess:
    keep, local = sess.run([keep, local])
  # Centres: (0.2, 0.2) outside; (0.6, 0.65) inside; (0.5, 0.5) inside.
  assert keep.tolist() == [False, True, True]
  np.testing.assert_allclose(local[1], [0.4, 0.0, 1.0, 1.0], atol=1e-6)  # ((0.4-0.2)/0.5, 0, clip, 1)
  np.testing.assert_allclose(local[2], [0.0, 0.0, 1.0, 1.0], atol=1e-6)


def test_ssd_random_crop_without_boxes(graph):
  empty = tf.zeros([0, 4])
  out = detection_augment.ssd_random_crop(tf.zeros([30, 20, 3], tf.uint8), empty, tf.zeros([0], tf.int32),
                                          tf.zeros([0], tf.bool))
  with tf.Session() as sess:
    for _ in range(10):
      img, b, l, c = sess.run(out)
      assert img.ndim == 3 and img.shape[0] <= 30 and img.shape[1] <= 20
      assert b.shape == (0, 4) and l.shape == (0,) and c.shape == (0,)


def test_flip_golden_values(graph):
  boxes = np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 0.25]], np.float32)
  image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
  flipped = detection_augment.flip_boxes_left_right(tf.constant(boxes))
  random_out = detection_augment.random_horizontal_flip(tf.constant(image), tf.constant(boxes))
  with tf.Session() as sess:
    np.testing.assert_allclose(sess.run(flipped), [[0.1, 0.4, 0.5, 0.8], [0.0, 0.75, 1.0, 1.0]], atol=1e-6)
    seen = set()
    for _ in range(30):
      img, b = sess.run(random_out)
      is_flipped = not np.array_equal(img, image)
      if is_flipped:
        np.testing.assert_array_equal(img, image[:, ::-1])
        np.testing.assert_allclose(b, [[0.1, 0.4, 0.5, 0.8], [0.0, 0.75, 1.0, 1.0]], atol=1e-6)
      else:
        np.testing.assert_allclose(b, boxes)
      seen.add(is_flipped)
  assert seen == {True, False}


def test_pad_objects_shapes_and_values(graph):
  boxes = tf.placeholder(tf.float32, [None, 4])
  classes = tf.placeholder(tf.int32, [None])
  crowd = tf.placeholder(tf.bool, [None])
  out = detection_augment.pad_objects(boxes, classes, crowd, 3)
  assert [t.get_shape().as_list() for t in out[:3]] == [[3, 4], [3], [3]]
  with tf.Session() as sess:
    b, c, k, n = sess.run(out, {boxes: [[0.1, 0.2, 0.3, 0.4]], classes: [7], crowd: [True]})
    np.testing.assert_allclose(b, [[0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert c.tolist() == [7, 0, 0] and k.tolist() == [True, False, False] and n == 1
    b, c, k, n = sess.run(out, {boxes: np.ones([5, 4]), classes: [1, 2, 3, 4, 5], crowd: [False] * 5})
    assert b.shape == (3, 4) and c.tolist() == [1, 2, 3] and n == 3


def test_class_mapping(graph):
  lookup = detection_augment.make_class_mapping([90, 1, 3])
  with tf.Session() as sess:
    assert sess.run(lookup(tf.constant([1, 3, 90, 2, 0, 91, -1]))).tolist() == [1, 2, 3, 0, 0, 0, 0]


def test_preprocess_shapes_and_range(graph):
  decoded = {'image': tf.fill([20, 40, 3], tf.constant(255, tf.uint8)),
             'boxes': tf.constant([[0.1, 0.1, 0.6, 0.6]]), 'classes': tf.constant([90]),
             'is_crowd': tf.constant([False]), 'source_id': tf.constant('1'),
             'height': tf.constant(20), 'width': tf.constant(40)}
  train = detection_augment.preprocess_for_train(decoded, 32, seed=3)
  evaluation = detection_augment.preprocess_for_eval(decoded, 32)
  assert train['image'].get_shape().as_list() == [32, 32, 3]
  with tf.Session() as sess:
    t, e = sess.run([train, evaluation])
  np.testing.assert_allclose(t['image'], 1.0)
  np.testing.assert_allclose(e['image'], 1.0)
  assert t['boxes'].shape[1] == 4 and t['classes'].dtype == np.int32 and t['is_crowd'].dtype == bool
  np.testing.assert_allclose(e['boxes'], [[0.1, 0.1, 0.6, 0.6]])
  assert (e['original_height'], e['original_width'], e['source_id']) == (20, 40, b'1')
