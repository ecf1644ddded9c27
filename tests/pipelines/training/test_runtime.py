"""Where the model runs (pipelines/distribution.py): strategies, batch split, sync batch norm, mixed precision,
XLA, and loopback TF_CONFIG clusters.

Checks that need several devices or a fresh XLA flag state run in a child process (`_run_child`): TF 2.15
fixes the device list when the eager context starts and TensorFlow reads TF_XLA_FLAGS at the first session,
so another test of this process may already have fixed both.
"""
import logging
import os
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim

from pipelines.training import distribution
from pipelines.training import precision as precision_lib
from pipelines.training import sync_batch_norm
from tests.conftest import run_in_child
from tests.pipelines.training import cluster_util

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TF1 = tf.__version__.startswith('1.')


def _run_child(function, *args, timeout=300):
  """Runs `function(*args)` of this module in a fresh Python process; returns its output (asserts success)."""
  return run_in_child('tests.pipelines.training.test_runtime', function, *args, timeout=timeout)


# ----------------------------------------------------------------------------------------------------------
# Batch split and strategy selection


def test_per_replica_batch_size():
  assert distribution.per_replica_batch_size(32, 1) == 32
  assert distribution.per_replica_batch_size(32, 4) == 8
  with pytest.raises(ValueError, match=r'^train\.batch_size: 10 does not split evenly over 4 replicas'):
    distribution.per_replica_batch_size(10, 4)
  with pytest.raises(ValueError, match=r'^eval\.batch_size: 3 '):
    distribution.per_replica_batch_size(3, 2, key='eval.batch_size')


PS_CLUSTER = {'cluster': {'chief': ['127.0.0.1:1'], 'worker': ['127.0.0.1:2', '127.0.0.1:3'], 'ps': ['127.0.0.1:4']}}


def _task(cluster, task_type, index=0):
  return dict(cluster, task={'type': task_type, 'index': index})


def test_strategy_errors_name_the_key(monkeypatch):
  def error(**kwargs):
    with pytest.raises(ValueError) as info:
      distribution.make_distribution(**kwargs)
    message = str(info.value)
    assert '\n' not in message
    return message

  assert error(strategy='horovod').startswith("runtime.distribution.strategy: unknown 'horovod'")
  assert error(strategy='none', cpu_devices=2).startswith('runtime.distribution.cpu_devices: 2 logical CPU')
  assert error(strategy='mirrored', num_devices=2, gpus=[]).startswith(
      'runtime.distribution.num_devices: 2 GPUs asked, none visible')
  assert error(strategy='mirrored', num_devices=3, gpus=['/gpu:0', '/gpu:1']).startswith(
      'runtime.distribution.num_devices: 3 GPUs asked, 2 visible')
  assert 'TF_CONFIG describes a cluster' in error(strategy='mirrored', tf_config=_task(PS_CLUSTER, 'chief'))
  assert error(strategy='multi_worker_mirrored', tf_config={}).startswith(
      'runtime.distribution.strategy: multi_worker_mirrored needs TF_CONFIG with a cluster')
  assert 'ps' in error(strategy='multi_worker_mirrored', tf_config=_task(PS_CLUSTER, 'chief'))
  assert 'needs a ps job' in error(strategy='parameter_server',
                                   tf_config=_task({'cluster': {'chief': ['a:1'], 'worker': ['a:2']}}, 'chief'))
  # A stack whose Estimator cannot run a strategy: one line naming the key, the strategy and the stack.
  monkeypatch.setitem(distribution.UNSUPPORTED, (1 if TF1 else 2, 'multi_worker_mirrored'), 'reason here')
  assert error(strategy='multi_worker_mirrored', tf_config=_task(PS_CLUSTER, 'chief')) == (
      'runtime.distribution.strategy: multi_worker_mirrored is not supported by the Estimator on %s '
      '(reason here)' % distribution.STACK)


def test_local_and_parameter_server_placements():
  local = distribution.make_distribution('none', tf_config={})
  assert (local.train_distribute, local.eval_distribute, local.num_replicas) == (None, None, 1)
  base = tf.ConfigProto(intra_op_parallelism_threads=3)
  kwargs = local.run_config_kwargs(base)
  assert sorted(kwargs) == ['eval_distribute', 'session_config', 'train_distribute']
  assert kwargs['session_config'].intra_op_parallelism_threads == 3 and base.device_filters == []

  worker = distribution.make_distribution('parameter_server', tf_config=_task(PS_CLUSTER, 'worker', 1))
  assert (worker.train_distribute, worker.num_replicas, worker.num_workers) == (None, 1, 3)
  assert list(worker.session_config(base).device_filters) == ['/job:ps', '/job:worker/task:1']
  chief = distribution.make_distribution('parameter_server', tf_config=_task(PS_CLUSTER, 'chief'))
  assert list(chief.session_config().device_filters) == ['/job:ps', '/job:chief']
  evaluator = distribution.make_distribution('parameter_server', tf_config=_task(PS_CLUSTER, 'evaluator'))
  assert evaluator.session_config().device_filters == []


def test_estimator_mirrored_over_split_cpu():
  """mirrored + cpu_devices=2 under the Estimator: sync BN, float16 loss scaling, per-replica batch, checkpoint."""
  out = _run_child('estimator_on_split_cpu')
  assert 'ESTIMATOR OK' in out, out[-3000:]


def estimator_on_split_cpu():
  import tempfile  # pylint: disable=g-import-not-at-top
  placement = distribution.make_distribution('mirrored', cpu_devices=2, gpus=[])
  assert placement.num_replicas == 2 and placement.cpu_devices == 2
  assert placement.train_distribute.num_replicas_in_sync == 2 and placement.eval_distribute is None
  assert placement.session_config().device_count['CPU'] == 2
  one = distribution.make_distribution('mirrored', gpus=[])
  assert one.num_replicas == 1 and one.session_config().device_count.get('CPU', 0) == 0

  per_replica = distribution.per_replica_batch_size(8, placement.num_replicas)
  rng = np.random.RandomState(0)
  images, labels = rng.randn(16, 6, 6, 3).astype(np.float32), rng.randn(16, 2).astype(np.float32)
  seen = []

  def input_fn():
    return tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(per_replica, drop_remainder=True)

  def model_fn(features, labels, mode):
    seen.append(features.get_shape().as_list()[0])
    with slim.arg_scope([slim.batch_norm], is_training=True, scale=True, decay=0.9):
      net = slim.conv2d(features, 4, 3, normalizer_fn=sync_batch_norm.sync_batch_norm, scope='conv')
    net = tf.reduce_mean(slim.conv2d(net, 2, 1, activation_fn=None, scope='out'), [1, 2])
    loss = tf.reduce_mean(tf.square(net - labels))  # the Estimator's v1 optimizer divides by the replicas
    opt = precision_lib.mixed_precision_optimizer(tf.train.GradientDescentOptimizer(0.1), 'float16')
    with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
      train_op = opt.minimize(loss, global_step=tf.train.get_or_create_global_step())
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)

  session_config = precision_lib.mixed_precision_session_config('float16', tf.ConfigProto(allow_soft_placement=True),
                                                               emulate_float16_on_cpu=True, gpus=[])
  model_dir = tempfile.mkdtemp()
  run_config = tf.estimator.RunConfig(model_dir=model_dir, **placement.run_config_kwargs(session_config))
  assert run_config.session_config.device_count['CPU'] == 2
  tf.estimator.Estimator(model_fn, config=run_config).train(input_fn, max_steps=2)
  assert seen == [4, 4], seen  # model_fn once per replica, each on the per-replica batch
  checkpoint = tf.train.latest_checkpoint(model_dir)
  names = [name for name, _ in tf.train.list_variables(checkpoint)]
  assert checkpoint.endswith('-2')
  assert 'current_loss_scale' in names and 'conv/BatchNorm/moving_variance' in names
  assert not [n for n in names if 'replica' in n], names
  print('ESTIMATOR OK')


# ----------------------------------------------------------------------------------------------------------
# Sync batch norm


def _bn_graph(bn_fn, x, fused, regularize=False, data_format='NHWC'):
  """Builds bn_fn(x) training graph in a fresh graph; returns (graph, output, input grads, description)."""
  graph = tf.Graph()
  with graph.as_default():
    inputs = tf.constant(x)
    regularizers = {'gamma': slim.l2_regularizer(0.1)} if regularize else None
    out = bn_fn(inputs, decay=0.7, center=True, scale=True, epsilon=0.01, is_training=True, fused=fused,
                data_format=data_format,
                param_initializers={'gamma': tf.constant_initializer(1.5), 'beta': tf.constant_initializer(0.2)},
                param_regularizers=regularizers, variables_collections=['extra'])
    weights = np.arange(out.shape.num_elements(), dtype=np.float32).reshape(out.shape.as_list()) % 7
    loss = tf.reduce_sum(out * weights)
    grads = tf.gradients(loss, [inputs] + tf.trainable_variables())
    variables = [(v.name, v.shape.as_list(), v.dtype.name, type(v).__name__, v.trainable, v.synchronization,
                  v.aggregation) for v in tf.global_variables()]
    collections = {k: sorted(getattr(v, 'name', str(v)) for v in graph.get_collection(k))
                   for k in graph.get_all_collection_keys() if k != tf.GraphKeys.UPDATE_OPS}
    collections['num_update_ops'] = len(tf.get_collection(tf.GraphKeys.UPDATE_OPS))
  return graph, out, grads, (variables, collections)


def _run_bn(graph, out, grads):
  with graph.as_default(), tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    values = sess.run([out] + grads)
    sess.run(tf.get_collection(tf.GraphKeys.UPDATE_OPS))
    moving = sess.run([v for v in tf.global_variables() if 'moving' in v.name])
  return values, moving


@pytest.mark.parametrize('shape,fused,data_format', [((4, 3, 3, 5), None, 'NHWC'), ((4, 3, 3, 5), False, 'NHWC'),
                                                     ((4, 5, 3, 3), False, 'NCHW'), ((6, 5), False, 'NHWC')])
def test_sync_path_is_slim_batch_norm_on_one_replica(shape, fused, data_format):
  """The sync code path with an identity all-reduce = slim.batch_norm: variables, collections, numbers."""
  x = np.random.RandomState(0).randn(*shape).astype(np.float32) * 2 + 1
  sync = lambda inputs, **kw: sync_batch_norm.batch_norm_synchronized(inputs, tf.identity, **kw)  # noqa: E731
  reference = _bn_graph(slim.batch_norm, x, fused, regularize=True, data_format=data_format)
  candidate = _bn_graph(sync, x, fused, regularize=True, data_format=data_format)
  assert candidate[3] == reference[3]
  names = [v[0] for v in reference[3][0]]
  assert names == ['BatchNorm/gamma:0', 'BatchNorm/beta:0', 'BatchNorm/moving_mean:0', 'BatchNorm/moving_variance:0']
  ref_values, ref_moving = _run_bn(*reference[:3])
  values, moving = _run_bn(*candidate[:3])
  for a, b in zip(values + moving, ref_values + ref_moving):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_sync_path_tensor_is_training_and_in_place_updates():
  """A bool-tensor is_training behaves as in slim.batch_norm; updates_collections=None updates in place.

  (On TF 2.15 slim.batch_norm itself fails with updates_collections=None -- its fused / non-layer paths call
  tf_slim's utils.constant_value, which uses the removed ops.Tensor -- so in-place updates are checked
  against the UPDATE_OPS run.)
  """
  x = np.random.RandomState(2).randn(4, 3, 3, 2).astype(np.float32) + 0.5
  sync = lambda inputs, **kw: sync_batch_norm.batch_norm_synchronized(inputs, tf.identity, **kw)  # noqa: E731
  results = []
  for bn in (slim.batch_norm, sync):
    with tf.Graph().as_default():
      training = tf.placeholder_with_default(True, [])
      out = bn(tf.constant(x), decay=0.5, scale=True, is_training=training)
      moving = [v for v in tf.global_variables() if 'moving' in v.name]
      updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
      with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        values = [sess.run(out)]
        sess.run(updates)
        values += sess.run(moving) + [sess.run(out, {training: False})]
        sess.run(updates, {training: False})  # eval mode: the moving statistics stay
        values += sess.run(moving)
    results.append(values)
  # The first four values (training output, moving mean and variance after the training update, eval output)
  # are slim's. After the eval-mode update the reference is the statistics themselves, not slim's values: TF
  # 1.15's slim (a Keras layer) multiplies the inference FusedBatchNorm's undefined batch-mean output by a
  # zero momentum there, which is NaN now and then (seen in a suite run, on uninitialized memory).
  for a, b in zip(results[0][:4], results[1][:4]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  for a, b in zip(results[1][1:3], results[1][4:]):
    np.testing.assert_array_equal(a, b)
  with tf.Graph().as_default():
    out = sync(tf.constant(x), decay=0.5, scale=True, is_training=True, updates_collections=None)
    assert not tf.get_collection(tf.GraphKeys.UPDATE_OPS)
    moving = [v for v in tf.global_variables() if 'moving' in v.name]
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      sess.run(out)
      in_place = sess.run(moving)
  for a, b in zip(in_place, results[1][1:3]):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_sync_batch_norm_is_slim_outside_a_strategy(graph):
  """Outside a strategy (and in eval mode) sync_batch_norm builds slim.batch_norm, honoring its arg_scope."""
  x = tf.constant(np.random.RandomState(1).randn(2, 4, 4, 3).astype(np.float32))
  with slim.arg_scope([slim.batch_norm], decay=0.5, scale=True, is_training=True):
    with slim.arg_scope([slim.conv2d], normalizer_fn=sync_batch_norm.sync_batch_norm):
      slim.conv2d(x, 4, 3, scope='a')
    with slim.arg_scope([sync_batch_norm.sync_batch_norm], epsilon=0.1):  # same entry as slim.batch_norm
      assert slim.arg_scope_func_key(sync_batch_norm.sync_batch_norm) == slim.arg_scope_func_key(slim.batch_norm)
      sync_batch_norm.sync_batch_norm(x, is_training=False, scope='b')
  names = sorted(v.op.name for v in tf.global_variables())
  assert names == ['a/BatchNorm/beta', 'a/BatchNorm/gamma', 'a/BatchNorm/moving_mean', 'a/BatchNorm/moving_variance',
                   'a/weights', 'b/beta', 'b/gamma', 'b/moving_mean', 'b/moving_variance']
  assert len(tf.get_collection(tf.GraphKeys.UPDATE_OPS)) == 2  # 'a' trains, 'b' is in eval mode


def test_sync_batch_norm_two_replicas_match_one_device():
  out = _run_child('sync_bn_equivalence')
  assert 'SYNC BN OK' in out, out[-3000:]


GLOBAL_BATCH = 8


def _tiny_net(images, labels, bn_fn):
  """conv(BN, relu) -> conv(BN) -> 1x1 conv; BN params come from slim.batch_norm's arg_scope."""
  init = lambda shape, seed: tf.constant_initializer(  # noqa: E731
      np.random.RandomState(seed).randn(*shape).astype(np.float32) * 0.3)
  with slim.arg_scope([slim.batch_norm], decay=0.8, epsilon=0.01, center=True, scale=True, is_training=True), \
      slim.arg_scope([slim.conv2d], normalizer_fn=bn_fn):
    net = slim.conv2d(images, 6, 3, weights_initializer=init([3, 3, 3, 6], 1), scope='conv1')
    net = slim.conv2d(net, 5, 1, activation_fn=None, weights_initializer=init([1, 1, 6, 5], 2), scope='conv2')
    net = slim.conv2d(net, 2, 1, activation_fn=None, normalizer_fn=None, weights_initializer=init([1, 1, 5, 2], 3),
                      scope='logits')
  return tf.reduce_mean(tf.square(net - labels))


def _train_one_step(bn_fn, num_replicas, images, labels):
  """One GradientDescent step on the global batch over `num_replicas` CPU replicas; returns variables' values."""
  graph = tf.Graph()
  with graph.as_default():
    strategy = tf.distribute.MirroredStrategy(['/cpu:%d' % i for i in range(num_replicas)]) if num_replicas > 1 \
        else None
    per_replica = GLOBAL_BATCH // num_replicas

    def step():
      replica = tf.distribute.get_replica_context().replica_id_in_sync_group if strategy else 0
      start = tf.convert_to_tensor(replica) * per_replica
      x = tf.slice(tf.constant(images), tf.stack([start, 0, 0, 0]), [per_replica] + list(images.shape[1:]))
      y = tf.slice(tf.constant(labels), tf.stack([start, 0, 0, 0]), [per_replica] + list(labels.shape[1:]))
      # Each replica's MEAN loss / num_replicas: the optimizer SUMs the replicas' gradients. (Inside the
      # Estimator a v1 optimizer does this division itself -- loss reduction MEAN -- so model_fns must not.)
      loss = _tiny_net(x, y, bn_fn) / num_replicas
      with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
        return tf.train.GradientDescentOptimizer(0.5).minimize(loss)

    if strategy:
      with strategy.scope():
        train_op = tf.group(strategy.experimental_local_results(strategy.extended.call_for_each_replica(step)))
    else:
      train_op = step()
    variables = {v.name.split(':')[0]: v for v in tf.global_variables()}
    copies = {name: strategy.experimental_local_results(v) if strategy else [v] for name, v in variables.items()}
    description = sorted((name, v.shape.as_list(), v.trainable) for name, v in variables.items())
    with tf.Session(config=tf.ConfigProto(device_count={'CPU': 2})) as sess:
      sess.run(tf.global_variables_initializer())
      sess.run(train_op)
      values = {name: sess.run(list(c)) for name, c in copies.items()}
  return values, description


def sync_bn_equivalence():
  rng = np.random.RandomState(0)
  images = rng.randn(GLOBAL_BATCH, 5, 5, 3).astype(np.float32)
  images[GLOBAL_BATCH // 2:] = images[GLOBAL_BATCH // 2:] * 3.0 + 2.0  # replicas see different statistics
  labels = rng.randn(GLOBAL_BATCH, 5, 5, 2).astype(np.float32)
  one, one_vars = _train_one_step(sync_batch_norm.sync_batch_norm, 1, images, labels)
  two, two_vars = _train_one_step(sync_batch_norm.sync_batch_norm, 2, images, labels)
  local, local_vars = _train_one_step(slim.batch_norm, 2, images, labels)
  assert one_vars == two_vars == local_vars, (one_vars, two_vars)
  worst, bad = 0.0, []
  for name, values in sorted(one.items()):
    for copy in two[name]:  # every replica's copy (mirrored weights, per-replica moving statistics)
      worst = max(worst, float(np.max(np.abs(copy - values[0]))))
      if not np.allclose(copy, values[0], rtol=1e-5, atol=1e-5):
        bad.append('%s: %s vs %s' % (name, copy.ravel()[:3], values[0].ravel()[:3]))
  assert not bad, '\n'.join(bad)
  # Sanity: plain slim.batch_norm over the same two replicas does NOT match (per-replica moments).
  assert not np.allclose(local['conv1/BatchNorm/moving_variance'][0], one['conv1/BatchNorm/moving_variance'][0],
                         rtol=1e-3, atol=1e-3)
  assert not np.allclose(local['conv1/weights'][0], one['conv1/weights'][0], rtol=1e-4, atol=1e-4)
  print('SYNC BN OK max abs diff %.3g over %d variables' % (worst, len(one)))


# ----------------------------------------------------------------------------------------------------------
# Mixed precision


def test_mixed_precision_arguments_and_warnings(caplog):
  with pytest.raises(ValueError, match=r'^runtime\.mixed_precision: unknown'):
    precision_lib.mixed_precision_optimizer(tf.train.GradientDescentOptimizer(0.1), 'float8')
  opt = tf.train.GradientDescentOptimizer(0.1)
  assert precision_lib.mixed_precision_optimizer(opt, None) is opt
  assert precision_lib.mixed_precision_optimizer(opt, 'bfloat16') is opt
  assert precision_lib.mixed_precision_optimizer(opt, 'float16') is not opt
  precision_lib._WARNED.clear()  # pylint: disable=protected-access
  caplog.set_level(logging.WARNING, logger='mnv2')
  assert precision_lib.effective_precision('float16', gpus=[]) is None
  assert precision_lib.effective_precision('float16', gpus=[]) is None
  assert precision_lib.effective_precision('float16', gpus=['/gpu:0']) == 'float16'
  assert precision_lib.effective_precision('bfloat16', flags={'avx2'}) is None
  expected = None if TF1 else 'bfloat16'
  assert precision_lib.effective_precision('bfloat16', flags={'avx512_bf16'}) == expected
  warnings = [r.getMessage() for r in caplog.records if r.name == 'mnv2']
  assert len(warnings) == 2, warnings  # one per fallback, not per call
  assert warnings[0].startswith('runtime.mixed_precision: float16 needs a GPU') and 'float32' in warnings[0]
  assert 'bfloat16' in warnings[1] and 'float32' in warnings[1]
  rewrite = precision_lib.mixed_precision_session_config('float16', gpus=['/gpu:0']).graph_options.rewrite_options
  assert rewrite.auto_mixed_precision == 1  # RewriterConfig.ON
  rewrite = precision_lib.mixed_precision_session_config('float16', gpus=[]).graph_options.rewrite_options
  assert rewrite.auto_mixed_precision == 0


def _mixed_precision_step(tmp_path, precision, emulate):
  """One training step of a tiny conv net with `precision`; returns (cast dtypes, conv dtypes, checkpoint)."""
  graph = tf.Graph()
  with graph.as_default():
    images = tf.constant(np.random.RandomState(0).randn(2, 6, 6, 3).astype(np.float32))
    with slim.arg_scope([slim.batch_norm], is_training=True, scale=True):
      net = slim.conv2d(images, 4, 3, normalizer_fn=sync_batch_norm.sync_batch_norm, scope='conv')
    net = slim.conv2d(net, 2, 1, activation_fn=None, scope='out')
    loss = tf.reduce_mean(tf.square(net))
    opt = precision_lib.mixed_precision_optimizer(tf.train.GradientDescentOptimizer(0.1), precision)
    with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
      train_op = opt.minimize(loss, global_step=tf.train.get_or_create_global_step())
    config = precision_lib.mixed_precision_session_config(precision, emulate_float16_on_cpu=emulate, gpus=[])
    saver = tf.train.Saver()
    with tf.Session(config=config) as sess:
      sess.run(tf.global_variables_initializer())
      metadata = tf.RunMetadata()
      sess.run(train_op, options=tf.RunOptions(output_partition_graphs=True), run_metadata=metadata)
      path = saver.save(sess, str(tmp_path / 'model.ckpt'))
  nodes = [n for g in metadata.partition_graphs for n in g.node]
  casts = {tf.DType(n.attr['DstT'].type).name for n in nodes if n.op == 'Cast'}
  convs = {tf.DType(n.attr['T'].type).name for n in nodes if 'Conv2D' in n.op}
  return casts, convs, path


def _reload_float32(path):
  """A float32 graph (no loss scaling) restores the checkpoint; returns its conv weights."""
  with tf.Graph().as_default():
    images = tf.zeros([1, 6, 6, 3])
    with slim.arg_scope([slim.batch_norm], is_training=False, scale=True):
      net = slim.conv2d(images, 4, 3, normalizer_fn=slim.batch_norm, scope='conv')
    slim.conv2d(net, 2, 1, activation_fn=None, scope='out')
    tf.train.get_or_create_global_step()
    with tf.Session() as sess:
      tf.train.Saver().restore(sess, path)
      return sess.run(tf.global_variables('conv/weights')[0])


def test_float16_graph_and_checkpoint(tmp_path):
  """float16: loss-scale variables in the checkpoint on every host; the float16 casts where TF can show them
  on CPU (TF 2.15's auto_mixed_precision_cpu emulation); variables stay float32; float32 reloads it."""
  casts, convs, path = _mixed_precision_step(tmp_path, 'float16', emulate=True)
  names = dict(tf.train.list_variables(path))
  assert 'current_loss_scale' in names and 'good_steps' in names
  reader = tf.train.load_checkpoint(path)
  assert reader.get_variable_to_dtype_map()['conv/weights'] == tf.float32
  assert reader.get_tensor('current_loss_scale') == 2.0 ** 15
  if TF1:
    assert 'float16' not in casts  # no GPU: the rewrite does not run (no CPU emulation in TF 1.15)
  else:
    assert 'float16' in casts and convs == {'float32'}  # emulation: fp16 casts around fp32 kernels
  np.testing.assert_allclose(_reload_float32(path), reader.get_tensor('conv/weights'))


@pytest.mark.skipif(TF1 or not precision_lib.cpu_supports_bfloat16(), reason='needs TF 2.x and an AVX512_BF16/AMX CPU')
def test_bfloat16_rewrite_on_cpu(tmp_path):
  casts, convs, path = _mixed_precision_step(tmp_path, 'bfloat16', emulate=False)
  assert 'bfloat16' in casts and 'bfloat16' in convs
  names = dict(tf.train.list_variables(path))
  assert 'current_loss_scale' not in names
  assert tf.train.load_checkpoint(path).get_variable_to_dtype_map()['conv/weights'] == tf.float32


# ----------------------------------------------------------------------------------------------------------
# XLA


def test_xla_session_config():
  config = precision_lib.xla_session_config(False, tf.ConfigProto(inter_op_parallelism_threads=2))
  assert config.graph_options.optimizer_options.global_jit_level == tf.OptimizerOptions.DEFAULT
  config = precision_lib.xla_session_config(True, tf.ConfigProto(inter_op_parallelism_threads=2), gpus=['/gpu:0'])
  assert config.graph_options.optimizer_options.global_jit_level == tf.OptimizerOptions.ON_1
  assert config.inter_op_parallelism_threads == 2
  assert 'XLA OK' in _run_child('xla_compiles_on_cpu')


def xla_compiles_on_cpu():
  os.environ.pop('TF_XLA_FLAGS', None)
  config = precision_lib.xla_session_config(True, gpus=[])
  assert '--tf_xla_cpu_global_jit' in os.environ['TF_XLA_FLAGS']
  with tf.Graph().as_default():
    x = tf.constant(np.ones([4, 8], np.float32))
    w = tf.get_variable('w', initializer=tf.constant(np.full([8, 8], 0.5, np.float32)))
    y = tf.reduce_sum(tf.nn.relu(tf.matmul(x, w) * 2.0 + 1.0))
    with tf.Session(config=config) as sess:
      sess.run(tf.global_variables_initializer())
      metadata = tf.RunMetadata()
      value = sess.run(y, options=tf.RunOptions(output_partition_graphs=True), run_metadata=metadata)
  ops = {n.op for g in metadata.partition_graphs for n in g.node}
  assert abs(value - 4 * 8 * 9.0) < 1e-3, value
  assert '_XlaCompile' in ops and '_XlaRun' in ops, sorted(ops)
  print('XLA OK')


# ----------------------------------------------------------------------------------------------------------
# Loopback TF_CONFIG clusters


def _cluster_command(model_dir, strategy, steps, *extra):
  return [sys.executable, '-m', 'tests.pipelines.training.cluster_util', 'train', '--model-dir', model_dir,
          '--strategy', strategy, '--steps', str(steps)] + list(extra)


def test_parameter_server_cluster(tmp_path):
  """chief + worker + ps + evaluator reach max_steps and stop by themselves (ps is stopped by the harness).

  The Estimator starts worker i (i + 1) x 5 s late; 10 ms of sleep per step keeps the chief busy long enough
  (about 8 s alone) for the worker to take part in the asynchronous training.
  """
  cluster = cluster_util.make_cluster(chief=1, workers=1, ps=1)
  model_dir = str(tmp_path / 'model')
  run = cluster_util.run_cluster(_cluster_command(model_dir, 'parameter_server', 600, '--step-sleep-secs', '0.01'),
                                 cluster, str(tmp_path / 'logs'), evaluator=True, timeout=240, cwd=ROOT)
  assert run.returncodes['chief:0'] == 0 and run.returncodes['worker:0'] == 0
  assert run.returncodes['evaluator:0'] == 0
  step = int(tf.train.latest_checkpoint(model_dir).split('-')[-1])
  assert step >= 600  # asynchronous workers may overshoot max_steps by a step or two
  assert 'loss = ' in run.logs['worker:0'], run.summary()  # the worker trained too
  for name in ('chief:0', 'worker:0', 'evaluator:0'):
    assert 'CLUSTER DONE %s' % name in run.logs[name], run.summary()
  print('parameter_server cluster: %.1fs' % run.seconds)


def test_multi_worker_mirrored_cluster(tmp_path):
  """chief + worker all-reduce synchronously (sync BN across processes) + an evaluator outside the collective."""
  cluster = cluster_util.make_cluster(chief=1, workers=1, ps=0)
  model_dir = str(tmp_path / 'model')
  run = cluster_util.run_cluster(_cluster_command(model_dir, 'multi_worker_mirrored', 20), cluster,
                                 str(tmp_path / 'logs'), evaluator=True, timeout=240, cwd=ROOT)
  assert tf.train.latest_checkpoint(model_dir).endswith('-20')
  assert 'CLUSTER DONE chief:0 replicas 2 step 20' in run.logs['chief:0'], run.summary()
  assert 'CLUSTER DONE worker:0 replicas 2' in run.logs['worker:0'], run.summary()
  assert 'CLUSTER DONE evaluator:0 replicas 1 step 20' in run.logs['evaluator:0'], run.summary()
  # Synchronous: both workers log the same losses (same global-batch step, same variables).
  losses = [[line.split('loss = ')[1].split(',')[0] for line in run.logs[name].splitlines() if 'loss = ' in line]
            for name in ('chief:0', 'worker:0')]
  assert losses[0] and losses[0] == losses[1], losses
  print('multi_worker_mirrored cluster: %.1fs' % run.seconds)


def test_cluster_harness_kills_on_failure(tmp_path):
  cluster = cluster_util.make_cluster(chief=1, workers=1, ps=1)

  def command(task_type, index):  # pylint: disable=unused-argument
    if task_type == 'worker':
      return [sys.executable, '-c', 'import sys; sys.exit(3)']
    return [sys.executable, '-c', 'import time; time.sleep(60)']

  with pytest.raises(cluster_util.ClusterError, match='worker:0 exited with status 3'):
    cluster_util.run_cluster(command, cluster, str(tmp_path / 'logs'), timeout=30)
  with pytest.raises(cluster_util.ClusterError, match='timeout after 1s'):
    cluster_util.run_cluster([sys.executable, '-c', 'import time; time.sleep(60)'], {'chief': ['127.0.0.1:1']},
                             str(tmp_path / 'logs2'), timeout=1)
