"""Where the model runs: distribution strategy, per-replica batch, sync batch norm, mixed precision, XLA.

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
tests/pipelines/test_runtime.py, cluster_util.py): all four run on both stacks, so `UNSUPPORTED` is empty; a
stack that cannot run a strategy goes there and `make_distribution` raises a one-line ValueError for it.

Sync batch norm (`sync_batch_norm`): a drop-in for `slim.batch_norm` whose training-mode moments are those
of the global batch (the per-replica sum, sum of squares and count are all-reduced), with exactly the
variables of `slim.batch_norm`.

Mixed precision (`mixed_precision_optimizer`, `mixed_precision_session_config`): float16 = dynamic loss
scaling + grappler's auto mixed precision rewrite (GPU); bfloat16 = grappler's oneDNN bfloat16 rewrite (CPUs
with AVX512_BF16 / AMX, TensorFlow 2.x). Variables stay float32. XLA (`xla_session_config`): global JIT.
"""
import copy
import json
import logging
import os

import tensorflow.compat.v1 as tf
import tf_slim as slim
from tf_slim.layers import utils as slim_utils

from nets import compat  # noqa: F401  (tf-slim batch_norm shim for TF 2.15)

LOG = logging.getLogger('mnv2')

# Config keys named in error messages and warnings (the config layer owns the names).
STRATEGY_KEY = 'runtime.distribution.strategy'
NUM_DEVICES_KEY = 'runtime.distribution.num_devices'
CPU_DEVICES_KEY = 'runtime.distribution.cpu_devices'
BATCH_SIZE_KEY = 'train.batch_size'
MIXED_PRECISION_KEY = 'runtime.mixed_precision'
XLA_KEY = 'runtime.xla'

STRATEGIES = ('none', 'mirrored', 'multi_worker_mirrored', 'parameter_server')
PRECISIONS = (None, 'float16', 'bfloat16')
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


# ----------------------------------------------------------------------------------------------------------
# Sync batch norm


def _static_bool(value):
  """True / False for a Python or constant bool (tensor), None when only known at run time."""
  static = tf.get_static_value(value)
  return None if static is None else bool(static)


def _replica_count():
  """Replicas in sync of the current replica context (1 outside a strategy or in cross-replica context)."""
  if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
    return 1
  return tf.distribute.get_replica_context().num_replicas_in_sync


def _reduce_sum_across_replicas(value):
  """SUM of a dense tensor over the replicas in sync, on every replica (no gradient)."""
  def merge_fn(strategy, per_replica):
    return strategy.extended.reduce_to(tf.distribute.ReduceOp.SUM, per_replica, destinations=per_replica)
  return tf.distribute.get_replica_context().merge_call(merge_fn, args=(value,))


_ALL_REDUCE_GRADIENT = 'MobilenetV2SyncBatchNormAllReduceSum'
try:
  @tf.RegisterGradient(_ALL_REDUCE_GRADIENT)
  def _all_reduce_sum_gradient(op, grad):  # pylint: disable=unused-argument
    return _reduce_sum_across_replicas(tf.convert_to_tensor(grad))
except KeyError:  # module reloaded: already registered
  pass


def _all_reduce_sum(value):
  """SUM of `value` over the replicas; differentiable: the gradient of an all-sum is the all-sum of gradients.

  Not `ReplicaContext.all_reduce`: its graph-mode custom_gradient walks the graph back from the reduced
  value into the other replicas' towers and fails on both stacks under MirroredStrategy ("Unsuccessful at
  finding variable conv1/weights/replica_1"). Here the forward value is the (gradient-free) reduction and
  an Identity with an overridden gradient carries the backward all-reduce.
  """
  with tf.get_default_graph().gradient_override_map({'Identity': _ALL_REDUCE_GRADIENT}):
    carrier = tf.identity(value)
  reduced = _reduce_sum_across_replicas(tf.stop_gradient(value))
  # Value: exactly `reduced` (carrier - carrier == 0); gradient: through `carrier`.
  return reduced + (carrier - tf.stop_gradient(carrier))


def _batch_norm(inputs, decay=0.999, center=True, scale=False, epsilon=0.001, activation_fn=None,
                param_initializers=None, param_regularizers=None, updates_collections=tf.GraphKeys.UPDATE_OPS,
                is_training=True, reuse=None, variables_collections=None, outputs_collections=None,
                trainable=True, batch_weights=None, fused=None, data_format='NHWC', zero_debias_moving_mean=False,
                scope=None, renorm=False, renorm_clipping=None, renorm_decay=0.99, adjustment=None):
  """slim.batch_norm's signature; training under more than one replica all-reduces the moments."""
  args = dict(decay=decay, center=center, scale=scale, epsilon=epsilon, activation_fn=activation_fn,
              param_initializers=param_initializers, param_regularizers=param_regularizers,
              updates_collections=updates_collections, is_training=is_training, reuse=reuse,
              variables_collections=variables_collections, outputs_collections=outputs_collections,
              trainable=trainable, batch_weights=batch_weights, fused=fused, data_format=data_format,
              zero_debias_moving_mean=zero_debias_moving_mean, scope=scope, renorm=renorm,
              renorm_clipping=renorm_clipping, renorm_decay=renorm_decay, adjustment=adjustment)
  if _static_bool(is_training) is False or _replica_count() == 1:
    return slim.batch_norm(inputs, **args)
  unsupported = [name for name, value in (('batch_weights', batch_weights), ('renorm', renorm),
                                          ('adjustment', adjustment),
                                          ('zero_debias_moving_mean', zero_debias_moving_mean)) if value]
  if unsupported:
    raise ValueError('sync_batch_norm: %s not supported across replicas' % ', '.join(unsupported))
  del args['batch_weights'], args['renorm'], args['renorm_clipping'], args['renorm_decay'], args['adjustment']
  del args['zero_debias_moving_mean']
  return batch_norm_synchronized(inputs, _all_reduce_sum, **args)


# Share slim.batch_norm's arg_scope entry: `slim.arg_scope([slim.batch_norm], decay=..., is_training=...)` (what
# the backbone and training_scope set) applies to sync_batch_norm too, and arg_scope([sync_batch_norm], ...)
# is the same as arg_scope([slim.batch_norm], ...).
_batch_norm._key_op = slim.batch_norm._key_op  # pylint: disable=protected-access
sync_batch_norm = slim.add_arg_scope(_batch_norm)
sync_batch_norm.__doc__ = """Drop-in for `slim.batch_norm` with cross-replica (global-batch) moments.

Same signature, defaults and arg_scope entry as `slim.batch_norm`. In training mode under a strategy with
more than one replica in sync, the per-channel sum, sum of squares and element count are all-reduced
(one differentiable cross-replica sum per layer), so the normalization, the gradients and the moving-average
updates use the statistics of the global batch; the moving variance gets the same Bessel convention as
slim (unbiased for the default fused path, biased with fused=False). Outside a strategy, with one replica,
or in eval mode it *is* `slim.batch_norm`. Variables are exactly slim's (`BatchNorm/gamma`, `beta`,
`moving_mean`, `moving_variance`: shapes, initializers, ON_READ/MEAN moving statistics, model-variable and
trainable collections, update ops in `updates_collections`), so public checkpoints load.

Use: `slim.arg_scope([slim.conv2d, slim.separable_conv2d], normalizer_fn=sync_batch_norm)`.
Not supported across replicas: batch_weights, renorm, adjustment, zero_debias_moving_mean (ValueError).
"""


def _bn_variable(name, shape, dtype, initializer, regularizer=None, trainable=True, collections_set=None,
                 on_read=False):
  """One batch-norm variable made the way slim.batch_norm's layer makes it (slim.model_variable getter)."""
  kwargs = {}
  if on_read:
    kwargs = dict(synchronization=tf.VariableSynchronization.ON_READ, aggregation=tf.VariableAggregation.MEAN)
  var = slim.model_variable(name, shape=shape, dtype=dtype, initializer=initializer, regularizer=regularizer,
                            trainable=trainable and not on_read, **kwargs)
  for collection in slim_utils.get_variable_collections(collections_set, name) or []:
    if var not in tf.get_collection(collection):
      tf.add_to_collection(collection, var)
  return var


def batch_norm_synchronized(inputs, all_reduce_sum, decay=0.999, center=True, scale=False, epsilon=0.001,
                            activation_fn=None, param_initializers=None, param_regularizers=None,
                            updates_collections=tf.GraphKeys.UPDATE_OPS, is_training=True, reuse=None,
                            variables_collections=None, outputs_collections=None, trainable=True, fused=None,
                            data_format='NHWC', scope=None):
  """Training batch norm whose moments are reduced by `all_reduce_sum` (tensor -> tensor summed over replicas).

  The sync path of `sync_batch_norm`; with `all_reduce_sum=tf.identity` it computes what slim.batch_norm
  computes on one device (tests use that to check the variables and numbers against slim in one process).
  `is_training` may be True or a bool tensor (the moments are then always all-reduced, so every replica
  runs the same collectives, and the moving statistics are used when it is False).
  """
  training = _static_bool(is_training)
  if training is False:
    raise ValueError('batch_norm_synchronized: is_training must be True or a bool tensor (eval mode is '
                     'slim.batch_norm; sync_batch_norm switches to it)')
  inputs = tf.convert_to_tensor(inputs)
  rank = inputs.get_shape().ndims
  if rank not in (2, 4):
    raise ValueError('sync_batch_norm: inputs must have rank 2 or 4, got shape %s' % inputs.get_shape())
  axis = 1 if data_format == 'NCHW' and rank == 4 else rank - 1
  channels = inputs.get_shape().as_list()[axis]
  if channels is None:
    raise ValueError('sync_batch_norm: the channel dimension of %s must be known' % inputs.get_shape())
  reduce_axes = [i for i in range(rank) if i != axis]
  param_dtype = tf.float32 if inputs.dtype.base_dtype in (tf.float16, tf.bfloat16) else inputs.dtype.base_dtype
  initializers = param_initializers or {}
  regularizers = param_regularizers or {}
  with tf.variable_scope(scope, 'BatchNorm', [inputs], reuse=reuse) as sc:
    # slim.batch_norm's layer creates gamma, beta, moving_mean, moving_variance in this order.
    gamma = beta = None
    if scale:
      gamma = _bn_variable('gamma', [channels], param_dtype, initializers.get('gamma', tf.ones_initializer()),
                           regularizers.get('gamma'), trainable, variables_collections)
    if center:
      beta = _bn_variable('beta', [channels], param_dtype, initializers.get('beta', tf.zeros_initializer()),
                          regularizers.get('beta'), trainable, variables_collections)
    moving_mean = _bn_variable('moving_mean', [channels], param_dtype,
                               initializers.get('moving_mean', tf.zeros_initializer()),
                               collections_set=variables_collections, on_read=True)
    moving_variance = _bn_variable('moving_variance', [channels], param_dtype,
                                   initializers.get('moving_variance', tf.ones_initializer()),
                                   collections_set=variables_collections, on_read=True)

    x = tf.cast(inputs, param_dtype)
    local_count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), reduce_axes)), param_dtype)
    # One collective per layer: [sum (C), sum of squares (C), count (1)].
    stats = tf.concat([tf.reduce_sum(x, reduce_axes), tf.reduce_sum(tf.square(x), reduce_axes),
                       tf.reshape(local_count, [1])], 0)
    stats = all_reduce_sum(stats)
    total, total_squares, count = stats[:channels], stats[channels:2 * channels], stats[2 * channels]
    mean = total / count
    variance = tf.nn.relu(total_squares / count - tf.square(mean))  # >= 0 despite rounding
    # slim's default (fused) path updates the moving variance with the unbiased batch variance.
    if fused is None or fused:
      update_variance = variance * count / tf.maximum(count - 1.0, 1.0)
    else:
      update_variance = variance
    momentum = tf.constant(1.0 - decay, param_dtype)
    if training is None:  # bool tensor: batch statistics when true, moving statistics (and no update) when false
      is_training = tf.convert_to_tensor(is_training, tf.bool)
      batch_mean, batch_variance = mean, variance
      mean = tf.cond(is_training, lambda: batch_mean, lambda: tf.identity(moving_mean))
      variance = tf.cond(is_training, lambda: batch_variance, lambda: tf.identity(moving_variance))
      momentum *= tf.cast(is_training, param_dtype)
      update_mean = batch_mean
    else:
      update_mean = mean

    def moving_average_update(variable, value):
      with tf.name_scope('AssignMovingAvg') as name:
        return tf.assign_sub(variable, (variable - tf.stop_gradient(value)) * momentum, name=name)

    update_ops = [moving_average_update(moving_mean, update_mean),
                  moving_average_update(moving_variance, update_variance)]

    shape = [1] * rank
    shape[axis] = channels

    def broadcast(value):
      return value if axis == rank - 1 else tf.reshape(value, shape)

    outputs = tf.nn.batch_normalization(x, broadcast(mean), broadcast(variance),
                                        None if beta is None else broadcast(beta),
                                        None if gamma is None else broadcast(gamma), epsilon)
    if updates_collections is None:
      with tf.control_dependencies(update_ops):
        outputs = tf.identity(outputs)
    else:
      for op in update_ops:
        tf.add_to_collections(updates_collections, op)
    outputs = tf.cast(outputs, inputs.dtype)
    if activation_fn is not None:
      outputs = activation_fn(outputs)
    return slim_utils.collect_named_outputs(outputs_collections, sc.name, outputs)


# ----------------------------------------------------------------------------------------------------------
# Mixed precision

_WARNED = set()


def _warn_once(message, *args):
  text = message % args
  if text not in _WARNED:
    _WARNED.add(text)
    LOG.warning(text)


def cpu_flags(path='/proc/cpuinfo'):
  """The `flags` of the first CPU in /proc/cpuinfo (empty set when unreadable)."""
  try:
    with tf.io.gfile.GFile(path, 'r') as f:
      for line in f:
        if line.startswith('flags'):
          return set(line.split(':', 1)[1].split())
  except (IOError, OSError, tf.errors.OpError):
    pass
  return set()


def cpu_supports_bfloat16(flags=None):
  flags = cpu_flags() if flags is None else flags
  return bool({'avx512_bf16', 'amx_bf16'} & set(flags))


def _onednn_disabled():
  return os.environ.get('TF_ENABLE_ONEDNN_OPTS', '').strip().lower() in ('0', 'false')


def _check_precision(precision):
  if precision in ('none', 'null', 'float32'):
    return None
  if precision not in PRECISIONS:
    raise ValueError('%s: unknown %r (valid: null, float16, bfloat16)' % (MIXED_PRECISION_KEY, precision))
  return precision


def effective_precision(precision, emulate_float16_on_cpu=False, gpus=None, flags=None):
  """What `precision` turns into on this host: None, 'float16', 'float16-cpu-emulation' or 'bfloat16'.

  Logs ONE warning (per process and message, logger 'mnv2') when the setting cannot take effect and says
  what it falls back to. `emulate_float16_on_cpu` (TensorFlow 2.x only) uses grappler's
  `auto_mixed_precision_cpu`, which inserts the float16 casts around float32 CPU kernels: a way to see the
  float16 graph without a GPU (tests), not a speed-up.
  """
  precision = _check_precision(precision)
  if precision is None:
    return None
  if precision == 'float16':
    if (visible_gpus() if gpus is None else gpus):
      return 'float16'
    if emulate_float16_on_cpu and not TF1:
      return 'float16-cpu-emulation'
    _warn_once('%s: float16 needs a GPU and none is visible: computing in float32 (dynamic loss scaling stays '
               'on, so checkpoints match a GPU run)', MIXED_PRECISION_KEY)
    return None
  if TF1:
    _warn_once('%s: bfloat16 needs TensorFlow 2.x (oneDNN auto mixed precision); %s computes in float32',
               MIXED_PRECISION_KEY, STACK)
    return None
  if not cpu_supports_bfloat16(flags):
    _warn_once('%s: bfloat16 needs a CPU with AVX512_BF16 or AMX (no avx512_bf16 / amx_bf16 in '
               '/proc/cpuinfo): computing in float32', MIXED_PRECISION_KEY)
    return None
  if _onednn_disabled():
    _warn_once('%s: bfloat16 needs oneDNN but TF_ENABLE_ONEDNN_OPTS=0: computing in float32',
               MIXED_PRECISION_KEY)
    return None
  return 'bfloat16'


def mixed_precision_optimizer(optimizer, precision):
  """`optimizer` wrapped for `precision`: float16 -> dynamic loss scaling; otherwise unchanged.

  float16 always gets the loss scale (also where the float16 rewrite falls back to float32), so the
  checkpoint has the same variables (`current_loss_scale`, `good_steps`) on every host and a run can move
  between a GPU and a CPU machine. A float32 graph restores such a checkpoint (extra keys are ignored).
  """
  if _check_precision(precision) == 'float16':
    return tf.train.experimental.MixedPrecisionLossScaleOptimizer(optimizer, 'dynamic')
  return optimizer


def mixed_precision_session_config(precision, session_config=None, emulate_float16_on_cpu=False, gpus=None,
                                   flags=None):
  """A copy of `session_config` with the grappler rewrite of `precision` switched on (if it can take effect).

  float16: `auto_mixed_precision` (GPU; what enable_mixed_precision_graph_rewrite does, without its
  process-global state); float16 emulated on CPU: `auto_mixed_precision_cpu` (TF 2.x); bfloat16:
  `auto_mixed_precision_onednn_bfloat16` (TF 2.x, CPUs with AVX512_BF16 / AMX).
  """
  from tensorflow.core.protobuf import rewriter_config_pb2  # pylint: disable=g-import-not-at-top
  config = tf.ConfigProto(allow_soft_placement=True) if session_config is None else copy.deepcopy(session_config)
  mode = effective_precision(precision, emulate_float16_on_cpu, gpus, flags)
  field = {'float16': 'auto_mixed_precision', 'float16-cpu-emulation': 'auto_mixed_precision_cpu',
           'bfloat16': 'auto_mixed_precision_onednn_bfloat16'}.get(mode)
  if field:
    setattr(config.graph_options.rewrite_options, field, rewriter_config_pb2.RewriterConfig.ON)
  return config


# ----------------------------------------------------------------------------------------------------------
# XLA


def xla_session_config(enabled, session_config=None, gpus=None):
  """A copy of `session_config` with XLA's global JIT (`global_jit_level = ON_1`) when `enabled`.

  Global JIT only clusters GPU ops unless TF_XLA_FLAGS has --tf_xla_cpu_global_jit; with no GPU visible
  this adds that flag to the environment. TensorFlow reads TF_XLA_FLAGS once, at the first session of the
  process, so call this before any session is created (the flag is then on for the rest of the process).
  Both stacks' CPU wheels have the XLA CPU JIT (measured: _XlaCompile/_XlaRun in the partition graphs).
  """
  config = tf.ConfigProto(allow_soft_placement=True) if session_config is None else copy.deepcopy(session_config)
  if not enabled:
    return config
  config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
  if not (visible_gpus() if gpus is None else gpus):
    flags = os.environ.get('TF_XLA_FLAGS', '')
    if '--tf_xla_cpu_global_jit' not in flags:
      os.environ['TF_XLA_FLAGS'] = (flags + ' --tf_xla_cpu_global_jit').strip()
      LOG.info('%s: no GPU visible; added --tf_xla_cpu_global_jit to TF_XLA_FLAGS so XLA clusters CPU ops '
               '(takes effect only if no session was created before)', XLA_KEY)
  return config
