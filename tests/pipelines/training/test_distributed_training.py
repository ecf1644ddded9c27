"""The real pipeline (config -> runner -> Estimator) under `runtime.distribution`, `runtime.mixed_precision`,
`runtime.xla` and `train.sync_batch_norm`, on CPU: a tiny classification model (MobileNetV2 0.35, 32 px).

Multi-device checks run in a child process (TF 2.15 fixes the device list when the eager context starts and
TensorFlow reads TF_XLA_FLAGS at the first session). Cluster tests start one `python -m pipelines train`
process per TF_CONFIG task on free 127.0.0.1 ports (`cluster_util`).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from pipelines import config as config_schema
from pipelines import config_lib
from pipelines.training import distribution
from pipelines.training import sync_batch_norm
from pipelines.inputs import input_common
from tests.conftest import run_in_child
from tests.conftest import tiny_imagenet_records
from tests.pipelines.training import cluster_util

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

CONFIG = """
task: classification
model: {depth_multiplier: 0.35}
classification: {image_size: 32, num_classes: 4}  # background + the 3 classes of the tiny records
data: {train_files: '%(data)s/train-*', eval_files: '%(data)s/train-*', num_train_examples: 8, shuffle_buffer: 8,
       num_parallel_reads: 2, prefetch: 1}
train: {batch_size: 4, steps: 2, optimizer: sgd, learning_rate: {schedule: constant, base: 0.01}}
eval: {batch_size: 4, steps: 1}
runtime: {save_checkpoints_steps: 100, seed: 1, log_every_n_steps: 1, save_summary_steps: 100}
"""


def _write_config(tmp_path, records):
  path = str(tmp_path / 'config.yaml')
  with open(path, 'w') as f:
    f.write(CONFIG % {'data': records})
  return path


def _run_child(function, *args, timeout=900):
  """Runs `function(*args)` of this module in a fresh Python process; returns its output (asserts success)."""
  return run_in_child('tests.pipelines.training.test_distributed_training', function, *args, timeout=timeout)


def _fast_sessions():
  """Grappler off in this (child) process: every new fetch set of a session re-optimizes the whole graph,
  about 20 s per set for the 2-replica MobileNetV2 graph on a loaded 2-core host; the tests check behaviour,
  not speed. (XLA clustering and the runner's session settings are not grappler passes.)"""
  from pipelines.training import runner  # pylint: disable=g-import-not-at-top
  original = runner.session_config

  def session_config(config):
    proto = original(config)
    proto.graph_options.rewrite_options.disable_meta_optimizer = True
    return proto

  runner.session_config = session_config


# ----------------------------------------------------------------------------------------------------------
# Config keys, batch split


def test_distribution_keys_validate(tmp_path):
  path = _write_config(tmp_path, str(tmp_path))
  config = config_schema.load(path)
  assert config.runtime.distribution.strategy == 'none' and config.runtime.distribution.num_devices == 0
  assert config.runtime.distribution.cpu_devices == 1 and config.runtime.mixed_precision is None
  assert not config.runtime.xla and not config.train.sync_batch_norm
  with pytest.raises(config_lib.ConfigError, match='runtime.distribution.strategy'):
    config_schema.load(path, ['runtime.distribution.strategy=horovod'])
  with pytest.raises(config_lib.ConfigError, match='runtime.mixed_precision'):
    config_schema.load(path, ['runtime.mixed_precision=int8'])
  with pytest.raises(config_lib.ConfigError, match='runtime.distribution.cpu_devices'):
    config_schema.load(path, ['runtime.distribution.cpu_devices=0'])


def test_global_batch_split_and_its_error(tmp_path):
  path = _write_config(tmp_path, str(tmp_path))
  mirrored = ['runtime.distribution.strategy=mirrored', 'runtime.distribution.cpu_devices=2']
  if distribution.visible_gpus():
    pytest.skip('a GPU is visible: mirrored uses it instead of the split CPU')
  assert input_common.split(config_schema.load(path, mirrored), tf.estimator.ModeKeys.TRAIN)[1] == 2
  assert input_common.split(config_schema.load(path), tf.estimator.ModeKeys.TRAIN)[1] == 4
  assert input_common.split(config_schema.load(path, mirrored), tf.estimator.ModeKeys.EVAL)[1] == 4  # eval: 1 device
  with pytest.raises(ValueError, match=r'^train\.batch_size: 5 does not split evenly over 2 replicas'):
    input_common.train_batch_per_replica(config_schema.load(path, mirrored + ['train.batch_size=5']))
  # multi_worker_mirrored: workers x local replicas; the evaluator reads whole eval batches.
  cluster = {'chief': ['127.0.0.1:1'], 'worker': ['127.0.0.1:2', '127.0.0.1:3']}
  tf_config = {'cluster': cluster, 'task': {'type': 'worker', 'index': 0}}
  assert distribution.replicas_in_sync('multi_worker_mirrored', tf_config=tf_config, gpus=[]) == 3
  assert distribution.replicas_in_sync('multi_worker_mirrored', tf_config=tf_config, gpus=['/gpu:0', '/gpu:1']) == 6
  tf_config['task'] = {'type': 'evaluator', 'index': 0}
  assert distribution.replicas_in_sync('multi_worker_mirrored', tf_config=tf_config, gpus=[]) == 1
  assert distribution.replicas_in_sync('parameter_server', gpus=[]) == 1
  assert distribution.replicas_in_sync('mirrored', num_devices=2, gpus=['/gpu:0', '/gpu:1', '/gpu:2']) == 2


def test_cli_names_the_key_when_batch_does_not_split(tmp_path, capsys):
  from pipelines.cli import main  # pylint: disable=g-import-not-at-top
  records = tiny_imagenet_records(tmp_path, 3)
  path = _write_config(tmp_path, records)
  if distribution.visible_gpus():
    pytest.skip('a GPU is visible')
  # In a child process: TF 2.15 fixes the logical CPU devices when the first test of this process starts TF.
  child = subprocess.run([sys.executable, '-m', 'pipelines', 'train', '--config', path, '--model-dir',
                          str(tmp_path / 'm'), '--set', 'runtime.distribution.strategy=mirrored', '--set',
                          'runtime.distribution.cpu_devices=2', '--set', 'train.batch_size=5'], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=600)
  code = child.returncode
  assert code != 0
  err = child.stderr
  assert 'error: train.batch_size: 5 does not split evenly over 2 replicas' in err, err


# ----------------------------------------------------------------------------------------------------------
# mirrored over 2 logical CPU devices, sync batch norm


def _child_setup(tmp_dir):
  """In a child process: the 'mnv2' log lines collected into a list, tmp_dir as a Path, a config over tiny
  3-class records written there. Returns (lines, tmp_path, config path)."""
  import logging  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  lines = []

  class Collect(logging.Handler):
    def emit(self, record):
      lines.append(record.getMessage())

  logging.getLogger('mnv2').addHandler(Collect())
  logging.getLogger('mnv2').setLevel(logging.INFO)
  tmp_path = pathlib.Path(tmp_dir)
  return lines, tmp_path, _write_config(tmp_path, tiny_imagenet_records(tmp_path, 3))


def test_mirrored_split_cpu_trains_resumes_and_keeps_names(tmp_path):
  out = _run_child('mirrored_train_resume', tmp_path)
  assert 'MIRRORED PIPELINE OK' in out, out[-4000:]


def mirrored_train_resume(tmp_dir):
  from pipelines.training import runner  # pylint: disable=g-import-not-at-top
  lines, tmp_path, path = _child_setup(tmp_dir)
  single_dir, mirrored_dir = str(tmp_path / 'single'), str(tmp_path / 'mirrored')
  mirrored = ['runtime.distribution.strategy=mirrored', 'runtime.distribution.cpu_devices=2',
              'train.sync_batch_norm=true']
  # The split-CPU run first: TF 2.15 fixes the logical devices when the eager context starts.
  runner.train(runner.load_config(path, mirrored + ['train.steps=1'], 'train'), mirrored_dir)
  assert any('strategy mirrored, 2 replica(s) x 2 per replica = batch 4 per step' in l for l in lines), lines
  first = tf.train.latest_checkpoint(mirrored_dir)
  assert first.endswith('-1'), first
  # Resume: the same model dir trains on from step 1.
  runner.train(runner.load_config(path, mirrored + ['train.steps=3'], 'train'), mirrored_dir)
  assert tf.train.latest_checkpoint(mirrored_dir).endswith('-3')
  assert any(l.startswith('step 3 ') and 'examples/s' in l for l in lines), lines
  # What a single-device run saves: the global variables of the same model_fn in TRAIN mode on one device.
  config = runner.load_config(path, (), 'train')
  with tf.Graph().as_default():
    from pipelines.training import skeleton  # pylint: disable=g-import-not-at-top
    features = {'image': tf.zeros([4, 32, 32, 3])}
    skeleton.make_model_fn(runner.make_task(config), single_dir)(features, tf.zeros([4], tf.int64), 'train')
    single = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
  # Under a strategy the batch-norm statistics are synchronized on read and not averaged
  # (`skeleton.averaged_variables`): a single device also saves their averages.
  statistics = ('moving_mean/ExponentialMovingAverage', 'moving_variance/ExponentialMovingAverage')
  assert any(name.endswith(statistics) for name in single)
  single = dict((name, shape) for name, shape in single.items() if not name.endswith(statistics))
  multi = dict(tf.train.list_variables(tf.train.latest_checkpoint(mirrored_dir)))
  assert sorted(single) == sorted(multi), set(single) ^ set(multi)
  assert single == multi  # same shapes too
  assert 'MobilenetV2/Conv/BatchNorm/moving_mean' in multi
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(mirrored_dir))
  for name in multi:
    value = reader.get_tensor(name)
    assert np.all(np.isfinite(value)), name
  with open(os.path.join(mirrored_dir, 'config.yaml')) as f:
    assert 'sync_batch_norm: true' in f.read()
  print('MIRRORED PIPELINE OK')


def test_sync_batch_norm_through_builder_matches_one_device():
  out = _run_child('builder_sync_bn_equivalence')
  assert 'BUILDER SYNC BN OK' in out, out[-4000:]


GLOBAL_BATCH = 8


def _builder_step(config, num_replicas, images, labels):
  """One SGD step of the classification task's real graph (model_builder backbone + head) on the global batch
  split over `num_replicas` CPU replicas; returns {variable name: [value per replica copy]}."""
  from pipelines.tasks import model_builder  # pylint: disable=g-import-not-at-top
  graph = tf.Graph()
  with graph.as_default():
    tf.set_random_seed(1)
    strategy = tf.distribute.MirroredStrategy(['/cpu:%d' % i for i in range(num_replicas)]) \
        if num_replicas > 1 else None
    per_replica = GLOBAL_BATCH // num_replicas

    def step():
      replica = tf.distribute.get_replica_context().replica_id_in_sync_group if strategy else 0
      start = tf.convert_to_tensor(replica) * per_replica
      x = tf.slice(tf.constant(images), tf.stack([start, 0, 0, 0]), [per_replica] + list(images.shape[1:]))
      y = tf.slice(tf.constant(labels), tf.stack([start]), [per_replica])
      # The real builder (arg_scope + backbone with its normalizer_fn hook), cut at layer_4 to stay fast.
      with _arg_scope(model_builder.arg_scope(config, True)):
        end_points, _ = model_builder.backbone(config, x, ['layer_4'])
      pooled = tf.reduce_mean(end_points['layer_4'], [1, 2])
      weights = tf.get_variable('logits/weights', [pooled.shape.as_list()[-1], 3],
                                initializer=tf.ones_initializer())
      logits = tf.matmul(pooled, weights)
      loss = tf.losses.sparse_softmax_cross_entropy(y, logits, loss_collection=None) / num_replicas
      with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
        return tf.train.GradientDescentOptimizer(0.1).minimize(loss)

    step = tf.autograph.experimental.do_not_convert(step)  # TF 2.x: call_for_each_replica would convert it
    if strategy:
      with strategy.scope():
        train_op = tf.group(strategy.experimental_local_results(strategy.extended.call_for_each_replica(step)))
    else:
      train_op = step()
    variables = {v.name.split(':')[0]: v for v in tf.global_variables()}
    copies = {name: strategy.experimental_local_results(v) if strategy else [v] for name, v in variables.items()}
    # Same initial values on every run: initialize from fixed seeds per variable.
    assigns = [v.assign(np.random.RandomState(i).randn(*v.shape.as_list()).astype(np.float32) * 0.1
                        if 'moving_variance' not in name and 'gamma' not in name
                        else np.ones(v.shape.as_list(), np.float32))
               for i, (name, v) in enumerate(sorted(variables.items()))]
    with tf.Session(config=tf.ConfigProto(device_count={'CPU': 2})) as sess:
      sess.run(tf.global_variables_initializer())
      sess.run(assigns)
      sess.run(train_op)
      return {name: sess.run(list(c)) for name, c in copies.items()}


def _arg_scope(scope):
  import tf_slim as slim  # pylint: disable=g-import-not-at-top
  return slim.arg_scope(scope)


def builder_sync_bn_equivalence():
  import tempfile  # pylint: disable=g-import-not-at-top
  tmp = tempfile.mkdtemp()
  path = os.path.join(tmp, 'config.yaml')
  with open(path, 'w') as f:
    f.write(CONFIG % {'data': tmp})
  overrides = ['classification.dropout_keep_prob=1.0', 'model.weight_decay=0', 'train.moving_average_decay=null']
  sync = config_schema.load(path, overrides + ['train.sync_batch_norm=true'])
  plain = config_schema.load(path, overrides)
  rng = np.random.RandomState(0)
  images = rng.uniform(-1, 1, [GLOBAL_BATCH, 32, 32, 3]).astype(np.float32)
  images[GLOBAL_BATCH // 2:] = images[GLOBAL_BATCH // 2:] * 0.3 + 0.5  # the replicas see different statistics
  labels = rng.randint(0, 3, [GLOBAL_BATCH]).astype(np.int64)
  one = _builder_step(sync, 1, images, labels)
  two = _builder_step(sync, 2, images, labels)
  local = _builder_step(plain, 2, images, labels)
  assert sorted(one) == sorted(two) == sorted(local)
  worst, bad = 0.0, []
  for name, values in sorted(one.items()):
    for copy in two[name]:
      diff = float(np.max(np.abs(copy - values[0]))) if copy.size else 0.0
      worst = max(worst, diff)
      # TF 1.15's fused batch-norm gradient (the one-device reference) differs from the sync path's composite
      # ops by up to ~6e-4 after one step at lr 0.5 through 7 layers; TF 2.15 agrees to 1e-4.
      tolerance = 1e-3 if tf.__version__.startswith('1.') else 1e-4
      if not np.allclose(copy, values[0], rtol=tolerance, atol=tolerance):
        bad.append('%s: max abs diff %.3g' % (name, diff))
  assert not bad, '\n'.join(bad)
  # Sanity: plain slim BN over the same replicas (per-replica moments) is far from the one-device step.
  local_diff = max(float(np.max(np.abs(local[name][0] - one[name][0]))) for name in one if one[name][0].size)
  assert local_diff > 10 * max(worst, 1e-7), (local_diff, worst)
  print('BUILDER SYNC BN OK max abs diff %.3g over %d variables' % (worst, len(one)))


# ----------------------------------------------------------------------------------------------------------
# Mixed precision and XLA through the pipeline


@pytest.mark.skipif(tf.__version__.startswith('1.'), reason=(
    'TF 1.15: XLA JIT-compiling the whole MobileNetV2 training graph on a 2-core CPU did not finish in 15 min; '
    'the float16 loss scale and the XLA session setting are checked on a small graph in test_runtime.py'))
def test_mixed_precision_and_xla_pipeline(tmp_path):
  out = _run_child('precision_and_xla', tmp_path)
  assert 'PRECISION XLA OK' in out, out[-4000:]


def precision_and_xla(tmp_dir):
  from pipelines.training import runner  # pylint: disable=g-import-not-at-top
  lines, tmp_path, path = _child_setup(tmp_dir)
  gpu = bool(distribution.visible_gpus())
  # float16 + XLA in one run: the session config the runner builds, a few steps, finite loss.
  model_dir = str(tmp_path / 'fp16')
  config = runner.load_config(path, ['runtime.mixed_precision=float16', 'runtime.xla=true', 'train.steps=3'],
                              'train')
  kwargs = runner.distribution_run_config(config)
  session = kwargs['session_config']
  assert session.graph_options.optimizer_options.global_jit_level == tf.OptimizerOptions.ON_1
  if not gpu:
    assert '--tf_xla_cpu_global_jit' in os.environ.get('TF_XLA_FLAGS', '')
    assert any('runtime.mixed_precision: float16 needs a GPU' in l for l in lines), lines
  runner.train(config, model_dir)
  checkpoint = tf.train.latest_checkpoint(model_dir)
  assert checkpoint.endswith('-3')
  reader = tf.train.load_checkpoint(checkpoint)
  names = reader.get_variable_to_dtype_map()
  assert 'current_loss_scale' in names and 'good_steps' in names  # loss scale saved in the checkpoint
  assert names['MobilenetV2/Conv/weights'] == tf.float32
  losses = [float(l.split('total_loss ')[1].split()[0]) for l in lines if 'total_loss ' in l]
  assert losses and all(np.isfinite(losses)), lines
  # A float32 graph (no loss scaling, no XLA) evaluates the float16 run's checkpoint.
  metrics = runner.evaluate(runner.load_config(path, (), 'eval'), model_dir)
  assert np.isfinite(metrics['loss']), metrics
  print('PRECISION XLA OK', metrics)


# ----------------------------------------------------------------------------------------------------------
# Loopback TF_CONFIG clusters: one `mnv2 train` process per task


def _cluster_command(path, model_dir, strategy, *extra):
  def command(task_type, index):  # pylint: disable=unused-argument
    return [sys.executable, '-m', 'pipelines', 'train', '--config', path, '--model-dir', model_dir,
            '--set', 'runtime.distribution.strategy=%s' % strategy] + list(extra)
  return command


def _eval_step(model_dir):
  with open(os.path.join(model_dir, 'eval', 'metrics.json')) as f:
    return json.load(f)


def test_parameter_server_cluster_runs_the_pipeline(tmp_path):
  """chief + worker + ps + evaluator, each `python -m pipelines train`: training reaches train.steps, the
  evaluator evaluates the final checkpoint in its own process, only the chief writes config.yaml."""
  path = _write_config(tmp_path, tiny_imagenet_records(tmp_path, 3))
  cluster = cluster_util.make_cluster(chief=1, workers=1, ps=1)
  model_dir = str(tmp_path / 'model')
  run = cluster_util.run_cluster(_cluster_command(path, model_dir, 'parameter_server', '--set', 'train.steps=4'),
                                 cluster, str(tmp_path / 'logs'), evaluator=True, timeout=420, cwd=ROOT)
  step = int(tf.train.latest_checkpoint(model_dir).split('-')[-1])
  assert step >= 4, run.summary()
  assert 'strategy parameter_server, 1 replica(s) x 4 per replica' in run.logs['chief:0'], run.summary()
  assert 'strategy parameter_server' in run.logs['worker:0'], run.summary()
  # Issue #20: each worker reads its own shard (2 files, one each), the evaluator the whole eval set.
  assert 'input: shard 1 of 2 (1 of 2 files)' in run.logs['chief:0'], run.summary()
  assert 'input: shard 2 of 2 (1 of 2 files)' in run.logs['worker:0'], run.summary()
  assert 'input: shard' not in run.logs['evaluator:0'], run.summary()
  metrics = _eval_step(model_dir)
  assert metrics['global_step'] >= 4 and 0 <= metrics['top1_accuracy'] <= 1, metrics
  assert os.path.exists(os.path.join(model_dir, 'config.yaml'))
  print('parameter_server pipeline cluster: %.1fs' % run.seconds)


def test_multi_worker_mirrored_cluster_runs_the_pipeline(tmp_path):
  """Two workers (worker 0 is the chief) all-reduce synchronously: 2 replicas x 2 = the global batch 4."""
  path = _write_config(tmp_path, tiny_imagenet_records(tmp_path, 3))
  cluster = cluster_util.make_cluster(chief=0, workers=2, ps=0)
  model_dir = str(tmp_path / 'model')
  run = cluster_util.run_cluster(_cluster_command(path, model_dir, 'multi_worker_mirrored'), cluster,
                                 str(tmp_path / 'logs'), timeout=420, cwd=ROOT)
  assert tf.train.latest_checkpoint(model_dir).endswith('-2'), run.summary()
  for index, name in enumerate(('worker:0', 'worker:1')):
    assert 'strategy multi_worker_mirrored, 2 replica(s) x 2 per replica = batch 4' in run.logs[name], run.summary()
    assert 'input: shard %d of 2 (1 of 2 files)' % (index + 1) in run.logs[name], run.summary()
  assert os.path.exists(os.path.join(model_dir, 'config.yaml'))
  print('multi_worker_mirrored pipeline cluster: %.1fs' % run.seconds)


# ----------------------------------------------------------------------------------------------------------
# Sync batch norm reaches every batch norm of backbone and heads (graph only)

TASK_CONFIGS = {  # the classification backbone is covered by the equivalence test above
    'detection': ('detection: {image_size: 64, num_classes: 3}', 64),
    'segmentation': ('segmentation: {num_classes: 3, crop_size: 33, eval_crop_size: 33}', 33),
}


@pytest.mark.parametrize('task', sorted(TASK_CONFIGS))
def test_sync_batch_norm_reaches_backbone_and_heads(tmp_path, task, monkeypatch):
  """With train.sync_batch_norm and 2 replicas (faked), every batch-norm layer of the task's graph (backbone,
  SSDLite extra layers and box predictors, DeepLab's ASPP / projection) takes the all-reduce path once."""
  from pipelines.training import runner  # pylint: disable=g-import-not-at-top
  section, size = TASK_CONFIGS[task]
  path = str(tmp_path / 'config.yaml')
  with open(path, 'w') as f:
    f.write('task: %s\nmodel: {depth_multiplier: 0.35}\n%s\ntrain: {batch_size: 2, steps: 1, '
            'freeze_batch_norm: false, learning_rate: {schedule: constant}}\n' % (task, section))
  reduced = []
  monkeypatch.setattr(sync_batch_norm, '_replica_count', lambda: 2)
  monkeypatch.setattr(sync_batch_norm, '_all_reduce_sum', lambda value: reduced.append(value) or value)
  counts = {}
  for sync in (False, True):
    del reduced[:]
    config = config_schema.load(path, ['train.sync_batch_norm=%s' % str(sync).lower()])
    with tf.Graph().as_default():
      runner.make_task(config).build_outputs({'image': tf.zeros([2, size, size, 3])}, True)
      layers = [v for v in tf.global_variables() if v.op.name.endswith('/moving_mean')]
      counts[sync] = (len(layers), len(reduced))
  assert counts[False][1] == 0 and counts[False][0] > 30, counts
  assert counts[True] == (counts[False][0], counts[False][0]), counts  # every layer, same variables
