"""Deterministic "shapes" demo data in the public raw ImageNet, COCO and PASCAL VOC layouts.

A small seeded world (circles, squares, triangles and 5-pointed stars on a noisy, textured background)
written the way the real datasets ship, so the demo exercises the same converters as real data:

  imagenet/{train,val}/nXXXXXXXX/*.JPEG + imagenet/synset_words.txt   one object per image
  coco/{train2017,val2017}/*.jpg + coco/annotations/instances_{train,val}2017.json
  voc/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}

Every image comes from its own `numpy.random.RandomState` seeded by (seed, format, split, index), so one
image can be re-rendered alone (`render`) and the whole tree is byte-identical across runs on one stack
(JPEG / PNG bytes depend on the Pillow build, so the two stacks may differ from each other).

Conventions chosen to catch id-mapping bugs downstream: COCO category ids are non-contiguous
(`COCO_CATEGORY_IDS`) and so are image ids (start 1000, step 3; val starts at 1000000). Every 20th COCO
image is empty and every 20th holds an `iscrowd=1` cluster of small same-class shapes. A COCO `bbox` is
the tight pixel box of the whole drawn object before occlusion (COCO boxes cover the full object), `area`
is the number of visible pixels, and `segmentation` is the drawn polygon (before occlusion) in COCO
coordinates, tracing the outside of the drawn pixels (see `_coco_polygon`); crowds list one polygon per
member. Occlusion is limited: every object keeps at least `MIN_VISIBLE` of its pixels. VOC masks are
palette PNGs with the standard colour map and a 255 "void" band along every instance edge, as in VOC 2012.

Masks and pictures agree exactly: an object's mask is rasterised once with Pillow (no antialiasing) and
the same mask paints its pixels. Not here: TFRecord conversion, augmentation, downloading real data.
"""
import collections
import colorsys
import io
import json
import math
import os
import re
import sys

import numpy as np
from PIL import Image
from PIL import ImageDraw

from datasets.voc import voc_colormap  # noqa: F401  (one PASCAL colour map for the project; re-exported)

CLASSES = ('circle', 'square', 'triangle', 'star')
SYNSETS = tuple('n%08d' % (i + 1) for i in range(len(CLASSES)))
COCO_CATEGORY_IDS = (1, 2, 4, 7)
FORMATS = ('imagenet', 'coco', 'voc')
SPLITS = ('train', 'val')
DEFAULT_IMAGE_SIZE = 128
DEFAULT_COUNTS = {
    'imagenet': {'train': 400, 'val': 100},  # total over all classes, balanced
    'coco': {'train': 400, 'val': 100},
    'voc': {'train': 300, 'val': 80},
}
JPEG_QUALITY = 90
IGNORE_LABEL = 255
MIN_VISIBLE = 0.5  # fraction of an object's pixels that later objects may not cover

# Object diameter (circumscribed circle) as a fraction of the shorter image side, per format.
_SIZE_RANGES = {'imagenet': (0.3, 0.8), 'coco': (0.15, 0.6), 'voc': (0.2, 0.6)}
_CROWD_MEMBER_SIZE = (0.08, 0.14)
_FORMAT_CODES = {'imagenet': 1, 'coco': 2, 'voc': 3}
_SPLIT_CODES = {'train': 1, 'val': 2}
_COCO_IMAGE_ID_BASE = {'train': 1000, 'val': 1000000}
_COCO_IMAGE_ID_STEP = 3
_COCO_ANN_ID_BASE = {'train': 1, 'val': 5000001}
_VOC_ID_BASE = {'train': 1, 'val': 500001}  # ids depend on (split, index) only, not on the counts
_PLACEMENT_ATTEMPTS = 10
_TMP_NAME = re.compile(r'^\..+\.tmp\d+$')

ShapeObject = collections.namedtuple('ShapeObject', ['class_index', 'iscrowd', 'polygons', 'box', 'area'])
ShapeObject.__doc__ = """One drawn object (or crowd) of a scene.

class_index: 1-based index into CLASSES. iscrowd: bool. polygons: list of [(x, y), ...] integer
vertices in Pillow pixel coordinates. box: (x, y, w, h) int tight pixel box of the full object before
occlusion. area: int number of visible pixels."""
Scene = collections.namedtuple('Scene', ['image', 'instances', 'objects'])
Scene.__doc__ = """A rendered image. image: uint8 [H, W, 3] RGB in [0, 255]. instances: int32 [H, W], 0 for
background and k for the visible pixels of objects[k - 1]. objects: list of ShapeObject."""


def _shape_vertices(class_index, cx, cy, radius, angle):
  """Integer polygon vertices: Pillow rounds float vertices anyway, rounding here keeps COCO in sync."""
  name = CLASSES[class_index - 1]
  counts = {'circle': 32, 'square': 4, 'triangle': 3, 'star': 10}
  radii = (radius, 0.45 * radius) if name == 'star' else (radius,)
  n = counts[name]
  vertices = []
  for k in range(n):
    r = radii[k % len(radii)]
    a = angle + 2.0 * math.pi * k / n
    vertices.append((int(round(cx + r * math.sin(a))), int(round(cy - r * math.cos(a)))))
  return vertices


def _rasterize(polygons, height, width):
  canvas = Image.new('L', (width, height), 0)
  draw = ImageDraw.Draw(canvas)
  for vertices in polygons:
    draw.polygon(vertices, fill=1)
  return np.asarray(canvas).astype(bool)


def _background(rng, height, width):
  """Float64 [H, W, 3]: a desaturated colour gradient with a few faint lines and blobs."""
  ends = rng.uniform(70, 180, size=(2, 1)) + rng.uniform(-12, 12, size=(2, 3))
  theta = rng.uniform(0, 2 * math.pi)
  ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
  t = xs * math.cos(theta) + ys * math.sin(theta)
  t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
  image = ends[0] + t[..., None] * (ends[1] - ends[0])
  layer = Image.new('L', (width, height), 0)
  draw = ImageDraw.Draw(layer)
  for _ in range(rng.randint(2, 6)):
    x0, x1 = sorted(int(v) for v in rng.randint(0, width, size=2))
    y0, y1 = sorted(int(v) for v in rng.randint(0, height, size=2))
    intensity = int(rng.randint(80, 256))
    if rng.rand() < 0.5:
      draw.line([(x0, y0), (x1, y1)], fill=intensity, width=int(rng.randint(1, 3)))
    else:
      draw.ellipse([x0, y0, x1, y1], fill=intensity)
  alpha = np.asarray(layer, dtype=np.float64)[..., None] / 255.0 * 0.25
  shade = rng.uniform(60, 190) + rng.uniform(-8, 8, size=3)
  return image * (1.0 - alpha) + shade * alpha


def _paint(rng, image, mask, centre, radius):
  """Fills `mask` with a saturated colour and a mild linear shading (background stays desaturated)."""
  rgb = np.array(colorsys.hsv_to_rgb(rng.rand(), rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0))) * 255.0
  theta, strength = rng.uniform(0, 2 * math.pi), rng.uniform(-0.15, 0.15)
  ys, xs = np.nonzero(mask)
  proj = ((xs - centre[0]) * math.cos(theta) + (ys - centre[1]) * math.sin(theta)) / max(radius, 1.0)
  image[ys, xs] = rgb[None, :] * (1.0 + strength * proj)[:, None]


def _single_shape(rng, class_index, size_range, height, width, centred):
  """(polygons, centre, radius) of one shape that fits entirely inside the image."""
  radius = rng.uniform(*size_range) * min(height, width) / 2.0
  angle = 0.0 if CLASSES[class_index - 1] == 'circle' else rng.uniform(0, 2 * math.pi)
  if centred:
    cx = width / 2.0 + rng.uniform(-0.15, 0.15) * width
    cy = height / 2.0 + rng.uniform(-0.15, 0.15) * height
  else:
    cx, cy = rng.uniform(0, width - 1), rng.uniform(0, height - 1)
  cx = min(max(cx, radius), width - 1 - radius)
  cy = min(max(cy, radius), height - 1 - radius)
  return [_shape_vertices(class_index, cx, cy, radius, angle)], (cx, cy), radius


def _crowd(rng, class_index, height, width):
  """(polygons, centre, radius) of 3-6 small same-class shapes clustered in one region."""
  side = min(height, width)
  spread = 0.2 * side
  cx = rng.uniform(spread, width - 1 - spread)
  cy = rng.uniform(spread, height - 1 - spread)
  polygons = []
  for _ in range(rng.randint(3, 7)):
    radius = rng.uniform(*_CROWD_MEMBER_SIZE) * side / 2.0
    angle = 0.0 if CLASSES[class_index - 1] == 'circle' else rng.uniform(0, 2 * math.pi)
    x = min(max(cx + rng.uniform(-spread, spread), radius), width - 1 - radius)
    y = min(max(cy + rng.uniform(-spread, spread), radius), height - 1 - radius)
    polygons.append(_shape_vertices(class_index, x, y, radius, angle))
  return polygons, (cx, cy), spread


def _plan(rng, fmt, index):
  """[(class_index, iscrowd)] to draw, back to front."""
  num_classes = len(CLASSES)
  if fmt == 'imagenet':
    return [(index % num_classes + 1, False)]
  if fmt == 'voc':
    return [(int(rng.randint(1, num_classes + 1)), False) for _ in range(rng.randint(1, 4))]
  if index % 20 == 3:
    return []
  plan = [(int(rng.randint(1, num_classes + 1)), False) for _ in range(rng.randint(1, 5))]
  if index % 20 == 5:
    plan = [(int(rng.randint(1, num_classes + 1)), True)] + plan[:2]
  return plan


def _fits(candidate, instances, full_areas):
  """Whether drawing `candidate` on top still leaves every earlier object MIN_VISIBLE of its pixels."""
  covered = instances[candidate]
  for k, full_area in enumerate(full_areas, start=1):
    visible = np.count_nonzero(instances == k) - np.count_nonzero(covered == k)
    if visible < MIN_VISIBLE * full_area:
      return False
  return True


def render(fmt, seed, split, index, image_size=DEFAULT_IMAGE_SIZE):
  """Renders one image of the shapes world; the same arguments always give the same scene.

  Args:
    fmt: 'imagenet' (one large centred object), 'coco' (0-4 objects, crowds) or 'voc' (1-3 objects).
    seed: int in [0, 2**32), the global seed.
    split: 'train' or 'val'.
    index: int >= 0, position of the image in its split.
    image_size: int side or (height, width).

  Returns:
    A Scene (image uint8 [H, W, 3] in [0, 255], instances int32 [H, W], objects list of ShapeObject).
  """
  height, width = _check_size(image_size)
  _check_choice('format', fmt, FORMATS)
  _check_choice('split', split, SPLITS)
  rng = np.random.RandomState([_check_seed(seed), _FORMAT_CODES[fmt], _SPLIT_CODES[split], int(index)])
  image = _background(rng, height, width)
  instances = np.zeros((height, width), dtype=np.int32)
  drawn, full_masks = [], []
  for class_index, iscrowd in _plan(rng, fmt, index):
    for _ in range(_PLACEMENT_ATTEMPTS):
      if iscrowd:
        polygons, centre, radius = _crowd(rng, class_index, height, width)
      else:
        polygons, centre, radius = _single_shape(
            rng, class_index, _SIZE_RANGES[fmt], height, width, centred=(fmt == 'imagenet'))
      mask = _rasterize(polygons, height, width)
      if _fits(mask, instances, [m.sum() for m in full_masks]):
        _paint(rng, image, mask, centre, radius)
        instances[mask] = len(drawn) + 1
        drawn.append((class_index, iscrowd, polygons))
        full_masks.append(mask)
        break
  noisy = image + rng.normal(0.0, 5.0, size=image.shape)
  image = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
  objects = [ShapeObject(c, crowd, polys, _tight_box(mask), int(np.count_nonzero(instances == k)))
             for k, ((c, crowd, polys), mask) in enumerate(zip(drawn, full_masks), start=1)]
  return Scene(image, instances, objects)


def _tight_box(mask):
  ys, xs = np.nonzero(mask)
  return (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))


def voc_label(scene, band_half_width=None):
  """The VOC SegmentationClass label of a scene: class per visible pixel, 255 along instance edges.

  Args:
    scene: a Scene from `render`.
    band_half_width: int >= 1, void band width on each side of an edge; default 1 px per 64 px of the
      shorter side (about VOC's 5 px at 500 px).

  Returns:
    uint8 [H, W]: 0 background, 1..4 class index, 255 void.
  """
  instances = scene.instances
  if band_half_width is None:
    band_half_width = max(1, int(round(min(instances.shape) / 64.0)))
  lookup = np.array([0] + [o.class_index for o in scene.objects], dtype=np.uint8)
  label = lookup[instances]
  band = np.zeros(instances.shape, dtype=bool)
  vertical = instances[1:] != instances[:-1]
  horizontal = instances[:, 1:] != instances[:, :-1]
  band[1:] |= vertical
  band[:-1] |= vertical
  band[:, 1:] |= horizontal
  band[:, :-1] |= horizontal
  for _ in range(band_half_width - 1):
    grown = band.copy()
    grown[1:] |= band[:-1]
    grown[:-1] |= band[1:]
    grown[:, 1:] |= band[:, :-1]
    grown[:, :-1] |= band[:, 1:]
    band = grown
  label[band] = IGNORE_LABEL
  return label


# ----------------------------------------------------------------------------------------- validation


def _check_size(image_size):
  if isinstance(image_size, (int, np.integer)):
    size = (int(image_size), int(image_size))
  elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
    size = (int(image_size[0]), int(image_size[1]))
  else:
    raise ValueError('image_size must be an int or (height, width), got %r' % (image_size,))
  if min(size) < 32:
    raise ValueError('image_size must be at least 32 pixels per side, got %r' % (image_size,))
  return size


def _check_seed(seed):
  if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 32:
    raise ValueError('seed must be an int in [0, 2**32), got %r' % (seed,))
  return int(seed)


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError('unknown %s %r; expected one of %s' % (name, value, ', '.join(choices)))


def _merge_counts(counts):
  merged = {fmt: dict(splits) for fmt, splits in DEFAULT_COUNTS.items()}
  for fmt, splits in (counts or {}).items():
    _check_choice('format in counts', fmt, FORMATS)
    for split, n in splits.items():
      _check_choice('split in counts[%r]' % fmt, split, SPLITS)
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
      scene = render('imagenet', seed, split, index, size)
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
      scene = render('coco', seed, split, index, size)
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
      scene = render('voc', seed, split, index, size)
      _write_bytes(os.path.join(image_dir, image_id + '.jpg'), _jpeg_bytes(scene.image))
      _write_bytes(os.path.join(mask_dir, image_id + '.png'), _palette_png_bytes(voc_label(scene)))
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
  size = _check_size(image_size)
  seed = _check_seed(seed)
  merged = _merge_counts(counts)
  formats = (formats,) if isinstance(formats, str) else tuple(formats)
  for fmt in formats:
    _check_choice('format', fmt, FORMATS)
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
