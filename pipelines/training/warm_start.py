"""Warm start from any checkpoint: TF-Slim's public ones, another task's, or this library's own.

Unlike `tf.estimator.WarmStartSettings`, this restores every matching global variable *including batch-norm
moving statistics*, skips (and lists) variables whose shape differs (e.g. Logits when the class count
changes), and maps scope prefixes (a classification checkpoint's `MobilenetV2/` into a detector's
`FeatureExtractor/MobilenetV2/`). It goes through `tf.train.init_from_checkpoint`, which only changes
variable initializers: when `model_dir` already holds a checkpoint, training resumes from that instead.
"""
import logging
import os
import re

import tensorflow.compat.v1 as tf

# Never warm-started: optimizer slots, step counters and moving averages belong to the run, not the model.
LOG = logging.getLogger('mnv2')
_EMA_SUFFIX = 'ExponentialMovingAverage'
_RANGE_SUFFIXES = ('_quant/min', '_quant/max')
_RUN_STATE = re.compile(r'(^global_step$|/(RMSProp|Momentum|Adam)(_1)?$|ExponentialMovingAverage$|^beta[12]_power)')


def resolve_checkpoint(path):
  """A checkpoint prefix for `path` (a prefix or a directory holding checkpoints)."""
  if tf.gfile.IsDirectory(path):
    latest = tf.train.latest_checkpoint(path)
    if not latest:
      raise ValueError('train.warm_start.checkpoint: no checkpoint in directory %r' % path)
    return latest
  return path


def _checkpoint_name(name, scope_map):
  for model_prefix, ckpt_prefix in scope_map.items():
    if name.startswith(model_prefix):
      return ckpt_prefix + name[len(model_prefix):]
  return name


def plan(variables, checkpoint_shapes, include=('.*',), exclude=(), scope_map=None):
  """Decides which variables to restore.

  Args:
    variables: list of tf.Variable (global variables of the model).
    checkpoint_shapes: dict checkpoint name -> shape list.
    include, exclude: regexes on model variable names.
    scope_map: dict model-name prefix -> checkpoint-name prefix.

  Returns:
    (assignment dict checkpoint name -> variable, list of (model name, reason) skipped). Trainable
    variables take the checkpoint's `<name>/ExponentialMovingAverage` when it has one.
  """
  assignment, skipped = {}, []
  trainable = {v.op.name for v in tf.trainable_variables()}
  for var in variables:
    name = var.op.name
    if _RUN_STATE.search(name) or not any(re.search(p, name) for p in include) or \
        any(re.search(p, name) for p in exclude):
      continue
    ckpt_name = _checkpoint_name(name, scope_map or {})
    # Prefer a checkpoint's moving average (TF-Slim's public checkpoints carry one per weight): those are
    # the values the checkpoint was evaluated with.
    averaged = ckpt_name + '/' + _EMA_SUFFIX
    if averaged in checkpoint_shapes and name in trainable:
      ckpt_name = averaged
    if ckpt_name not in checkpoint_shapes:
      skipped.append((name, 'not in checkpoint'))
      continue
    shape = var.get_shape().as_list()
    if list(checkpoint_shapes[ckpt_name]) != shape:
      skipped.append((name, 'shape %s != checkpoint %s' % (shape, list(checkpoint_shapes[ckpt_name]))))
      continue
    assignment[ckpt_name] = var
  return assignment, skipped


def warm_start(warm_config, log_dir=None, log_name='warm_start.txt'):
  """Schedules initialization from `warm_config.checkpoint`; call inside the TRAIN model_fn.

  Writes what was restored and skipped to `log_dir/log_name` and logs a summary.
  Returns the (assignment, skipped) plan, or None when no checkpoint is configured.
  """
  if not warm_config.checkpoint:
    return None
  path = resolve_checkpoint(warm_config.checkpoint)
  shapes = dict(tf.train.list_variables(path))
  assignment, skipped = plan(tf.global_variables(), shapes, warm_config.include, warm_config.exclude,
                             warm_config.scope_map)
  if not assignment:
    raise ValueError('train.warm_start.checkpoint: no variable of the model matches %r (check scope_map)' % path)
  tf.train.init_from_checkpoint(path, assignment)
  LOG.info('warm start from %s: restored %d variables, skipped %d', path, len(assignment), len(skipped))
  # A float checkpoint has no quantization ranges: expected when fine-tuning it quantization-aware (they are
  # learned from the first batch), so they are counted, not listed (warm_start.txt lists every one).
  ranges = [name for name, _ in skipped if name.endswith(_RANGE_SUFFIXES)]
  for name, reason in skipped:
    if name not in ranges:
      LOG.info('  warm start skipped %s: %s', name, reason)
  if ranges:
    LOG.info('  warm start skipped %d quantization ranges (learned from the first batch)', len(ranges))
  if log_dir:
    tf.gfile.MakeDirs(log_dir)
    with tf.gfile.GFile(os.path.join(log_dir, log_name), 'w') as f:
      f.write('checkpoint: %s\n' % path)
      for ckpt_name, var in sorted(assignment.items()):
        f.write('restored %s <- %s\n' % (var.op.name, ckpt_name))
      for name, reason in skipped:
        f.write('skipped %s: %s\n' % (name, reason))
  return assignment, skipped
