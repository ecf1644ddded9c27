"""Turns one prediction dict into something a person can read or look at: the drawing, for the tasks.

Each task class says what its prediction means (`Task.describe`, `Task.summary`): classification the top-k
classes with names and probabilities; detection boxes (absolute pixels) with class names and scores, drawn
on the image; segmentation a VOC-palette class mask PNG at the image's own size (the data: one class id per
pixel) plus a picture with the input, the coloured mask and their blend side by side, and a legend of the
classes found. This module finds the task of a prediction (`describe`) and holds the drawing they share.
No graph is built here: Pillow and numpy draw what a model returned.

Pictures are for a person: an image smaller than `MIN_PICTURE_SIDE` on its long side is drawn on an
upscaled copy (integer factor), with labels in a font sized to the picture on a dark backing.
"""
import io
import os

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from datasets import palette
from pipelines import tf_optional

MIN_PICTURE_SIDE = 384
_RESAMPLING = getattr(Image, 'Resampling', Image)  # Pillow >= 9.1 names the filters there
BOX_COLOUR = (255, 40, 40)
TEXT_COLOUR = (255, 255, 255)
BACKING_COLOUR = (0, 0, 0)


def _open_image(path):
  """A Pillow image of a file on any tf.io.gfile file system (local files without TensorFlow)."""
  with tf_optional.files(path).GFile(path, 'rb') as f:
    return Image.open(io.BytesIO(f.read()))


def _save(image, path):
  """Saves a Pillow image (format from the extension, else PNG) to any tf.io.gfile path."""
  out = io.BytesIO()
  image.save(out, format=Image.registered_extensions().get(os.path.splitext(path)[1].lower(), 'PNG'))
  with tf_optional.files(path).GFile(path, 'wb') as f:
    f.write(out.getvalue())


def _text(value):
  return value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)


def output_path(output, image_path, num_images):
  """Where to write the picture for `image_path`: `output` itself for one image, else inside it."""
  if not output:
    return None
  gfile = tf_optional.files(output)
  if num_images == 1 and not gfile.isdir(output):
    return output
  if not gfile.isdir(output):
    gfile.makedirs(output)
  stem = os.path.splitext(os.path.basename(image_path))[0]
  return os.path.join(output, stem + '.png')


# ------------------------------------------------------------------------------------------ drawing


def upscale_factor(size, min_side=MIN_PICTURE_SIDE):
  """Smallest integer factor bringing the long side of `size` (width, height) to at least `min_side`."""
  return max(1, -(-int(min_side) // max(1, max(size))))


def _upscaled(image, factor, smooth=True):
  if factor == 1:
    return image
  return image.resize((image.size[0] * factor, image.size[1] * factor),
                      _RESAMPLING.BICUBIC if smooth else _RESAMPLING.NEAREST)


class _Font(object):
  """Text of a given pixel height: a scalable font when Pillow has one built in (>= 10.1 with FreeType),
  else Pillow's bitmap font drawn at an integer zoom (older Pillow: the TF 1.15 stack)."""

  def __init__(self, height):
    self.height = max(10, int(height))
    self._font = None
    try:
      self._font = ImageFont.load_default(size=self.height)
    except (TypeError, AttributeError, IOError, OSError):  # no `size` argument or no FreeType
      self._bitmap = ImageFont.load_default()
      self._zoom = max(1, -(-self.height // 11))  # ceil: never smaller than asked

  def size(self, text):
    if self._font is not None:
      box = self._font.getbbox(text)
      return box[2], max(box[3], self.height)
    box = self._bitmap.getbbox(text) if hasattr(self._bitmap, 'getbbox') else (0, 0) + self._bitmap.getsize(text)
    return box[2] * self._zoom, box[3] * self._zoom

  def draw(self, image, xy, text, fill=TEXT_COLOUR, backing=BACKING_COLOUR, pad=2):
    """Draws `text` with its top-left corner at `xy` on a filled backing, kept inside the image."""
    width, height = self.size(text)
    x = int(min(max(0, xy[0]), max(0, image.size[0] - width - 2 * pad)))
    y = int(min(max(0, xy[1]), max(0, image.size[1] - height - 2 * pad)))
    draw = ImageDraw.Draw(image)
    if backing is not None:
      draw.rectangle([x, y, x + width + 2 * pad, y + height + 2 * pad], fill=backing)
    if self._font is not None:
      draw.text((x + pad, y + pad), text, fill=fill, font=self._font)
      return
    small = Image.new('L', (max(1, width // self._zoom), max(1, height // self._zoom)), 0)
    ImageDraw.Draw(small).text((0, 0), text, fill=255, font=self._bitmap)
    mask = small.resize((small.size[0] * self._zoom, small.size[1] * self._zoom), _RESAMPLING.NEAREST)
    image.paste(Image.new('RGB', mask.size, fill), (x + pad, y + pad), mask)


def _font_for(image):
  return _Font(max(image.size) / 28.0)


def _draw_boxes(image, dets, factor):
  """Boxes (absolute pixels of the original image) and 'name score' labels on the upscaled `image`."""
  draw = ImageDraw.Draw(image)
  font = _font_for(image)
  line = max(2, factor)
  for det in dets:
    ymin, xmin, ymax, xmax = [v * factor for v in det['box']]
    draw.rectangle([xmin, ymin, xmax, ymax], outline=BOX_COLOUR, width=line)
  for det in dets:  # labels after every box, so no box line crosses a label
    ymin, xmin = det['box'][0] * factor, det['box'][1] * factor
    label = '%s %.2f' % (det['name'], det['score'])
    above = ymin - font.size(label)[1] - 4
    font.draw(image, (xmin, above if above >= 0 else ymin + line), label, backing=BOX_COLOUR)


def _caption(image, lines):
  """`image` with a dark band under it holding one text line per entry."""
  font = _font_for(image)
  row = font.size('Ag')[1] + 6
  lines = [part for text in lines for part in _wrap(font, text, image.size[0] - 12)]
  canvas = Image.new('RGB', (image.size[0], image.size[1] + row * len(lines) + 4), BACKING_COLOUR)
  canvas.paste(image, (0, 0))
  for index, text in enumerate(lines):
    font.draw(canvas, (4, image.size[1] + 2 + index * row), text)
  return canvas


def _wrap(font, text, width):
  """`text` split at spaces into lines no wider than `width` pixels (a longer single word stays whole)."""
  lines, current = [], ''
  for word in text.split(' '):
    candidate = (current + ' ' + word) if current else word
    if current and font.size(candidate)[0] > width:
      lines.append(current)
      candidate = word
    current = candidate
  return lines + [current]


def _mask_colours(mask):
  return Image.fromarray(palette.voc_colormap()[np.asarray(mask).astype(np.uint8)], 'RGB')


def _legend(mask, class_names):
  classes = [int(c) for c in np.unique(mask)]
  def name(c):
    return '%d %s' % (c, class_names[c]) if class_names and 0 <= c < len(class_names) else 'class %d' % c
  return [(palette.voc_colormap()[c], name(c)) for c in classes]


def _draw_legend(image, entries, origin, font):
  draw = ImageDraw.Draw(image)
  x, y = origin
  side = font.size('Ag')[1]
  for colour, text in entries:
    draw.rectangle([x, y, x + side, y + side], fill=tuple(int(v) for v in colour), outline=TEXT_COLOUR)
    font.draw(image, (x + side + 6, y - 2), text)
    x += side + 12 + font.size(text)[0] + 4 + 12
    if x > image.size[0] - 4 * side:
      x, y = origin[0], y + side + 8


# ------------------------------------------------------------------------------------------ pictures
# What the task classes draw their predictions with (`Task.describe`).


def upscaled_image(path):
  """(the RGB image of `path` upscaled for a person, the integer factor)."""
  image = _open_image(path).convert('RGB')
  factor = upscale_factor(image.size)
  return _upscaled(image, factor), factor


def draw_boxes(image, dets, factor):
  """Boxes (absolute pixels of the original image) with 'name score' labels on an image upscaled `factor`x."""
  _draw_boxes(image, dets, factor)


def caption(image, lines):
  """`image` with a dark band under it holding one text line per entry."""
  return _caption(image, lines)


def save(image, path):
  """Saves a Pillow image (format from the extension, else PNG) to any tf.io.gfile path."""
  _save(image, path)


def text(value):
  """str of a prediction's string value (bytes decoded as UTF-8)."""
  return _text(value)


def draw_mask(path, mask, out, class_names=None):
  """Writes the class-id mask PNG (VOC palette) to `out` and the input / mask / overlay picture with a
  legend of the classes found beside it; returns the overlay's path.

  Args:
    path: the input image file.
    mask: uint8 [H, W] class ids at the image's size.
    out: the mask PNG to write.
    class_names: list of class names for the legend, or None (ids only).
  """
  mask_image = Image.fromarray(mask, 'P')
  mask_image.putpalette(palette.voc_colormap().flatten().tolist())
  _save(mask_image, out)  # the class ids themselves, at the image's size
  base = _open_image(path).convert('RGB')
  colour = _mask_colours(mask).resize(base.size, _RESAMPLING.NEAREST)
  factor = upscale_factor(base.size)
  panels = [_upscaled(base, factor), _upscaled(colour, factor, smooth=False),
            _upscaled(Image.blend(base, colour, 0.5), factor)]
  gap = 8
  width, height = panels[0].size
  font = _Font(max(3 * width, height) / 50.0)
  title = font.size('Ag')[1] + 8
  legend_rows = 1 + len(np.unique(mask)) // 6
  canvas = Image.new('RGB', (3 * width + 2 * gap, height + title + legend_rows * (title + 4) + 8), BACKING_COLOUR)
  for index, (panel, name) in enumerate(zip(panels, ('input', 'predicted classes', 'overlay'))):
    canvas.paste(panel, (index * (width + gap), title))
    font.draw(canvas, (index * (width + gap) + 4, 2), name)
  _draw_legend(canvas, _legend(mask, class_names), (6, title + height + 8), font)
  overlay = os.path.splitext(out)[0] + '_overlay.png'
  _save(canvas, overlay)
  return overlay


def draw_combined(path, parts, item, out, class_names):
  """One picture of a multi-task prediction: the mask blended (a member with `mask`), the boxes (a member's
  described `detections`) and the top classes (a member's described `top_k`) as a caption.

  Args:
    path: the input image file.
    parts: {member: its prediction dict}.
    item: {member: its `describe` item} (as `Task.describe` made them).
    out: the picture to write.
    class_names: {member: class names for the mask legend}.
  """
  image = _open_image(path).convert('RGB')
  factor = upscale_factor(image.size)
  masks = [(name, np.asarray(pred['mask']).astype(np.uint8)) for name, pred in sorted(parts.items())
           if 'mask' in pred]
  for _, mask in masks:
    image = Image.blend(image, _mask_colours(mask).resize(image.size, _RESAMPLING.NEAREST), 0.45)
  image = _upscaled(image, factor)
  described = [value for value in item.values() if isinstance(value, dict)]
  for member in described:
    _draw_boxes(image, member.get('detections', []), factor)
  lines = ['image class: ' + ', '.join('%s %.2f' % (t['name'], t['probability']) for t in member['top_k'][:3])
           for member in described if 'top_k' in member]
  lines += ['mask: ' + ', '.join(label for _, label in _legend(mask, class_names.get(name))) for name, mask in masks]
  _save(_caption(image, lines) if lines else image, out)


# Detections below this score are neither drawn nor listed by default: the exported model keeps up to 100
# per image with a near-zero threshold (what COCO AP needs), far too many to look at.
DEFAULT_MIN_SCORE = 0.3


def _task_of(prediction):
  from pipelines.tasks import registry  # pylint: disable=g-import-not-at-top
  for cls in registry.prediction_classes():
    if cls.owns_prediction(prediction):
      return cls
  raise ValueError('unrecognised prediction outputs: %s' % ', '.join(sorted(prediction)))


def describe(path, prediction, out=None, min_score=DEFAULT_MIN_SCORE, class_names=None):
  """JSON-able dict for one prediction; writes the picture to `out` (detections: those >= `min_score`).

  The task is the registered task class whose `owns_prediction` recognises the prediction's keys, so
  SavedModel, TFLite and checkpoint predictions render the same way. `class_names`: optional, names of the
  segmentation classes for the legend (a list; for a multitask prediction a dict member -> list).
  """
  return _task_of(prediction).describe(path, prediction, out, min_score, class_names)


def summary_line(item, relative_to=None):
  """One line for a person; paths relative to `relative_to` when given (a report's directory)."""
  from pipelines.tasks import registry  # pylint: disable=g-import-not-at-top
  def show(path):
    return os.path.relpath(path, relative_to) if relative_to else path
  arrow = ' -> %s' % show(item['output']) if 'output' in item else ''
  return '%s: %s%s' % (show(item['image']), registry.prediction_class(item['task']).summary(item), arrow)
