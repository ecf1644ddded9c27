"""Object Detection API label maps (`label_map.pbtxt`): writing them and reading ours or the OD API's.

`format_label_map` / `write_label_map` produce `item { id: N name: "..." display_name: "..." }` blocks
sorted by id; `read_label_map` accepts the OD API's variants (whole-line comments, single quotes, `/m/...` names
with a display_name, nested blocks such as keypoints, fields in any order) and names the file in errors.

Not here: TF-Slim's `labels.txt` (`datasets.tfrecord.read_label_file` / `write_label_file`), class-id
remapping (`datasets.detection_preprocessing.make_class_mapping`), and a full protobuf text-format parser: only
the `id`, `name` and `display_name` fields of top-level items are read.
"""
import re

import tensorflow.compat.v1 as tf

from datasets import tfrecord


def _quote(text):
  return '"%s"' % text.replace('\\', '\\\\').replace('"', '\\"')


def format_label_map(categories):
  """Object Detection API label map text for dict id -> name, sorted by id."""
  blocks = ['item {\n  id: %d\n  name: %s\n  display_name: %s\n}\n' % (i, _quote(n), _quote(n))
            for i, n in sorted(categories.items())]
  return ''.join(blocks)


def write_label_map(categories, path, comment=None):
  """Writes `format_label_map(categories)` to `path` (UTF-8) via a temporary name and a rename.

  `comment`, if given, is written first as a `#` line (the reader skips comments).
  """
  tfrecord.atomic_write(path, ('# %s\n' % comment if comment else '') + format_label_map(categories))


_STRING_RE = r'"((?:[^"\\]|\\.)*)"|\'((?:[^\'\\]|\\.)*)\''
_NESTED_RE = re.compile(r'\w+\s*:?\s*\{[^{}]*\}')


def _field(body, name):
  match = re.search(r'(?<![\w])%s\s*:\s*(?:%s|(-?\d+))' % (name, _STRING_RE), body)
  if match is None:
    return None
  if match.group(3) is not None:
    return int(match.group(3))
  raw = match.group(1) if match.group(1) is not None else match.group(2)
  return re.sub(r'\\(.)', r'\1', raw)


def _item_bodies(text, path):
  """Top-level `item { ... }` bodies of a pbtxt, with nested blocks (e.g. keypoints) removed."""
  text = re.sub(r'(?m)^\s*#.*$', '', text)
  bodies, pos = [], 0
  for match in re.finditer(r'\bitem\s*\{', text):
    if match.start() < pos:
      continue
    depth, end = 1, match.end()
    while depth and end < len(text):
      depth += {'{': 1, '}': -1}.get(text[end], 0)
      end += 1
    if depth:
      raise ValueError('%s: unbalanced braces in the item starting at offset %d' % (path, match.start()))
    body = text[match.end():end - 1]
    while _NESTED_RE.search(body):
      body = _NESTED_RE.sub('', body)
    bodies.append(body)
    pos = end
  return bodies


def read_label_map(path):
  """Parses an Object Detection API label map (`item { id: N name: "..." display_name: "..." }`).

  Returns:
    dict int id -> str name, display_name preferred when present.

  Raises:
    ValueError: naming the file, for an item without id or name, a duplicate id, or no items at all.
  """
  with tf.io.gfile.GFile(path, 'r') as f:
    text = f.read()
  labels = {}
  for body in _item_bodies(text, path):
    item_id = _field(body, 'id')
    name = _field(body, 'display_name')
    name = name if name is not None else _field(body, 'name')
    if not isinstance(item_id, int) or name is None or isinstance(name, int):
      raise ValueError('%s: label map item without an integer id and a quoted name: %r' % (path, body.strip()))
    if item_id in labels:
      raise ValueError('%s: duplicate id %d' % (path, item_id))
    labels[item_id] = name
  if not labels:
    raise ValueError('%s: no `item { ... }` entries found; is it a label map?' % path)
  return labels
