"""Sync batch norm: a drop-in for `slim.batch_norm` whose training-mode moments are the global batch's.

`sync_batch_norm` all-reduces the per-replica sum, sum of squares and count over the replicas in sync of a
`tf.distribute` strategy, and keeps exactly the variables of `slim.batch_norm` (checkpoints unchanged).
Outside a multi-replica training step it is `slim.batch_norm`. DeepLab's recipe for small per-GPU batches;
`train.sync_batch_norm` turns it on for the backbone and every head (`pipelines.tasks.model_builder`).

Not here: the strategies themselves (`pipelines.training.distribution`).
"""
import tensorflow.compat.v1 as tf
import tf_slim as slim
from tf_slim.layers import utils as slim_utils

from nets import compat  # noqa: F401  pylint: disable=unused-import  (tf-slim batch_norm shim for TF 2.15)


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
