"""Multi-task model: one backbone, the heads under their single-task scopes, joint train -> eval -> export ->
predict, warm start of a head from a single-task checkpoint, and the config rules."""
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from pipelines.cli import main as cli
from pipelines import config as schema
from pipelines import config_lib
from pipelines.tasks import multitask
from pipelines.cli import predict
from pipelines.cli import profile_models
from pipelines.cli import render
from pipelines.training import runner
from tests.conftest import read_tsv
from tests.conftest import tiny_shapes_records

CONFIG = """
task: multitask
model: {depth_multiplier: 0.35}
classification: {image_size: 48, num_classes: 5}
detection: {image_size: 64, num_classes: 7, max_objects: 10}
segmentation: {num_classes: 5, crop_size: 49, eval_crop_size: 64, decoder: true}
multitask:
  classification:
    data: {train_files: '%(r)s/classification/train-*', eval_files: '%(r)s/classification/val-*',
           labels_file: '%(r)s/classification/labels.txt', shuffle_buffer: 8, num_parallel_reads: 1}
    batch_size: 4
  detection:
    data: {train_files: '%(r)s/detection/train-*', eval_files: '%(r)s/detection/val-*',
           labels_file: '%(r)s/detection/label_map.pbtxt', shuffle_buffer: 8, num_parallel_reads: 1}
    batch_size: 2
    loss_weight: 0.5
  segmentation:
    data: {train_files: '%(r)s/segmentation/train-*', eval_files: '%(r)s/segmentation/val-*',
           labels_file: '%(r)s/segmentation/labels.txt', shuffle_buffer: 8, num_parallel_reads: 1}
    batch_size: 2
train: {batch_size: 2, steps: 2, optimizer: adam, learning_rate: {schedule: constant, base: 0.001}}
eval: {batch_size: 4}
runtime: {save_checkpoints_steps: 2, log_every_n_steps: 1, seed: 1}
"""


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  return tiny_shapes_records(tmp_path_factory.mktemp('multitask'))


def _config(tmp_path, records_dir, overrides=()):
  path = str(tmp_path / 'multitask.yaml')
  with open(path, 'w') as f:
    f.write(CONFIG % {'r': records_dir})
  return path, runner.load_config(path, list(overrides), 'train')


def test_one_backbone_and_each_head_under_its_public_names(graph):
  config = profile_models.multitask_config(image_size=64)
  multitask.MultitaskTask(config).build_outputs({'image': tf.zeros([1, 64, 64, 3])}, is_training=False)
  got = sorted((v.op.name, 'x'.join(str(d) for d in v.get_shape().as_list())) for v in tf.global_variables())
  classifier = [tuple(r) for r in read_tsv('manifest_mnv2_1.0_224.tsv')]
  ssd_head = [tuple(r) for r in read_tsv('manifest_ssdlite.tsv')
              if not r[0].startswith('FeatureExtractor/MobilenetV2/') or '/layer_19_' in r[0]]
  deeplab_head = [tuple(r) for r in read_tsv('manifest_deeplab_full_os16.tsv') if not r[0].startswith('MobilenetV2/')]
  assert got == sorted(classifier + ssd_head + deeplab_head)
  assert len(got) == len(set(name for name, _ in got))  # the backbone exists once


def test_profile_is_cheaper_than_three_models():
  combined, separate = profile_models.profile_multitask(image_size=128, depth_multiplier=0.35)
  assert set(separate) == {'classification', 'detection', 'segmentation'}
  assert combined.madds < 0.5 * sum(p.madds for p in separate.values())
  assert combined.params < sum(p.params for p in separate.values())


def test_config_rules(tmp_path):
  def load(text, overrides=()):
    path = str(tmp_path / 'c.yaml')
    with open(path, 'w') as f:
      f.write(text)
    return schema.load(path, ['train.steps=1', 'train.learning_rate.schedule=constant'] + list(overrides))
  with pytest.raises(config_lib.ConfigError, match='at least two'):
    load('task: multitask\nmultitask: {detection: {}}\n')
  with pytest.raises(config_lib.ConfigError, match=r"data\.train_files: not read by task multitask"):
    load('task: multitask\nmultitask: {detection: {}, segmentation: {}}\ndata: {train_files: x}\n')
  with pytest.raises(config_lib.ConfigError, match=r"classification\.image_size: not read by this multitask"):
    load('task: multitask\nmultitask: {detection: {}, segmentation: {}}\n', ['classification.image_size=3'])
  with pytest.raises(config_lib.ConfigError, match=r'multitask\.detection: not read by task'):
    load('task: detection\nmultitask: {detection: {}}\n')
  # The decoder must add detail below the SHARED backbone's stride (the segmentation section's own
  # output_stride is not read by a multitask model).
  decoder = 'task: multitask\nmultitask: {detection: {}, segmentation: {}%s}\n'
  decoder_sets = ['segmentation.decoder=true', 'segmentation.decoder_output_stride=16']
  with pytest.raises(config_lib.ConfigError, match=r'decoder_output_stride: .*multitask\.output_stride = 16'):
    load(decoder % ', output_stride: 16', decoder_sets)
  assert load(decoder % '', decoder_sets + ['segmentation.output_stride=8']).segmentation.decoder_output_stride == 16
  config = load('task: multitask\nmultitask: {detection: {batch_size: 3}, segmentation: {}}\ntrain: {batch_size: 7}\n')
  assert schema.member_config(config, 'detection').train.batch_size == 3
  assert schema.member_config(config, 'segmentation').train.batch_size == 7


def test_joint_train_eval_export_predict(tmp_path, records):
  records_dir, raw = records
  path, config = _config(tmp_path, records_dir)
  model_dir = str(tmp_path / 'model')
  assert cli.main(['train', '--config', path, '--model-dir', model_dir]) == 0
  assert tf.train.latest_checkpoint(model_dir).endswith('-2')
  metrics = runner.evaluate(config, model_dir)
  with open(os.path.join(model_dir, 'eval', 'metrics.json')) as f:  # (NaN: a class in neither labels nor masks)
    assert json.dumps(json.load(f), sort_keys=True) == json.dumps(metrics, sort_keys=True)
  for key in ('classification/top1_accuracy', 'detection/AP50', 'detection/AP', 'segmentation/miou',
              'classification/loss', 'segmentation/loss', 'global_step'):
    assert key in metrics, key
  export_dir = runner.export(config, model_dir)
  image = sorted(os.path.join(raw['coco']['val_images'], n) for n in os.listdir(raw['coco']['val_images']))[0]
  saved = predict.predict_saved_model(export_dir, [image])[0]
  from_checkpoint = predict.predict_checkpoint(config, model_dir, [image])[0]
  width, height = Image.open(image).size
  assert saved['segmentation/mask'].shape == (height, width)
  assert saved['detection/detection_boxes'].shape == (100, 4)
  assert saved['classification/top_k_classes'].shape == (5,)
  for key, value in from_checkpoint.items():
    if isinstance(value, np.ndarray) and value.dtype.kind == 'f':
      np.testing.assert_allclose(saved[key], value, rtol=1e-3, atol=1e-4, err_msg=key)
  out = str(tmp_path / 'all_three.png')
  assert cli.main(['predict', image, '--saved-model', export_dir, '--output', out]) == 0
  # Drawn on an upscaled copy (labels readable), with the top classes captioned under it.
  factor = render.upscale_factor((width, height))
  drawn = Image.open(out).size
  assert factor > 1 and drawn[0] == width * factor and drawn[1] > height * factor


def test_head_warm_start_from_a_single_task_checkpoint(tmp_path, records):
  records_dir, _ = records
  # A single-task detection model's checkpoint (random weights are enough: we check they arrive).
  with tf.Graph().as_default():
    det_config = schema.member_config(_config(tmp_path, records_dir)[1], 'detection')
    runner.make_task(det_config).build_outputs({'image': tf.zeros([1, 64, 64, 3])}, False)
    saver = tf.train.Saver()
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      checkpoint = saver.save(sess, str(tmp_path / 'detection' / 'model.ckpt'))
      weights = [v for v in tf.global_variables() if v.op.name == 'BoxPredictor_0/ClassPredictor/weights']
      expected = sess.run(weights[0])
  overrides = ['multitask.detection.warm_start.checkpoint=' + checkpoint,
               "multitask.detection.warm_start.include=['^BoxPredictor', '^FeatureExtractor/MobilenetV2/layer_19_']",
               'train.steps=1', 'train.learning_rate.base=0.000000001', 'train.moving_average_decay=null']
  path, config = _config(tmp_path, records_dir, overrides)
  model_dir = str(tmp_path / 'warm')
  runner.train(config, model_dir)
  got = tf.train.load_variable(tf.train.latest_checkpoint(model_dir), 'BoxPredictor_0/ClassPredictor/weights')
  np.testing.assert_allclose(got, expected, atol=1e-5)
  with open(os.path.join(model_dir, 'warm_start_2.txt')) as f:
    text = f.read()
  assert 'restored BoxPredictor_0/ClassPredictor/weights' in text
  assert 'restored FeatureExtractor/MobilenetV2/layer_19_1_Conv2d_2_1x1_' in text
