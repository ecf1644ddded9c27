"""The parallel, atomic, resumable TFRecord shard writer behind the ImageNet, COCO and VOC converters.

`write_sharded` shuffles a list of items deterministically, splits it into contiguous shards and fans the
shards out over worker processes, one shard per task. Each shard is written to `<shard>.tmp-<pid>` and
renamed when complete, so a finished shard is never partial and an interrupted conversion resumes by
skipping the shards whose final file exists; a failing shard deletes its temporary file, and leftovers of
killed runs are removed when their shard is rewritten. A progress line on stderr counts items.

Not here: what a record holds (the converters' `encode_fn`s build them with the `datasets.tfrecord`
feature builders), reading shards back (`tfrecord.read_dataset`). Files go through `tf.io.gfile`, so the
output may be on any file system TensorFlow reads (gs://...); there a rename is a copy, still atomic for
readers of the final name.
"""
import multiprocessing
import os
import sys
import time
import traceback
from concurrent import futures

import numpy as np
import tensorflow.compat.v1 as tf

from datasets import tfrecord

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
  """Deletes `<shard>.tmp-*` leftovers of killed runs; `tfrecord.read_dataset` patterns could match them."""
  directory, base = os.path.split(final_path)
  for name in tf.io.gfile.listdir(directory or '.'):
    name = name.rstrip('/')
    full = os.path.join(directory, name)
    if name.startswith(base + '.tmp-') and tfrecord.is_temp_file(name) and full != keep:
      try:
        tf.io.gfile.remove(full)
      except (OSError, tf.errors.OpError):
        pass


def _open_writer(path):
  """The record writer of one shard (a function so tests can inject I/O failures)."""
  return tf.io.TFRecordWriter(path)


def _write_records(writer, items, encode_fn, on_error, result):
  """Encodes and writes one shard's items; returns (path, message, kind) of a fatal error or None."""
  for item in items:
    if _STOP is not None and _STOP.is_set():
      return ('', 'stopped', 'abort')
    try:
      records = encode_fn(item)
    except tfrecord.ConversionError as e:
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
  tmp_path = tfrecord.temp_path(final_path)
  result = {'shard': final_path, 'written': 0, 'skipped': 0, 'errors': [], 'fatal': None}
  try:
    with _open_writer(tmp_path) as writer:
      result['fatal'] = _write_records(writer, items, encode_fn, on_error, result)
    if result['fatal'] is None:
      tf.io.gfile.rename(tmp_path, final_path, overwrite=True)
      _remove_stale(final_path)
  except Exception as e:  # pylint: disable=broad-except  (I/O errors: report the shard, not a traceback)
    text = getattr(e, 'message', None) or str(e)
    result['fatal'] = (final_path, 'writing shard failed: %s: %s (check that the output directory is '
                       'writable and has space; a re-run completes the missing shards)'
                       % (type(e).__name__, text.split('\n')[0]), 'io')
  if result['fatal'] is not None:
    if _STOP is not None:
      _STOP.set()
    try:
      if tf.io.gfile.exists(tmp_path):
        tf.io.gfile.remove(tmp_path)
    except (OSError, tf.errors.OpError):
      pass
  return result


class Progress(object):
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
  return [(os.path.join(output_dir, tfrecord.shard_name(split, i, num_shards)),
           shuffled[bounds[i]:bounds[i + 1]]) for i in range(num_shards)]


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
      tfrecord.ConversionError for bad input. Any other exception is a bug and always stops the conversion.
    output_dir: str, a directory on any tf.io.gfile file system (created if missing).
    split: str, shard name prefix.
    num_shards: int >= 1.
    num_workers: processes; default min(num_shards, cpu_count). 1 runs in this process.
    on_error: 'skip' (report each tfrecord.ConversionError on stderr, continue) or 'fail' (stop, raise).
    desc: str, progress bar label.
    seed: int, the shuffle seed.

  Returns:
    dict with 'written' (records written now), 'skipped' (items skipped now), 'errors' (list of
    (path, message)) and 'shards_skipped' (shards already complete).

  Raises:
    tfrecord.ConversionError: on_error='fail' and an item was bad (no partial final shard is left).
    IOError: naming the shard, when it cannot be written (read-only directory, full disk...); finished
      shards are kept and the unfinished one is deleted, so a re-run completes the rest.
    RuntimeError: naming the item or shard, for unexpected errors in encode_fn or a dead worker.
  """
  if on_error not in ('skip', 'fail'):
    raise ValueError("on_error must be 'skip' or 'fail', got %r" % (on_error,))
  make_output_dir(output_dir)
  shards = _plan_shards(items, output_dir, split, num_shards, seed)
  tasks = [(path, shard_items, encode_fn, on_error) for path, shard_items in shards
           if not tf.io.gfile.exists(path)]
  stats = {'written': 0, 'skipped': 0, 'errors': [], 'shards_skipped': len(shards) - len(tasks)}
  progress = Progress(sum(len(t[1]) for t in tasks), desc)
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
      raise tfrecord.ConversionError(path, message)
    if kind == 'io':
      raise IOError('%s: %s' % (path, message))
    raise RuntimeError('converting %s failed: %s' % (path, message))
  return stats


def make_output_dir(output_dir):
  """Creates `output_dir` (any tf.io.gfile file system); an error names it when that is impossible."""
  try:
    tf.io.gfile.makedirs(output_dir)
  except (OSError, tf.errors.OpError) as e:
    raise IOError('cannot create output directory %s: %s' % (output_dir, getattr(e, 'message', e)))


def report_error(error):
  """What a converter's `run` does with a user error: one `error:` line on stderr; returns exit status 2.

  MNV2_DEBUG=1 re-raises it with its traceback instead. Call from inside the `except` block.
  """
  if os.environ.get('MNV2_DEBUG'):
    raise  # pylint: disable=misplaced-bare-raise
  text = getattr(error, 'message', None) if isinstance(error, tf.errors.OpError) else None
  text = (text or str(error)).strip().split('\n')[0]
  sys.stderr.write('error: %s\n' % text)
  return 2


# What the converters' `run` reports as one line (exit 2): bad input, I/O, and failed conversions.
USER_ERRORS = (ValueError, IOError, OSError, tfrecord.ConversionError, RuntimeError, tf.errors.OpError)
