"""Tests of the COCO converter and its label maps.

Decoder and preprocessing: test_decoders.py, test_detection_preprocessing.py; input pipeline:
tests/pipelines/test_detection.py.
"""
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
from datasets import decoders
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
  assert coco.run(parser.parse_args(base + ['--annotations', missing])) == 2
  assert missing in capsys.readouterr().err
  bad = tmp_path / 'bad.json'
  bad.write_text('{"images": [')
  assert coco.run(parser.parse_args(base + ['--annotations', str(bad)])) == 2
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


def test_converted_records_decode(raw_coco, graph):
  images_dir, annotations, output_dir = raw_coco
  coco.convert(images_dir, annotations, output_dir, 'val', num_shards=1, num_workers=1)
  record = _read_examples(output_dir, 'val')['1'].SerializeToString()
  with tf.Session() as sess:
    out = sess.run(decoders.decode_detection(tf.constant(record)))
  np.testing.assert_allclose(out['boxes'], [[0.1, 0.1, 0.6, 0.6], [0.0, 0.75, 0.25, 1.0]], rtol=1e-6)
  assert out['is_crowd'].tolist() == [False, True] and out['area'].tolist() == [150.0, 60.0]
  assert out['image'].shape == (20, 40, 3) and out['classes'].tolist() == [90, 1]
