"""The one model_fn skeleton shared by every task.

A task (`pipelines.tasks.base.Task`) writes four graph methods -- `build_outputs`, `build_losses`,
`build_metrics`, `build_predictions` -- plus its input and serving functions. The skeleton owns everything else: modes,
regularization loss, learning-rate schedule and optimizer, the UPDATE_OPS dependency (batch-norm moving
statistics), gradient clipping, the exponential moving average of weights (used by eval and export through
the Saver of the scaffold), warm start, summaries and progress logging.

Nothing here pins a device or builds per-replica state by hand, so `tf.distribute` strategies passed to
the RunConfig keep working; loss scaling for mixed precision can wrap the optimizer in `_train_op`.
"""
import logging
import re
import time

import tensorflow.compat.v1 as tf

from pipelines.training import checkpoints
from pipelines.training import precision
from pipelines.training import optimization
from pipelines.training import warm_start as warm_start_lib

ModeKeys = tf.estimator.ModeKeys
# Progress goes to the 'mnv2' logger (the CLI prints it), not to TensorFlow's verbose INFO stream.
LOG = logging.getLogger('mnv2')


class ProgressHook(tf.train.SessionRunHook):
  """Logs step, losses, learning rate and examples/s every `every_n_steps` steps."""

  def __init__(self, tensors, batch_size, every_n_steps, printer=None):
    self._tensors = tensors
    self._batch_size = batch_size
    self._every = every_n_steps
    self._print = printer or LOG.info
    self._last = None

  def begin(self):
    self._step_tensor = tf.train.get_global_step()

  def before_run(self, run_context):
    return tf.train.SessionRunArgs({'step': self._step_tensor, 'values': self._tensors})

  def after_run(self, run_context, run_values):
    step = int(run_values.results['step']) + 1
    now = time.time()
    if self._last is None:
      self._last = (step, now)
      return
    if step % self._every and step != 1:
      return
    last_step, last_time = self._last
    rate = (step - last_step) * self._batch_size / max(now - last_time, 1e-9)
    values = '  '.join('%s %.4g' % (k, v) for k, v in sorted(run_values.results['values'].items()))
    self._print('step %d  %s  %.1f examples/s' % (step, values, rate))
    self._last = (step, now)


def _moving_average(config, global_step=None):
  """TF-Slim's weight average (`train_image_classifier`): decay `train.moving_average_decay`, and with the
  global step as `num_updates` the decay used is min(decay, (1 + step) / (10 + step)), so the average
  follows the weights from the first steps instead of staying near their initial values."""
  decay = config.train.moving_average_decay
  return None if decay is None else tf.train.ExponentialMovingAverage(decay, num_updates=global_step)


EMA_SUFFIX = '/ExponentialMovingAverage'
_BN_STATISTICS = ('/moving_mean', '/moving_variance')


def averaged_variables(resume=None):
  """What the weight average covers: the trainable variables and the batch-norm moving statistics
  (`tf.moving_average_variables()`, and slim's `moving_mean` / `moving_variance`, which TF 2.15's layers
  leave out of that collection), as TF-Slim averages every model variable. Replica copies excluded.

  `resume`: the checkpoint training resumes from. One written before the statistics were averaged (it has
  averages, but none of them) resumes as it was trained: without averaging them. Under a distribution
  strategy the statistics are synchronized on read (each replica keeps its own), which the average cannot
  update in cross-replica context on TF 1.15: there only the weights are averaged (eval and export then
  read the statistics as they are).
  """
  variables, seen = [], set()
  statistics = [v for v in tf.global_variables() if v.op.name.endswith(_BN_STATISTICS)]
  statistics += tf.moving_average_variables()
  if tf.distribute.has_strategy():
    statistics = []
  if resume and _has_moving_averages(resume):
    stored = set(name for name, _ in tf.train.list_variables(resume))
    if not any(name.endswith(_BN_STATISTICS[0] + EMA_SUFFIX) for name in stored):
      statistics = []
  for variable in tf.trainable_variables() + statistics:
    name = variable.op.name
    if name not in seen and not _REPLICA_COPY.search(name):
      seen.add(name)
      variables.append(variable)
  return variables


def _has_moving_averages(checkpoint):
  """False when `checkpoint` (a prefix) exists but holds no `.../ExponentialMovingAverage` variable."""
  if not checkpoint:
    return True
  try:
    names = [name for name, _ in tf.train.list_variables(checkpoint)]
  except (tf.errors.OpError, ValueError):
    return True  # unreadable: let the restore report it
  return any(name.endswith(EMA_SUFFIX) for name in names)


_REPLICA_COPY = re.compile(r'/replica_\d+$')


def check_checkpoint(checkpoint, variables):
  """Raises ValueError naming the variables when `checkpoint` cannot restore `variables` as they are.

  TensorFlow 2's restore assigns a tensor of another shape without complaint (and fails later, somewhere
  else), TF 1.15's names a graph node: this names the checkpoint, the variable and both shapes.

  Args:
    checkpoint: checkpoint prefix or None (nothing to check).
    variables: dict checkpoint name -> variable (what the Saver will restore).
  """
  if not checkpoint:
    return
  try:
    stored = dict(tf.train.list_variables(checkpoint))
  except (tf.errors.OpError, ValueError):
    return  # unreadable: the restore reports it
  problems = []
  for name, variable in sorted(variables.items()):
    shape = variable.shape.as_list() if variable.shape.is_fully_defined() else None
    if name not in stored:
      problems.append('%s is not in it' % name)
    elif shape is not None and list(stored[name]) != shape:
      problems.append('%s has shape %s there but %s in the model' % (name, list(stored[name]), shape))
  if problems:
    more = ' (and %d more)' % (len(problems) - 3) if len(problems) > 3 else ''
    raise ValueError('the checkpoint %s does not match the model this config builds: %s%s; use the config it '
                     'was trained with (model.*, the task section: num_classes, ...) or another --model-dir / '
                     '--checkpoint' % (checkpoint, '; '.join(problems[:3]), more))


def _restored_variables(scaffold):
  """dict checkpoint name -> variable of what eval/predict restore (moving averages when the scaffold has them)."""
  if scaffold is not None and scaffold.saver is not None:
    var_list = scaffold.saver._var_list  # pylint: disable=protected-access
    if isinstance(var_list, dict):
      return var_list
  return {v.op.name: v for v in tf.global_variables()}


def _eval_scaffold(config, checkpoint=None):
  """Eval/export read the moving averages of the weights in place of the raw weights (TF-Slim recipe).

  A checkpoint without moving averages (trained with train.moving_average_decay null, or elsewhere) is
  read as it is, with a warning, instead of failing on the missing averages.
  """
  if config.train.moving_average_decay is None:
    return None
  if not _has_moving_averages(checkpoint):
    LOG.warning('warning: checkpoint %s holds no moving averages of the weights; using its raw weights '
                '(train.moving_average_decay is %s)', checkpoint, config.train.moving_average_decay)
    return None
  return tf.train.Scaffold(saver=tf.train.Saver(_averages_to_restore(checkpoint), sharded=True))


def _averages_to_restore(checkpoint):
  """dict checkpoint name -> variable: each variable's `<name>/ExponentialMovingAverage` where the checkpoint
  holds one (weights, and batch-norm statistics since they are averaged too), else the variable itself
  (e.g. the global step, or the statistics of a checkpoint from before they were averaged)."""
  try:
    stored = set(name for name, _ in tf.train.list_variables(checkpoint))
  except (tf.errors.OpError, ValueError):
    stored = None  # unreadable: ask for every trainable variable's average, the restore reports it
  trainable = set(v.op.name for v in tf.trainable_variables())
  var_list = {}
  for variable in tf.global_variables():
    name = variable.op.name
    shadow = name + EMA_SUFFIX
    use = shadow in stored if stored is not None else name in trainable
    var_list[shadow if use else name] = variable
  return var_list


def _train_op(task, total_loss, model_dir):
  config = task.config
  for index, warm in enumerate(task.warm_start_configs()):
    warm_start_lib.warm_start(warm, log_dir=model_dir, log_name='warm_start%s.txt' % ('_%d' % index if index else ''))
  global_step = tf.train.get_or_create_global_step()
  rate = optimization.learning_rate(config.train, config.train.batch_size, config.data.num_train_examples,
                                    global_step)
  tf.summary.scalar('learning_rate', rate)
  # float16: dynamic loss scaling (the loss scale is a checkpointed variable); else unchanged.
  opt = precision.mixed_precision_optimizer(optimization.optimizer(config.train, rate),
                                               config.runtime.mixed_precision)
  grads_and_vars = opt.compute_gradients(total_loss, var_list=tf.trainable_variables())
  if config.train.clip_gradient_norm > 0:
    grads, variables = zip(*grads_and_vars)
    grads, _ = tf.clip_by_global_norm(grads, config.train.clip_gradient_norm)
    grads_and_vars = list(zip(grads, variables))
  # Batch-norm moving statistics only update if the train op depends on UPDATE_OPS.
  with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
    train_op = opt.apply_gradients(grads_and_vars, global_step=global_step)
  ema = _moving_average(config, global_step)
  if ema is not None:
    resume = tf.train.latest_checkpoint(model_dir) if model_dir else None
    train_op = _apply_moving_average(ema, train_op, averaged_variables(resume))
  return train_op, rate


def _apply_moving_average(ema, train_op, variables):
  """Updates the weights' moving averages after `train_op`.

  Under a distribution strategy the averages are created and updated once, in cross-replica context
  (`merge_call`): creating them per replica fails on TF 1.15 and would average each replica separately.
  """

  def apply(strategy, op):
    ops = strategy.experimental_local_results(op) if strategy is not None else [op]
    with tf.control_dependencies(list(ops)):
      return ema.apply(variables)

  if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
    return tf.distribute.get_replica_context().merge_call(apply, args=(train_op,))
  return apply(None, train_op)


def make_model_fn(task, model_dir=None, checkpoint=None):
  """The Estimator model_fn for `task`.

  `checkpoint`: what eval and predict restore (checked against the graph, moving averages chosen by it);
  None = the latest checkpoint in `model_dir`.
  """

  def model_fn(features, labels, mode, params=None, config=None):  # pylint: disable=unused-argument
    is_training = mode == ModeKeys.TRAIN
    outputs = task.model(features, is_training)
    if mode == ModeKeys.PREDICT:
      predictions = task.build_predictions(outputs, features)
      scaffold = _checked_eval_scaffold(task, restore_path(checkpoint, model_dir))
      return tf.estimator.EstimatorSpec(mode, predictions=predictions, export_outputs=task.export_outputs(predictions),
                                        scaffold=scaffold)
    losses = task.build_losses(outputs, labels, features)
    regularization = tf.losses.get_regularization_loss()
    total = tf.add_n(list(losses.values()) + [regularization], name='total_loss')
    for name, value in sorted(losses.items()):
      tf.summary.scalar('losses/%s' % name, value)
    tf.summary.scalar('losses/regularization', regularization)
    tf.summary.scalar('losses/total', total)
    if mode == ModeKeys.EVAL:
      return tf.estimator.EstimatorSpec(mode, loss=total, eval_metric_ops=task.build_metrics(outputs, labels, features),
                                        scaffold=_checked_eval_scaffold(task, restore_path(checkpoint, model_dir)))
    images = task.summary_images(features)
    if images is not None and task.config.train.summary_images > 0:
      tf.summary.image('input_images', images, max_outputs=task.config.train.summary_images)
    train_op, rate = _train_op(task, total, model_dir)
    if model_dir:  # resuming: the last checkpoint must restore into this graph
      # A MirroredStrategy's copies on replicas > 0 ('<name>/replica_1') are saved once, as the primary.
      saved = dict((v.op.name, v) for v in tf.global_variables() if not _REPLICA_COPY.search(v.op.name))
      check_checkpoint(tf.train.latest_checkpoint(model_dir), saved)
    logged = dict(losses, total_loss=total, lr=rate)
    # train.batch_size is the global batch of one step (all replicas), so examples/s counts every replica.
    hook = ProgressHook(logged, task.config.train.batch_size, task.config.runtime.log_every_n_steps)
    return tf.estimator.EstimatorSpec(mode, loss=total, train_op=train_op, training_hooks=[hook],
                                      training_chief_hooks=checkpoints.chief_saver_hooks(task.config, model_dir))

  # Under a distribution strategy TF 2.x runs the model_fn through AutoGraph (call_for_each_replica), which
  # would convert every slim layer of the backbone: minutes of graph building for nothing (graph-mode code).
  # The wrapper keeps the signature the Estimator inspects.
  unconverted = tf.autograph.experimental.do_not_convert(model_fn)

  def estimator_model_fn(features, labels, mode, params=None, config=None):
    return unconverted(features, labels, mode, params, config)

  return estimator_model_fn


def restore_path(checkpoint, model_dir):
  """The checkpoint eval/export/predict restore: `checkpoint` if given, else the latest in `model_dir`."""
  if checkpoint:
    return checkpoint
  return tf.train.latest_checkpoint(model_dir) if model_dir else None


def _checked_eval_scaffold(task, checkpoint):
  """`_eval_scaffold` of the checkpoint eval/predict restore, after checking that it fits the graph."""
  scaffold = _eval_scaffold(task.config, checkpoint)
  check_checkpoint(checkpoint, _restored_variables(scaffold))
  return scaffold
