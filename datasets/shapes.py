"""Deterministic "shapes" demo data written in the public raw ImageNet, COCO and PASCAL VOC layouts.

The scenes drawn by `datasets.shapes_render` written the way the real datasets ship, so the demo
exercises the same converters as real data:

  imagenet/{train,val}/nXXXXXXXX/*.JPEG + imagenet/synset_words.txt   one object per image
  coco/{train2017,val2017}/*.jpg + coco/annotations/instances_{train,val}2017.json
  voc/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}

`generate` writes them (the `mnv2 demo-data` command is `add_arguments` / `run`). The whole tree is
byte-identical across runs on one stack (JPEG / PNG bytes depend on the Pillow build, so the two stacks
may differ from each other); files are written atomically and identical files are left untouched.

Conventions chosen to catch id-mapping bugs downstream: COCO category ids are non-contiguous
(`COCO_CATEGORY_IDS`) and so are image ids (start 1000, step 3; val starts at 1000000). A COCO `bbox` is
the tight pixel box of the whole drawn object before occlusion (COCO boxes cover the full object), `area`
is the number of visible pixels, and `segmentation` is the drawn polygon (before occlusion) in COCO
coordinates, tracing the outside of the drawn pixels (see `_coco_polygon`); crowds list one polygon per
member. VOC masks are palette PNGs with the standard colour map (`datasets.voc.voc_colormap`) and the
void band of `shapes_render.voc_label`, as in VOC 2012. The world's CLASSES, FORMATS, SPLITS and
DEFAULT_IMAGE_SIZE come from `datasets.shapes_render`; the layouts and arguments here are built on them.

Not here: drawing the scenes (`datasets.shapes_render`), TFRecord conversion, augmentation, downloading
real data.
"""
import collections
import io
import json
import math
import os
import re
import sys

import numpy as np
from PIL import Image

from datasets import shapes_render
from datasets.shapes_render import CLASSES
from datasets.shapes_render import DEFAULT_IMAGE_SIZE
from datasets.shapes_render import FORMATS
from datasets.shapes_render import SPLITS
from datasets.voc import voc_colormap

SYNSETS = tuple('n%08d' % (i + 1) for i in range(len(CLASSES)))
COCO_CATEGORY_IDS = (1, 2, 4, 7)
DEFAULT_COUNTS = {
    'imagenet': {'train': 400, 'val': 100},  # total over all classes, balanced
    'coco': {'train': 400, 'val': 100},
    'voc': {'train': 300, 'val': 80},
}
JPEG_QUALITY = 90

_COCO_IMAGE_ID_BASE = {'train': 1000, 'val': 1000000}
_COCO_IMAGE_ID_STEP = 3
_COCO_ANN_ID_BASE = {'train': 1, 'val': 5000001}
_VOC_ID_BASE = {'train': 1, 'val': 500001}  # ids depend on (split, index) only, not on the counts
_TMP_NAME = re.compile(r'^\..+\.tmp\d+$')


def _merge_counts(counts):
  merged = {fmt: dict(splits) for fmt, splits in DEFAULT_COUNTS.items()}
  for fmt, splits in (counts or {}).items():
    shapes_render.check_choice('format in counts', fmt, FORMATS)
    for split, n in splits.items():
      shapes_render.check_choice('split in counts[%r]' % fmt, split, SPLITS)
      if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError('counts[%r][%r] must be an int >= 0, got %r' % (fmt, split, n))
      merged[fmt][split] = int(n)
  return merged


# -------------------------------------------------------------------------------------------- writers


def _write_bytes(path, data):
  """Atomic write (temporary name + rename); leaves an identical existing file untouched."""
  if os.path.isfile(path):
    with open(path, 'rb') as f:
      if f.read() == data:
        return
  directory, name = os.path.split(path)
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, '.%s.tmp%d' % (name, os.getpid()))
  with open(tmp, 'wb') as f:
    f.write(data)
  os.replace(tmp, path)


def _prune(directory, keep, pattern):
  """Creates `directory` and removes files of ours (matching `pattern`) left by a run with larger counts."""
  os.makedirs(directory, exist_ok=True)
  for name in os.listdir(directory):
    if name not in keep and (re.match(pattern, name) or _TMP_NAME.match(name)):
      os.remove(os.path.join(directory, name))


def _jpeg_bytes(image):
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='JPEG', quality=JPEG_QUALITY)
  return buf.getvalue()


def _palette_png_bytes(label):
  height, width = label.shape
  png = Image.frombytes('P', (width, height), np.ascontiguousarray(label, dtype=np.uint8).tobytes())
  png.putpalette(voc_colormap().flatten().tolist())
  buf = io.BytesIO()
  png.save(buf, format='PNG')
  return buf.getvalue()


def _write_imagenet(root, seed, size, counts):
  labels_file = os.path.join(root, 'synset_words.txt')
  _write_bytes(labels_file, ''.join('%s %s\n' % pair for pair in zip(SYNSETS, CLASSES)).encode('ascii'))
  paths = {'labels_file': labels_file}
  for split in SPLITS:
    split_dir = os.path.join(root, split)
    written = collections.defaultdict(set)
    for index in range(counts[split]):
      scene = shapes_render.render('imagenet', seed, split, index, size)
      synset = SYNSETS[scene.objects[0].class_index - 1]
      # Real ImageNet names: train `<synset>_<n>.JPEG`, val `ILSVRC2012_val_<8 digits>.JPEG`.
      name = ('%s_%d.JPEG' % (synset, index) if split == 'train' else
              'ILSVRC2012_val_%08d.JPEG' % (index + 1))
      _write_bytes(os.path.join(split_dir, synset, name), _jpeg_bytes(scene.image))
      written[synset].add(name)
    for synset in SYNSETS:
      _prune(os.path.join(split_dir, synset), written[synset], r'^(n\d{8}_\d+|ILSVRC2012_val_\d{8})\.JPEG$')
    paths[split + '_dir'] = split_dir
  return paths


def _coco_annotation(ann_id, image_id, obj):
  return {
      'id': ann_id, 'image_id': image_id, 'category_id': COCO_CATEGORY_IDS[obj.class_index - 1],
      'bbox': [float(v) for v in obj.box], 'area': float(obj.area), 'iscrowd': int(obj.iscrowd),
      'segmentation': [_coco_polygon(polygon) for polygon in obj.polygons],
  }


def _coco_polygon(vertices):
  """[x0, y0, x1, ...] in COCO coordinates tracing the outside of Pillow's filled pixels.

  Pillow fills every pixel whose centre is on or inside the polygon, so the drawn region is the polygon
  grown by about half a pixel; pushing each vertex 0.5 px away from the centroid and moving pixel centres
  from integers (Pillow) to half-integers (COCO) makes pycocotools' mask match the drawn pixels.
  """
  cx = sum(x for x, _ in vertices) / float(len(vertices))
  cy = sum(y for _, y in vertices) / float(len(vertices))
  coords = []
  for x, y in vertices:
    grow = 1.0 + 0.5 / max(math.hypot(x - cx, y - cy), 1e-6)
    coords.extend([round(cx + (x - cx) * grow + 0.5, 2), round(cy + (y - cy) * grow + 0.5, 2)])
  return coords


def _write_coco(root, seed, size, counts):
  categories = [{'id': i, 'name': n, 'supercategory': 'shape'} for i, n in zip(COCO_CATEGORY_IDS, CLASSES)]
  paths = {}
  for split in SPLITS:
    image_dir = os.path.join(root, '%s2017' % split)
    images, annotations, keep = [], [], set()
    ann_id = _COCO_ANN_ID_BASE[split]
    for index in range(counts[split]):
      image_id = _COCO_IMAGE_ID_BASE[split] + _COCO_IMAGE_ID_STEP * index
      file_name = '%012d.jpg' % image_id
      scene = shapes_render.render('coco', seed, split, index, size)
      _write_bytes(os.path.join(image_dir, file_name), _jpeg_bytes(scene.image))
      keep.add(file_name)
      images.append({'id': image_id, 'file_name': file_name,
                     'height': int(scene.image.shape[0]), 'width': int(scene.image.shape[1])})
      for obj in scene.objects:
        annotations.append(_coco_annotation(ann_id, image_id, obj))
        ann_id += 1
    _prune(image_dir, keep, r'^\d{12}\.jpg$')
    data = {'info': {'description': 'mnv2 shapes demo data (seed %d)' % seed, 'version': '1.0'},
            'licenses': [], 'images': images, 'annotations': annotations, 'categories': categories}
    ann_file = os.path.join(root, 'annotations', 'instances_%s2017.json' % split)
    _write_bytes(ann_file, json.dumps(data).encode('ascii'))
    paths[split + '_images'] = image_dir
    paths[split + '_annotations'] = ann_file
  return paths


def _write_voc(root, seed, size, counts):
  base = os.path.join(root, 'VOCdevkit', 'VOC2012')
  image_dir = os.path.join(base, 'JPEGImages')
  mask_dir = os.path.join(base, 'SegmentationClass')
  sets_dir = os.path.join(base, 'ImageSets', 'Segmentation')
  ids = {}
  for split in SPLITS:
    ids[split] = []
    for index in range(counts[split]):
      image_id = 'shapes_%06d' % (_VOC_ID_BASE[split] + index)
      scene = shapes_render.render('voc', seed, split, index, size)
      _write_bytes(os.path.join(image_dir, image_id + '.jpg'), _jpeg_bytes(scene.image))
      label = shapes_render.voc_label(scene)
      _write_bytes(os.path.join(mask_dir, image_id + '.png'), _palette_png_bytes(label))
      ids[split].append(image_id)
  ids['trainval'] = ids['train'] + ids['val']
  for name in ('train', 'val', 'trainval'):
    _write_bytes(os.path.join(sets_dir, name + '.txt'), ''.join(i + '\n' for i in ids[name]).encode('ascii'))
  for directory, ext in ((image_dir, 'jpg'), (mask_dir, 'png')):
    _prune(directory, set(i + '.' + ext for i in ids['trainval']), r'^shapes_\d{6}\.%s$' % ext)
  return {'devkit_dir': os.path.join(root, 'VOCdevkit'), 'root': base, 'images_dir': image_dir,
          'masks_dir': mask_dir, 'sets_dir': sets_dir}


_WRITERS = {'imagenet': _write_imagenet, 'coco': _write_coco, 'voc': _write_voc}


def generate(output_dir, seed=0, image_size=DEFAULT_IMAGE_SIZE, counts=None, formats=FORMATS):
  """Writes the shapes world under `output_dir` in the requested raw dataset layouts.

  Re-running with the same arguments reproduces identical bytes (identical files are left untouched, and
  files of ours beyond the current counts are removed).

  Args:
    output_dir: str, created if missing; outputs go to its imagenet/, coco/ and voc/ sub-folders.
    seed: int in [0, 2**32), the global seed.
    image_size: int side or (height, width), at least 32.
    counts: optional {format: {split: int}} overriding DEFAULT_COUNTS entry by entry.
    formats: iterable of 'imagenet', 'coco', 'voc' (or one such string).

  Returns:
    {'imagenet': {'train_dir', 'val_dir', 'labels_file'},
     'coco': {'train_images', 'train_annotations', 'val_images', 'val_annotations'},
     'voc': {'devkit_dir', 'root', 'images_dir', 'masks_dir', 'sets_dir'}}, only for the written formats.
  """
  size = shapes_render.check_image_size(image_size)
  seed = shapes_render.check_seed(seed)
  merged = _merge_counts(counts)
  formats = (formats,) if isinstance(formats, str) else tuple(formats)
  for fmt in formats:
    shapes_render.check_choice('format', fmt, FORMATS)
  return {fmt: _WRITERS[fmt](os.path.join(output_dir, fmt), seed, size, merged[fmt]) for fmt in formats}


def scaled_counts(scale):
  """DEFAULT_COUNTS times `scale` (float > 0), at least 1 image per split."""
  if not scale > 0:
    raise ValueError('scale must be > 0, got %r' % (scale,))
  return {fmt: {split: max(1, int(round(n * scale))) for split, n in splits.items()}
          for fmt, splits in DEFAULT_COUNTS.items()}


def add_arguments(parser):
  """Adds the `mnv2 demo-data` flags to an argparse parser."""
  parser.add_argument('--output-dir', required=True, help='folder for imagenet/, coco/ and voc/')
  parser.add_argument('--seed', type=int, default=0, help='global seed (default 0)')
  parser.add_argument('--image-size', type=int, default=DEFAULT_IMAGE_SIZE,
                      help='square image side in pixels (default %d)' % DEFAULT_IMAGE_SIZE)
  parser.add_argument('--scale', type=float, default=1.0, help='multiplies the default image counts')
  parser.add_argument('--formats', default=','.join(FORMATS),
                      help='comma-separated subset of %s (default all)' % ','.join(FORMATS))


def run(args):
  """Runs `mnv2 demo-data`: generates the data and prints where it went. Returns the exit code."""
  try:
    formats = [f.strip() for f in args.formats.split(',') if f.strip()]
    generate(args.output_dir, seed=args.seed, image_size=args.image_size,
             counts=scaled_counts(args.scale), formats=formats)
  except ValueError as e:
    sys.stderr.write('mnv2 demo-data: error: %s\n' % e)
    return 2
  counts = scaled_counts(args.scale)
  for fmt in formats:
    print('%-8s train %4d  val %4d  %s' % (fmt, counts[fmt]['train'], counts[fmt]['val'],
                                           os.path.join(args.output_dir, fmt)))
  return 0