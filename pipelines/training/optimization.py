"""Learning-rate schedules and optimizers built from `TrainConfig` (only builders read configs).

Schedules: constant; exponential decay per epoch (the MobileNetV2 paper: 0.045 x 0.98 per epoch);
cosine to `end`; poly (DeepLab: (1 - step/steps)^0.9); each optionally preceded by a linear warmup.
Optimizers: RMSProp (decay 0.9, momentum 0.9, epsilon 1.0 as the paper / TF-Slim), momentum SGD, SGD, Adam.
"""
import math

import tensorflow.compat.v1 as tf


def learning_rate(train_config, batch_size, num_train_examples, global_step):
  """float32 [] learning rate at `global_step` (int64 [])."""
  cfg = train_config.learning_rate
  step = tf.cast(global_step, tf.float32)
  total = float(max(train_config.steps, 1))
  if cfg.schedule == 'constant':
    rate = tf.constant(cfg.base, tf.float32)
  elif cfg.schedule == 'exponential':
    decay_steps = max(1, int(math.ceil(num_train_examples / float(batch_size) * cfg.decay_epochs)))
    rate = tf.train.exponential_decay(cfg.base, global_step, decay_steps, cfg.decay_rate, staircase=cfg.staircase)
  elif cfg.schedule == 'cosine':
    progress = tf.minimum(step, total) / total
    rate = cfg.end + 0.5 * (cfg.base - cfg.end) * (1.0 + tf.cos(math.pi * progress))
  elif cfg.schedule == 'poly':
    progress = tf.minimum(step, total) / total
    rate = (cfg.base - cfg.end) * tf.pow(1.0 - progress, cfg.power) + cfg.end
  else:
    raise ValueError('train.learning_rate.schedule: unknown %r' % cfg.schedule)
  rate = tf.cast(rate, tf.float32)
  if cfg.warmup_steps > 0:
    start = cfg.base * cfg.warmup_start
    warm = start + (cfg.base - start) * step / float(cfg.warmup_steps)
    rate = tf.where(step < cfg.warmup_steps, warm, rate)
  return tf.identity(rate, name='learning_rate')


def optimizer(train_config, rate):
  """A tf.compat.v1 optimizer for `train_config.optimizer` at learning rate `rate`."""
  name = train_config.optimizer
  if name == 'rmsprop':
    return tf.train.RMSPropOptimizer(rate, decay=train_config.rmsprop_decay, momentum=train_config.momentum,
                                     epsilon=train_config.rmsprop_epsilon)
  if name == 'momentum':
    return tf.train.MomentumOptimizer(rate, train_config.momentum)
  if name == 'sgd':
    return tf.train.GradientDescentOptimizer(rate)
  if name == 'adam':
    return tf.train.AdamOptimizer(rate)
  raise ValueError('train.optimizer: unknown %r (valid: rmsprop, momentum, sgd, adam)' % name)
