"""Turns one prediction dict into something a person can read or look at.

Classification: the top-k classes with names and probabilities. Detection: boxes (absolute pixels) with
class names and scores, drawn on the image. Segmentation: a VOC-palette class mask PNG plus a blended
overlay. The task is recognised from the prediction's keys, so SavedModel and checkpoint predictions
render the same way. No graph is built here: Pillow and numpy draw what a model returned.
"""
import io
import os

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image
from PIL import ImageDraw

from datasets import voc


def _open_image(path):
  """A Pillow image of a file on any tf.io.gfile file system."""
  with tf.io.gfile.GFile(path, 'rb') as f:
    return Image.open(io.BytesIO(f.read()))


def _save(image, path):
  """Saves a Pillow image (format from the extension, else PNG) to any tf.io.gfile path."""
  out = io.BytesIO()
  image.save(out, format=Image.registered_extensions().get(os.path.splitext(path)[1].lower(), 'PNG'))
  with tf.io.gfile.GFile(path, 'wb') as f:
    f.write(out.getvalue())


def _text(value):
  return value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)


def output_path(output, image_path, num_images):
  """Where to write the picture for `image_path`: `output` itself for one image, else inside it."""
  if not output:
    return None
  if num_images == 1 and not tf.io.gfile.isdir(output):
    return output
  if not tf.io.gfile.isdir(output):
    tf.io.gfile.makedirs(output)
  stem = os.path.splitext(os.path.basename(image_path))[0]
  return os.path.join(output, stem + '.png')


def _classification(path, pred, out):
  top = [{'class': int(c), 'name': _text(n), 'probability': float(p)}
         for c, n, p in zip(pred['top_k_classes'], pred['top_k_class_names'], pred['top_k_probabilities'])]
  item = {'image': path, 'task': 'classification', 'top_k': top}
  if out:
    image = _open_image(path).convert('RGB')
    scale = max(1, 192 // max(image.size))
    image = image.resize((image.size[0] * scale, image.size[1] * scale), Image.NEAREST)
    canvas = Image.new('RGB', (image.size[0], image.size[1] + 14), (0, 0, 0))
    canvas.paste(image, (0, 0))
    ImageDraw.Draw(canvas).text((2, image.size[1] + 1), '%s %.2f' % (top[0]['name'], top[0]['probability']),
                                fill=(255, 255, 255))
    _save(canvas, out)
    item['output'] = out
  return item


def _detection(path, pred, out, min_score):
  count = int(pred['num_detections'])
  names = pred.get('detection_class_names', [str(int(c)) for c in pred['detection_classes']])
  dets = [{'box': [float(v) for v in pred['detection_boxes'][i]], 'class': int(pred['detection_classes'][i]),
           'name': _text(names[i]), 'score': float(pred['detection_scores'][i])} for i in range(count)
          if pred['detection_scores'][i] >= min_score]
  item = {'image': path, 'task': 'detection', 'detections': dets}
  if out:
    image = _open_image(path).convert('RGB')
    draw = ImageDraw.Draw(image)
    for det in dets:
      ymin, xmin, ymax, xmax = det['box']
      draw.rectangle([xmin, ymin, xmax, ymax], outline=(255, 32, 32), width=2)
      draw.text((xmin + 2, ymin + 1), '%s %.2f' % (det['name'], det['score']), fill=(255, 255, 0))
    _save(image, out)
    item['output'] = out
  return item


def _segmentation(path, pred, out):
  mask = np.asarray(pred['mask']).astype(np.uint8)
  classes, counts = np.unique(mask, return_counts=True)
  item = {'image': path, 'task': 'segmentation',
          'pixels_per_class': {int(c): int(n) for c, n in zip(classes, counts)}}
  if out:
    palette = voc.voc_colormap()
    mask_image = Image.fromarray(mask, 'P')
    mask_image.putpalette(palette.flatten().tolist())
    _save(mask_image, out)
    base = _open_image(path).convert('RGB')
    colour = Image.fromarray(palette[mask], 'RGB').resize(base.size, Image.NEAREST)
    overlay = os.path.splitext(out)[0] + '_overlay.png'
    _save(Image.blend(base, colour, 0.5), overlay)
    item.update(output=out, overlay=overlay)
  return item


# Detections below this score are neither drawn nor listed by default: the exported model keeps up to 100
# per image with a near-zero threshold (what COCO AP needs), far too many to look at.
DEFAULT_MIN_SCORE = 0.3


def _multitask(path, pred, out, min_score):
  """Every member's result, drawn in one picture: class mask blended, boxes, top class as a caption."""
  parts = {}
  for key, value in pred.items():
    name, _, rest = key.partition('/')
    parts.setdefault(name, {})[rest] = value
  item = {'image': path, 'task': 'multitask'}
  for name in sorted(parts):
    item[name] = describe(path, parts[name], None, min_score)
  if out:
    image = Image.open(path).convert('RGB')
    if 'segmentation' in parts:
      mask = np.asarray(parts['segmentation']['mask']).astype(np.uint8)
      colour = Image.fromarray(voc.voc_colormap()[mask], 'RGB').resize(image.size, Image.NEAREST)
      image = Image.blend(image, colour, 0.45)
    draw = ImageDraw.Draw(image)
    for det in item.get('detection', {}).get('detections', []):
      ymin, xmin, ymax, xmax = det['box']
      draw.rectangle([xmin, ymin, xmax, ymax], outline=(255, 32, 32), width=2)
      draw.text((xmin + 2, ymin + 1), '%s %.2f' % (det['name'], det['score']), fill=(255, 255, 0))
    if 'classification' in item:
      top = item['classification']['top_k'][0]
      draw.text((2, 2), '%s %.2f' % (top['name'], top['probability']), fill=(255, 255, 255))
    image.save(out)
    item['output'] = out
  return item


def describe(path, prediction, out=None, min_score=DEFAULT_MIN_SCORE):
  """JSON-able dict for one prediction; writes the picture to `out` (detections: those >= `min_score`)."""
  if any('/' in key for key in prediction):
    return _multitask(path, prediction, out, min_score)
  if 'top_k_classes' in prediction:
    return _classification(path, prediction, out)
  if 'detection_boxes' in prediction:
    return _detection(path, prediction, out, min_score)
  if 'mask' in prediction:
    return _segmentation(path, prediction, out)
  raise ValueError('unrecognised prediction outputs: %s' % ', '.join(sorted(prediction)))


def summary_line(item):
  if item['task'] == 'multitask':
    parts = [summary_line(dict(item[name], image=name)) for name in ('classification', 'detection', 'segmentation')
             if name in item]
    return '%s: %s%s' % (item['image'], '; '.join(parts), ' -> %s' % item['output'] if 'output' in item else '')
  if item['task'] == 'classification':
    return '%s: %s%s' % (item['image'], ', '.join('%s (%.3f)' % (t['name'], t['probability']) for t in item['top_k']),
                         ' -> %s' % item['output'] if 'output' in item else '')
  if item['task'] == 'detection':
    dets = ', '.join('%s %.2f' % (d['name'], d['score']) for d in item['detections'][:5])
    return '%s: %d detections %s%s' % (item['image'], len(item['detections']), dets,
                                       ' -> %s' % item['output'] if 'output' in item else '')
  return '%s: classes %s%s' % (item['image'], sorted(item['pixels_per_class']),
                               ' -> %s' % item['output'] if 'output' in item else '')
