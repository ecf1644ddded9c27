"""The segmentation input pipeline: DeepLab records -> decode -> DeepLab preprocessing -> batch.

The one pipeline that training, evaluation, tests and benchmarks read (`dataset`), and the inference
preprocessing of encoded images (`features_from_bytes`). Settings come from the config's `segmentation`
section (crop_size, eval_crop_size, min_scale, max_scale, scale_step, ignore_label), `runtime.seed`, the
batch sizes and the `data.*` reader settings (see `pipelines.inputs.input_common`).

Training: random scale on DeepLab's grid (`scale_step`), pad, `crop_size` crop, flip. Evaluation: the whole
image padded bottom/right to `eval_crop_size` (which must be >= every image side). Inference: an image is
downscaled only if a side exceeds `eval_crop_size` (keeping its aspect ratio), then padded like evaluation;
the features carry the sizes needed to crop the prediction back.

Not here: the record format (`datasets.voc`, `datasets.decoders.decode_segmentation`), the augmentation
maths (`datasets.segmentation_preprocessing`), the model (`pipelines.tasks.segmentation`).
"""
import tensorflow.compat.v1 as tf

from datasets import decoders
from datasets import segmentation_preprocessing as preprocessing
from pipelines.inputs import input_common


def example(config, decoded, is_training):
  """(features, label) of one decoded record: DeepLab's train or eval preprocessing.

  Returns:
    features: 'image' float32 [C, C, 3] in [-1, 1] (C = crop_size in training, eval_crop_size otherwise),
    'height' / 'width' int32 [] (the original image size); label int32 [C, C, 1] (ignore_label on padding).
  """
  seg = config.segmentation
  decoded = dict(decoded, label=checked_label(config, decoded))
  if is_training:
    image, label = preprocessing.preprocess_for_train(
        decoded['image'], decoded['label'], crop_size=seg.crop_size, min_scale=seg.min_scale,
        max_scale=seg.max_scale, scale_step=seg.scale_step, ignore_label=seg.ignore_label,
        seed=config.runtime.seed)
  else:
    image, label = preprocessing.preprocess_for_eval(
        decoded['image'], decoded['label'], crop_size=seg.eval_crop_size, ignore_label=seg.ignore_label)
  return {'image': image, 'height': decoded['height'], 'width': decoded['width']}, label


def checked_label(config, decoded):
  """The decoded label map, with a run-time check that every value is a class or `segmentation.ignore_label`.

  Any other value stops the pipeline with an error naming the record's image/filename and the values.
  """
  seg = config.segmentation
  label = tf.cast(decoded['label'], tf.int32)
  bad = tf.logical_not(tf.logical_or(tf.logical_and(label >= 0, label < seg.num_classes),
                                     tf.equal(label, seg.ignore_label)))
  bad_values = tf.unique(tf.boolean_mask(label, bad))[0][:10]
  check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [
      'record', decoded['filename'], 'has label values', bad_values,
      'that are neither a class 0..%d (segmentation.num_classes %d) nor segmentation.ignore_label %d: set '
      'num_classes / ignore_label to match the data, or fix the label PNGs'
      % (seg.num_classes - 1, seg.num_classes, seg.ignore_label)], summarize=10)
  with tf.control_dependencies([check]):
    return tf.identity(decoded['label'])


def dataset(config, mode, batch_size=None, repeat=None, input_context=None):
  """The segmentation tf.data pipeline of a mode (TRAIN reads data.train_files, other modes eval_files).

  Training repeats forever (unless `repeat` says otherwise) and drops the last partial batch; evaluation
  reads once and keeps the last partial batch, so every image is scored.

  Args:
    config: `pipelines.config.Config`.
    mode: a `tf.estimator.ModeKeys` value.
    batch_size: int, overrides train.batch_size / eval.batch_size.
    repeat: see `input_common.read_records`.
    input_context: the strategy's `tf.distribute.InputContext` (multi-worker training), or None; see
      `input_common.for_pipeline`.

  Returns:
    tf.data.Dataset of (features, labels): features 'image' float32 [B, C, C, 3] in [-1, 1],
    'height' / 'width' int32 [B] (the original image size); labels int32 [B, C, C, 1] (255 ignore).
  """
  config, shard = input_common.for_pipeline(config, mode, input_context)
  is_training = input_common.split(config, mode)[2]
  return input_common.read_records(config, mode, decoders.decode_segmentation,
                                   lambda decoded: example(config, decoded, is_training),
                                   batch_size=batch_size, repeat=repeat, shard=shard)


def _fit_and_pad(encoded, crop_size):
  """One encoded image -> eval-style padded image, its size, and the size it has inside the padding."""
  image = decoders.decode_rgb(encoded)
  size = tf.shape(image)[:2]
  scale = tf.minimum(1.0, crop_size / tf.cast(tf.reduce_max(size), tf.float32))
  fitted_size = tf.clip_by_value(tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32), 1, crop_size)
  fitted = tf.cond(scale < 1.0,
                   lambda: tf.image.resize_bilinear(image[tf.newaxis], fitted_size, align_corners=True)[0],
                   lambda: tf.cast(image, tf.float32))
  padded, _ = preprocessing.preprocess_for_eval(fitted, None, crop_size=crop_size)
  return padded, size[0], size[1], fitted_size[0], fitted_size[1]


def features_from_bytes(config, encoded):
  """Features of a batch of encoded images for the model's outputs and predictions (serving, predict).

  Args:
    config: `pipelines.config.Config`; the padded side is `segmentation.eval_crop_size`.
    encoded: string [B], encoded JPEG/PNG/GIF/BMP images.

  Returns:
    dict: 'image' float32 [B, crop, crop, 3] in [-1, 1]; 'height', 'width' int32 [B] original size;
    'valid_height', 'valid_width' int32 [B] size of the (possibly downscaled) image inside the padding.
  """
  crop_size = config.segmentation.eval_crop_size
  dtypes = (tf.float32, tf.int32, tf.int32, tf.int32, tf.int32)
  image, height, width, valid_height, valid_width = tf.map_fn(
      lambda data: _fit_and_pad(data, crop_size), encoded, dtype=dtypes, back_prop=False)
  image.set_shape([None, crop_size, crop_size, 3])
  return {'image': image, 'height': height, 'width': width, 'valid_height': valid_height,
          'valid_width': valid_width}
