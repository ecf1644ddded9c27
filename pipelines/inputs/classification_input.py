"""The classification input pipeline: TF-Slim ImageNet records -> decode -> preprocess -> batch.

The one pipeline that training, evaluation, tests and benchmarks read (`dataset`), and the serving
preprocessing of encoded images (`features_from_bytes`, the same as evaluation's). Settings come from the
config: `classification.image_size`, `classification.preprocessing` (the training crop covers that
fraction of the image area up to all of it), `runtime.seed`, the batch sizes and the `data.*` reader
settings (see `pipelines.inputs.input_common`).

Not here: the record format (`datasets.imagenet`, `datasets.decoders.decode_classification`), the
preprocessing maths (`datasets.classification_preprocessing`), the model (`pipelines.tasks.classification`).
"""
import tensorflow.compat.v1 as tf

from datasets import classification_preprocessing as preprocessing
from datasets import decoders
from pipelines.inputs import input_common


def example(config, decoded, is_training):
  """(features, label) of one decoded record: {'image': float32 [S, S, 3] in [-1, 1]}, int32 [] in 0..K.

  Training: TF-Slim's Inception crop, flip and colour distortion as `classification.preprocessing` says;
  evaluation: central crop (`preprocessing.eval_central_fraction`) + resize. S = classification.image_size.
  """
  size, pre = config.classification.image_size, config.classification.preprocessing
  if is_training:
    image = preprocessing.preprocess_for_train(
        decoded['image'], size, area_range=tuple(pre.area_range), aspect_ratio_range=tuple(pre.aspect_ratio_range),
        seed=config.runtime.seed, color_distortion=pre.color_distortion, min_object_covered=pre.min_object_covered,
        max_attempts=pre.max_attempts, random_flip=pre.random_flip)
  else:
    image = preprocessing.preprocess_for_eval(decoded['image'], size, pre.eval_central_fraction)
  return {'image': image}, checked_label(config, decoded)


def checked_label(config, decoded, pattern=''):
  """The label used for a decoded record: its label + classification.label_offset, checked at run time.

  The label must be a class 1..num_classes - 1 (0 is the background logit of TF-Slim's classifiers); any
  other value stops the pipeline with an error naming the record's image/filename (or the files when the
  record has none), the stored label and the offset.
  """
  cls = config.classification
  label = decoded['label'] + cls.label_offset
  ok = tf.logical_and(label >= 1, label <= cls.num_classes - 1)
  name = tf.where(tf.equal(decoded['filename'], ''),
                  tf.constant('<no image/filename> in %s' % (pattern or 'the data files')), decoded['filename'])
  check = tf.debugging.Assert(ok, [
      'record', name, 'has label', decoded['label'],
      '+ classification.label_offset %d =' % cls.label_offset, label,
      'outside the classes 1..%d (classification.num_classes %d, 0 = background): set '
      'classification.label_offset (1 for labels starting at 0) or num_classes' % (cls.num_classes - 1,
                                                                                   cls.num_classes)])
  with tf.control_dependencies([check]):
    return tf.identity(label)


def dataset(config, mode, batch_size=None, repeat=None, input_context=None):
  """The classification tf.data pipeline of a mode (TRAIN reads data.train_files, other modes eval_files).

  Training repeats forever (unless `repeat` says otherwise) with full batches (static batch size).
  Evaluation reads every record once and keeps the last, partial batch, so its batch dimension is None:
  no image is left out of the metrics.

  Args:
    config: `pipelines.config.Config`.
    mode: a `tf.estimator.ModeKeys` value.
    batch_size: int, overrides train.batch_size / eval.batch_size.
    repeat: see `input_common.read_records`.
    input_context: the strategy's `tf.distribute.InputContext` (multi-worker training), or None; see
      `input_common.for_pipeline`.

  Returns:
    tf.data.Dataset of (features, labels): features = {'image': float32 [B, S, S, 3] in [-1, 1]},
    labels = int32 [B] in 0..K.
  """
  config, shard = input_common.for_pipeline(config, mode, input_context)
  is_training = input_common.split(config, mode)[2]
  return input_common.read_records(config, mode, decoders.decode_classification,
                                   lambda decoded: example(config, decoded, is_training),
                                   batch_size=batch_size, repeat=repeat, shard=shard)


def features_from_bytes(config, encoded):
  """Serving features of string [B] encoded images (JPEG/PNG/GIF/BMP), preprocessed as in evaluation.

  Returns:
    {'image': float32 [B, S, S, 3] in [-1, 1]}, S = classification.image_size.
  """
  size, fraction = config.classification.image_size, config.classification.preprocessing.eval_central_fraction

  def one(data):
    image = tf.image.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return preprocessing.preprocess_for_eval(image, size, fraction)
  return {'image': tf.map_fn(one, encoded, dtype=tf.float32, back_prop=False)}
