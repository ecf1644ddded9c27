"""Issue #20 item 2: the weight average is TF-Slim's `train_image_classifier`'s.

`tf.train.ExponentialMovingAverage(decay, num_updates=global_step)` over the trainable variables and the
batch-norm moving statistics: at decay 0.9999 the average follows the weights from the first steps (without
`num_updates` it would stay near the initial weights for tens of thousands of steps), and the statistics get
`<name>/ExponentialMovingAverage` shadows that eval and export restore.
"""
import os

import numpy as np
import tensorflow.compat.v1 as tf

from pipelines.training import runner
from tests.conftest import config_from_text
from tests.conftest import tiny_imagenet_records

WEIGHTS = 'MobilenetV2/Conv/weights'
MEAN = 'MobilenetV2/Conv/BatchNorm/moving_mean'
SHADOW = '/ExponentialMovingAverage'


def test_average_follows_the_weights_and_covers_batch_norm_statistics(tmp_path):
  records = tiny_imagenet_records(tmp_path, 3)
  config = config_from_text(tmp_path, '''
task: classification
model: {depth_multiplier: 0.35}
classification: {image_size: 32, num_classes: 4}
data: {train_files: %s/train-*, eval_files: %s/train-*, shuffle_buffer: 4}
train: {batch_size: 4, steps: 1, moving_average_decay: 0.9999, optimizer: sgd, clip_gradient_norm: 1.0,
        learning_rate: {schedule: constant, base: 0.02}}
runtime: {seed: 1, save_checkpoints_steps: 100, log_every_n_steps: 10, save_graph_def: false}
''' % (records, records), mode='train')
  # Plain SGD at 0.05 on 12 images diverged (NaN loss) in one suite run: a smaller, clipped step stays finite
  # and still moves the weights well beyond the test's 1e-3.
  model_dir = str(tmp_path / 'model')
  runner.train(config, model_dir)
  start = tf.train.load_variable(model_dir, WEIGHTS)
  import dataclasses  # pylint: disable=g-import-not-at-top
  runner.train(dataclasses.replace(config, train=dataclasses.replace(config.train, steps=31)), model_dir)
  assert tf.train.latest_checkpoint(model_dir).endswith('-31')
  # runtime.save_graph_def: false (on both stacks): no graph.pbtxt, no .meta; TensorBoard's graph is still in
  # the events file. The run above resumed from such a checkpoint and eval below restores one.
  assert not [n for n in os.listdir(model_dir) if n == 'graph.pbtxt' or n.endswith('.meta')], os.listdir(model_dir)
  assert _events_with_graph(model_dir)
  stored = dict(tf.train.list_variables(model_dir))
  assert MEAN + SHADOW in stored and 'MobilenetV2/Conv/BatchNorm/moving_variance' + SHADOW in stored
  current, average = tf.train.load_variable(model_dir, WEIGHTS), tf.train.load_variable(model_dir, WEIGHTS + SHADOW)
  assert np.abs(current - start).max() > 1e-3  # the weights moved
  assert np.linalg.norm(average - current) < np.linalg.norm(average - start)
  # num_updates: at step 31 the decay used is (1 + 30) / (10 + 30), not 0.9999.
  assert not np.allclose(tf.train.load_variable(model_dir, MEAN + SHADOW), tf.train.load_variable(model_dir, MEAN))
  metrics = runner.evaluate(config, model_dir)  # restores the averaged weights and statistics
  assert metrics['global_step'] == 31
  assert os.path.isfile(os.path.join(model_dir, 'eval', 'metrics.json'))


def _events_with_graph(model_dir):
  """Events in the model dir's event files that carry a graph or meta graph."""
  found = []
  for name in os.listdir(model_dir):
    if name.startswith('events.out.tfevents'):
      for event in tf.train.summary_iterator(os.path.join(model_dir, name)):
        if event.graph_def or event.meta_graph_def:
          found.append(name)
  return found
