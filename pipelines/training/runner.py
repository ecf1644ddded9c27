"""Train / evaluate / export / predict any task from a config: the layer the CLI calls.

Resuming is the Estimator's: training restarts from the last checkpoint in `model_dir`. Evaluation writes
`model_dir/eval/metrics.json` next to the Estimator's TensorBoard events. Export writes a SavedModel under
`model_dir/export/<timestamp>` (or a chosen directory).
"""
import contextlib
import json
import logging
import os

import numpy as np
import tensorflow.compat.v1 as tf

from datasets import tfrecord

from pipelines import config as config_schema
from pipelines.inputs import files as input_files
from pipelines.tasks import registry
from pipelines.training import checkpoints
from pipelines.training import distribution
from pipelines.training import precision
from pipelines.training import skeleton

LOG = logging.getLogger('mnv2')

def make_task(config, model_dir=None):
  """The task object of `config` (its registered class; `pipelines.tasks.registry`)."""
  return registry.make_task(config, model_dir=model_dir)


def session_config(config):
  runtime = config.runtime
  return tf.ConfigProto(intra_op_parallelism_threads=runtime.intra_op_threads,
                        inter_op_parallelism_threads=runtime.inter_op_threads, allow_soft_placement=True)


def make_distribution(config):
  """`distribution.Distribution` of `runtime.distribution` (reads TF_CONFIG); ValueError naming the key."""
  dist = config.runtime.distribution
  return distribution.make_distribution(dist.strategy, dist.num_devices, dist.cpu_devices)


def distribution_run_config(config, placement=None):
  """RunConfig kwargs (train_distribute, eval_distribute, session_config) for `runtime`: the strategy's
  placement, the mixed-precision rewrite and XLA on top of `session_config(config)`.

  Call before the process creates its first session (XLA on CPU sets TF_XLA_FLAGS, read once).
  """
  runtime = config.runtime
  placement = placement or make_distribution(config)
  session = precision.mixed_precision_session_config(runtime.mixed_precision, session_config(config))
  session = precision.xla_session_config(runtime.xla, session)
  return placement.run_config_kwargs(session)


def make_estimator(task, model_dir, checkpoint=None, **run_config_kwargs):
  """tf.estimator.Estimator for `task` writing to `model_dir`; eval and predict restore `checkpoint`
  (default: the latest in `model_dir`).

  Without explicit `train_distribute` / `session_config` kwargs, the config's `runtime.distribution`,
  `runtime.mixed_precision` and `runtime.xla` decide them (`distribution_run_config`).
  """
  runtime = task.config.runtime
  if not {'train_distribute', 'session_config'} & set(run_config_kwargs):
    run_config_kwargs = dict(distribution_run_config(task.config), **run_config_kwargs)
  run_config = tf.estimator.RunConfig(
      model_dir=model_dir, tf_random_seed=runtime.seed, save_checkpoints_steps=runtime.save_checkpoints_steps,
      keep_checkpoint_max=runtime.keep_checkpoint_max, save_summary_steps=runtime.save_summary_steps,
      log_step_count_steps=runtime.log_every_n_steps, **dict(
          {'session_config': session_config(task.config)}, **dict(checkpoints.run_config_kwargs(runtime),
                                                                  **run_config_kwargs)))
  return tf.estimator.Estimator(skeleton.make_model_fn(task, model_dir, checkpoint), model_dir=model_dir,
                                config=run_config)


def load_config(path, overrides=(), mode=None):
  """Loads, validates and (for `mode`) checks the files of a config; errors name the key and file."""
  config = config_schema.load(path, overrides)
  if mode:
    input_files.check_files(config, mode, path)
  return config


def _is_chief(placement):
  """The process that writes config.yaml (and, in the Estimator, checkpoints and summaries)."""
  if placement.task_type is None:
    return True
  if placement.task_type in ('chief', 'master'):
    return True
  cluster = distribution.read_tf_config().get('cluster') or {}
  # A worker-only multi_worker_mirrored cluster: worker 0 is the chief.
  return placement.task_type == 'worker' and placement.task_index == 0 and not (
      cluster.get('chief') or cluster.get('master'))


def train(config, model_dir, evaluate=False, allow_config_change=False):
  """Trains to `train.steps` (resuming from model_dir); with `evaluate`, evaluates each new checkpoint.

  Under TF_CONFIG (multi_worker_mirrored, parameter_server) the process runs its task's role through
  `train_and_evaluate` with or without `evaluate`: chief and workers train, a `ps` task serves variables
  (forever), an `evaluator` task evaluates each new checkpoint until `train.steps`. Only the chief writes
  `config.yaml`. A model_dir whose saved config.yaml differs in a key that changes the graph is refused
  (see `check_saved_config`) unless `allow_config_change`; a changed config.yaml is replaced only once the
  run has succeeded.
  """
  dist = config.runtime.distribution
  # The batch split first, from the config alone: its error names train.batch_size before any strategy
  # (whose creation can fail for other reasons, e.g. a process whose devices are already fixed) exists.
  distribution.per_replica_batch_size(config.train.batch_size, distribution.replicas_in_sync(
      dist.strategy, dist.num_devices, dist.cpu_devices))
  placement = make_distribution(config)
  per_replica = distribution.per_replica_batch_size(config.train.batch_size, placement.num_replicas)
  if placement.task_type == 'evaluator':
    # The evaluator role: `evaluate --continuous` (what train_and_evaluate's evaluator does, plus
    # eval/metrics.json after each checkpoint); it stops after the checkpoint at train.steps.
    input_files.check_files(config, 'eval')
    return _run_evaluator(config, model_dir)  # (`evaluate` is this function's flag)
  if placement.task_type in (None, 'chief', 'master', 'worker'):
    LOG.info('training: strategy %s, %d replica(s) x %d per replica = batch %d per step%s%s',
             placement.strategy, placement.num_replicas, per_replica, config.train.batch_size,
             ' (asynchronous, per worker)' if placement.strategy == 'parameter_server' else '',
             '' if placement.task_type is None else ' [%s:%s]' % (placement.task_type, placement.task_index))
  tf.gfile.MakeDirs(model_dir)
  save_config = lambda: None
  if _is_chief(placement):
    save_config = check_saved_config(config, model_dir, allow_config_change)
  with naming_damaged_records(config, ('train_files', 'eval_files') if evaluate else ('train_files',)):
    result = _train(config, model_dir, evaluate, placement)
  save_config()
  return result


class DamagedRecordsError(ValueError):
  """A TFRecord file of the config's data is damaged: the message names the key, the file and the offset."""


@contextlib.contextmanager
def naming_damaged_records(config, keys):
  """Turns a data-loss error of the input pipeline (TensorFlow names neither file nor key) into a
  `DamagedRecordsError` naming the first damaged file matched by the data keys `keys` (e.g. 'train_files';
  a multitask member's as `multitask.<task>.data.<key>`), found by reading only the matched files' records
  after the failure. When no matched file is damaged, the original error is raised."""
  try:
    yield
  except tf.errors.DataLossError as error:
    found = find_damaged_records(config, keys)
    if found is None:
      raise
    key, path, why = found
    raise DamagedRecordsError('%s: %s: %s (re-create this shard)' % (key, path, why)) from error


def find_damaged_records(config, keys):
  """(config key, file, why) of the first damaged file matched by `keys` of the config's data sections."""
  for key in keys:
    for name, member in config.member_configs():
      pattern = getattr(member.data, key)
      files = tfrecord.list_files(pattern) if pattern and tf.io.gfile.glob(pattern) else []
      found = tfrecord.find_damaged(files)
      if found:
        dotted = 'data.%s' % key
        return (dotted if name is None else config.section().member_key(name, dotted),) + found
  return None


def _train(config, model_dir, with_eval, placement):
  task = make_task(config, model_dir)
  estimator = make_estimator(task, model_dir, **distribution_run_config(config, placement))
  if placement.task_type is None and not (with_eval or config.train.evaluate_every_checkpoint):
    estimator.train(task.input_fn(tf.estimator.ModeKeys.TRAIN), max_steps=config.train.steps)
    return None
  eval_inputs = task.eval_input_fns()
  if placement.task_type is None and len(eval_inputs) > 1:
    # train_and_evaluate takes one eval input; a multitask model evaluates each member on its own split.
    estimator.train(task.input_fn(tf.estimator.ModeKeys.TRAIN), max_steps=config.train.steps)
    return evaluate(config, model_dir)
  train_spec = tf.estimator.TrainSpec(task.input_fn(tf.estimator.ModeKeys.TRAIN), max_steps=config.train.steps)
  # (In a cluster the evaluator task runs `evaluate`, which covers every eval input.)
  eval_spec = tf.estimator.EvalSpec(eval_inputs[0][1], steps=config.eval.steps, throttle_secs=0,
                                    start_delay_secs=0)
  result = tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
  metrics = result[0] if isinstance(result, tuple) and result else None
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
  data = {str(k): _jsonable(v) for k, v in sorted(metrics.items())}
  tfrecord.atomic_write(path, json.dumps(data, indent=2, sort_keys=True))
  return data


def evaluate(config, model_dir, checkpoint_path=None, continuous=False):
  """Evaluates the latest (or given) checkpoint; `continuous` follows a training run until it ends.

  Returns the last metrics dict (also written to model_dir/eval/metrics.json).
  """
  task = make_task(config, model_dir)
  if not continuous:
    return _evaluate_held(task, model_dir, config, checkpoint_path)
  metrics = None
  LOG.info('waiting for checkpoints in %s (timeout %ds)', model_dir, config.eval.continuous_timeout_secs)
  for path in tf.train.checkpoints_iterator(model_dir, timeout=config.eval.continuous_timeout_secs,
                                            timeout_fn=lambda: _log_timeout(model_dir)):
    metrics = _evaluate_held(task, model_dir, config, path, latest_if_gone=True)
    if metrics.get(tf.GraphKeys.GLOBAL_STEP, 0) >= config.train.steps:
      break
    LOG.info('waiting for a new checkpoint in %s', model_dir)
  return metrics


def _evaluate_held(task, model_dir, config, checkpoint_path=None, latest_if_gone=False):
  """Metrics of one checkpoint (held against the trainer's rotation: `checkpoints.held`), written to
  model_dir/eval/metrics.json. `latest_if_gone`: a named checkpoint the trainer already removed is replaced
  by the latest (continuous evaluation); else a named checkpoint must exist."""
  with checkpoints.held(model_dir, checkpoint_path, explicit=not latest_if_gone) as path, \
      naming_damaged_records(config, ('eval_files',)):
    metrics = write_metrics(_evaluate_all(task, model_dir, config, path),
                            os.path.join(model_dir, 'eval', 'metrics.json'))
  LOG.info('evaluated step %s (%s): %s', metrics.get(tf.GraphKeys.GLOBAL_STEP), os.path.basename(path), metrics)
  return metrics


def _evaluate_all(task, model_dir, config, checkpoint_path):
  """Metrics of one checkpoint over the task's eval inputs (one per multitask member, keys `<member>/...`)."""
  estimator = make_estimator(task, model_dir, checkpoint_path)
  metrics = {}
  for name, input_fn in task.eval_input_fns():
    result = estimator.evaluate(input_fn, steps=config.eval.steps, checkpoint_path=checkpoint_path, name=name)
    for key, value in result.items():
      if name and key != tf.GraphKeys.GLOBAL_STEP and not key.startswith(name + '/'):
        key = '%s/%s' % (name, key)
      metrics[key] = value
  return metrics


def _run_evaluator(config, model_dir):
  """The evaluator task of a TF_CONFIG cluster: evaluates each new checkpoint until train.steps."""
  return evaluate(config, model_dir, continuous=True)


def _log_timeout(model_dir):
  LOG.info('no new checkpoint in %s before the timeout; stopping', model_dir)
  return True


def export(config, model_dir, export_dir=None, checkpoint_path=None, fold_batch_norm=True, input_type=None):
  """Exports a SavedModel (serving signatures of the task, batch norm folded); returns its directory.

  See `pipelines.export.saved_model_export` for the signatures; `input_type` picks `serving_default` where the
  task offers a choice (detection: the OD API's input types); `fold_batch_norm=False` keeps the Estimator export.
  """
  task = make_task(config, model_dir)
  base = export_dir or os.path.join(model_dir, 'export')
  if not fold_batch_norm and input_type:
    raise ValueError('--input-type applies to the folded SavedModel export')
  task.serving_signature(input_type)  # a bad --input-type fails before the checkpoint is held
  with checkpoints.held(model_dir, checkpoint_path, what='export') as path:
    if fold_batch_norm:
      from pipelines.export import saved_model_export  # pylint: disable=g-import-not-at-top
      return saved_model_export.export(task, base, path, input_type)
    return _estimator_export(task, model_dir, base, path)


def _estimator_export(task, model_dir, base, checkpoint_path):
  estimator = make_estimator(task, model_dir, checkpoint_path)
  before = set(tf.io.gfile.listdir(base)) if tf.io.gfile.isdir(base) else set()
  try:
    path = estimator.export_saved_model(base, task.serving_input_receiver_fn(), checkpoint_path=checkpoint_path)
  except Exception:
    _remove_new_temp_dirs(base, before)  # TF 1.15 leaves an empty 'temp-<timestamp>' dir behind
    raise
  return path.decode('utf-8') if isinstance(path, bytes) else path


def _remove_new_temp_dirs(base, before):
  if not tf.io.gfile.isdir(base):
    return
  for name in set(tf.io.gfile.listdir(base)) - before:
    if name.rstrip('/').startswith('temp-'):
      tf.io.gfile.rmtree(os.path.join(base, name))


# The checkpoints in model_dir would not restore, or would restore into a different model, after a change of
# these keys.
_GRAPH_KEYS = ('task', 'model.', 'multitask.output_stride', 'train.optimizer', 'train.moving_average_decay')


def graph_keys():
  """Dotted keys (or prefixes) of the saved config whose change makes a different graph or variables: the
  shared ones and every registered task's section."""
  return _GRAPH_KEYS + tuple('%s.' % name for name in registry.names() if registry.section_type(name) is not None
                             and not config_schema.composes(name))


def _flatten(data, prefix=''):
  flat = {}
  for key, value in data.items():
    dotted = prefix + str(key)
    if isinstance(value, dict) and value:
      flat.update(_flatten(value, dotted + '.'))
    else:
      flat[dotted] = value
  return flat


def config_differences(saved, current):
  """Dotted keys whose values differ between two config dicts and that change the graph (`graph_keys`).

  The saved dict is completed with the schema's defaults first (a config saved before a key existed holds
  its default); when it no longer loads (e.g. written by a newer version), only keys in both are compared.
  """
  from pipelines import config_lib  # pylint: disable=g-import-not-at-top
  try:
    saved = config_schema.to_dict(config_lib.from_dict(config_schema.Config, saved))
    both = False
  except (config_lib.ConfigError, TypeError):
    both = True
  old, new = _flatten(saved), _flatten(current)
  keys = (set(old) & set(new)) if both else (set(old) | set(new))
  keys = sorted(k for k in keys if old.get(k) != new.get(k))
  return [k for k in keys if any(k == g or (g.endswith('.') and k.startswith(g)) for g in graph_keys())]


def check_saved_config(config, model_dir, allow_change=False):
  """Compares `config` with model_dir/config.yaml; returns the function that saves `config` there.

  A first run saves at once (a killed run still leaves its config). When the saved config differs in a
  graph key, this raises a ValueError listing the keys, unless `allow_change`; the new config is then
  saved only by the returned function, which `train` calls when the run ends, so a failing run never
  overwrites the original.
  """
  import yaml  # pylint: disable=g-import-not-at-top
  path = os.path.join(model_dir, config_schema.FILE_NAME)
  current = config_schema.to_dict(config)
  save = lambda: config_schema.save(config, path)
  if not tf.io.gfile.exists(path):
    save()
    return lambda: None
  with tf.io.gfile.GFile(path, 'r') as f:
    saved = yaml.safe_load(f.read()) or {}
  differences = config_differences(saved, current)
  if not differences:
    save()  # same graph: record this run's values (steps, files, ...)
    return lambda: None
  if not allow_change:
    raise ValueError('%s was saved by an earlier run with other values of %s, which change the model: use '
                     'another --model-dir, or pass --allow-config-change to train on with the new values'
                     % (path, ', '.join(differences)))
  LOG.warning('warning: config changed from %s in %s; saving the new config when the run ends',
              path, ', '.join(differences))
  done = []

  def save_at_end():
    if not done:
      done.append(True)
      save()
  return save_at_end
