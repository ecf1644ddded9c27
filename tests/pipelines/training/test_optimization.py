"""Learning-rate schedules (values at chosen steps, by hand) and the optimizer lookup."""
import dataclasses
import math

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from pipelines import config as schema
from pipelines.training import optimization


def _rates(steps_to_check, batch_size=100, num_train_examples=1000, train_steps=100, **schedule):
  """Learning rate at each of `steps_to_check` for a TrainConfig with the given schedule fields."""
  train = schema.TrainConfig(steps=train_steps, learning_rate=schema.LearningRateConfig(**schedule))
  with tf.Graph().as_default():
    step = tf.placeholder(tf.int64, [])
    rate = optimization.learning_rate(train, batch_size, num_train_examples, step)
    with tf.Session() as sess:
      return [float(sess.run(rate, {step: s})) for s in steps_to_check]


def test_constant():
  np.testing.assert_allclose(_rates([0, 50, 1000], schedule='constant', base=0.1), [0.1] * 3, rtol=1e-6)


def test_exponential_per_epoch_staircase_and_smooth():
  # 1000 examples / batch 100 = 10 steps per epoch: the paper's 0.98 decay every epoch.
  staircase = _rates([0, 9, 10, 25], schedule='exponential', base=0.045, decay_rate=0.98, decay_epochs=1.0)
  np.testing.assert_allclose(staircase, [0.045, 0.045, 0.045 * 0.98, 0.045 * 0.98 ** 2], rtol=1e-6)
  smooth = _rates([25], schedule='exponential', base=0.045, decay_rate=0.98, staircase=False)
  np.testing.assert_allclose(smooth, [0.045 * 0.98 ** 2.5], rtol=1e-6)
  # decay_epochs 2.5 of 10 steps: decay every 25 steps.
  np.testing.assert_allclose(_rates([24, 25], schedule='exponential', base=1.0, decay_rate=0.5, decay_epochs=2.5),
                             [1.0, 0.5], rtol=1e-6)


def test_cosine_reaches_end_and_stays():
  got = _rates([0, 50, 100, 150], schedule='cosine', base=1.0, end=0.1)
  np.testing.assert_allclose(got, [1.0, 0.55, 0.1, 0.1], rtol=1e-5)


def test_poly_deeplab():
  got = _rates([0, 50, 100, 200], schedule='poly', base=0.007, power=0.9, end=0.0)
  np.testing.assert_allclose(got, [0.007, 0.007 * 0.5 ** 0.9, 0.0, 0.0], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize('schedule', schema.SCHEDULES)
def test_linear_warmup_then_every_schedule(schedule):
  kwargs = dict(schedule=schedule, base=1.0, warmup_steps=10, warmup_start=0.1, decay_rate=0.5)
  warm = _rates([0, 5, 9], **kwargs)
  np.testing.assert_allclose(warm, [0.1, 0.55, 0.1 + 0.9 * 0.9], rtol=1e-5)
  after, plain = _rates([10, 60], **kwargs), _rates([10, 60], **dict(kwargs, warmup_steps=0))
  np.testing.assert_allclose(after, plain, rtol=1e-6)
  assert math.isclose(after[0], plain[0])


@pytest.mark.parametrize('name,cls', [('rmsprop', tf.train.RMSPropOptimizer), ('momentum', tf.train.MomentumOptimizer),
                                      ('sgd', tf.train.GradientDescentOptimizer), ('adam', tf.train.AdamOptimizer)])
def test_optimizer_lookup(name, cls):
  train = dataclasses.replace(schema.TrainConfig(steps=1), optimizer=name)
  assert isinstance(optimization.optimizer(train, 0.1), cls)


def test_unknown_optimizer_lists_valid_names():
  train = dataclasses.replace(schema.TrainConfig(steps=1), optimizer='lbfgs')
  with pytest.raises(ValueError, match='train.optimizer.*rmsprop, momentum, sgd, adam'):
    optimization.optimizer(train, 0.1)
