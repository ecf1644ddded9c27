"""VOC converter (tiny devkit built with Pillow).

Decoder and preprocessing: test_decoders.py, test_segmentation_preprocessing.py; input pipeline:
tests/pipelines/test_segmentation_input.py.
"""
import argparse
import io
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from datasets import decoders
from datasets import tfrecord
from datasets import voc

H, W = 24, 32


def _stripes(values, height=H, width=W):
  """[height, width] uint8 mask of vertical stripes cycling through `values`."""
  return np.array([values[(x // 4) % len(values)] for x in range(width)], np.uint8)[None].repeat(height, 0)


def _save_palette(mask, path):
  img = Image.fromarray(mask, mode='P')
  img.putpalette(voc.voc_colormap().ravel().tolist())
  img.save(path)


def _save_image(path, seed, mode='RGB', height=H, width=W):
  pixels = np.random.RandomState(seed).randint(0, 256, (height, width, 3)).astype(np.uint8)
  img = Image.fromarray(pixels)
  (img.convert('L') if mode == 'L' else img).save(path, format='JPEG')


# Expected class indices of the masks that convert cleanly.
PALETTE = _stripes([0, 1, 15, 255])
RGB = _stripes([0, 2, 20, 255])
SBD = _stripes([3, 0, 255])


@pytest.fixture(scope='module')
def devkit(tmp_path_factory):
  root = tmp_path_factory.mktemp('voc')
  voc_dir = root / 'VOCdevkit' / 'VOC2012'
  for sub in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
    (voc_dir / sub).mkdir(parents=True)
  extra = root / 'SegmentationClassAug'
  extra.mkdir()
  for i, image_id in enumerate(['a', 'b', 'c', 'd', 'e']):
    _save_image(str(voc_dir / 'JPEGImages' / (image_id + '.jpg')), i, mode='L' if image_id == 'b' else 'RGB')
  _save_palette(PALETTE, str(voc_dir / 'SegmentationClass' / 'a.png'))
  Image.fromarray(voc.voc_colormap()[RGB]).save(str(voc_dir / 'SegmentationClass' / 'b.png'))
  _save_palette(_stripes([0, 1], width=W - 2), str(voc_dir / 'SegmentationClass' / 'c.png'))
  _save_palette(_stripes([0, 30]), str(voc_dir / 'SegmentationClass' / 'd.png'))
  Image.fromarray(SBD, mode='L').save(str(extra / 'e.png'))
  # VOC masks take priority over extra masks.
  Image.fromarray(_stripes([7]), mode='L').save(str(extra / 'a.png'))
  (voc_dir / 'ImageSets' / 'Segmentation' / 'train.txt').write_text(u'a\nb\nc\nd\ne\n')
  (root / 'train_aug.txt').write_text(u'/JPEGImages/e.jpg /SegmentationClassAug/e.png\na\n')
  return root


def _read_records(pattern):
  """Decoded records of all files matching pattern, as numpy dicts keyed by filename."""
  out = {}
  with tf.Graph().as_default():
    serialized = tf.placeholder(tf.string, [])
    decoded = decoders.decode_segmentation(serialized)
    with tf.Session() as sess:
      for path in tf.gfile.Glob(pattern):
        for record in tf.python_io.tf_record_iterator(path):
          values = sess.run(decoded, {serialized: record})
          out[values['filename'].decode()] = values
  return out


@pytest.fixture(scope='module')
def converted(devkit):
  out = str(devkit / 'out')
  stats = voc.convert(str(devkit / 'VOCdevkit'), out, 'train',
                      extra_masks_dir=str(devkit / 'SegmentationClassAug'), num_shards=2, num_workers=1)
  return out, stats


def test_voc_colormap_known_colours():
  cmap = voc.voc_colormap()
  assert cmap.shape == (256, 3) and cmap.dtype == np.uint8
  expected = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 15: (192, 128, 128),
              20: (0, 64, 128), 255: (224, 224, 192)}
  for index, colour in expected.items():
    assert tuple(cmap[index]) == colour
  assert len(set(map(tuple, cmap))) == 256


def test_convert_writes_labels_exactly_and_reports_bad_masks(converted):
  out, stats = converted
  assert (stats['written'], stats['skipped'], stats['num_ids']) == (3, 2, 5)
  errors = dict((os.path.basename(p), m) for p, m in stats['errors'])
  assert set(errors) == {'c.png', 'd.png'}
  assert '30x24' in errors['c.png'] and '32x24' in errors['c.png']
  assert '30' in errors['d.png'] and '0..20' in errors['d.png']
  assert sorted(os.listdir(out)) == ['labels.txt', 'train-00000-of-00002', 'train-00001-of-00002']
  labels = tfrecord.read_label_file(os.path.join(out, 'labels.txt'))
  assert len(labels) == 21
  assert (labels[0], labels[15], labels[20]) == ('background', 'person', 'tvmonitor')
  records = _read_records(os.path.join(out, 'train-*'))
  assert sorted(records) == ['a.jpg', 'b.jpg', 'e.jpg']
  for name, expected in (('a.jpg', PALETTE), ('b.jpg', RGB), ('e.jpg', SBD)):
    np.testing.assert_array_equal(records[name]['label'][:, :, 0], expected)
    assert records[name]['image'].shape == (H, W, 3)
    assert (records[name]['height'], records[name]['width']) == (H, W)
  original = np.asarray(Image.open(os.path.join(out, '..', 'VOCdevkit', 'VOC2012', 'JPEGImages', 'a.jpg')))
  assert np.abs(records['a.jpg']['image'].astype(int) - original).mean() < 8
  gray = records['b.jpg']['image']
  np.testing.assert_array_equal(gray[:, :, 0], gray[:, :, 2])


def test_record_keys_and_single_channel_png(converted):
  out, _ = converted
  path = os.path.join(out, 'train-00000-of-00002')
  example = tf.train.Example.FromString(next(tf.python_io.tf_record_iterator(path)))
  feature = example.features.feature
  assert feature[voc.KEY_IMAGE_FORMAT].bytes_list.value == [b'jpeg']
  assert feature[voc.KEY_LABEL_FORMAT].bytes_list.value == [b'png']
  assert feature[voc.KEY_IMAGE_CHANNELS].int64_list.value == [3]
  assert feature[voc.KEY_IMAGE_HEIGHT].int64_list.value == [H]
  assert feature[voc.KEY_IMAGE_WIDTH].int64_list.value == [W]
  label = Image.open(io.BytesIO(feature[voc.KEY_LABEL_ENCODED].bytes_list.value[0]))
  assert label.mode == 'L'


def test_split_file_override_and_fail_mode(devkit, tmp_path):
  stats = voc.convert(str(devkit / 'VOCdevkit'), str(tmp_path / 'aug'), 'train',
                      split_file=str(devkit / 'train_aug.txt'),
                      extra_masks_dir=str(devkit / 'SegmentationClassAug'), num_shards=1, num_workers=1)
  assert (stats['written'], stats['skipped']) == (2, 0)
  records = _read_records(str(tmp_path / 'aug' / 'train-*'))
  np.testing.assert_array_equal(records['e.jpg']['label'][:, :, 0], SBD)
  with pytest.raises(tfrecord.ConversionError) as info:
    voc.convert(str(devkit / 'VOCdevkit'), str(tmp_path / 'fail'), 'train', num_shards=1, num_workers=1,
                on_error='fail')
  assert info.value.path.endswith('.png')


def test_missing_image_and_mask_name_the_path(devkit, tmp_path):
  split = tmp_path / 'ids.txt'
  split.write_text(u'nosuchimage\ne\n')
  stats = voc.convert(str(devkit / 'VOCdevkit'), str(tmp_path / 'out'), 'val', split_file=str(split),
                      num_shards=1, num_workers=1, num_classes=5, class_names=['bg', 'a', 'b', 'c', 'd'])
  assert stats['written'] == 0
  paths = sorted(p for p, _ in stats['errors'])
  assert paths[0].endswith(os.path.join('JPEGImages', 'nosuchimage.jpg'))
  assert paths[1].endswith(os.path.join('SegmentationClass', 'e.png'))
  assert (tmp_path / 'out' / 'labels.txt').read_text() == u'0:bg\n1:a\n2:b\n3:c\n4:d\n'


def test_rgb_mask_unknown_colour_and_num_classes(tmp_path):
  rgb = voc.voc_colormap()[_stripes([0, 1])]
  rgb[0, 0] = (1, 2, 3)
  with pytest.raises(tfrecord.ConversionError) as info:
    voc.rgb_mask_to_indices(rgb, 'm.png')
  assert info.value.path == 'm.png' and '(1, 2, 3)' in info.value.message
  path = str(tmp_path / 'five.png')
  _save_palette(_stripes([0, 4, 255]), path)
  np.testing.assert_array_equal(voc.read_mask(path, num_classes=5), _stripes([0, 4, 255]))
  with pytest.raises(tfrecord.ConversionError, match='4'):
    voc.read_mask(path, num_classes=4)


def test_run_cli(devkit, tmp_path, capsys):
  parser = argparse.ArgumentParser()
  voc.add_arguments(parser)
  args = parser.parse_args(['--devkit-dir', str(tmp_path / 'nothing'), '--split', 'val', '--output-dir',
                            str(tmp_path / 'o')])
  assert voc.run(args) == 2
  assert 'VOC2012' in capsys.readouterr().err
  args = parser.parse_args(['--devkit-dir', str(devkit / 'VOCdevkit'), '--split', 'val', '--output-dir',
                            str(tmp_path / 'o')])
  assert voc.run(args) == 2
  assert os.path.join('Segmentation', 'val.txt') in capsys.readouterr().err
  args = parser.parse_args(['--devkit-dir', str(devkit / 'VOCdevkit'), '--split', 'train', '--output-dir',
                            str(tmp_path / 'o'), '--num-shards', '1', '--num-workers', '1'])
  assert voc.run(args) == 0
  printed = capsys.readouterr().out
  assert '2 records written, 3 skipped' in printed and 'c.png' in printed and 'd.png' in printed
