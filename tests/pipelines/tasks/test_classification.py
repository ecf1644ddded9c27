"""Classification end to end: convert -> train 2 steps -> eval -> export -> predict; warm start."""
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from datasets import classification_preprocessing
from pipelines.cli import main as cli
from pipelines.cli import predict
from pipelines.training import runner
from tests.conftest import tiny_imagenet_records

CONFIG = """
task: classification
model: {depth_multiplier: 0.35}
classification: {image_size: 32, num_classes: 4, dropout_keep_prob: 0.9}
data: {train_files: '%(data)s/train-*', eval_files: '%(data)s/train-*', labels_file: '%(data)s/labels.txt',
       num_train_examples: 12, shuffle_buffer: 16, num_parallel_reads: 2}
train: {batch_size: 4, steps: 2, learning_rate: {schedule: exponential, base: 0.01}}
eval: {batch_size: 4}
runtime: {save_checkpoints_steps: 2, log_every_n_steps: 1, seed: 1}
"""


@pytest.fixture(scope='module')
def dataset_dir(tmp_path_factory):
  return tiny_imagenet_records(tmp_path_factory.mktemp('imagenet'), 3)


def _config(tmp_path, dataset_dir, overrides=()):
  path = str(tmp_path / 'config.yaml')
  with open(path, 'w') as f:
    f.write(CONFIG % {'data': dataset_dir})
  return path, runner.load_config(path, overrides, 'train')


def test_train_eval_export_predict(tmp_path, dataset_dir):
  path, config = _config(tmp_path, dataset_dir)
  model_dir = str(tmp_path / 'model')
  runner.train(config, model_dir)
  assert tf.train.latest_checkpoint(model_dir).endswith('-2')
  assert os.path.isfile(os.path.join(model_dir, 'config.yaml'))
  # runtime.save_graph_def (default true): TensorFlow's graph.pbtxt and .meta files, as users' tools expect.
  assert os.path.isfile(os.path.join(model_dir, 'graph.pbtxt'))
  assert os.path.isfile(tf.train.latest_checkpoint(model_dir) + '.meta')
  metrics = runner.evaluate(config, model_dir)
  with open(os.path.join(model_dir, 'eval', 'metrics.json')) as f:
    saved = json.load(f)
  assert saved['global_step'] == 2 and 0.0 <= saved['top1_accuracy'] <= saved['top5_accuracy'] <= 1.0
  assert metrics['top1_accuracy'] == saved['top1_accuracy']
  # --continuous evaluates the checkpoints as they come and stops at the run's last step.
  assert runner.evaluate(config, model_dir, continuous=True)['global_step'] == 2

  export_dir = runner.export(config, model_dir)
  image = os.path.join(str(tmp_path), 'probe.png')
  Image.fromarray(np.full([50, 30, 3], 128, np.uint8)).save(image)
  from_saved = predict.predict_saved_model(export_dir, [image])[0]
  from_ckpt = predict.predict_checkpoint(config, model_dir, [image])[0]
  assert from_saved['probabilities'].shape == (4,)
  np.testing.assert_allclose(from_saved['probabilities'], from_ckpt['probabilities'], rtol=1e-4, atol=1e-5)
  assert from_saved['top_k_class_names'][0] in (b'background', b'n001', b'n002', b'n003')

  # The float-input signature gives the same answer for an already preprocessed image.
  with tf.Graph().as_default(), tf.Session() as sess:
    meta = tf.saved_model.loader.load(sess, ['serve'], export_dir)
    assert 'float_images:serving_default' in meta.signature_def
    sig = meta.signature_def['float_images:serving_default']
    raw = tf.image.decode_image(tf.read_file(image), channels=3, expand_animations=False)
    float_image = sess.run(classification_preprocessing.preprocess_for_eval(raw, 32))
    probs = sess.run(sig.outputs['probabilities'].name, {sig.inputs['images'].name: float_image[None]})
  np.testing.assert_allclose(probs[0], from_saved['probabilities'], rtol=1e-4, atol=1e-5)

  out_json = str(tmp_path / 'pred.json')
  assert cli.main(['predict', image, '--saved-model', export_dir, '--json', out_json]) == 0
  with open(out_json) as f:
    assert len(json.load(f)[0]['top_k']) == 4


def test_warm_start_skips_logits_with_other_class_count(tmp_path, dataset_dir):
  _, config = _config(tmp_path, dataset_dir)
  source_dir = str(tmp_path / 'source')
  runner.train(config, source_dir)
  checkpoint = tf.train.latest_checkpoint(source_dir)
  _, config = _config(tmp_path, dataset_dir, ['classification.num_classes=7', 'data.labels_file=null', 'train.warm_start.checkpoint=' + checkpoint,
                                              'train.steps=1'])
  target_dir = str(tmp_path / 'target')
  runner.train(config, target_dir)
  with open(os.path.join(target_dir, 'warm_start.txt')) as f:
    log = f.read()
  assert 'skipped MobilenetV2/Logits/Conv2d_1c_1x1/weights: shape' in log
  assert 'restored MobilenetV2/Conv/BatchNorm/moving_mean' in log
  # Trainable weights come from the checkpoint's moving averages (as TF-Slim's public checkpoints are meant
  # to be used); with num_updates the average of one step is mostly the updated weights (checked below).
  name = 'MobilenetV2/expanded_conv_16/project/weights'
  assert 'restored %s <- %s/ExponentialMovingAverage' % (name, name) in log
  source_ema = tf.train.load_variable(checkpoint, name + '/ExponentialMovingAverage')
  target_ema = tf.train.load_variable(target_dir, name + '/ExponentialMovingAverage')
  # The decay used is min(0.9999, (1 + step) / (10 + step)) (num_updates, TF-Slim's): it follows the update.
  target_raw = tf.train.load_variable(target_dir, name)
  np.testing.assert_allclose(source_ema, target_raw, rtol=0.05, atol=0.02)
  assert np.abs(target_ema - target_raw).max() <= np.abs(source_ema - target_raw).max() + 1e-7
  assert not np.allclose(source_ema, tf.train.load_variable(checkpoint, name), rtol=1e-6, atol=1e-7)


def test_cli_reports_config_errors(tmp_path, dataset_dir, capsys):
  path, _ = _config(tmp_path, dataset_dir)
  code = cli.main(['train', '--config', path, '--model-dir', str(tmp_path / 'm'), '--set', 'train.stepz=3'])
  assert code == 2
  assert 'train.stepz' in capsys.readouterr().err
