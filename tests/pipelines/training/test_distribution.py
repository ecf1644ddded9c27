"""The skeleton does not rule out distribution: MirroredStrategy over two logical CPUs trains with slim batch
norm and one set of moving averages (GPU users get the same code path with real devices).

The training runs in a child process: on TF 2.15 the device list is fixed when the eager context first starts,
so another test in the same process may already have started it with one CPU.
"""
import os
import subprocess
import sys

import tensorflow.compat.v1 as tf

from pipelines.training import runner
from tests.conftest import tiny_imagenet_records

CONFIG = """
task: classification
model: {depth_multiplier: 0.35}
classification: {image_size: 32, num_classes: 3}
data: {train_files: '%(data)s/train-*', eval_files: '%(data)s/train-*', num_train_examples: 8, shuffle_buffer: 8}
train: {batch_size: 4, steps: 3}
runtime: {save_checkpoints_steps: 3, seed: 1}
"""


def test_mirrored_strategy_on_two_cpus(tmp_path):
  code = 'import sys; from tests.pipelines.training import test_distribution as t; t.train_mirrored(sys.argv[1])'
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
  result = subprocess.run([sys.executable, '-c', code, str(tmp_path)], cwd=root, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:]
  assert 'MIRRORED OK' in result.stdout


def train_mirrored(tmp_dir):
  """Converts a tiny dataset, trains 3 steps under MirroredStrategy and checks the checkpoint."""
  import pathlib  # pylint: disable=g-import-not-at-top
  tmp_path = pathlib.Path(tmp_dir)
  records = tiny_imagenet_records(tmp_path, 2)
  path = str(tmp_path / 'config.yaml')
  with open(path, 'w') as f:
    f.write(CONFIG % {'data': records})
  config = runner.load_config(path, (), 'train')
  task = runner.make_task(config)
  model_dir = str(tmp_path / 'model')
  estimator = runner.make_estimator(task, model_dir, train_distribute=tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']),
                                    session_config=tf.ConfigProto(device_count={'CPU': 2}))
  estimator.train(task.input_fn(tf.estimator.ModeKeys.TRAIN), max_steps=3)
  checkpoint = tf.train.latest_checkpoint(model_dir)
  assert checkpoint.endswith('-3')
  names = [name for name, _ in tf.train.list_variables(checkpoint)]
  assert 'MobilenetV2/Conv/weights/ExponentialMovingAverage' in names
  assert 'MobilenetV2/Conv/BatchNorm/moving_mean' in names
  assert not [n for n in names if 'replica' in n]
  print('MIRRORED OK')
