"""pipelines.export.freeze: restore (EMA first), freeze, and batch-norm folding that keeps the outputs."""
import collections
import logging

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from pipelines.export import freeze
from tests.pipelines import tiny_models

BN_OPS = ('FusedBatchNorm', 'FusedBatchNormV3')


def _ops(graph_def):
  return collections.Counter(n.op for n in graph_def.node)


def _rel_error(a, b):
  return np.abs(a - b).max() / max(np.abs(a).max(), 1e-6)


@pytest.mark.parametrize('kind', ['classification_explicit_padding', 'segmentation_atrous'])
def test_folding_keeps_outputs_of_tiny_mobilenet(tmp_path, kind):
  if kind.startswith('classification'):
    # use_explicit_padding puts tf.pad before the VALID convs: pad -> conv -> BN still folds.
    build, shape, key = tiny_models.classification_build(use_explicit_padding=True), [1, 64, 64, 3], 'probabilities'
  else:
    # Output stride 16: the atrous depthwise convs are SpaceToBatchND -> conv -> BatchToSpaceND -> BN.
    build, shape, key = tiny_models.segmentation_build(output_stride=16), [1, 65, 65, 3], 'logits'
  # residual_gain 0.5: a less chaotic random network, which amplifies float32 rounding (folding changes
  # the rounding, not the maths) less; with 1.0 the relative difference reaches ~1.5e-5.
  checkpoint = tiny_models.save_random_checkpoint(build, shape, tmp_path, seed=3, residual_gain=0.5)
  plain = freeze.freeze(build, checkpoint, shape, fold_batch_norm=False)
  folded = freeze.freeze(build, checkpoint, shape)
  num_bn = sum(_ops(plain.graph_def)[op] for op in BN_OPS)
  assert num_bn > 40
  assert folded.folded == num_bn  # every batch norm went into its conv
  ops = _ops(folded.graph_def)
  assert not any(ops[op] for op in BN_OPS)
  assert 'Mul' not in ops  # none needed the Mul + BiasAdd fallback
  if kind.startswith('classification'):
    assert ops['Pad'] > 10
  else:
    assert ops['BatchToSpaceND'] >= 2
  images = np.concatenate([tiny_models.random_images(shape, seed=s) for s in (0, 1)])
  for image in images:
    want = freeze.run(plain, image[None])[key]
    got = freeze.run(folded, image[None])[key]
    assert np.abs(want).max() > 1e-3
    print('%s folded vs unfolded: relative error %.2g' % (kind, _rel_error(want, got)))
    assert _rel_error(want, got) < 1e-5, _rel_error(want, got)


def _batch_norm(x, version, epsilon=1e-3, seed=0, channels=None):
  rng = np.random.RandomState(seed)
  channels = channels or x.get_shape().as_list()[-1]
  params = [rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.3, channels), rng.normal(0, 0.3, channels),
            rng.uniform(0.2, 2.0, channels)]
  params = [tf.identity(tf.constant(p.astype(np.float32))) for p in params]  # as frozen variable reads
  op = tf.raw_ops.FusedBatchNorm if version == 1 else tf.raw_ops.FusedBatchNormV3
  return op(x=x, scale=params[0], offset=params[1], mean=params[2], variance=params[3], epsilon=epsilon,
            is_training=False)[0]


def _const(shape, seed):
  return tf.constant(np.random.RandomState(seed).normal(0, 0.5, shape).astype(np.float32))


def test_fold_patterns_on_handmade_graph():
  """Conv2D+BiasAdd+FusedBatchNorm (V1), depthwise x2 + V3, a shared conv and a BN after Relu."""
  with tf.Graph().as_default() as graph:
    x = tf.placeholder(tf.float32, [1, 9, 9, 4], name='input')
    net = tf.nn.conv2d(x, _const([3, 3, 4, 6], 1), [1, 1, 1, 1], 'SAME')
    net = tf.nn.bias_add(net, _const([6], 2))
    net = _batch_norm(net, 1, seed=3)
    depthwise = tf.nn.depthwise_conv2d(tf.pad(net, [[0, 0], [1, 1], [1, 1], [0, 0]]), _const([3, 3, 6, 2], 4),
                                       [1, 2, 2, 1], 'VALID')
    net = tf.nn.relu6(_batch_norm(depthwise, 3, epsilon=1e-5, seed=5))
    shared = tf.nn.conv2d(net, _const([1, 1, 12, 5], 6), [1, 1, 1, 1], 'SAME')  # also read below: not foldable
    after_relu = _batch_norm(tf.nn.relu(shared), 3, seed=7)
    out = tf.identity(after_relu + _batch_norm(shared, 1, seed=8), name='out')
    graph_def = graph.as_graph_def()
  folded, count = freeze.fold_batch_norms(graph_def, ['out'])
  assert count == 2
  ops = _ops(folded)
  assert not any(ops[op] for op in BN_OPS)
  assert ops['Mul'] == 2
  frozen = freeze.FrozenGraph(graph_def, 'input', [1, 9, 9, 4], tf.float32, {'out': 'out:0'}, 0)
  image = np.random.RandomState(9).uniform(-1, 1, [1, 9, 9, 4]).astype(np.float32)
  want = freeze.run(frozen, image)['out']
  got = freeze.run(frozen, image, graph_def=folded)['out']
  assert out.get_shape().as_list() == list(want.shape)
  assert _rel_error(want, got) < 1e-5


def test_training_mode_batch_norm_is_rejected():
  with tf.Graph().as_default() as graph:
    x = tf.placeholder(tf.float32, [1, 4, 4, 2], name='input')
    ones, zeros = tf.ones([2]), tf.zeros([2])
    y = tf.raw_ops.FusedBatchNormV3(x=x, scale=ones, offset=zeros, mean=tf.zeros([0]), variance=tf.zeros([0]),
                                    is_training=True)[0]
    tf.identity(y, name='out')
  with pytest.raises(ValueError, match='training mode'):
    freeze.fold_batch_norms(graph.as_graph_def(), ['out'])


def _constant(graph_def, name):
  (node,) = [n for n in graph_def.node if n.name == name]
  return tf.make_ndarray(node.attr['value'].tensor)


def test_moving_averages_are_restored_first(tmp_path, caplog):
  build, shape = tiny_models.classification_build(num_classes=3), [1, 32, 32, 3]
  name = 'MobilenetV2/Conv/weights'
  with_ema = tiny_models.save_random_checkpoint(build, shape, tmp_path / 'ema', with_ema=True)
  raw_value = tf.train.load_variable(with_ema, name)
  ema_value = tf.train.load_variable(with_ema, name + freeze.EMA_SUFFIX)
  assert not np.allclose(ema_value, raw_value)
  caplog.set_level(logging.WARNING, logger='mnv2')
  ema = freeze.freeze(build, with_ema, shape, fold_batch_norm=False)
  assert np.allclose(_constant(ema.graph_def, name), ema_value)
  # Non-trainable batch-norm statistics have no shadow: their raw values, silently.
  mean = 'MobilenetV2/Conv/BatchNorm/moving_mean'
  assert np.allclose(_constant(ema.graph_def, mean), tf.train.load_variable(with_ema, mean))
  assert not [r for r in caplog.records if 'ExponentialMovingAverage' in r.getMessage()]
  raw = freeze.freeze(build, with_ema, shape, fold_batch_norm=False, use_moving_averages=False)
  assert np.allclose(_constant(raw.graph_def, name), raw_value)

  no_ema = tiny_models.save_random_checkpoint(build, shape, tmp_path / 'raw')
  caplog.clear()
  frozen = freeze.freeze(build, str(tmp_path / 'raw'), shape)  # a directory: its latest checkpoint
  assert any('no ExponentialMovingAverage' in r.getMessage() for r in caplog.records)
  assert list(frozen.outputs) == ['probabilities']
  assert frozen.outputs['probabilities'] == 'probabilities:0'
  assert not [n for n in frozen.graph_def.node if n.op in ('VariableV2', 'VarHandleOp', 'Assign')]
  probabilities = freeze.run(frozen, tiny_models.random_images(shape))['probabilities']
  assert probabilities.shape == (1, 3) and abs(probabilities.sum() - 1) < 1e-5
  assert no_ema
