"""TFRecord plumbing shared by the ImageNet, COCO and VOC converters and input pipelines.

Writing records: `tf.train.Feature` builders, `to_rgb_jpeg` (any image -> RGB JPEG, errors name the
file), `ConversionError` (bad input, naming it), TF-Slim's shard names and the `<name>.tmp-<pid>`
convention of unfinished files (`temp_path`, `is_temp_file`). Reading: `read_dataset`, the tf.data
pipeline (files -> interleave -> shuffle -> repeat -> parse -> batch -> prefetch), and TF-Slim's
`labels.txt` format.

Not here: writing shards (the parallel, resumable `datasets.shard_writer.write_sharded`), dataset-specific
feature keys (the converters `datasets.imagenet`, `coco`, `voc`), decoders (`datasets.decoders`),
preprocessing (`datasets.*_preprocessing`) and the per-task input pipelines (`pipelines.inputs.*_input`).
"""
import io
import os
import re

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image

_TMP_RE = re.compile(r'\.tmp-\d+$')


class ConversionError(Exception):
  """One input could not be converted (unreadable, truncated, malformed); `path` names it."""

  def __init__(self, path, message):
    super(ConversionError, self).__init__(path, message)
    self.path = path
    self.message = message

  def __str__(self):
    return '%s: %s' % (self.path, self.message)


def _as_list(values):
  if isinstance(values, np.ndarray):
    return values.ravel().tolist()
  return list(values) if isinstance(values, (list, tuple)) else [values]


def int64_feature(values):
  """An int64_list feature from one integer or a list of integers."""
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in _as_list(values)]))


def float_feature(values):
  """A float_list feature from one number or a list of numbers."""
  return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in _as_list(values)]))


def bytes_feature(values):
  """A bytes_list feature from one bytes/str value or a list of them (str is encoded as UTF-8)."""
  values = [v.encode('utf-8') if isinstance(v, str) else bytes(v) for v in _as_list(values)]
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def shard_name(split, index, num_shards):
  """TF-Slim's shard file name, e.g. `shard_name('train', 0, 4) == 'train-00000-of-00004'`."""
  return '%s-%05d-of-%05d' % (split, index, num_shards)


def temp_path(path):
  """`<path>.tmp-<pid>`: where a writer puts `path`'s content until it is complete and renamed."""
  return '%s.tmp-%d' % (path, os.getpid())


def atomic_write(path, data):
  """Writes `data` (bytes, or str as UTF-8) to `path` through `temp_path` and a rename (any tf.io.gfile path).

  The one atomic writer of the project's files (metrics, configs, label files, exports, reports): a reader
  never sees a partial file, and a failed write leaves the previous file as it was and no temporary file.
  """
  directory = os.path.dirname(path)
  if directory and not tf.io.gfile.isdir(directory):
    tf.io.gfile.makedirs(directory)
  tmp = temp_path(path)
  try:
    with tf.io.gfile.GFile(tmp, 'wb') as f:
      f.write(data if isinstance(data, bytes) else data.encode('utf-8'))
    tf.io.gfile.rename(tmp, path, overwrite=True)
  except BaseException:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)
    raise


def is_temp_file(path):
  """Whether `path` names an unfinished `temp_path` file (a running or killed writer's), not a result."""
  return bool(_TMP_RE.search(path))


# ------------------------------------------------------------------------------------------------ images


def _flatten_alpha(img):
  """Composites transparent images over white: dropping alpha would expose arbitrary hidden colors."""
  rgba = img.convert('RGBA')
  background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
  return Image.alpha_composite(background, rgba).convert('RGB')


def _to_rgb(img):
  if img.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):
    # 16-bit / float grayscale: `convert('RGB')` would clip instead of rescaling to 8 bits.
    arr = np.asarray(img, dtype=np.float64)
    scale = 255.0 / 65535.0 if img.mode.startswith('I;16') or arr.max() > 255 else 1.0
    img = Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8), 'L')
  if 'A' in img.mode or (img.mode == 'P' and 'transparency' in img.info):
    return _flatten_alpha(img)
  return img.convert('RGB')


def to_rgb_jpeg(data, path, quality=95):
  """Returns `(jpeg_bytes, height, width)` for any image file's bytes, as a 3-channel RGB JPEG.

  An RGB baseline JPEG is returned byte for byte; anything else (PNG, grayscale/CMYK/progressive JPEG,
  palette, alpha, 16-bit) is decoded by Pillow and re-encoded. EXIF orientation is ignored, as
  `tf.image.decode_jpeg` ignores it.

  Args:
    data: bytes, the file's content.
    path: str, the file's name for error messages.
    quality: int, JPEG quality used when re-encoding.

  Raises:
    ConversionError: naming `path`, if the bytes are empty, not an image, or truncated.
  """
  if not data:
    raise ConversionError(path, 'empty file')
  try:
    img = Image.open(io.BytesIO(data))
    fmt = img.format
    img.load()  # Image.open only reads the header; a full decode finds truncated and corrupt data.
  except Exception as e:  # pylint: disable=broad-except  (Pillow raises OSError, SyntaxError, ValueError...)
    reason = '%s: %s' % (type(e).__name__, e)
    if 'cannot identify image file' in reason:  # Pillow's text names our BytesIO, not the file
      reason = 'not a known image format, or a corrupt header'
    raise ConversionError(path, 'cannot decode image: %s' % reason)
  width, height = img.size
  is_progressive = img.info.get('progressive') or img.info.get('progression')
  if fmt == 'JPEG' and img.mode == 'RGB' and not is_progressive:
    return bytes(data), height, width
  out = io.BytesIO()
  _to_rgb(img).save(out, format='JPEG', quality=quality)
  return out.getvalue(), height, width


def read_rgb_jpeg(path, quality=95):
  """`to_rgb_jpeg` of the image file at `path`: (jpeg_bytes, height, width).

  Raises:
    ConversionError: naming `path`, when the file cannot be read or decoded.
  """
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = f.read()
  except (IOError, OSError, tf.errors.OpError) as e:
    raise ConversionError(path, 'cannot read: %s' % getattr(e, 'message', e))
  return to_rgb_jpeg(data, path, quality)


# ------------------------------------------------------------------------------------------------ reading


def list_files(file_pattern):
  """Sorted files matching a glob pattern (or a list of patterns), without `.tmp-<pid>` leftovers.

  Raises:
    ValueError: naming the pattern, if nothing matches.
  """
  patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
  files = sorted(set(f for p in patterns for f in tf.io.gfile.glob(p) if not is_temp_file(f)))
  if not files:
    raise ValueError('No TFRecord files match %r' % (file_pattern,))
  return files


def damaged_record(path):
  """Why the TFRecord file `path` cannot be read to its end (e.g. 'corrupted record at byte 59459'), or None.

  Reads every record's length and CRCs once (TensorFlow's reader), no parsing: what a training or
  evaluation input pipeline meets when a shard has flipped bytes or was cut short. The byte is TensorFlow's
  (the offset it was reading), the record the index of the first one that cannot be read.
  """
  index = 0
  try:
    for index, _ in enumerate(tf.io.tf_record_iterator(path), 1):
      pass
  except tf.errors.DataLossError as error:
    text = (getattr(error, 'message', None) or str(error)).split('\n')[0]
    found = re.search(r'(corrupted|truncated) record at (\d+)', text)
    return '%s record at byte %s (record %d)' % (found.groups() + (index,)) if found else text
  except tf.errors.OpError as error:  # unreadable (removed, permissions)
    return (getattr(error, 'message', None) or str(error)).split('\n')[0]
  return None


def check_records(path):
  """(records read, why the file is damaged or None): every record's CRCs, and each parses as a
  tf.train.Example (`mnv2 check-records`)."""
  count = 0
  try:
    for count, record in enumerate(tf.io.tf_record_iterator(path), 1):
      try:
        tf.train.Example.FromString(record)
      except Exception:  # pylint: disable=broad-except  (protobuf's DecodeError differs between versions)
        return count, 'record %d is not a tf.train.Example' % (count - 1)
  except tf.errors.OpError:
    return count, damaged_record(path)
  return count, None


def find_damaged(files):
  """(path, why) of the first damaged file of `files` (see `damaged_record`), or None when all read."""
  for path in files:
    why = damaged_record(path)
    if why:
      return path, why
  return None


def _repeat_count(repeat, is_training):
  if repeat is None:
    repeat = is_training
  if repeat is True:
    return -1
  return int(repeat or 0)


def read_dataset(file_pattern, decode_fn, map_fn, batch_size, is_training, shuffle_buffer=1024,
                 num_parallel_reads=8, num_parallel_calls=None, prefetch=2, seed=None, drop_remainder=True,
                 repeat=None, cycle_length=None, shard=(0, 1)):
  """files -> interleaved records -> [shuffle -> repeat] -> map(map_fn(decode_fn(x))) -> batch -> prefetch.

  Tuning choices:
  * Files are shuffled (training) and read `cycle_length` at a time (default min(num_parallel_reads,
    #files)) by a parallel interleave, one record from each in turn, so one shuffle buffer mixes shards.
  * Records are shuffled before `repeat` so each epoch sees every record once.
  * Decoding and preprocessing run in ONE parallel map (default AUTOTUNE threads): one map call per
    record instead of two halves the per-element overhead.
  * The final prefetch is a FIXED `prefetch` batches: `prefetch(AUTOTUNE)` was seen to settle tf.data at
    a lower rate on small CPU machines; 2 batches keep the accelerator fed.
  Works on TF 1.15 and 2.15 (graph mode; the iterator is created by the caller or tf.estimator).

  Args:
    file_pattern: str glob pattern or list of them.
    decode_fn: function, scalar string tensor (one serialized record) -> decoded structure.
    map_fn: function, decoded structure -> element (e.g. (features, labels)); None for identity.
    batch_size: int.
    is_training: bool, shuffle files and records and (by default) repeat forever.
    shuffle_buffer: int, records in the shuffle buffer (training only).
    num_parallel_reads: int, files read concurrently.
    num_parallel_calls: int, map threads; default tf.data.experimental.AUTOTUNE.
    prefetch: int, batches prefetched at the end.
    seed: int or None, seed of both shuffles.
    drop_remainder: bool, drop the last partial batch so the batch dimension is static.
    repeat: None (repeat forever iff training), True (forever), False/0 (once) or an epoch count.
    cycle_length: int, files interleaved at once; default min(num_parallel_reads, #files).
    shard: (index, count): this input pipeline reads the index-th of `count` disjoint parts of the data (one
      per worker of a cluster): every count-th file from the index-th when there are at least `count`
      files, else every count-th record (`shard_plan`).

  Returns:
    A tf.data.Dataset of batched elements.

  Raises:
    ValueError: naming the pattern, if no file matches.
  """
  files, by_record = shard_plan(list_files(file_pattern), *shard)
  autotune = tf.data.experimental.AUTOTUNE
  ds = tf.data.Dataset.from_tensor_slices(files)
  if is_training and not by_record:  # (sharding by record needs the same file order in every pipeline)
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  cycle_length = cycle_length or max(1, min(num_parallel_reads, len(files)))
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=cycle_length, block_length=1,
                     num_parallel_calls=min(cycle_length, max(1, num_parallel_reads)))
  if by_record:
    ds = ds.shard(shard[1], shard[0])
  if is_training:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  count = _repeat_count(repeat, is_training)
  if count != 0:
    ds = ds.repeat(None if count < 0 else count)
  parse = (lambda x: map_fn(decode_fn(x))) if map_fn is not None else decode_fn
  ds = ds.map(parse, num_parallel_calls=num_parallel_calls or autotune)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  return ds.prefetch(prefetch)


def shard_plan(files, index, count):
  """(the files input pipeline `index` of `count` reads, whether it must also keep every count-th record).

  By file when there are at least as many files as pipelines (each reads whole files, none twice), else by
  record: every pipeline reads all files and keeps records index, index + count, ... (in a deterministic,
  unshuffled file order, so the parts are disjoint).
  """
  if not 0 <= index < count:
    raise ValueError('input shard %d of %d: the index must be in 0..%d' % (index, count, count - 1))
  if count == 1:
    return files, False
  if len(files) >= count:
    return files[index::count], False
  return files, True


def read_label_file(path):
  """TF-Slim's `labels.txt` (`%d:%s` per line) -> dict int label -> str name.

  Raises:
    ValueError: naming the file and line, for a malformed line or a duplicate label.
  """
  labels = {}
  with tf.io.gfile.GFile(path, 'r') as f:
    for number, line in enumerate(f.read().splitlines(), 1):
      if not line.strip():
        continue
      key, sep, name = line.partition(':')
      try:
        label = int(key)
      except ValueError:
        label = None
      if not sep or label is None:
        raise ValueError('%s:%d: expected "<int>:<name>", got %r' % (path, number, line))
      if label in labels:
        raise ValueError('%s:%d: duplicate label %d' % (path, number, label))
      labels[label] = name
  return labels


def write_label_file(labels, path):
  """Writes dict int -> str as TF-Slim's `labels.txt`, sorted by label, via a temp file and rename."""
  for label, name in labels.items():
    if '\n' in name or '\r' in name:
      raise ValueError('label %d name %r contains a line break' % (label, name))
  atomic_write(path, u''.join(u'%d:%s\n' % (label, labels[label]) for label in sorted(labels)))


def check_label_file(labels, path):
  """Raises ValueError if `path` exists with other labels than dict `labels` (another split wrote it)."""
  if tf.io.gfile.exists(path) and read_label_file(path) != labels:
    raise ValueError('%s already exists with different classes: the splits would disagree on label '
                     'numbers. Use the same classes for every split, another output directory, or delete '
                     'it if the change is intended.' % path)
