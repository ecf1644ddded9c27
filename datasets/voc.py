"""PASCAL VOC 2012 segmentation: devkit -> DeepLab TFRecords (+ the `mnv2 convert voc` CLI) and the VOC colours.

`convert` reads `VOCdevkit/VOC<year>/{JPEGImages,SegmentationClass,ImageSets/Segmentation}` (plus optional
SBD-style extra masks and an id-list override such as train_aug) and writes shards with DeepLab's feature
keys (the `KEY_*` constants here), the label stored as a single-channel PNG of class indices, and TF-Slim's
`labels.txt`. `voc_colormap` / `rgb_mask_to_indices` / `read_mask` handle VOC's colour-coded masks.

Not here: reading records back (`datasets.decoders.decode_segmentation`), the DeepLab augmentation
(`datasets.segmentation_preprocessing`), the input pipeline (`pipelines.inputs.segmentation_input`), shard writing
(`datasets.shard_writer`), downloading the devkit or SBD, instance masks (SegmentationObject).
"""
import io
import os

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image

from datasets import shard_writer
from datasets.palette import voc_colormap  # noqa: F401  (the VOC colour map, here since PASCAL VOC defines it)
from datasets import tfrecord

# DeepLab's build_data.py keys.
KEY_IMAGE_ENCODED = 'image/encoded'
KEY_IMAGE_FILENAME = 'image/filename'
KEY_IMAGE_FORMAT = 'image/format'
KEY_IMAGE_HEIGHT = 'image/height'
KEY_IMAGE_WIDTH = 'image/width'
KEY_IMAGE_CHANNELS = 'image/channels'
KEY_LABEL_ENCODED = 'image/segmentation/class/encoded'
KEY_LABEL_FORMAT = 'image/segmentation/class/format'

CLASS_NAMES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
               'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
               'train', 'tvmonitor')
NUM_CLASSES = len(CLASS_NAMES)
IGNORE_LABEL = 255
SPLITS = ('train', 'val', 'trainval')
LABELS_FILENAME = 'labels.txt'
_MAX_ERRORS_SHOWN = 20


def _pack_rgb(rgb):
  rgb = rgb.astype(np.int64)
  return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def rgb_mask_to_indices(rgb, path):
  """Maps an RGB-coloured VOC mask to class indices through the colour map.

  Args:
    rgb: np.uint8 array [H, W, 3].
    path: str, the mask's file name, for errors.

  Returns:
    np.uint8 array [H, W] of class indices (boundary colour -> 255).

  Raises:
    tfrecord.ConversionError: a colour is not in the VOC colour map.
  """
  colours, inverse = np.unique(_pack_rgb(rgb).ravel(), return_inverse=True)
  lookup = {int(c): i for i, c in enumerate(_pack_rgb(voc_colormap()))}
  unknown = [int(c) for c in colours if int(c) not in lookup]
  if unknown:
    shown = ', '.join('(%d, %d, %d)' % (c >> 16, (c >> 8) & 255, c & 255) for c in unknown[:5])
    raise tfrecord.ConversionError(path, 'RGB mask has %d colour(s) not in the VOC colour map: %s' % (
        len(unknown), shown))
  indices = np.array([lookup[int(c)] for c in colours], np.uint8)
  return indices[inverse].reshape(rgb.shape[:2])


def read_mask(path, num_classes=NUM_CLASSES):
  """Reads a VOC/SBD mask file as class indices and checks its values.

  Palette and greyscale PNGs hold class indices directly (VOC's SegmentationClass, SBD's
  SegmentationClassAug); RGB(A) masks are mapped through the VOC colour map.

  Args:
    path: str, mask file.
    num_classes: int, valid indices are 0 .. num_classes - 1 and 255 (ignore).

  Returns:
    np.uint8 array [H, W] of class indices.

  Raises:
    tfrecord.ConversionError: missing/unreadable file, unsupported mode or out-of-range values.
  """
  if not tf.io.gfile.exists(path):
    raise tfrecord.ConversionError(path, 'mask file not found')
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = f.read()
    with Image.open(io.BytesIO(data)) as img:
      img.load()
      mode = img.mode
      if mode in ('RGB', 'RGBA'):
        values = rgb_mask_to_indices(np.asarray(img.convert('RGB')), path)
      elif mode in ('P', 'L') or mode.startswith('I'):
        values = np.asarray(img).astype(np.int64)
      else:
        raise tfrecord.ConversionError(path, 'unsupported mask mode %r (want P, L, I or RGB)' % mode)
  except (IOError, OSError, SyntaxError, ValueError, tf.errors.OpError) as e:
    raise tfrecord.ConversionError(path, 'cannot read mask: %s' % e)
  bad = np.unique(values[((values >= num_classes) & (values != IGNORE_LABEL)) | (values < 0)])
  if bad.size:
    raise tfrecord.ConversionError(path, 'mask has class values %s outside 0..%d and %d' % (
        ', '.join(str(v) for v in bad[:10]), num_classes - 1, IGNORE_LABEL))
  return values.astype(np.uint8)


def _encode_png_l(indices):
  out = io.BytesIO()
  Image.fromarray(indices, mode='L').save(out, format='PNG')
  return out.getvalue()


def encode_example(item):
  """Builds one DeepLab record; the `write_sharded` encode_fn (module level so workers can pickle it).

  Args:
    item: tuple (image_id, image_path, mask_paths, num_classes); the first existing mask path is used.

  Returns:
    list with one serialized tf.train.Example.

  Raises:
    tfrecord.ConversionError: missing/unreadable image or mask, size mismatch, bad class values.
  """
  image_id, image_path, mask_paths, num_classes = item
  if not tf.io.gfile.exists(image_path):
    raise tfrecord.ConversionError(image_path, 'image file not found')
  mask_path = next((p for p in mask_paths if tf.io.gfile.exists(p)), None)
  if mask_path is None:
    raise tfrecord.ConversionError(mask_paths[0], 'mask file not found' + (
        ' (nor %s)' % ', '.join(mask_paths[1:]) if len(mask_paths) > 1 else ''))
  jpeg, height, width = tfrecord.read_rgb_jpeg(image_path)
  mask = read_mask(mask_path, num_classes)
  if mask.shape != (height, width):
    raise tfrecord.ConversionError(mask_path, 'mask is %dx%d (WxH) but its image %s is %dx%d' % (
        mask.shape[1], mask.shape[0], image_path, width, height))
  feature = {
      KEY_IMAGE_ENCODED: tfrecord.bytes_feature(jpeg),
      KEY_IMAGE_FILENAME: tfrecord.bytes_feature((image_id + '.jpg').encode('utf-8')),
      KEY_IMAGE_FORMAT: tfrecord.bytes_feature(b'jpeg'),
      KEY_IMAGE_HEIGHT: tfrecord.int64_feature(height),
      KEY_IMAGE_WIDTH: tfrecord.int64_feature(width),
      KEY_IMAGE_CHANNELS: tfrecord.int64_feature(3),
      KEY_LABEL_ENCODED: tfrecord.bytes_feature(_encode_png_l(mask)),
      KEY_LABEL_FORMAT: tfrecord.bytes_feature(b'png'),
  }
  return [tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)]


def read_ids(path):
  """Image ids of a split list: one per line; also takes 'id 1' lines and 'JPEGImages/id.jpg mask' pairs.

  Raises:
    tfrecord.ConversionError: the file is missing or lists no ids.
  """
  if not tf.io.gfile.exists(path):
    raise tfrecord.ConversionError(path, 'split file not found')
  ids, seen = [], set()
  with tf.io.gfile.GFile(path, 'r') as f:
    for line in f.read().splitlines():
      fields = line.split()
      if not fields:
        continue
      image_id = os.path.splitext(os.path.basename(fields[0]))[0]
      if image_id not in seen:
        seen.add(image_id)
        ids.append(image_id)
  if not ids:
    raise tfrecord.ConversionError(path, 'split file lists no image ids')
  return ids


def convert(devkit_dir, output_dir, split, year='2012', extra_masks_dir=None, split_file=None, num_shards=4,
            num_workers=None, on_error='skip', num_classes=None, class_names=None):
  """Converts a VOC devkit split to DeepLab TFRecords `<output_dir>/<split>-*` plus `labels.txt`.

  Args:
    devkit_dir: str, the `VOCdevkit` directory (holding `VOC<year>`).
    output_dir: str, local output directory.
    split: str, 'train', 'val' or 'trainval'; names the list file and the shards.
    year: str, devkit year.
    extra_masks_dir: optional str, SBD-style `<id>.png` class-index masks for ids without a VOC mask.
    split_file: optional str, id list used instead of `ImageSets/Segmentation/<split>.txt`.
    num_shards, num_workers, on_error: as `shard_writer.write_sharded`.
    num_classes: int, valid mask values are below it (plus 255); default len(class_names) or 21.
    class_names: optional list of names for `labels.txt`; default the 21 VOC classes.

  Returns:
    `shard_writer.write_sharded`'s stats dict plus 'num_ids' and 'labels_file'.

  Raises:
    tfrecord.ConversionError: missing devkit or split list, or a bad item with on_error='fail'.
  """
  class_names = list(CLASS_NAMES if class_names is None else class_names)
  num_classes = len(class_names) if num_classes is None else num_classes
  if len(class_names) != num_classes:
    raise ValueError('class_names has %d names but num_classes is %d' % (len(class_names), num_classes))
  root = os.path.join(devkit_dir, 'VOC%s' % year)
  if not tf.io.gfile.isdir(root):
    raise tfrecord.ConversionError(root, 'VOC devkit directory not found')
  ids = read_ids(split_file or os.path.join(root, 'ImageSets', 'Segmentation', split + '.txt'))
  items = []
  for image_id in ids:
    masks = [os.path.join(root, 'SegmentationClass', image_id + '.png')]
    if extra_masks_dir:
      masks.append(os.path.join(extra_masks_dir, image_id + '.png'))
    items.append((image_id, os.path.join(root, 'JPEGImages', image_id + '.jpg'), tuple(masks), num_classes))
  labels_file = os.path.join(output_dir, LABELS_FILENAME)
  tfrecord.check_label_file(dict(enumerate(class_names)), labels_file)  # before any shard is written
  stats = shard_writer.write_sharded(items, encode_example, output_dir, split, num_shards,
                                     num_workers=num_workers, on_error=on_error,
                                     desc='VOC%s %s' % (year, split))
  stats['num_ids'] = len(ids)
  stats['labels_file'] = labels_file
  tfrecord.write_label_file(dict(enumerate(class_names)), stats['labels_file'])
  return stats


def add_arguments(parser):
  """Adds the `mnv2 convert voc` flags to an argparse parser."""
  parser.add_argument('--devkit-dir', required=True, help='the VOCdevkit directory')
  parser.add_argument('--year', default='2012', help='devkit year (default 2012)')
  parser.add_argument('--split', required=True, choices=SPLITS, help='list file and shard name prefix')
  parser.add_argument('--extra-masks', dest='extra_masks', help='SBD-style class-index masks <id>.png, '
                      'used for ids without a VOC mask (e.g. SegmentationClassAug)')
  parser.add_argument('--split-file', help='id list to use instead of ImageSets/Segmentation/<split>.txt')
  parser.add_argument('--output-dir', required=True, help='where the shards and labels.txt go')
  parser.add_argument('--num-shards', type=int, default=4, help='number of output shards (default 4)')
  parser.add_argument('--num-workers', type=int, default=None, help='worker processes (default: CPUs)')
  parser.add_argument('--on-error', choices=('skip', 'fail'), default='skip',
                      help='skip bad images/masks (reported) or stop at the first one (default skip)')


def run(args):
  """Runs the converter from parsed `add_arguments` flags; prints a summary; returns the exit code."""
  try:
    stats = convert(args.devkit_dir, args.output_dir, args.split, year=args.year,
                    extra_masks_dir=args.extra_masks, split_file=args.split_file, num_shards=args.num_shards,
                    num_workers=args.num_workers, on_error=args.on_error)
  except shard_writer.USER_ERRORS as e:
    return shard_writer.report_error(e)
  print('VOC%s %s: %d ids, %d records written, %d skipped, %d shards already complete; labels in %s' % (
      args.year, args.split, stats['num_ids'], stats['written'], stats['skipped'], stats['shards_skipped'],
      stats['labels_file']))
  for path, message in stats['errors'][:_MAX_ERRORS_SHOWN]:
    print('  skipped %s: %s' % (path, message))
  if len(stats['errors']) > _MAX_ERRORS_SHOWN:
    print('  ... and %d more (all were reported above)' % (len(stats['errors']) - _MAX_ERRORS_SHOWN))
  return 0
