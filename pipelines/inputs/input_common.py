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
import tensorflow.compat.v1 as tf

from datasets import decoders
from datasets import tfrecord
from pipelines.training import distribution

TRAIN = tf.estimator.ModeKeys.TRAIN


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


def read_records(config, mode, decode_fn, map_fn, batch_size=None, repeat=None):
  """The mode's TFRecords through `tfrecord.read_dataset` with the config's data settings.

  Args:
    config: `pipelines.config.Config`.
    mode: a `tf.estimator.ModeKeys` value; see `split`.
    decode_fn: function, serialized record (string []) -> decoded dict (`datasets.decoders`).
    map_fn: function, decoded dict -> one element, e.g. (features, labels); None for identity.
    batch_size: int, overrides the mode's configured batch size.
    repeat: None (repeat forever iff training), True, False/0 or an epoch count.

  Returns:
    tf.data.Dataset of batched elements; the batch dimension is static in training, None in evaluation.

  Raises:
    ValueError: naming the pattern, if no file matches it.
  """
  data = config.data
  pattern, batch, is_training = split(config, mode)
  check_format(pattern, mode, decode_fn)
  return tfrecord.read_dataset(
      pattern, decode_fn, map_fn, batch_size or batch, is_training, shuffle_buffer=data.shuffle_buffer,
      num_parallel_reads=data.num_parallel_reads, num_parallel_calls=data.num_parallel_calls or None,
      prefetch=data.prefetch, seed=config.runtime.seed, drop_remainder=is_training, repeat=repeat)


def check_format(pattern, mode, decode_fn):
  """Raises ValueError naming the file, record and missing key if the split's records are of another format."""
  keys = getattr(decode_fn, 'required_keys', None)
  if keys:
    what = '%s %r' % ('data.train_files' if mode == TRAIN else 'data.eval_files', pattern)
    decoders.check_record_format(tfrecord.list_files(pattern), keys, what)
