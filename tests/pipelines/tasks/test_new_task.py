"""Adding a task (README "Adding a task"): a fourth task, defined and registered in this file only, trains,
evaluates, exports (SavedModel and TFLite) and predicts through the generic code -- runner, exporters,
`mnv2 predict`, render -- without any product module naming it.

The task regresses an image's mean brightness (in [-1, 1]) from MobileNetV2's `layer_19`: a head of
its own, a section of its own (`brightness:` in the YAML), its own loss, metric, predictions, TFLite
decoding, exported-model scorer and picture.
"""
import dataclasses
import io
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim
from PIL import Image

from datasets import classification_preprocessing
from datasets import decoders
from datasets import imagenet
from nets import mobilenet_v2
from pipelines import config as config_schema
from pipelines.cli import main as cli
from pipelines.evaluation import exported_eval
from pipelines.export import tflite_task
from pipelines.inputs import input_common
from pipelines.tasks import base
from pipelines.tasks import model_builder
from pipelines.tasks import registry
from pipelines.training import runner
from tests.conftest import config_from_text
from tests.conftest import tiny_imagenet_records

BRIGHTNESS = 'brightness'


@dataclasses.dataclass(frozen=True)
class BrightnessConfig:
  image_size: int = 32
  dropout_keep_prob: float = 1.0

  def validate(self):
    if self.image_size < 16:
      raise ValueError('image_size: must be >= 16, got %r' % (self.image_size,))


def _mean_brightness(images):
  """float32 [B] mean of [B, H, W, 3] images in [-1, 1]."""
  return tf.reduce_mean(images, axis=[1, 2, 3])


class BrightnessTask(base.Task):
  """Mean image brightness regressed from the classifier's backbone."""

  name = BRIGHTNESS

  @classmethod
  def backbone_options(cls, config):
    return model_builder.tf_slim_options(config, mobilenet_v2.DEFAULT_SCOPE, None)

  def endpoints(self):
    return ['layer_19']

  def build_head(self, end_points, scope, is_training):
    net = tf.reduce_mean(end_points['layer_19'], [1, 2], keepdims=True)
    net = slim.conv2d(net, 1, 1, activation_fn=None, normalizer_fn=None, scope='Brightness/Conv2d_1x1')
    return {BRIGHTNESS: tf.squeeze(net, [1, 2, 3])}

  def build_losses(self, outputs, labels, features):
    return {BRIGHTNESS: tf.losses.mean_squared_error(labels, outputs[BRIGHTNESS], loss_collection=None)}

  def build_metrics(self, outputs, labels, features):
    return {'mae': tf.metrics.mean_absolute_error(labels, outputs[BRIGHTNESS])}

  def build_predictions(self, outputs, features):
    return {BRIGHTNESS: outputs[BRIGHTNESS]}

  def _image(self, image):
    return classification_preprocessing.preprocess_for_eval(image, self.section.image_size, central_fraction=1.0)

  def input_fn(self, mode):
    def example(decoded):
      image = self._image(decoded['image'])
      return {'image': image}, _mean_brightness(image[None])[0]
    return lambda params=None: input_common.read_records(self.config, mode, decoders.decode_classification, example)

  def features_from_bytes(self, encoded):
    return {'image': tf.map_fn(lambda data: self._image(decoders.decode_rgb(data)), encoded, dtype=tf.float32,
                               back_prop=False)}

  def serving_size(self):
    return self.section.image_size

  def tflite_outputs(self, outputs):
    return {BRIGHTNESS: outputs[BRIGHTNESS]}

  def export_metadata(self):
    return {'meaning': 'mean brightness in [-1, 1]'}

  def write_labels(self, output_dir, prefix=''):
    return None  # no classes

  def decode_tflite(self, meta, outputs, features):
    return {BRIGHTNESS: np.float32(np.reshape(outputs[BRIGHTNESS], [-1])[0])}

  def exported_scorer(self):
    return _BrightnessScorer(self.section.image_size)

  @classmethod
  def owns_prediction(cls, prediction):
    return BRIGHTNESS in prediction

  @classmethod
  def describe(cls, path, prediction, out, min_score, class_names):
    from pipelines.cli import render  # pylint: disable=g-import-not-at-top
    item = {'image': path, 'task': cls.name, BRIGHTNESS: float(prediction[BRIGHTNESS])}
    if out:
      render.save(render.caption(render.upscaled_image(path)[0], ['brightness %.3f' % item[BRIGHTNESS]]), out)
      item['output'] = out
    return item

  @classmethod
  def summary(cls, item):
    return 'brightness %.3f' % item[BRIGHTNESS]


class _BrightnessScorer(object):
  """Mean absolute error of an export's brightness on the eval records (numpy: the image resized alone)."""

  def __init__(self, size):
    self.size, self.errors = size, []

  def image(self, example):
    return example.features.feature[imagenet.ENCODED_KEY].bytes_list.value[0]

  def add(self, example, prediction, where):
    image = Image.open(io.BytesIO(self.image(example))).convert('RGB').resize((self.size, self.size), Image.BILINEAR)
    truth = np.asarray(image, np.float32).mean() / 127.5 - 1.0
    self.errors.append(abs(float(prediction[BRIGHTNESS]) - truth))

  def result(self):
    return {'mae': float(np.mean(self.errors))}


@pytest.fixture
def brightness_task():
  registry.register(BRIGHTNESS, BrightnessTask, BrightnessConfig)
  yield BrightnessTask
  registry.unregister(BRIGHTNESS)


def _config(tmp_path, records):
  return config_from_text(tmp_path, '''
task: brightness
model: {depth_multiplier: 0.35}
data: {train_files: %s/train-*, eval_files: %s/train-*, num_train_examples: 12, shuffle_buffer: 8}
train: {batch_size: 4, steps: 3, learning_rate: {schedule: constant, base: 0.01}, optimizer: sgd}
eval: {batch_size: 4}
runtime: {seed: 1, save_checkpoints_steps: 3, log_every_n_steps: 1}
brightness: {image_size: 32}
''' % (records, records), mode='train')


def test_a_registered_task_has_its_own_section(brightness_task, tmp_path):
  records = tiny_imagenet_records(tmp_path, 3)
  config = _config(tmp_path, records)
  assert isinstance(config.section(), BrightnessConfig) and config.brightness.image_size == 32
  assert config_schema.to_dict(config)[BRIGHTNESS] == {'image_size': 32, 'dropout_keep_prob': 1.0}
  with pytest.raises(ValueError, match=r'brightness\.image_size: must be >= 16'):
    config_from_text(tmp_path, 'task: brightness\nbrightness: {image_size: 8}\n'
                     'train: {steps: 1, learning_rate: {schedule: constant}}\n', name='bad.yaml')
  with pytest.raises(ValueError, match=r"brightness\.image_size: not read by task 'classification'"):
    config_from_text(tmp_path, 'brightness: {image_size: 32}\ntrain: {steps: 1, learning_rate: {schedule: '
                     'constant}}\n', name='other.yaml')


def test_a_fourth_task_trains_evaluates_exports_and_predicts(brightness_task, tmp_path, capsys):
  records = tiny_imagenet_records(tmp_path, 3)
  config = _config(tmp_path, records)
  model_dir = str(tmp_path / 'model')
  runner.train(config, model_dir)
  assert tf.train.latest_checkpoint(model_dir).endswith('-3')
  assert 'MobilenetV2/Brightness/Conv2d_1x1/weights' not in dict(tf.train.list_variables(model_dir))
  assert 'Brightness/Conv2d_1x1/weights' in dict(tf.train.list_variables(model_dir))
  metrics = runner.evaluate(config, model_dir)
  assert metrics['global_step'] == 3 and 0 <= metrics['mae'] < 2
  with open(os.path.join(model_dir, 'eval', 'metrics.json')) as f:
    assert json.load(f)['mae'] == pytest.approx(metrics['mae'])

  saved_model = runner.export(config, model_dir)
  tflite = tflite_task.export(config, model_dir)
  with open(os.path.join(os.path.dirname(tflite), 'model.json')) as f:
    assert json.load(f)['task'] == BRIGHTNESS

  images = sorted(tf.io.gfile.glob(os.path.join(str(tmp_path), 'raw', '*', '*.JPEG')))[:2]
  outputs = {}
  for flag, path in (('--saved-model', saved_model), ('--tflite', tflite)):
    result = str(tmp_path / ('%s.json' % flag.strip('-')))
    assert cli.main(['predict'] + images + [flag, path, '--json', result, '--output', str(tmp_path / flag)]) == 0
    with open(result) as f:
      outputs[flag] = [item[BRIGHTNESS] for item in json.load(f)]
    assert 'brightness ' in capsys.readouterr().out
  np.testing.assert_allclose(outputs['--tflite'], outputs['--saved-model'], atol=1e-3)
  assert os.path.getsize(str(tmp_path / '--tflite' / (os.path.splitext(os.path.basename(images[0]))[0] + '.png')))

  # The export scored on the eval split by the task's own scorer, as the demo scores every export.
  from pipelines.cli import predict  # pylint: disable=g-import-not-at-top
  loaded = predict.Predictor(saved_model)
  try:
    scored = exported_eval.evaluate(config, loaded.one)
  finally:
    loaded.close()
  assert scored['mae'] == pytest.approx(metrics['mae'], abs=0.02)
