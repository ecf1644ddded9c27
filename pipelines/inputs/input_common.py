"""What the three per-task input pipelines share: which split a mode reads, and reading it with the config.

`split` maps an Estimator mode to (file pattern, batch size, is_training): TRAIN reads `data.train_files`
with `train.batch_size` split over the replicas of `runtime.distribution` (the batch of one replica:
under a strategy every replica pulls its own batch from the input_fn), every other mode `data.eval_files` with `eval.batch_size`. `read_records` runs
`datasets.tfrecord.read_dataset` over that split with the `data.*` tuning settings and `runtime.seed`:
training batches are full (static batch size) and repeat, evaluation reads the split once and keeps the
last partial batch so every record is scored.

Not here: decoding (`datasets.decoders`), preprocessing (`datasets.*_preprocessing`), the per-task
pipelines built on these (`pipelines.inputs.classification_input`, `detection_input`, `segmentation_input`).
"""
import dataclasses
import logging

import tensorflow.compat.v1 as tf

from datasets import decoders
from datasets import tfrecord
from pipelines.training import distribution

TRAIN = tf.estimator.ModeKeys.TRAIN
LOG = logging.getLogger('mnv2')
_LOGGED = set()  # (pattern, shard): each training process says once which part of the data it reads
SEED_STRIDE = 7919  # input pipeline i of a cluster seeds its shuffles and augmentation with seed + i * this


def input_shard(config, mode, input_context=None):
  """(index, count) of this process's training input pipeline among the cluster's; (0, 1) otherwise.

  Under multi_worker_mirrored the strategy's `input_context` (what the Estimator passes to an input_fn
  that takes one) says it; without one (parameter_server: no strategy object) the task of TF_CONFIG does,
  chief and workers numbered together (chief 0, worker i -> i + 1 when there is a chief). Evaluation, and
  a single process, read the whole split.
  """
  if mode != TRAIN:
    return 0, 1
  if input_context is not None and input_context.num_input_pipelines > 1:
    return input_context.input_pipeline_id, input_context.num_input_pipelines
  tf_config = distribution.read_tf_config()
  cluster, task = tf_config.get('cluster') or {}, tf_config.get('task') or {}
  chiefs = len(cluster.get('chief', [])) + len(cluster.get('master', []))
  trainers = chiefs + len(cluster.get('worker', []))
  if trainers <= 1:
    return 0, 1
  if task.get('type') in ('chief', 'master'):
    return 0, trainers
  if task.get('type') == 'worker':
    return chiefs + int(task.get('index', 0)), trainers
  return 0, 1


def for_pipeline(config, mode, input_context=None):
  """(the config this input pipeline reads with, its shard): in a cluster, pipeline i > 0 gets the seed
  `runtime.seed + i * SEED_STRIDE` (shuffles and augmentation differ per worker; a single process, and
  pipeline 0, keep the configured seed, so a fixed-seed run stays reproducible)."""
  shard = input_shard(config, mode, input_context)
  seed = config.runtime.seed
  if shard[0] and seed is not None:
    config = dataclasses.replace(config, runtime=dataclasses.replace(config.runtime, seed=seed + shard[0] * SEED_STRIDE))
  return config, shard


def _log_shard(pattern, shard):
  if (pattern, shard) in _LOGGED:
    return
  _LOGGED.add((pattern, shard))
  files = tfrecord.list_files(pattern)
  mine, by_record = tfrecord.shard_plan(files, *shard)
  if by_record:
    LOG.warning('warning: input: %d files for %d input pipelines: every pipeline reads all of them and keeps '
                'every %d-th record (shard the data into at least %d files to split it by file)',
                len(files), shard[1], shard[1], shard[1])
  LOG.info('input: shard %d of %d (%d of %d files%s)', shard[0] + 1, shard[1], len(mine), len(files),
           ', every %d-th record' % shard[1] if by_record else '')


def split(config, mode):
  """(file pattern, batch size, is_training) of the split a mode reads: train for TRAIN, else eval.

  Args:
    config: `pipelines.config.Config`.
    mode: a `tf.estimator.ModeKeys` value ('train', 'eval', 'infer').
  """
  if mode == TRAIN:
    return config.data.train_files, train_batch_per_replica(config), True
  return config.data.eval_files, config.eval.batch_size, False


def train_batch_per_replica(config):
  """`train.batch_size` (the global batch of one step) / the replicas in sync; ValueError naming the key if
  it does not divide. parameter_server: every worker steps on a whole `train.batch_size`."""
  dist = config.runtime.distribution
  replicas = distribution.replicas_in_sync(dist.strategy, dist.num_devices, dist.cpu_devices)
  return distribution.per_replica_batch_size(config.train.batch_size, replicas)


def read_records(config, mode, decode_fn, map_fn, batch_size=None, repeat=None, shard=(0, 1)):
  """The mode's TFRecords through `tfrecord.read_dataset` with the config's data settings.

  Args:
    config: `pipelines.config.Config`.
    mode: a `tf.estimator.ModeKeys` value; see `split`.
    decode_fn: function, serialized record (string []) -> decoded dict (`datasets.decoders`).
    map_fn: function, decoded dict -> one element, e.g. (features, labels); None for identity.
    batch_size: int, overrides the mode's configured batch size.
    repeat: None (repeat forever iff training), True, False/0 or an epoch count.
    shard: (index, count) of this input pipeline (`for_pipeline`); training logs it once per process.

  Returns:
    tf.data.Dataset of batched elements; the batch dimension is static in training, None in evaluation.

  Raises:
    ValueError: naming the pattern, if no file matches it.
  """
  data = config.data
  pattern, batch, is_training = split(config, mode)
  check_format(pattern, mode, decode_fn)
  if is_training:
    _log_shard(pattern, tuple(shard))
  return tfrecord.read_dataset(
      pattern, decode_fn, map_fn, batch_size or batch, is_training, shuffle_buffer=data.shuffle_buffer,
      num_parallel_reads=data.num_parallel_reads, num_parallel_calls=data.num_parallel_calls or None,
      prefetch=data.prefetch, seed=config.runtime.seed, drop_remainder=is_training, repeat=repeat,
      shard=tuple(shard))


def check_format(pattern, mode, decode_fn):
  """Raises ValueError naming the file, record and missing key if the split's records are of another format."""
  keys = getattr(decode_fn, 'required_keys', None)
  if keys:
    what = '%s %r' % ('data.train_files' if mode == TRAIN else 'data.eval_files', pattern)
    decoders.check_record_format(tfrecord.list_files(pattern), keys, what)
