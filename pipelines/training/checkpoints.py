"""Checkpoints read beside a training run that rotates them: resolve one, hold on to it, read the hold.

A trainer with a small `runtime.keep_checkpoint_max` deletes its oldest checkpoint each time it saves. An
evaluation (or export, or prediction) that picked `model.ckpt-12` can find it gone before TensorFlow
restores it ("The passed save_path is not a valid checkpoint"); the OD API's and DeepLab's evaluators meet
the same race. `held` resolves the checkpoint and links its files (a copy on file systems without links,
e.g. gs://) into a private directory under `model_dir/eval/`, so the trainer's rotation no longer touches
what is read; when the checkpoint vanished before it could be held, the then-latest is taken instead.

`run_config_kwargs` / `chief_saver_hooks` carry `runtime.save_graph_def` to the Estimator on both stacks.

Not here: choosing which checkpoints to evaluate (`runner.evaluate`), checkpoint contents
(`skeleton.check_checkpoint`).
"""
import contextlib
import inspect
import logging
import os
import re
import uuid

import tensorflow.compat.v1 as tf

LOG = logging.getLogger('mnv2')
HOLD_ATTEMPTS = 10
_STEP = re.compile(r'-(\d+)$')


def step_of(prefix):
  """The global step in a checkpoint prefix's name (`model.ckpt-12` -> 12), or None."""
  found = _STEP.search(prefix or '')
  return int(found.group(1)) if found else None


def _files(prefix):
  """The files a restore reads: `<prefix>.index` and every `<prefix>.data-*` shard (NotFoundError if any
  is missing)."""
  index = prefix + '.index'
  data = tf.io.gfile.glob(prefix + '.data-*')
  if not tf.io.gfile.exists(index) or not data:
    raise tf.errors.NotFoundError(None, None, 'checkpoint %s: files missing' % prefix)
  shards = re.search(r'-of-(\d+)$', data[0])
  if shards and len(data) != int(shards.group(1)):
    raise tf.errors.NotFoundError(None, None, 'checkpoint %s: data shards missing' % prefix)
  return [index] + sorted(data)


def _link_or_copy(source, target):
  if '://' not in source:
    try:
      os.link(source, target)
      return
    except OSError:  # another device, or no hard links on this file system: copy
      pass
  tf.io.gfile.copy(source, target, overwrite=True)


def _hold(prefix, directory):
  """Links (or copies) checkpoint `prefix` into `directory`; returns the held prefix."""
  tf.io.gfile.makedirs(directory)
  for path in _files(prefix):
    _link_or_copy(path, os.path.join(directory, os.path.basename(path)))
  return os.path.join(directory, os.path.basename(prefix))


def _missing(error):
  return isinstance(error, (tf.errors.NotFoundError, FileNotFoundError))


@contextlib.contextmanager
def held(model_dir, checkpoint=None, explicit=None, attempts=HOLD_ATTEMPTS, what='evaluate'):
  """Yields the prefix of a private hold of `checkpoint` (default: the latest in `model_dir`).

  A checkpoint the trainer deleted before it was held is replaced by the then-latest one (logged); an
  `explicit` checkpoint (default: when one is given, e.g. `--checkpoint`) that does not exist is an error
  naming it. The hold is removed on exit.

  Raises:
    ValueError: no checkpoint in `model_dir`, or the explicit one does not exist.
  """
  explicit = checkpoint is not None if explicit is None else explicit
  prefix = checkpoint or tf.train.latest_checkpoint(model_dir)
  if not prefix:
    raise ValueError('no checkpoint in %r to %s (train first, or pass --checkpoint)' % (model_dir, what))
  directory = os.path.join(model_dir, 'eval', '.held-%s' % uuid.uuid4().hex[:12])
  try:
    for attempt in range(attempts):
      try:
        path = _hold(prefix, directory)
        break
      except (tf.errors.OpError, OSError) as error:
        if not _missing(error) or attempt == attempts - 1:
          raise
        if explicit and not tf.io.gfile.glob(prefix + '.index'):
          raise ValueError('checkpoint %s does not exist (its .index file is missing)' % prefix)
        latest = tf.train.latest_checkpoint(model_dir)
        LOG.info('checkpoint %s was removed (the trainer keeps runtime.keep_checkpoint_max) before it could '
                 'be read; taking the latest, %s', prefix, latest)
        prefix, explicit = latest, False
        if tf.io.gfile.isdir(directory):
          tf.io.gfile.rmtree(directory)
    yield path
  finally:
    if tf.io.gfile.isdir(directory):
      tf.io.gfile.rmtree(directory)


def _run_config_takes_graph_flag():
  """TF 2.x's RunConfig has `checkpoint_save_graph_def`; TF 1.15's has not."""
  return 'checkpoint_save_graph_def' in inspect.signature(tf.estimator.RunConfig.__init__).parameters


def run_config_kwargs(runtime):
  """RunConfig kwargs of `runtime.save_graph_def` where the Estimator takes it (TF 2.x: graph.pbtxt and the
  checkpoints' .meta files)."""
  if runtime.save_graph_def or not _run_config_takes_graph_flag():
    return {}
  return {'checkpoint_save_graph_def': False}


class _MetalessSaver(object):
  """A Saver whose `save` writes no .meta file (the rest is the Saver's)."""

  def __init__(self, saver):
    self._saver = saver

  def save(self, *args, **kwargs):
    kwargs['write_meta_graph'] = False
    return self._saver.save(*args, **kwargs)

  def __getattr__(self, name):
    return getattr(self._saver, name)


class _GraphlessCheckpointSaverHook(tf.train.CheckpointSaverHook):
  """TF 1.15's CheckpointSaverHook as TF 2.x's with `save_graph_def=False`: no graph.pbtxt when the session
  starts, no .meta beside each checkpoint (seconds of serialization each for a large training graph)."""

  def after_create_session(self, session, coord):
    step = session.run(self._global_step_tensor)
    graph = tf.get_default_graph()
    self._summary_writer.add_graph(graph)  # TensorBoard's graph, as TF 2.x's hook writes it
    self._summary_writer.add_meta_graph(tf.train.export_meta_graph(
        graph_def=graph.as_graph_def(add_shapes=True), saver_def=self._get_saver().saver_def))
    self._save(session, step)
    self._timer.update_last_triggered_step(step)

  def _get_saver(self):
    return _MetalessSaver(super(_GraphlessCheckpointSaverHook, self)._get_saver())


def chief_saver_hooks(config, model_dir):
  """The training chief's checkpoint hook when `runtime.save_graph_def` is false on TF 1.15 (the Estimator then
  uses it instead of its own); [] otherwise. A TF 1.15 multi_worker_mirrored run (whose session makes its
  own hook) writes them anyway."""
  runtime = config.runtime
  if (runtime.save_graph_def or _run_config_takes_graph_flag() or not model_dir
      or runtime.distribution.strategy == 'multi_worker_mirrored'):
    return []
  return [_GraphlessCheckpointSaverHook(model_dir, save_steps=runtime.save_checkpoints_steps)]
