"""TFRecord plumbing shared by the ImageNet, COCO and VOC converters and input pipelines.

Writing: `tf.train.Feature` builders, `to_rgb_jpeg` (any image -> RGB JPEG, errors name the file) and
`write_sharded`, which fans items out over worker processes, one shard per task, each shard written to a
temporary name and renamed when complete, so an interrupted conversion resumes by skipping finished shards.
Reading: `read_dataset`, the tf.data pipeline (files -> interleave -> shuffle -> repeat -> parse -> batch ->
prefetch) and TF-Slim's `labels.txt` format.

Not here: dataset-specific feature keys, decoders and preprocessing (see `datasets.imagenet`, ...), and
remote file systems for writing (shards are renamed with `os.rename`, so output_dir must be local).
"""
import io
import multiprocessing
import os
import re
import sys
import time
import traceback
from concurrent import futures

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


# --------------------------------------------------------------------------------------- sharded writer

# Per-process state of write_sharded's workers, set by _init_worker (or directly when run in-process).
_SINK = None  # callable(message tuple): progress ('done', n) and errors ('error', path, message).
_STOP = None  # event set by the first fatal error so the other workers abandon their shards.


def _init_worker(queue, stop):
  global _SINK, _STOP
  _SINK, _STOP = queue.put, stop


def _describe(item):
  """A short name for an item in messages: its path when it has one."""
  if isinstance(item, str):
    return item
  if isinstance(item, (tuple, list)) and item and isinstance(item[0], str):
    return item[0]
  if isinstance(item, dict):
    for key in ('path', 'filename', 'file_name', 'id'):
      if key in item:
        return str(item[key])
  return repr(item)[:200]


def _remove_stale(final_path, keep=None):
  """Deletes `<shard>.tmp-*` leftovers of killed runs; `read_dataset` patterns could match them."""
  directory, base = os.path.split(final_path)
  for name in os.listdir(directory or '.'):
    full = os.path.join(directory, name)
    if name.startswith(base + '.tmp-') and _TMP_RE.search(name) and full != keep:
      try:
        os.remove(full)
      except OSError:
        pass


def _write_records(writer, items, encode_fn, on_error, result):
  """Encodes and writes one shard's items; returns (path, message, kind) of a fatal error or None."""
  for item in items:
    if _STOP is not None and _STOP.is_set():
      return ('', 'stopped', 'abort')
    try:
      records = encode_fn(item)
    except ConversionError as e:
      result['errors'].append((e.path, e.message))
      _SINK(('error', e.path, e.message))
      if on_error == 'fail':
        return (e.path, e.message, 'conversion')
      result['skipped'] += 1
      _SINK(('done', 1))
      continue
    except Exception as e:  # pylint: disable=broad-except  (a bug, not bad data: always fatal)
      return (_describe(item), '%s: %s\n%s' % (type(e).__name__, e, traceback.format_exc()), 'unexpected')
    for record in records:
      writer.write(record)
    result['written'] += len(records)
    _SINK(('done', 1))
  return None


def _write_shard(task):
  """Worker: writes one shard to `<final>.tmp-<pid>`, renames it on success, deletes it on failure."""
  final_path, items, encode_fn, on_error = task
  tmp_path = '%s.tmp-%d' % (final_path, os.getpid())
  result = {'shard': final_path, 'written': 0, 'skipped': 0, 'errors': [], 'fatal': None}
  try:
    with tf.io.TFRecordWriter(tmp_path) as writer:
      result['fatal'] = _write_records(writer, items, encode_fn, on_error, result)
    if result['fatal'] is None:
      os.rename(tmp_path, final_path)
      _remove_stale(final_path)
  except Exception as e:  # pylint: disable=broad-except  (I/O errors: report the shard, not a traceback)
    result['fatal'] = (final_path, 'writing shard failed: %s: %s' % (type(e).__name__, e), 'unexpected')
  if result['fatal'] is not None:
    if _STOP is not None:
      _STOP.set()
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
  return result


class _Progress(object):
  """`desc: done/total items (rate items/s)` on stderr; a line per 30 s instead of `\\r` when not a tty."""

  def __init__(self, total, desc, stream=None):
    self.total, self.desc, self.done = total, desc, 0
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, 'isatty') and self.stream.isatty()
    self.start = self.last = time.time()
    self.drawn = None  # the count last drawn, so the closing draw does not repeat an identical line

  def handle(self, message):
    if message[0] == 'done':
      self.done += message[1]
      self.draw()
    else:
      self.stream.write('%serror: %s: %s\n' % ('\r\033[K' if self.tty else '', message[1], message[2]))
      self.draw(force=True)

  def draw(self, force=False, end=''):
    now = time.time()
    if not force and now - self.last < (0.2 if self.tty else 30.0):
      return
    if self.total == 0 or (end and not self.tty and self.drawn == self.done):
      return
    self.last, self.drawn = now, self.done
    rate = self.done / max(now - self.start, 1e-6)
    line = '%s: %d/%d items (%.1f items/s)' % (self.desc, self.done, self.total, rate)
    self.stream.write(('\r\033[K' + line + end) if self.tty else (line + '\n'))
    self.stream.flush()


def _plan_shards(items, output_dir, split, num_shards, seed):
  """Deterministic shuffle, then contiguous split; returns [(final_path, shard_items)]."""
  if num_shards < 1:
    raise ValueError('num_shards must be >= 1, got %r' % (num_shards,))
  order = np.random.RandomState(seed).permutation(len(items))
  shuffled = [items[i] for i in order]
  bounds = [len(items) * i // num_shards for i in range(num_shards + 1)]
  return [(os.path.join(output_dir, shard_name(split, i, num_shards)), shuffled[bounds[i]:bounds[i + 1]])
          for i in range(num_shards)]


def _drain(queue, progress):
  while True:
    try:
      progress.handle(queue.get_nowait())
    except Exception:  # pylint: disable=broad-except  (queue.Empty, or a queue closed by a dying worker)
      return


def _run_pool(tasks, num_workers, progress):
  """Runs `_write_shard` over tasks in worker processes; returns the per-shard result dicts."""
  # 'fork' is safe here: workers only use Pillow, protobuf and TFRecordWriter, never a TF session or
  # thread pool whose locks a fork could copy while held. Elsewhere (macOS, Windows) use 'spawn'.
  method = 'fork' if sys.platform.startswith('linux') else 'spawn'
  ctx = multiprocessing.get_context(method)
  queue, stop = ctx.Queue(), ctx.Event()
  results = []
  # ProcessPoolExecutor rather than Pool: a worker killed by the OS fails its future instead of hanging.
  executor = futures.ProcessPoolExecutor(num_workers, mp_context=ctx, initializer=_init_worker,
                                         initargs=(queue, stop))
  try:
    pending = {executor.submit(_write_shard, task): task[0] for task in tasks}
    while pending:
      done, _ = futures.wait(list(pending), timeout=0.2)
      _drain(queue, progress)
      for future in done:
        shard = pending.pop(future)
        try:
          results.append(future.result())
        except Exception as e:  # pylint: disable=broad-except  (BrokenProcessPool: worker died)
          stop.set()
          results.append({'shard': shard, 'written': 0, 'skipped': 0, 'errors': [],
                          'fatal': (shard, 'worker process died: %s' % e, 'unexpected')})
  finally:
    stop.set()
    executor.shutdown(wait=True)
  _drain(queue, progress)  # workers have exited, so everything they queued is readable now
  return results


def _run_inline(tasks, progress):
  global _SINK, _STOP
  _SINK, _STOP = progress.handle, None
  results = []
  for task in tasks:
    results.append(_write_shard(task))
    if results[-1]['fatal'] is not None:
      break
  return results


def write_sharded(items, encode_fn, output_dir, split, num_shards, num_workers=None, on_error='skip',
                  desc='converting', seed=0):
  """Writes `items` as `num_shards` TFRecord files `<output_dir>/<split>-%05d-of-%05d`.

  Items are shuffled with `seed` and split into contiguous shards, so the same item list always gives
  the same shards; a shard whose final file exists is skipped, which makes a re-run resume. Do not run two
  conversions into the same output_dir at once.

  Args:
    items: list of picklable item descriptors, in a deterministic order.
    encode_fn: module-level function item -> list of serialized tf.train.Example bytes; raises
      ConversionError for bad input. Any other exception is a bug and always stops the conversion.
    output_dir: str, a local directory (created if missing).
    split: str, shard name prefix.
    num_shards: int >= 1.
    num_workers: processes; default min(num_shards, cpu_count). 1 runs in this process.
    on_error: 'skip' (report each ConversionError on stderr, continue) or 'fail' (stop, raise).
    desc: str, progress bar label.
    seed: int, the shuffle seed.

  Returns:
    dict with 'written' (records written now), 'skipped' (items skipped now), 'errors' (list of
    (path, message)) and 'shards_skipped' (shards already complete).

  Raises:
    ConversionError: on_error='fail' and an item was bad (no partial final shard is left).
    RuntimeError: naming the item or shard, for unexpected errors in encode_fn, I/O or a worker.
  """
  if on_error not in ('skip', 'fail'):
    raise ValueError("on_error must be 'skip' or 'fail', got %r" % (on_error,))
  if not os.path.isdir(output_dir):
    os.makedirs(output_dir)
  shards = _plan_shards(items, output_dir, split, num_shards, seed)
  tasks = [(path, shard_items, encode_fn, on_error) for path, shard_items in shards
           if not os.path.exists(path)]
  stats = {'written': 0, 'skipped': 0, 'errors': [], 'shards_skipped': len(shards) - len(tasks)}
  progress = _Progress(sum(len(t[1]) for t in tasks), desc)
  num_workers = min(num_workers or multiprocessing.cpu_count(), max(len(tasks), 1))
  results = _run_pool(tasks, num_workers, progress) if num_workers > 1 else _run_inline(tasks, progress)
  progress.draw(force=True, end='\n')
  fatal = [r['fatal'] for r in results if r['fatal'] is not None and r['fatal'][2] != 'abort']
  for result in results:
    stats['written'] += result['written']
    stats['skipped'] += result['skipped']
    stats['errors'].extend(result['errors'])
  if fatal:
    path, message, kind = fatal[0]
    if kind == 'conversion':
      raise ConversionError(path, message)
    raise RuntimeError('converting %s failed: %s' % (path, message))
  return stats


# ------------------------------------------------------------------------------------------------ reading


def list_files(file_pattern):
  """Sorted files matching a glob pattern (or a list of patterns), without `.tmp-<pid>` leftovers.

  Raises:
    ValueError: naming the pattern, if nothing matches.
  """
  patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
  files = sorted(set(f for p in patterns for f in tf.io.gfile.glob(p) if not _TMP_RE.search(f)))
  if not files:
    raise ValueError('No TFRecord files match %r' % (file_pattern,))
  return files


def _repeat_count(repeat, is_training):
  if repeat is None:
    repeat = is_training
  if repeat is True:
    return -1
  return int(repeat or 0)


def read_dataset(file_pattern, decode_fn, map_fn, batch_size, is_training, shuffle_buffer=1024,
                 num_parallel_reads=8, num_parallel_calls=None, prefetch=2, seed=None, drop_remainder=True,
                 repeat=None, cycle_length=None):
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

  Returns:
    A tf.data.Dataset of batched elements.

  Raises:
    ValueError: naming the pattern, if no file matches.
  """
  files = list_files(file_pattern)
  autotune = tf.data.experimental.AUTOTUNE
  ds = tf.data.Dataset.from_tensor_slices(files)
  if is_training:
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  cycle_length = cycle_length or max(1, min(num_parallel_reads, len(files)))
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=cycle_length, block_length=1,
                     num_parallel_calls=min(cycle_length, max(1, num_parallel_reads)))
  if is_training:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  count = _repeat_count(repeat, is_training)
  if count != 0:
    ds = ds.repeat(None if count < 0 else count)
  parse = (lambda x: map_fn(decode_fn(x))) if map_fn is not None else decode_fn
  ds = ds.map(parse, num_parallel_calls=num_parallel_calls or autotune)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  return ds.prefetch(prefetch)


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
  tmp_path = '%s.tmp-%d' % (path, os.getpid())
  with io.open(tmp_path, 'w', encoding='utf-8') as f:
    f.writelines(u'%d:%s\n' % (label, labels[label]) for label in sorted(labels))
  os.rename(tmp_path, path)
