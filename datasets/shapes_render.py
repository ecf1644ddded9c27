"""Rendering of the deterministic "shapes" demo world: one seeded scene per (format, split, index).

A small world of circles, squares, triangles and 5-pointed stars on a noisy, textured background. `render`
draws one image from its own `numpy.random.RandomState` seeded by (seed, format, split, index), so any image
can be re-rendered alone and the same arguments always give the same pixels. The format sets the scene's
composition: 'imagenet' one large centred object, 'coco' 0-4 objects (every 20th image empty, every 20th
with an `iscrowd` cluster of small same-class shapes), 'voc' 1-3 objects. Occlusion is limited: every
object keeps at least `MIN_VISIBLE` of its pixels. Masks and pictures agree exactly: an object's mask is
rasterised once with Pillow (no antialiasing) and the same mask paints its pixels. `voc_label` turns a
scene into a VOC SegmentationClass label (class per pixel, a 255 "void" band along instance edges).

Not here: files, layouts, ids and encodings of the three raw datasets (`datasets.shapes`, which writes
what this module draws), TFRecord conversion, augmentation.
"""
import collections
import colorsys
import math

import numpy as np
from PIL import Image
from PIL import ImageDraw

CLASSES = ('circle', 'square', 'triangle', 'star')
FORMATS = ('imagenet', 'coco', 'voc')
SPLITS = ('train', 'val')
DEFAULT_IMAGE_SIZE = 128
IGNORE_LABEL = 255
MIN_VISIBLE = 0.5  # fraction of an object's pixels that later objects may not cover

# Object diameter (circumscribed circle) as a fraction of the shorter image side, per format.
_SIZE_RANGES = {'imagenet': (0.3, 0.8), 'coco': (0.15, 0.6), 'voc': (0.2, 0.6)}
_CROWD_MEMBER_SIZE = (0.08, 0.14)
_FORMAT_CODES = {'imagenet': 1, 'coco': 2, 'voc': 3}
_SPLIT_CODES = {'train': 1, 'val': 2}
_PLACEMENT_ATTEMPTS = 10

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
  height, width = check_image_size(image_size)
  check_choice('format', fmt, FORMATS)
  check_choice('split', split, SPLITS)
  rng = np.random.RandomState([check_seed(seed), _FORMAT_CODES[fmt], _SPLIT_CODES[split], int(index)])
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


def check_image_size(image_size):
  """(height, width) ints from an int side or a (height, width) pair; ValueError below 32 px a side."""
  if isinstance(image_size, (int, np.integer)):
    size = (int(image_size), int(image_size))
  elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
    size = (int(image_size[0]), int(image_size[1]))
  else:
    raise ValueError('image_size must be an int or (height, width), got %r' % (image_size,))
  if min(size) < 32:
    raise ValueError('image_size must be at least 32 pixels per side, got %r' % (image_size,))
  return size


def check_seed(seed):
  """`seed` as an int, or ValueError unless it is an integer in [0, 2**32) (a RandomState seed)."""
  if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 32:
    raise ValueError('seed must be an int in [0, 2**32), got %r' % (seed,))
  return int(seed)


def check_choice(name, value, choices):
  """ValueError naming `name`, `value` and the allowed `choices` unless `value` is one of them."""
  if value not in choices:
    raise ValueError('unknown %s %r; expected one of %s' % (name, value, ', '.join(choices)))
