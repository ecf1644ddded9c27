"""Where the model runs: the distribution strategy and the per-replica batch.

Plain-argument building blocks for the Estimator pipelines (the config / runner layer maps its keys onto
them). Every error names the config key it is about, e.g. `runtime.distribution.strategy: ...`.

Strategies (`make_distribution`):

  none                   one device, no strategy object.
  mirrored               synchronous data parallelism over the local GPUs (`num_devices`, 0 = all visible),
                         or, with no GPU visible and `cpu_devices` N > 1, over N logical CPU devices
                         (session `device_count={'CPU': N}`, mirrored over /cpu:0 .. /cpu:N-1).
  multi_worker_mirrored  synchronous all-reduce across the workers of TF_CONFIG (`chief` + `worker`s, or
                         `worker`s only); each worker uses its local GPUs or its CPU. The evaluator task
                         runs without a strategy (it is not part of the collective).
  parameter_server       the Estimator's own TF_CONFIG runtime (chief, worker, ps, evaluator): between-graph,
                         asynchronous updates, no strategy object. Each worker steps on its own batch.

Measured with `tf.estimator.train_and_evaluate` on TensorFlow 1.15.5 and 2.15.1 (docs/distribution.md,
tests/pipelines/training/test_distributed_training.py, cluster_util.py): all four run on both stacks, so
`UNSUPPORTED` is empty; a stack that cannot run a strategy goes there and `make_distribution` raises a one-line
ValueError for it.

Not here: the batch norm whose moments span the replicas (`pipelines.training.sync_batch_norm`), mixed
precision and XLA (`pipelines.training.precision`).
"""
import copy
import json
import logging
import os

import tensorflow.compat.v1 as tf


LOG = logging.getLogger('mnv2')

# Config keys named in error messages and warnings (the config layer owns the names).
STRATEGY_KEY = 'runtime.distribution.strategy'
NUM_DEVICES_KEY = 'runtime.distribution.num_devices'
CPU_DEVICES_KEY = 'runtime.distribution.cpu_devices'
BATCH_SIZE_KEY = 'train.batch_size'

STRATEGIES = ('none', 'mirrored', 'multi_worker_mirrored', 'parameter_server')
TF1 = tf.__version__.startswith('1.')
STACK = 'TensorFlow %s' % '.'.join(tf.__version__.split('.')[:2])

# (major TF version, strategy) -> why the Estimator of that stack cannot run it. Empty: every strategy was
# measured to train to max_steps and stop on both stacks (see the module docstring).
UNSUPPORTED = {}


def _unsupported_reason(strategy):
  return UNSUPPORTED.get((1 if TF1 else 2, strategy))


# ----------------------------------------------------------------------------------------------------------
# Strategy selection


class Distribution(object):
  """What the RunConfig needs for one strategy, and the replica count the input pipeline divides by.

  Attributes:
    strategy: one of STRATEGIES.
    train_distribute: tf.distribute strategy for RunConfig(train_distribute=...), or None.
    eval_distribute: always None: evaluation runs on one device (metrics and py_func evaluators are not
      replica-aware; the evaluator task of a cluster is not part of a collective).
    num_replicas: replicas that share one synchronous step (the global batch is split over them); 1 for
      `none` and `parameter_server` (asynchronous: every worker steps on a whole `train.batch_size`).
    num_workers: training processes of the cluster (chief + workers), 1 locally.
    task_type, task_index: this process's TF_CONFIG task (None locally).
    cpu_devices: N when the host CPU is split into N logical devices, else 0.
    device_filters: the session device filters of a parameter-server task (None otherwise).
  """

  def __init__(self, strategy, train_distribute=None, num_replicas=1, num_workers=1, task_type=None,
               task_index=None, cpu_devices=0, device_filters=None):
    self.strategy = strategy
    self.train_distribute = train_distribute
    self.eval_distribute = None
    self.num_replicas = num_replicas
    self.num_workers = num_workers
    self.task_type = task_type
    self.task_index = task_index
    self.cpu_devices = cpu_devices
    self.device_filters = device_filters

  def session_config(self, base=None):
    """A copy of `base` (tf.ConfigProto or None) with this placement's pieces merged in.

    Sets `device_count['CPU']` for split CPUs and, for parameter-server tasks, the device filters the
    Estimator would set itself if it were given no session_config (without them the chief waits for every
    worker at session creation and a finished worker can block the others).
    """
    config = tf.ConfigProto(allow_soft_placement=True) if base is None else copy.deepcopy(base)
    if self.cpu_devices > 1:
      config.device_count['CPU'] = self.cpu_devices
    if self.device_filters and not config.device_filters:
      config.device_filters.extend(self.device_filters)
    return config

  def run_config_kwargs(self, session_config=None):
    """kwargs for tf.estimator.RunConfig: train_distribute, eval_distribute, session_config.

    Build the RunConfig after TF_CONFIG is set: RunConfig reads the cluster at construction.
    """
    return {'train_distribute': self.train_distribute, 'eval_distribute': self.eval_distribute,
            'session_config': self.session_config(session_config)}

  def __repr__(self):
    return ('Distribution(strategy=%r, num_replicas=%d, num_workers=%d, task=%s:%s, cpu_devices=%d)' % (
        self.strategy, self.num_replicas, self.num_workers, self.task_type, self.task_index, self.cpu_devices))


def read_tf_config(tf_config=None):
  """TF_CONFIG as a dict: `tf_config` itself (dict or JSON string) or the environment variable ({} if unset)."""
  if tf_config is None:
    tf_config = os.environ.get('TF_CONFIG', '')
  if isinstance(tf_config, dict):
    return tf_config
  if not tf_config.strip():
    return {}
  try:
    return json.loads(tf_config)
  except ValueError as e:
    raise ValueError('TF_CONFIG: not valid JSON (%s)' % e)


def visible_gpus():
  """Names of the GPUs TensorFlow sees ('/gpu:0', ...), without creating a session."""
  return ['/gpu:%d' % i for i in range(len(tf.config.experimental.list_physical_devices('GPU')))]


def _error(strategy, message):
  return ValueError('%s: %s %s' % (STRATEGY_KEY, strategy, message))


def make_distribution(strategy='none', num_devices=0, cpu_devices=1, tf_config=None, gpus=None):
  """The placement for `strategy`; ValueError (one line naming the config key) when it cannot run.

  Args:
    strategy: one of STRATEGIES (None = 'none').
    num_devices: mirrored: GPUs to use (0 = every visible GPU).
    cpu_devices: mirrored without a visible GPU: split the host CPU into this many logical devices and
      mirror over them (1 = one replica on /cpu:0).
    tf_config: TF_CONFIG dict or JSON string; None reads the environment variable.
    gpus: visible GPU device names (None = ask TensorFlow); tests pass [] or fake lists.

  Returns:
    A `Distribution`.
  """
  strategy = 'none' if strategy is None else str(strategy)
  if strategy not in STRATEGIES:
    raise ValueError('%s: unknown %r (valid: %s)' % (STRATEGY_KEY, strategy, ', '.join(STRATEGIES)))
  reason = _unsupported_reason(strategy)
  if reason:
    raise _error(strategy, 'is not supported by the Estimator on %s (%s)' % (STACK, reason))
  if num_devices < 0:
    raise ValueError('%s: must be >= 0 (0 = every visible GPU), got %d' % (NUM_DEVICES_KEY, num_devices))
  if cpu_devices < 1:
    raise ValueError('%s: must be >= 1, got %d' % (CPU_DEVICES_KEY, cpu_devices))
  if cpu_devices > 1 and strategy != 'mirrored':
    raise ValueError('%s: %d logical CPU devices need %s: mirrored (got %s)' % (
        CPU_DEVICES_KEY, cpu_devices, STRATEGY_KEY, strategy))
  if num_devices and strategy != 'mirrored':
    raise ValueError('%s: %d applies to %s: mirrored only (%s uses every GPU of each worker or none)' % (
        NUM_DEVICES_KEY, num_devices, STRATEGY_KEY, strategy))
  config = read_tf_config(tf_config)
  cluster = config.get('cluster') or {}
  task = config.get('task') or {}
  task_type, task_index = task.get('type'), task.get('index', 0)
  if strategy in ('none', 'mirrored') and cluster:
    raise _error(strategy, 'runs in one process, but TF_CONFIG describes a cluster (%s); use '
                 'multi_worker_mirrored or parameter_server, or unset TF_CONFIG' % ', '.join(sorted(cluster)))
  if strategy == 'none':
    return Distribution('none')
  if strategy == 'mirrored':
    return _mirrored(num_devices, cpu_devices, visible_gpus() if gpus is None else list(gpus))
  if not cluster:
    raise _error(strategy, 'needs TF_CONFIG with a cluster (%s)' % (
        'chief and/or workers' if strategy == 'multi_worker_mirrored' else 'chief, workers and ps'))
  if task_type is None:
    raise _error(strategy, 'needs the task of this process in TF_CONFIG ({"task": {"type": ..., "index": ...}})')
  num_workers = len(cluster.get('chief', [])) + len(cluster.get('worker', []))
  if strategy == 'multi_worker_mirrored':
    return _multi_worker(cluster, task_type, task_index, num_workers)
  return _parameter_server(cluster, task_type, task_index, num_workers)


def _mirrored(num_devices, cpu_devices, gpus):
  if gpus:
    if num_devices > len(gpus):
      raise ValueError('%s: %d GPUs asked, %d visible' % (NUM_DEVICES_KEY, num_devices, len(gpus)))
    devices = gpus[:num_devices] if num_devices else gpus
    if cpu_devices > 1:
      LOG.warning('%s: %d ignored: mirroring over the %d visible GPU(s)', CPU_DEVICES_KEY, cpu_devices,
                  len(devices))
    return Distribution('mirrored', tf.distribute.MirroredStrategy(devices), num_replicas=len(devices))
  if num_devices:
    raise ValueError('%s: %d GPUs asked, none visible (set %s to split the CPU instead)' % (
        NUM_DEVICES_KEY, num_devices, CPU_DEVICES_KEY))
  if cpu_devices == 1:
    LOG.warning('%s: mirrored with no GPU visible runs one replica on /cpu:0 (set %s > 1 to split the CPU)',
                STRATEGY_KEY, CPU_DEVICES_KEY)
  devices = ['/cpu:%d' % i for i in range(cpu_devices)]
  return Distribution('mirrored', tf.distribute.MirroredStrategy(devices), num_replicas=cpu_devices,
                      cpu_devices=cpu_devices if cpu_devices > 1 else 0)


def _multi_worker(cluster, task_type, task_index, num_workers):
  unknown = sorted(set(cluster) - {'chief', 'worker'})
  if unknown:
    raise _error('multi_worker_mirrored', 'takes a cluster of chief and workers only; TF_CONFIG also has %s' %
                 ', '.join(unknown))
  if task_type == 'evaluator':
    # The evaluator is outside the collective: the strategy cannot even be built there ("task_type
    # 'evaluator' not found in cluster_spec"); it evaluates checkpoints on one device.
    return Distribution('multi_worker_mirrored', None, 1, num_workers, task_type, task_index)
  # Reads TF_CONFIG itself; the V1 class (tf.compat.v1) is the one the Estimator's distribute coordinator
  # drives on both stacks.
  strategy = tf.distribute.experimental.MultiWorkerMirroredStrategy()
  return Distribution('multi_worker_mirrored', strategy, strategy.num_replicas_in_sync, num_workers, task_type,
                      task_index)


def _parameter_server(cluster, task_type, task_index, num_workers):
  if not cluster.get('ps'):
    raise _error('parameter_server', 'needs a ps job in the TF_CONFIG cluster (has %s)' % ', '.join(sorted(cluster)))
  if 'chief' not in cluster and 'master' not in cluster:
    raise _error('parameter_server', 'needs a chief in the TF_CONFIG cluster (has %s)' % ', '.join(sorted(cluster)))
  # The filters tf.estimator.RunConfig sets when it builds the session config itself.
  filters = {'chief': ['/job:ps', '/job:chief'], 'master': ['/job:ps', '/job:master'],
             'worker': ['/job:ps', '/job:worker/task:%d' % task_index],
             'ps': ['/job:ps', '/job:worker', '/job:chief', '/job:master']}.get(task_type)
  return Distribution('parameter_server', None, 1, num_workers, task_type, task_index, device_filters=filters)


def replicas_in_sync(strategy='none', num_devices=0, cpu_devices=1, tf_config=None, gpus=None):
  """The `num_replicas` `make_distribution` gives, without building a strategy (for input pipelines).

  none / parameter_server: 1; mirrored: the GPUs used, else `cpu_devices`; multi_worker_mirrored: workers
  (chief + worker) x max(1, local GPUs); the evaluator task of a cluster: 1.
  """
  strategy = 'none' if strategy is None else str(strategy)
  gpus = visible_gpus() if gpus is None else list(gpus)
  if strategy == 'mirrored':
    return (min(num_devices, len(gpus)) if num_devices else len(gpus)) if gpus else max(1, cpu_devices)
  if strategy == 'multi_worker_mirrored':
    config = read_tf_config(tf_config)
    cluster = config.get('cluster') or {}
    if (config.get('task') or {}).get('type') == 'evaluator':
      return 1
    return max(1, len(cluster.get('chief', [])) + len(cluster.get('worker', []))) * max(1, len(gpus))
  return 1


def per_replica_batch_size(global_batch_size, num_replicas, key=BATCH_SIZE_KEY):
  """The batch each replica's input_fn reads: global / replicas; ValueError naming `key` if it does not divide.

  Under a strategy the Estimator calls input_fn per worker and every replica pulls its own batch from it,
  so the dataset's batch is the per-replica batch.
  """
  if num_replicas < 1:
    raise ValueError('num_replicas must be >= 1, got %d' % num_replicas)
  if global_batch_size < 1:
    raise ValueError('%s: must be >= 1, got %d' % (key, global_batch_size))
  if global_batch_size % num_replicas:
    raise ValueError('%s: %d does not split evenly over %d replicas (use a multiple of %d)' % (
        key, global_batch_size, num_replicas, num_replicas))
  return global_batch_size // num_replicas
