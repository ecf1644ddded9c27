"""DeepLabv3 segmentation task: shapes at OS8/16, multi-scale sharing, batch-norm rule, loss, end to end."""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from datasets import shapes
from datasets import voc
from pipelines.cli import main as cli
from pipelines import config as config_schema
from pipelines.tasks import model_builder
from pipelines.cli import predict
from pipelines.training import runner
from pipelines.tasks import segmentation
from tests.conftest import read_tsv

CLASS_NAMES = ['background', 'circle', 'square', 'triangle', 'star']
CONFIG = """
task: segmentation
model: {depth_multiplier: 0.35}
data: {train_files: '%(data)s/train-*', eval_files: '%(data)s/val-*', labels_file: '%(data)s/labels.txt',
       shuffle_buffer: 8, num_parallel_reads: 1}
train: {batch_size: 2, steps: 2, optimizer: momentum, moving_average_decay: null,
        learning_rate: {schedule: poly, base: 0.007}}
eval: {batch_size: 2}
segmentation: {num_classes: 5, output_stride: 16, dropout_keep_prob: 0.9, crop_size: 65, eval_crop_size: 65,
               export_probabilities: true}
runtime: {save_checkpoints_steps: 2, log_every_n_steps: 1, seed: 1}
"""


def _write_config(tmp_path, data_dir='/nonexistent'):
  path = str(tmp_path / 'config.yaml')
  with open(path, 'w') as f:
    f.write(CONFIG % {'data': data_dir})
  return path


def _config(tmp_path, overrides=(), data_dir='/nonexistent'):
  return config_schema.load(_write_config(tmp_path, data_dir), list(overrides))


@pytest.mark.parametrize('output_stride,feature_size', [(16, 5), (8, 9)])
def test_output_shapes_and_names(graph, tmp_path, output_stride, feature_size):
  config = _config(tmp_path, ['segmentation.output_stride=%d' % output_stride])
  images = tf.zeros([2, 65, 65, 3])
  outputs = segmentation.SegmentationTask(config).build_outputs({'image': images}, is_training=True)
  assert outputs['logits'].get_shape().as_list() == [2, 65, 65, 5]
  logits = segmentation.single_scale_logits(config, images, is_training=False, reuse=True)
  assert logits.get_shape().as_list() == [2, feature_size, feature_size, 5]
  names = {v.op.name for v in tf.global_variables()}
  for name in ('MobilenetV2/Conv/weights', 'MobilenetV2/expanded_conv_16/project/weights',
               'image_pooling/weights', 'aspp0/weights', 'concat_projection/weights',
               'concat_projection/BatchNorm/moving_mean', 'logits/semantic/weights', 'logits/semantic/biases'):
    assert name in names
  assert not any(n.startswith('aspp1') or n.startswith('decoder') for n in names)


def test_full_model_variables_are_the_public_checkpoint_manifest(graph, tmp_path):
  config = _config(tmp_path, ['model.depth_multiplier=1.0', 'segmentation.num_classes=21'])
  segmentation.SegmentationTask(config).build_outputs({'image': tf.zeros([1, 33, 33, 3])}, is_training=True)
  variables = [(v.op.name, 'x'.join(str(d) for d in v.get_shape().as_list())) for v in tf.global_variables()]
  assert variables == [tuple(row) for row in read_tsv('manifest_deeplab_full_os16.tsv')]


def test_aspp_rates_and_decoder_options(graph, tmp_path):
  config = _config(tmp_path, ['segmentation.aspp_rates=[2, 3]', 'segmentation.decoder=true'])
  outputs = segmentation.SegmentationTask(config).build_outputs({'image': tf.zeros([1, 33, 33, 3])}, False)
  assert outputs['logits'].get_shape().as_list() == [1, 33, 33, 5]
  names = {v.op.name for v in tf.global_variables()}
  assert {'aspp1/weights', 'aspp2/weights', 'decoder/feature_projection0/weights',
          'decoder/decoder_conv1_pointwise/weights'} <= names
  assert 'aspp3/weights' not in names


def test_decoder_stride_and_widths_from_config(graph, tmp_path):
  config = _config(tmp_path, ['segmentation.decoder=true', 'segmentation.decoder_output_stride=8',
                              'segmentation.aspp_convs_filters=16', 'segmentation.decoder_filters=24'])
  logits = segmentation.single_scale_logits(config, tf.zeros([1, 33, 33, 3]), is_training=False)
  assert logits.get_shape().as_list() == [1, 5, 5, 5]  # stride 8: ceil(33 / 8)
  shapes = {v.op.name: v.get_shape().as_list() for v in tf.global_variables()}
  assert shapes['aspp0/weights'][-1] == 16 and shapes['concat_projection/weights'][-1] == 16
  assert shapes['decoder/decoder_conv0_pointwise/weights'][-2:] == [16 + 48, 24]
  assert shapes['logits/semantic/weights'][-2:] == [24, 5]


@pytest.mark.parametrize('overrides,message', [
    (['segmentation.decoder_output_stride=2'], 'decoder_output_stride: must be 4, 8 or 16'),
    (['segmentation.decoder_filters=0'], 'decoder_filters: must be > 0'),
    (['segmentation.aspp_convs_filters=-1'], 'aspp_convs_filters: must be > 0'),
    (['segmentation.decoder=true', 'segmentation.decoder_output_stride=16'],
     r'segmentation.decoder_output_stride: must be below .*segmentation.output_stride = 16'),
])
def test_decoder_settings_are_checked(tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message):
    _config(tmp_path, overrides)


def test_multi_scale_flip_averages_shared_single_scale_probabilities(graph, tmp_path):
  config = _config(tmp_path, ['segmentation.eval_scales=[0.5, 1.0]', 'segmentation.eval_flip=true'])
  images = tf.placeholder(tf.float32, [1, 33, 33, 3])
  outputs = segmentation.SegmentationTask(config).build_outputs({'image': images}, is_training=False)
  num_variables = len(tf.global_variables())
  # Reference: each scale separately, on numpy-flipped inputs, with the same variables.
  single = {}
  for scale, size in ((0.5, 17), (1.0, 33)):
    scaled = tf.image.resize_bilinear(images, [size, size], align_corners=True)
    logits = segmentation.single_scale_logits(config, scaled, False, reuse=True)
    single[scale] = tf.nn.softmax(tf.image.resize_bilinear(logits, [33, 33], align_corners=True))
  assert len(tf.global_variables()) == num_variables
  x = np.random.RandomState(0).uniform(-1, 1, [1, 33, 33, 3]).astype(np.float32)
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    # Non-zero biases so the classes differ and the flip matters.
    rng = np.random.RandomState(1)
    sess.run([var.assign(rng.normal(0, 1, var.shape.as_list())) for var in tf.global_variables()
              if var.op.name.endswith('biases') or var.op.name.endswith('beta')])
    got = sess.run(outputs['probabilities'], {images: x})
    plain = sess.run(single, {images: x})
    flipped = sess.run(single, {images: x[:, :, ::-1]})
  expected = np.mean([plain[0.5], plain[1.0], flipped[0.5][:, :, ::-1], flipped[1.0][:, :, ::-1]], axis=0)
  assert got.shape == (1, 33, 33, 5)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)
  assert np.abs(plain[1.0] - flipped[1.0][:, :, ::-1]).max() > 1e-4  # the flip is not a no-op here


@pytest.mark.parametrize('overrides,frozen', [
    ((), True),  # batch 2 < 12: automatic freeze
    (('train.batch_size=12',), False),
    (('train.freeze_batch_norm=false',), False),
    (('train.batch_size=16', 'train.freeze_batch_norm=true'), True),
])
def test_batch_norm_freeze_rule_keeps_dropout(graph, tmp_path, overrides, frozen):
  config = _config(tmp_path, overrides)
  assert model_builder.batch_norm_training(config, True) == (not frozen)
  segmentation.SegmentationTask(config).build_outputs({'image': tf.zeros([2, 33, 33, 3])}, is_training=True)
  assert bool(tf.get_collection(tf.GraphKeys.UPDATE_OPS)) == (not frozen)
  dropout_random = [op for op in tf.get_default_graph().get_operations()
                    if 'concat_projection_dropout' in op.name and op.type == 'RandomUniform']
  assert dropout_random  # dropout trains whether or not batch norm is frozen


def _numpy_loss(logits, labels, num_classes, fraction):
  flat_logits = logits.reshape([-1, num_classes]).astype(np.float64)
  flat_labels = labels.ravel()
  losses = []
  for row, label in zip(flat_logits, flat_labels):
    if 0 <= label < num_classes:
      losses.append(np.log(np.exp(row).sum()) - row[label])
  losses = sorted(losses, reverse=True)
  keep = int(np.ceil(fraction * len(losses)))
  return sum(losses[:keep]) / keep


@pytest.mark.parametrize('fraction', [1.0, 0.3])
def test_pixel_loss_ignores_255_and_mines_hard_pixels(graph, fraction):
  rng = np.random.RandomState(2)
  logits = rng.normal(0, 2, [2, 4, 5, 3]).astype(np.float32)
  labels = rng.randint(0, 3, [2, 4, 5, 1])
  labels[0, :2] = 255
  labels[1, 3, 4] = 3  # out of range: skipped too
  loss = segmentation.pixel_loss(tf.constant(logits), tf.constant(labels), 3, fraction)
  none_labelled = segmentation.pixel_loss(tf.constant(logits), tf.fill([2, 4, 5, 1], 255), 3, fraction)
  with tf.Session() as sess:
    got, zero = sess.run([loss, none_labelled])
  np.testing.assert_allclose(got, _numpy_loss(logits, labels, 3, fraction), rtol=1e-5)
  assert zero == 0.0


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp('voc')
  paths = shapes.generate(str(root / 'raw'), formats=('voc',), counts={'voc': {'train': 4, 'val': 2}},
                          image_size=48)['voc']
  out = str(root / 'records')
  for split in ('train', 'val'):
    voc.convert(paths['devkit_dir'], out, split, num_shards=1, num_workers=1, num_classes=5,
                class_names=CLASS_NAMES)
  return out, paths


def _val_images_and_labels(paths):
  ids = [line.strip() for line in open(os.path.join(paths['sets_dir'], 'val.txt')) if line.strip()]
  images = [os.path.join(paths['images_dir'], i + '.jpg') for i in ids]
  labels = [np.asarray(Image.open(os.path.join(paths['masks_dir'], i + '.png'))) for i in ids]
  return images, labels


def _miou(labels, masks, num_classes):
  matrix = np.zeros([num_classes, num_classes])
  for label, mask in zip(labels, masks):
    keep = label < num_classes
    np.add.at(matrix, (label[keep], mask[keep]), 1)
  union = matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
  present = union > 0
  return (np.diag(matrix)[present] / union[present]).mean()


def test_train_eval_export_predict(tmp_path, dataset):
  data_dir, paths = dataset
  path = _write_config(tmp_path, data_dir)
  config = runner.load_config(path, (), 'train_and_eval')
  model_dir = str(tmp_path / 'model')
  runner.train(config, model_dir)
  assert tf.train.latest_checkpoint(model_dir).endswith('-2')
  runner.evaluate(config, model_dir)
  with open(os.path.join(model_dir, 'eval', 'metrics.json')) as f:
    metrics = json.load(f)
  assert 0.0 <= metrics['miou'] <= 1.0 and 0.0 <= metrics['pixel_accuracy'] <= 1.0
  assert all('IoU/' + name in metrics for name in CLASS_NAMES)

  # Checkpoint predictions on the val images reproduce the eval mIoU (same padding, same model).
  val_images, val_labels = _val_images_and_labels(paths)
  probe = str(tmp_path / 'probe.png')  # smaller than eval_crop_size, not square
  Image.fromarray(np.random.RandomState(0).randint(0, 255, [50, 30, 3]).astype(np.uint8)).save(probe)
  large = str(tmp_path / 'large.png')  # larger than eval_crop_size: downscaled, then mask resized back
  Image.fromarray(np.full([90, 70, 3], 200, np.uint8)).save(large)
  images = val_images + [probe, large]
  from_ckpt = predict.predict_checkpoint(config, model_dir, images)
  masks = [p['mask'] for p in from_ckpt[:2]]
  assert [m.shape for m in masks] == [lab.shape for lab in val_labels]
  np.testing.assert_allclose(_miou(val_labels, masks, 5), metrics['miou'], rtol=1e-5)
  assert from_ckpt[2]['mask'].shape == (50, 30) and from_ckpt[3]['mask'].shape == (90, 70)
  assert from_ckpt[2]['mask'].dtype == np.int32 and from_ckpt[2]['probabilities'].shape == (50, 30, 5)

  export_dir = runner.export(config, model_dir)
  from_saved = predict.predict_saved_model(export_dir, images)
  for saved, ckpt in zip(from_saved, from_ckpt):
    assert saved['mask'].shape == ckpt['mask'].shape
    np.testing.assert_allclose(saved['probabilities'], ckpt['probabilities'], rtol=1e-4, atol=1e-5)

  # A batch of equal-sized images is one request; mixed sizes fail with a clear message.
  predictor = predict.Predictor(export_dir)
  try:
    encoded = [open(p, 'rb').read() for p in images]
    batch = predictor(encoded[:2])
    assert batch['mask'].shape == (2,) + val_labels[0].shape
    np.testing.assert_array_equal(batch['mask'][1], from_ckpt[1]['mask'])
    with pytest.raises(tf.errors.InvalidArgumentError, match='same size'):
      predictor(encoded[2:])
  finally:
    predictor.close()

  out = str(tmp_path / 'out.png')
  assert cli.main(['predict', probe, '--saved-model', export_dir, '--output', out]) == 0
  assert Image.open(out).size == (30, 50) and os.path.isfile(str(tmp_path / 'out_overlay.png'))

  # Multi-scale + flip evaluation of the same checkpoint runs and reports the same keys.
  ms_config = runner.load_config(path, ['segmentation.eval_scales=[0.5, 1.0]', 'segmentation.eval_flip=true'])
  ms_metrics = runner.evaluate(ms_config, model_dir)
  assert set(ms_metrics) >= set(metrics) - {'loss'}
  assert glob.glob(os.path.join(model_dir, 'eval', 'events.*'))
