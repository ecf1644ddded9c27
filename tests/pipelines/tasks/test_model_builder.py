"""The one config -> backbone builder: per-task conventions, static feature_info, public variable names."""
import dataclasses
import os

import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim

from pipelines import config as schema
from pipelines.tasks import model_builder
from pipelines.training import runner
from tests.conftest import read_tsv

CONFIGS = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'configs')


def _paper(name, overrides=()):
  return schema.load(os.path.join(CONFIGS, name), list(overrides))


@pytest.mark.parametrize('name,overrides,manifest', [
    ('mobilenet_v2_imagenet.yaml', ['classification.image_size=64'], 'manifest_mnv2_1.0_224.tsv'),
    ('ssdlite_mobilenet_v2_coco.yaml', ['detection.image_size=64'], 'manifest_ssdlite.tsv'),
    ('deeplabv3_mobilenet_v2_voc.yaml', [], 'manifest_deeplab_full_os16.tsv'),
])
def test_task_models_have_the_public_variable_names(graph, name, overrides, manifest):
  config = _paper(name, overrides + ['data.labels_file=null'])
  runner.make_task(config).build_outputs({'image': tf.zeros([1, 64, 64, 3])}, is_training=False)
  got = [(v.op.name, 'x'.join(str(d) for d in v.get_shape().as_list())) for v in tf.global_variables()]
  assert got == [tuple(row) for row in read_tsv(manifest)]


@pytest.mark.parametrize('name,scope,output_stride,min_depth,divisible_by', [
    ('mobilenet_v2_imagenet.yaml', 'MobilenetV2', None, None, 8),
    ('ssdlite_mobilenet_v2_coco.yaml', 'FeatureExtractor/MobilenetV2', None, 16, 8),
    ('deeplabv3_mobilenet_v2_voc.yaml', 'MobilenetV2', 16, 8, 8),
    ('deeplabv3_mobilenet_v2_voc_os8_ms.yaml', 'MobilenetV2', 8, 8, 8),
])
def test_backbone_options_follow_each_tasks_public_convention(name, scope, output_stride, min_depth, divisible_by):
  opts = model_builder.backbone_options(_paper(name))
  assert (opts.scope, opts.output_stride, opts.min_depth, opts.divisible_by) == (
      scope, output_stride, min_depth, divisible_by)


def test_deeplab_rounding_below_width_one_and_the_override():
  config = _paper('deeplabv3_mobilenet_v2_voc.yaml', ['model.depth_multiplier=0.5'])
  assert model_builder.backbone_options(config)[3:5] == (1, 1)
  config = _paper('deeplabv3_mobilenet_v2_voc.yaml', ['model.depth_multiplier=0.5', 'model.divisible_by=8'])
  assert model_builder.backbone_options(config)[3:5] == (1, 8)


@pytest.mark.parametrize('name,overrides,endpoints,size', [
    ('mobilenet_v2_imagenet.yaml', ['model.depth_multiplier=0.35', 'classification.output_stride=16'],
     ['layer_19'], 64),
    ('ssdlite_mobilenet_v2_coco.yaml', ['model.depth_multiplier=0.5'], ['layer_15/expansion_output', 'layer_19'], 96),
    ('deeplabv3_mobilenet_v2_voc.yaml', ['model.depth_multiplier=0.35', 'segmentation.output_stride=8'],
     ['layer_4/depthwise_output', 'layer_18'], 65),
])
def test_feature_info_equals_the_built_endpoints(graph, name, overrides, endpoints, size):
  config = _paper(name, overrides)
  with slim.arg_scope(model_builder.arg_scope(config, False)):
    end_points, scope = model_builder.backbone(config, tf.zeros([1, size, size, 3]), endpoints)
  info = model_builder.feature_info(config)
  deepest = max(int(e.split('/')[0].split('_')[1]) for e in endpoints)
  assert 'layer_%d' % deepest in end_points and 'layer_%d' % (deepest + 1) not in end_points
  for endpoint, tensor in end_points.items():
    _, height, width, channels = tensor.get_shape().as_list()
    assert (height, channels) == (-(-size // info[endpoint].stride), info[endpoint].channels), endpoint
  assert scope.name == model_builder.backbone_options(config).scope


@pytest.mark.parametrize('task,batch_size,freeze,training', [
    ('segmentation', 8, None, False),  # DeepLab: frozen below 12 images per step
    ('segmentation', 12, None, True),
    ('segmentation', 8, False, True),
    ('classification', 8, None, True),
    ('detection', 2, True, False),
])
def test_batch_norm_training_rule(task, batch_size, freeze, training):
  config = schema.Config(task=task, train=schema.TrainConfig(batch_size=batch_size, steps=1, freeze_batch_norm=freeze))
  assert model_builder.batch_norm_training(config, True) == training
  assert not model_builder.batch_norm_training(config, False)


def test_arg_scope_keeps_dropout_training_when_batch_norm_is_frozen(graph):
  config = schema.Config(task='classification', train=schema.TrainConfig(steps=1, freeze_batch_norm=True),
                         classification=dataclasses.replace(schema.ClassificationConfig(), dropout_keep_prob=0.5))
  with slim.arg_scope(model_builder.arg_scope(config, True)):
    out = slim.dropout(tf.ones([1000]))
    bn = slim.batch_norm(tf.ones([2, 3, 3, 4]))
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    dropped = (sess.run(out) == 0).mean()
  assert 0.3 < dropped < 0.7
  assert not tf.get_collection(tf.GraphKeys.UPDATE_OPS) and bn is not None


def test_unknown_endpoint_is_an_error(graph):
  with pytest.raises(ValueError, match='not a backbone endpoint'):
    model_builder.backbone(schema.Config(), tf.zeros([1, 32, 32, 3]), ['Logits'])
