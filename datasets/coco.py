"""COCO detection data: raw COCO -> Object Detection API TFRecords (+ the `mnv2 convert coco` CLI).

`convert` writes the keys of the Object Detection API's `create_coco_tf_record.py` (the feature-key
constants here), so its records and ours are interchangeable: boxes normalized to [0, 1] and clipped to
the image, class labels the COCO category ids as they are (not remapped; see
`detection_preprocessing.make_class_mapping`), crowd objects kept and flagged, images without objects kept.
Next to the shards it writes `label_map.pbtxt` (OD API text format, see `datasets.label_maps`) and
`labels.txt` (TF-Slim). Data problems (missing files, annotations of unknown images, degenerate boxes) are
reported on stderr and counted, never fatal. `mnv2 convert coco` wraps `convert`.

Not here: reading records back (`datasets.decoders.decode_detection`), the label map format
(`datasets.label_maps`), augmentation and resizing (`datasets.detection_preprocessing`), the input pipeline
(`pipelines.inputs.detection_input`), the shard writer (`datasets.shard_writer`), keypoints, captions, panoptic
data, evaluation (pycocotools' COCOeval reads the original json).
"""
import collections
import hashlib
import io
import json
import os
import sys

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image

from datasets import label_maps
from datasets import shard_writer
from datasets import tfrecord

HEIGHT = 'image/height'
WIDTH = 'image/width'
FILENAME = 'image/filename'
SOURCE_ID = 'image/source_id'
KEY_SHA256 = 'image/key/sha256'
ENCODED = 'image/encoded'
FORMAT = 'image/format'
XMIN = 'image/object/bbox/xmin'
XMAX = 'image/object/bbox/xmax'
YMIN = 'image/object/bbox/ymin'
YMAX = 'image/object/bbox/ymax'
CLASS_TEXT = 'image/object/class/text'
CLASS_LABEL = 'image/object/class/label'
IS_CROWD = 'image/object/is_crowd'
AREA = 'image/object/area'
MASK = 'image/object/mask'  # PNG-encoded 0/1 masks, one per object (include_masks=True only)

LABEL_MAP_NAME = 'label_map.pbtxt'
LABELS_NAME = 'labels.txt'
_MAX_REPORTED = 20  # problems of one kind printed before "... and N more"

# One object as shipped to the worker processes: normalized clipped box, COCO id, name, flags.
_Object = collections.namedtuple('_Object', 'ymin xmin ymax xmax label text is_crowd area segmentation')


# ------------------------------------------------------------------------------------- raw annotations


def _load_annotations(path):
  """The COCO json as (images list, annotations list, categories dict id -> name); errors name `path`."""
  if not tf.io.gfile.exists(path):
    raise ValueError('annotations file not found: %s' % path)
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = json.loads(f.read().decode('utf-8'))
  except ValueError as e:
    raise ValueError('annotations file %s is not valid JSON: %s' % (path, e))
  if not isinstance(data, dict) or not isinstance(data.get('images'), list) or \
      not isinstance(data.get('categories'), list):
    raise ValueError("annotations file %s is not a COCO instances file (needs 'images' and 'categories' "
                     "lists)" % path)
  categories = {}
  for cat in data['categories']:
    if not isinstance(cat, dict) or not isinstance(cat.get('id'), int) or 'name' not in cat:
      raise ValueError('annotations file %s: malformed category %r' % (path, cat))
    if cat['id'] in categories:
      raise ValueError('annotations file %s: duplicate category id %d' % (path, cat['id']))
    categories[cat['id']] = str(cat['name'])
  return data['images'], data.get('annotations') or [], categories


def _normalized_box(bbox, height, width):
  """COCO [x, y, w, h] pixels -> (ymin, xmin, ymax, xmax) clipped to [0, 1], or None if degenerate."""
  x, y, w, h = [float(v) for v in bbox]
  xmin, xmax = max(x, 0.0) / width, min(x + w, width) / width
  ymin, ymax = max(y, 0.0) / height, min(y + h, height) / height
  if not (xmax > xmin and ymax > ymin):  # also rejects NaN
    return None
  return ymin, xmin, ymax, xmax


class _Report(object):
  """Counts data problems per kind and prints the first few of each on stderr."""

  def __init__(self, stream=None):
    self.counts = collections.Counter()
    self.stream = stream or sys.stderr

  def add(self, kind, message):
    self.counts[kind] += 1
    if self.counts[kind] <= _MAX_REPORTED:
      self.stream.write('warning: %s\n' % message)
    elif self.counts[kind] == _MAX_REPORTED + 1:
      self.stream.write('warning: further %s problems are counted but not printed\n' % kind)


def _valid_images(images, images_dir, report):
  """dict image id -> image entry with a size and a file on disk, or None (reported) for the others."""
  valid = {}
  for image in images:
    image_id = image.get('id') if isinstance(image, dict) else None
    image_id = image_id if isinstance(image_id, (int, str)) else None
    if image_id is not None and image_id not in valid:
      valid[image_id] = None  # known id; replaced by the entry below when the entry is usable
    try:
      ok = image_id is not None and int(image['height']) > 0 and int(image['width']) > 0 and image['file_name']
    except (KeyError, TypeError, ValueError):
      ok = False
    if not ok:
      report.add('invalid_images', 'image entry without id, file_name, width or height: %r' % (image,))
    elif valid[image_id] is not None:
      report.add('invalid_images', 'duplicate image id %s (%s); keeping the first' % (image_id, image['file_name']))
    elif not tf.io.gfile.exists(os.path.join(images_dir, image['file_name'])):
      report.add('missing_files', 'image file %s (id %s) not found in %s'
                 % (image['file_name'], image_id, images_dir))
    else:
      valid[image_id] = image
  return valid


def _group_objects(annotations, images, categories, include_masks, report):
  """dict image id -> [_Object] for the usable `images`; drops and counts annotations that cannot be used.

  `images` maps every known image id to its entry, or to None when the entry was already reported
  (missing file, ...): their annotations are dropped silently rather than reported once more.
  """
  objects = collections.defaultdict(list)
  for ann in annotations:
    if not isinstance(ann, dict):
      report.add('invalid_annotations', 'annotation is not an object: %r' % (ann,))
      continue
    image_id = ann.get('image_id') if isinstance(ann.get('image_id'), (int, str)) else None
    image = images.get(image_id)
    if image is None:
      if image_id not in images:
        report.add('orphan_annotations', 'annotation %s refers to image id %s, which is not among the images'
                   % (ann.get('id'), ann.get('image_id')))
      continue
    if not isinstance(ann.get('category_id'), int) or ann['category_id'] not in categories:
      report.add('unknown_categories', 'annotation %s has category id %s, which is not in categories'
                 % (ann.get('id'), ann.get('category_id')))
      continue
    try:
      box = _normalized_box(ann['bbox'], int(image['height']), int(image['width']))
      area = float(ann.get('area', 0.0))
    except (KeyError, TypeError, ValueError):
      report.add('invalid_annotations', 'annotation %s has no valid bbox or area: %r, %r'
                 % (ann.get('id'), ann.get('bbox'), ann.get('area')))
      continue
    if box is None:
      report.add('degenerate_boxes', 'annotation %s in %s: empty box %r after clipping, dropped'
                 % (ann.get('id'), image['file_name'], ann['bbox']))
      continue
    segmentation = ann.get('segmentation') if include_masks else None
    objects[image['id']].append(_Object(box[0], box[1], box[2], box[3], ann['category_id'],
                                        categories[ann['category_id']], int(bool(ann.get('iscrowd', 0))),
                                        area, segmentation))
  return objects


# ----------------------------------------------------------------------------------------- encoding


def _segmentation_mask(segmentation, height, width):
  """Polygon list, uncompressed or compressed RLE -> uint8 [height, width] 0/1 mask (pycocotools)."""
  from pycocotools import mask as mask_lib  # pylint: disable=g-import-not-at-top  (only with masks)
  if isinstance(segmentation, list):
    rle = mask_lib.merge(mask_lib.frPyObjects(segmentation, height, width))
  elif isinstance(segmentation.get('counts'), list):
    rle = mask_lib.frPyObjects(segmentation, height, width)
  else:
    rle = segmentation
  return np.asarray(mask_lib.decode(rle), np.uint8).reshape(height, width)


def _mask_png(obj, height, width, path):
  """PNG bytes of one object's 0/1 uint8 [height, width] mask.

  An object without segmentation gets its box as mask, so one such annotation does not cost the image.
  """
  if obj.segmentation:
    try:
      binary = _segmentation_mask(obj.segmentation, height, width)
    except Exception as e:  # pylint: disable=broad-except  (pycocotools raises many kinds on bad input)
      raise tfrecord.ConversionError(path, 'bad segmentation: %s: %s' % (type(e).__name__, e))
  else:
    binary = np.zeros([height, width], np.uint8)
    binary[int(round(obj.ymin * height)):int(round(obj.ymax * height)),
           int(round(obj.xmin * width)):int(round(obj.xmax * width))] = 1
  out = io.BytesIO()
  Image.fromarray(binary).save(out, format='PNG')
  return out.getvalue()


def _encode_item(item):
  """write_sharded's encode_fn: one image dict -> [serialized tf.train.Example]."""
  path = item['path']
  encoded, height, width = tfrecord.read_rgb_jpeg(path)
  if (height, width) != (item['height'], item['width']):
    raise tfrecord.ConversionError(path, 'image is %dx%d but the annotations say %dx%d (height x width)'
                                   % (height, width, item['height'], item['width']))
  objects = item['objects']
  feature = {
      HEIGHT: tfrecord.int64_feature(height),
      WIDTH: tfrecord.int64_feature(width),
      FILENAME: tfrecord.bytes_feature(item['file_name']),
      SOURCE_ID: tfrecord.bytes_feature(str(item['id'])),
      KEY_SHA256: tfrecord.bytes_feature(hashlib.sha256(encoded).hexdigest()),
      ENCODED: tfrecord.bytes_feature(encoded),
      FORMAT: tfrecord.bytes_feature('jpeg'),
      XMIN: tfrecord.float_feature([o.xmin for o in objects]),
      XMAX: tfrecord.float_feature([o.xmax for o in objects]),
      YMIN: tfrecord.float_feature([o.ymin for o in objects]),
      YMAX: tfrecord.float_feature([o.ymax for o in objects]),
      CLASS_TEXT: tfrecord.bytes_feature([o.text for o in objects]),
      CLASS_LABEL: tfrecord.int64_feature([o.label for o in objects]),
      IS_CROWD: tfrecord.int64_feature([o.is_crowd for o in objects]),
      AREA: tfrecord.float_feature([o.area for o in objects]),
  }
  if item['include_masks']:
    feature[MASK] = tfrecord.bytes_feature([_mask_png(o, height, width, path) for o in objects])
  example = tf.train.Example(features=tf.train.Features(feature=feature))
  return [example.SerializeToString(deterministic=True)]


_COUNTED = ('missing_files', 'invalid_images', 'orphan_annotations', 'unknown_categories',
            'invalid_annotations', 'degenerate_boxes')


def shift_category_ids(categories, annotations, offset, annotations_file):
  """Category ids + `offset` (in `categories` and the annotations); id 0 without an offset is an error.

  The Object Detection API reserves class 0 for the background, so a json whose category ids start at 0
  (as some exporters write) cannot be converted as it is: the error names the category and the way out,
  `--category-id-offset 1`, which adds 1 to every id (recorded in label_map.pbtxt and the summary).
  """
  shifted = dict((cat_id + offset, name) for cat_id, name in categories.items())
  bad = sorted(cat_id for cat_id in shifted if cat_id < 1)
  if bad:
    original = bad[0] - offset
    raise ValueError('annotations file %s: category id %d (%r) would be label %d, but the Object Detection API '
                     'reserves 0 for the background and needs ids >= 1: pass --category-id-offset %d to add %d '
                     'to every category id (recorded in label_map.pbtxt)'
                     % (annotations_file, original, categories[original], bad[0], 1 - bad[0] + offset,
                        1 - bad[0] + offset))
  if not offset:
    return categories, annotations
  moved = [dict(ann, category_id=ann['category_id'] + offset)
           if isinstance(ann, dict) and isinstance(ann.get('category_id'), int) else ann for ann in annotations]
  return shifted, moved


def convert(images_dir, annotations_file, output_dir, split, num_shards=4, num_workers=None, on_error='skip',
            include_masks=False, category_id_offset=0):
  """Converts a COCO instances json + image folder to OD API TFRecords `<output_dir>/<split>-*-of-*`.

  Args:
    images_dir: folder holding the images' `file_name`s.
    annotations_file: a COCO `instances_*.json` (or `image_info_*.json`, giving images without objects).
    output_dir: local folder for the shards, `label_map.pbtxt` and `labels.txt` (created if missing).
    split: shard name prefix, e.g. 'train' or 'val'.
    num_shards, num_workers, on_error: as `shard_writer.write_sharded` (on_error acts on unreadable images).
    include_masks: also write `image/object/mask` (PNG 0/1 masks, as the OD API with include_masks).
    category_id_offset: int added to every category id (labels, label map); 1 for jsons whose ids start
      at 0, which is otherwise an error (see `shift_category_ids`).

  Returns:
    dict: 'images' (entries in the json), 'written', 'skipped', 'errors' [(path, message)],
    'shards_skipped' (from write_sharded); 'objects', 'crowd_objects', 'images_without_objects' (of the
    images not skipped); and a count
    per problem kind: 'missing_files', 'invalid_images', 'orphan_annotations', 'unknown_categories',
    'invalid_annotations', 'degenerate_boxes'.

  Raises:
    ValueError: naming the file, for a missing or invalid annotations file or images_dir.
    tfrecord.ConversionError: on_error='fail' and an image is unreadable.
  """
  images, annotations, categories = _load_annotations(annotations_file)
  categories, annotations = shift_category_ids(categories, annotations, category_id_offset, annotations_file)
  if not tf.io.gfile.isdir(images_dir):
    raise ValueError('images directory not found: %s' % images_dir)
  report = _Report()
  known = _valid_images(images, images_dir, report)
  objects = _group_objects(annotations, known, categories, include_masks, report)
  valid = dict((k, v) for k, v in known.items() if v is not None)
  items = [{'path': os.path.join(images_dir, image['file_name']), 'file_name': image['file_name'],
            'id': image_id, 'height': int(image['height']), 'width': int(image['width']),
            'objects': objects.get(image_id, []), 'include_masks': include_masks}
           for image_id, image in sorted(valid.items(), key=lambda kv: str(kv[0]))]
  shard_writer.make_output_dir(output_dir)
  label_maps.write_label_map(categories, os.path.join(output_dir, LABEL_MAP_NAME),
                             comment=('category ids = the ids of %s + %d (mnv2 convert coco --category-id-offset)'
                                      % (os.path.basename(annotations_file), category_id_offset))
                             if category_id_offset else None)
  tfrecord.write_label_file(categories, os.path.join(output_dir, LABELS_NAME))
  stats = shard_writer.write_sharded(items, _encode_item, output_dir, split, num_shards,
                                     num_workers=num_workers, on_error=on_error, desc='coco %s' % split)
  failed = set(path for path, _ in stats['errors'])
  kept = [item for item in items if item['path'] not in failed]
  kept_objects = [o for item in kept for o in item['objects']]
  stats.update(images=len(images), objects=len(kept_objects), crowd_objects=sum(o.is_crowd for o in kept_objects),
               images_without_objects=sum(1 for item in kept if not item['objects']))
  stats.update((kind, report.counts[kind]) for kind in _COUNTED)
  stats['category_id_offset'] = category_id_offset
  return stats


# ------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser):
  """Flags of `mnv2 convert coco`."""
  parser.add_argument('--images-dir', required=True, help='folder with the COCO images (e.g. val2017/)')
  parser.add_argument('--annotations', required=True, help='instances_<split>.json')
  parser.add_argument('--output-dir', required=True, help='folder for the TFRecord shards and label maps')
  parser.add_argument('--split', required=True, help='shard name prefix, e.g. train or val')
  parser.add_argument('--num-shards', type=int, default=4, help='number of output files (default 4)')
  parser.add_argument('--num-workers', type=int, default=None, help='processes (default: one per core)')
  parser.add_argument('--on-error', choices=('skip', 'fail'), default='skip',
                      help='unreadable images: skip and report (default) or stop')
  parser.add_argument('--include-masks', action='store_true', help='also write instance masks (PNG)')
  parser.add_argument('--category-id-offset', type=int, default=0,
                      help='add this to every category id (1 for a json whose ids start at 0; default 0)')


def format_summary(stats, output_dir, split):
  """A few human-readable lines about a finished conversion."""
  lines = ['%s: %d records written to %s/%s-*, %d images skipped (unreadable), %d shards already done'
           % (split, stats['written'], output_dir, split, stats['skipped'], stats['shards_skipped']),
           '%d images in the json, %d objects (%d crowd), %d images without objects'
           % (stats['images'], stats['objects'], stats['crowd_objects'], stats['images_without_objects'])]
  problems = ['%s: %d' % (kind.replace('_', ' '), stats[kind]) for kind in _COUNTED if stats[kind]]
  lines.append('dropped: ' + (', '.join(problems) if problems else 'nothing'))
  if stats.get('category_id_offset'):
    lines.append('category ids shifted by %+d: label = COCO category id %+d (see label_map.pbtxt)'
                 % (stats['category_id_offset'], stats['category_id_offset']))
  return '\n'.join(lines)


def run(args):
  """Runs `mnv2 convert coco`; returns the exit code (2 with one `error:` line, no traceback, on user errors)."""
  try:
    stats = convert(args.images_dir, args.annotations, args.output_dir, args.split, args.num_shards,
                    args.num_workers, args.on_error, getattr(args, 'include_masks', False),
                    getattr(args, 'category_id_offset', 0))
  except shard_writer.USER_ERRORS as e:
    return shard_writer.report_error(e)
  print(format_summary(stats, args.output_dir, args.split))
  return 0
