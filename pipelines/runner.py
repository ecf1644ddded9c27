"""Train / evaluate / export / predict any task from a config: the layer the CLI calls.

Resuming is the Estimator's: training restarts from the last checkpoint in `model_dir`. Evaluation writes
`model_dir/eval/metrics.json` next to the Estimator's TensorBoard events. Export writes a SavedModel under
`model_dir/export/<timestamp>` (or a chosen directory).
"""
import importlib
import json
import logging
import os

import numpy as np
import tensorflow.compat.v1 as tf

from pipelines import config as config_schema
from pipelines import skeleton

LOG = logging.getLogger('mnv2')

# task name -> 'module:Class' (imported on demand, so a task's dependencies load only when used)
_TASKS = {
    'classification': 'pipelines.classification:ClassificationTask',
    'detection': 'pipelines.detection:DetectionTask',
    'segmentation': 'pipelines.segmentation:SegmentationTask',
    'multitask': 'pipelines.multitask:MultitaskTask',
}


def make_task(config):
  if config.task not in _TASKS:
    raise ValueError('task: unknown %r (valid: %s)' % (config.task, ', '.join(sorted(_TASKS))))
  module, cls = _TASKS[config.task].split(':')
  return getattr(importlib.import_module(module), cls)(config)


def session_config(config):
  runtime = config.runtime
  return tf.ConfigProto(intra_op_parallelism_threads=runtime.intra_op_threads,
                        inter_op_parallelism_threads=runtime.inter_op_threads, allow_soft_placement=True)


def make_estimator(task, model_dir, **run_config_kwargs):
  """tf.estimator.Estimator for `task` writing to `model_dir`."""
  runtime = task.config.runtime
  run_config = tf.estimator.RunConfig(
      model_dir=model_dir, tf_random_seed=runtime.seed, save_checkpoints_steps=runtime.save_checkpoints_steps,
      keep_checkpoint_max=runtime.keep_checkpoint_max, save_summary_steps=runtime.save_summary_steps,
      log_step_count_steps=runtime.log_every_n_steps,
      **dict({'session_config': session_config(task.config)}, **run_config_kwargs))
  task.model_dir = model_dir  # tasks that write eval artefacts (detection: detections.json) need it
  return tf.estimator.Estimator(skeleton.make_model_fn(task, model_dir), model_dir=model_dir, config=run_config)


def load_config(path, overrides=(), mode=None):
  """Loads, validates and (for `mode`) checks the files of a config; errors name the key and file."""
  config = config_schema.load(path, overrides)
  if mode:
    config_schema.check_files(config, mode, path)
  return config


def train(config, model_dir, evaluate=False):
  """Trains to `train.steps` (resuming from model_dir); with `evaluate`, evaluates each new checkpoint."""
  tf.gfile.MakeDirs(model_dir)
  config_schema.save(config, os.path.join(model_dir, 'config.yaml'))
  task = make_task(config)
  estimator = make_estimator(task, model_dir)
  if not (evaluate or config.train.evaluate_every_checkpoint):
    estimator.train(task.input_fn(tf.estimator.ModeKeys.TRAIN), max_steps=config.train.steps)
    return None
  if len(task.eval_input_fns()) > 1:
    # train_and_evaluate takes one eval input; a multitask model evaluates each member on its own split.
    estimator.train(task.input_fn(tf.estimator.ModeKeys.TRAIN), max_steps=config.train.steps)
    return evaluate(config, model_dir)
  train_spec = tf.estimator.TrainSpec(task.input_fn(tf.estimator.ModeKeys.TRAIN), max_steps=config.train.steps)
  eval_spec = tf.estimator.EvalSpec(task.input_fn(tf.estimator.ModeKeys.EVAL), steps=config.eval.steps,
                                    throttle_secs=0, start_delay_secs=0)
  result = tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
  metrics = result[0] if result else None
  if metrics:
    write_metrics(metrics, os.path.join(estimator.eval_dir(), 'metrics.json'))
  return metrics


def _jsonable(value):
  if isinstance(value, (np.generic,)):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, bytes):
    return value.decode('utf-8', 'replace')
  return value


def write_metrics(metrics, path):
  """Writes a metrics dict (numpy values allowed) as JSON, atomically."""
  tf.gfile.MakeDirs(os.path.dirname(path))
  data = {str(k): _jsonable(v) for k, v in sorted(metrics.items())}
  tmp = path + '.tmp'
  with tf.gfile.GFile(tmp, 'w') as f:
    json.dump(data, f, indent=2, sort_keys=True)
  tf.gfile.Rename(tmp, path, overwrite=True)
  return data


def evaluate(config, model_dir, checkpoint_path=None, continuous=False):
  """Evaluates the latest (or given) checkpoint; `continuous` follows a training run until it ends.

  Returns the last metrics dict (also written to model_dir/eval/metrics.json).
  """
  task = make_task(config)
  estimator = make_estimator(task, model_dir)
  metrics_path = os.path.join(estimator.eval_dir(), 'metrics.json')
  if not continuous:
    path = checkpoint_path or tf.train.latest_checkpoint(model_dir)
    if not path:
      raise ValueError('no checkpoint in %r to evaluate (train first, or pass --checkpoint)' % model_dir)
    return write_metrics(_evaluate_all(task, estimator, config, path), metrics_path)
  metrics = None
  LOG.info('waiting for checkpoints in %s (timeout %ds)', model_dir, config.eval.continuous_timeout_secs)
  for path in tf.train.checkpoints_iterator(model_dir, timeout=config.eval.continuous_timeout_secs,
                                            timeout_fn=lambda: _log_timeout(model_dir)):
    metrics = write_metrics(_evaluate_all(task, estimator, config, path), metrics_path)
    LOG.info('evaluated %s: %s', path, metrics)
    step = int(os.path.basename(path).split('-')[-1])
    if step >= config.train.steps:
      break
    LOG.info('waiting for a new checkpoint in %s', model_dir)
  return metrics


def _evaluate_all(task, estimator, config, checkpoint_path):
  """Metrics of one checkpoint over the task's eval inputs (one per multitask member, keys `<member>/...`)."""
  metrics = {}
  for name, input_fn in task.eval_input_fns():
    result = estimator.evaluate(input_fn, steps=config.eval.steps, checkpoint_path=checkpoint_path, name=name)
    for key, value in result.items():
      if name and key != tf.GraphKeys.GLOBAL_STEP and not key.startswith(name + '/'):
        key = '%s/%s' % (name, key)
      metrics[key] = value
  return metrics


def _log_timeout(model_dir):
  LOG.info('no new checkpoint in %s before the timeout; stopping', model_dir)
  return True


def export(config, model_dir, export_dir=None, checkpoint_path=None, fold_batch_norm=True):
  """Exports a SavedModel (serving signatures of the task, batch norm folded); returns its directory.

  See `pipelines.saved_model_export` for the signatures; `fold_batch_norm=False` keeps the Estimator export.
  """
  task = make_task(config)
  base = export_dir or os.path.join(model_dir, 'export')
  if fold_batch_norm:
    from pipelines import saved_model_export  # pylint: disable=g-import-not-at-top
    checkpoint_path = checkpoint_path or tf.train.latest_checkpoint(model_dir)
    if not checkpoint_path:
      raise ValueError('no checkpoint in %r to export (train first, or pass --checkpoint)' % model_dir)
    return saved_model_export.export(task, base, checkpoint_path)
  estimator = make_estimator(task, model_dir)
  path = estimator.export_saved_model(base, task.serving_input_receiver_fn(), checkpoint_path=checkpoint_path)
  return path.decode('utf-8') if isinstance(path, bytes) else path
