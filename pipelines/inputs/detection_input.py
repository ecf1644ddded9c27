"""The detection input pipeline: OD API records -> decode -> SSD preprocessing -> pad -> targets -> batch.

The one pipeline that training, evaluation, tests and benchmarks read (`dataset`), and the serving
preprocessing of encoded images (`features_from_bytes`, the same as evaluation's). Settings come from the
config's `detection` section (image_size, num_classes, max_objects, random_crop, matched_threshold,
unmatched_threshold), `runtime.seed`, the batch sizes and the `data.*` reader settings (see
`pipelines.inputs.input_common`).

Class convention (the Object Detection API's): a class index IS the label-map id, so records must hold ids
in 1..detection.num_classes; any other id stops the pipeline with an error naming the files and the record.
Targets are assigned here, per image after augmentation and padding (`heads.core.target_assigner`), so
the model_fn gets dense, static-shaped labels; evaluation also gets the padded ground truth (the `GT_*`,
`NUM_OBJECTS`, `SOURCE_ID`, `ORIGINAL_*` keys below).

Not here: the record format (`datasets.coco`, `datasets.decoders.decode_detection`), the augmentation
maths (`datasets.detection_preprocessing`), anchors (`heads.core.anchors`), the model
(`pipelines.tasks.detection`).
"""
import dataclasses
import logging

import tensorflow.compat.v1 as tf

from datasets import coco
from datasets import decoders
from datasets import tfrecord
from datasets import detection_preprocessing as preprocessing
from heads.core import target_assigner
from pipelines.inputs import input_common

# Keys of the evaluation labels (and ORIGINAL_* of the eval/serving features) besides the targets.
GT_BOXES = 'groundtruth_boxes'
GT_CLASSES = 'groundtruth_classes'
GT_IS_CROWD = 'groundtruth_is_crowd'
GT_AREA = 'groundtruth_area'
NUM_OBJECTS = 'num_objects'
SOURCE_ID = 'source_id'
ORIGINAL_HEIGHT = 'original_height'
ORIGINAL_WIDTH = 'original_width'
LOG = logging.getLogger('mnv2')
COUNT_BATCH = 4096  # records whose box counts one session call returns


def _checked_box_labels(boxes, classes, source_id, pattern):
  """classes, with a run-time check that every box has a class label (the OD API writes one per box)."""
  ok = tf.equal(tf.shape(boxes)[0], tf.size(classes))
  check = tf.Assert(ok, ['%s: record with source_id' % pattern, source_id, 'has', tf.shape(boxes)[0],
                         'boxes but', tf.size(classes), 'class labels (image/object/class/label): every box '
                         'needs one; fix the converter that wrote it'])
  with tf.control_dependencies([check]):
    return tf.identity(classes)


def count_objects(files):
  """(records read, their largest object count, how many hold each count) over every record of `files`.

  Parses only the boxes' `ymin` key, in TensorFlow's reader (a private graph and session): the files are
  read once, the images are not decoded.
  """
  counts, records = {}, 0
  with tf.Graph().as_default():
    data = tf.data.TFRecordDataset(list(files), num_parallel_reads=min(8, max(1, len(files))))
    spec = {coco.YMIN: tf.io.VarLenFeature(tf.float32)}
    data = data.map(lambda record: tf.size(tf.io.parse_single_example(record, spec)[coco.YMIN].values),
                    num_parallel_calls=4).batch(COUNT_BATCH)
    sizes = tf.data.make_one_shot_iterator(data).get_next()
    with tf.Session() as session:
      while True:
        try:
          batch = session.run(sizes)
        except tf.errors.OutOfRangeError:
          break
        for number in batch.tolist():
          counts[number] = counts.get(number, 0) + 1
        records += len(batch)
  return records, max(counts) if counts else 0, counts


def objects_check(config, files, is_training):
  """The config the pipeline uses after counting objects per record against detection.max_objects.

  Images with more boxes than `max_objects` are counted over every record of the split and warned about.
  Training keeps the first max_objects boxes of such an image (static shapes). Evaluation never drops
  ground truth: it pads to the largest count of the split when that is larger.
  """
  max_objects = config.detection.max_objects
  records, largest, counts = count_objects(files)
  over = sum(n for count, n in counts.items() if count > max_objects)
  if not over:
    return config
  if is_training:
    LOG.warning('warning: %d of %d training records hold more than detection.max_objects=%d boxes (up to %d): '
                'training uses the first %d boxes of those images; raise detection.max_objects to keep them all',
                over, records, max_objects, largest, max_objects)
    return config
  LOG.warning('warning: %d of %d evaluation records hold more than detection.max_objects=%d boxes (up to %d): '
              'evaluation pads its ground truth to %d boxes so that none is dropped', over, records,
              max_objects, largest, largest)
  return dataclasses.replace(config, detection=dataclasses.replace(config.detection, max_objects=largest))


def _checked_classes(config, classes, source_id, pattern):
  """classes int32 [N], with a runtime check that they are label ids in 1..num_classes."""
  num_classes = config.detection.num_classes
  ok = tf.reduce_all(tf.logical_and(classes >= 1, classes <= num_classes))
  check = tf.Assert(ok, ['%s: record with source_id' % pattern, source_id, 'has class ids', classes,
                         'outside 1..detection.num_classes=%d (ids are label-map ids; set detection.num_classes to '
                         'the largest id, 90 for COCO)' % num_classes], summarize=100)
  with tf.control_dependencies([check]):
    return tf.identity(classes)


def _targets(config, anchors, boxes, classes, is_crowd, num_objects):
  det = config.detection
  targets = target_assigner.assign(anchors, boxes, classes, det.num_classes,
                                   gt_is_crowd=is_crowd, num_valid=num_objects,
                                   matched_threshold=det.matched_threshold,
                                   unmatched_threshold=det.unmatched_threshold)
  return dict(targets)


def example(config, decoded, is_training, anchors, pattern=''):
  """(features, labels) of one decoded record (`datasets.decoders.decode_detection`), before batching.

  Args:
    config: `pipelines.config.Config`.
    decoded: dict from `decoders.decode_detection`.
    is_training: bool; training augments (SSD random crop if `detection.random_crop`, flip).
    anchors: float32 [A, 4] normalized anchors the targets are assigned to.
    pattern: str, names the files in the error raised for class ids outside 1..num_classes.

  Returns:
    features: image float32 [S, S, 3] in [-1, 1] (+ eval: original_height/original_width int32 []).
    labels: the target assigner's dict for the `A` anchors (+ eval: groundtruth_boxes float32 [M, 4]
    normalized, groundtruth_classes int32 [M], groundtruth_is_crowd bool [M], groundtruth_area float32 [M],
    num_objects int32 [], source_id string [], original_height/original_width int32 []), M = max_objects.
  """
  det, seed = config.detection, config.runtime.seed
  size, max_objects = det.image_size, det.max_objects
  decoded = dict(decoded, classes=_checked_box_labels(decoded['boxes'], decoded['classes'], decoded['source_id'],
                                                     pattern))
  if is_training and det.random_crop:
    pre = preprocessing.preprocess_for_train(decoded, size, seed=seed, sampler=det.crop_sampler)
  elif is_training:
    image, boxes = preprocessing.random_horizontal_flip(decoded['image'], decoded['boxes'], seed=seed)
    pre = preprocessing.preprocess_for_eval(dict(decoded, image=image, boxes=boxes), size)
  else:
    pre = preprocessing.preprocess_for_eval(decoded, size)
  classes = _checked_classes(config, pre['classes'], decoded['source_id'], pattern)
  boxes, classes, is_crowd, num = preprocessing.pad_objects(pre['boxes'], classes, pre['is_crowd'], max_objects)
  labels = _targets(config, anchors, boxes, classes, is_crowd, num)
  features = {'image': pre['image']}
  if is_training:
    return features, labels
  area = tf.pad(decoded['area'][:max_objects], [[0, max_objects - num]])
  area.set_shape([max_objects])
  labels.update({GT_BOXES: boxes, GT_CLASSES: classes, GT_IS_CROWD: is_crowd, GT_AREA: area,
                 NUM_OBJECTS: num, SOURCE_ID: pre['source_id'], ORIGINAL_HEIGHT: pre['original_height'],
                 ORIGINAL_WIDTH: pre['original_width']})
  features.update({ORIGINAL_HEIGHT: pre['original_height'], ORIGINAL_WIDTH: pre['original_width']})
  return features, labels


def dataset(config, mode, anchors, batch_size=None, repeat=None, input_context=None):
  """The detection tf.data pipeline of a mode: batched (features, labels) of `example`.

  Training batches are full (static batch size) and repeat; evaluation reads the split once and keeps the
  last partial batch.

  Args:
    config: `pipelines.config.Config`.
    mode: a `tf.estimator.ModeKeys` value (TRAIN reads data.train_files, other modes eval_files).
    anchors: float32 [A, 4] normalized anchors (the model's: `pipelines.tasks.detection.ssd_anchors`).
    batch_size: int, overrides train.batch_size / eval.batch_size.
    repeat: see `input_common.read_records`.
    input_context: the strategy's `tf.distribute.InputContext` (multi-worker training), or None; see
      `input_common.for_pipeline`.
  """
  config, shard = input_common.for_pipeline(config, mode, input_context)
  pattern, _, is_training = input_common.split(config, mode)
  input_common.check_format(pattern, mode, decoders.decode_detection)
  config = objects_check(config, tfrecord.list_files(pattern), is_training)
  return input_common.read_records(config, mode, decoders.decode_detection,
                                   lambda decoded: example(config, decoded, is_training, anchors, pattern),
                                   batch_size=batch_size, repeat=repeat, shard=shard)


def features_from_bytes(config, encoded):
  """Serving preprocessing of string [B] encoded images, identical to the eval pipeline's.

  Returns:
    dict image float32 [B, S, S, 3] in [-1, 1], original_height / original_width int32 [B].
  """
  size = config.detection.image_size

  def one(data):
    image = tf.image.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    shape = tf.shape(image)
    decoded = {'image': image, 'boxes': tf.zeros([0, 4]), 'classes': tf.zeros([0], tf.int32),
               'is_crowd': tf.zeros([0], tf.bool), 'source_id': tf.constant(''), 'height': shape[0],
               'width': shape[1]}
    out = preprocessing.preprocess_for_eval(decoded, size)
    return out['image'], out['original_height'], out['original_width']

  images, heights, widths = tf.map_fn(one, encoded, dtype=(tf.float32, tf.int32, tf.int32), back_prop=False)
  return {'image': images, ORIGINAL_HEIGHT: heights, ORIGINAL_WIDTH: widths}
