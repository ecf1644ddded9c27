"""SSDLite-MobileNetV2 detection task on COCO-style TFRecords (`datasets.coco`) for tf.estimator.

Class convention (the Object Detection API's): a class index IS the label-map id (COCO ids 1..90 used as
they are), `model.num_classes` is the number of object classes (90 for COCO, i.e. the largest id) and the
predictor has num_classes + 1 outputs, column 0 = background. A record with an id outside 1..num_classes
stops the input pipeline with an error naming the record.

Targets are assigned in the input pipeline (tf.data map after augmentation and padding), so the model_fn
gets dense, static-shaped labels: cls_targets [B, A, K+1], cls_weights/reg_weights/matches [B, A],
reg_targets [B, A, 4], num_positives [B]; in eval also the padded ground truth (groundtruth_boxes
normalized, groundtruth_classes, groundtruth_is_crowd, groundtruth_area, num_objects), source_id and
original_height/original_width. Losses: smooth L1 on boxes + sigmoid (or softmax) classification with
hard-negative mining, both divided by max(1, positives in the batch). Predictions (also `serving_default`,
encoded image bytes in): detection_boxes float32 [B, D, 4] absolute pixels [ymin, xmin, ymax, xmax] of
the original image, detection_scores [B, D], detection_classes int32 [B, D] label ids (0 on padding),
detection_class_names string [B, D], num_detections int32 [B]. Eval metrics: `pipelines.coco_metrics`,
which also writes `<model_dir>/eval/detections.json` when the runner set `task.model_dir`.

Not here: the network (`heads.ssdlite`), box math (`heads.core`), augmentation (`datasets.detection_augment`),
the OD API's NMS-based hard-example miner (top-k per image instead), masks.
"""
import os

import tensorflow.compat.v1 as tf
import tf_slim as slim

from datasets import coco
from datasets import detection_augment as augment
from datasets import label_maps
from datasets import tfrecord
from heads import ssdlite
from heads.core import anchors as anchors_lib
from heads.core import box_coder
from heads.core import fields
from heads.core import losses as losses_lib
from heads.core import post_processing
from heads.core import target_assigner
from pipelines import classification
from pipelines import coco_metrics
from pipelines import skeleton

GT_BOXES = 'groundtruth_boxes'
GT_CLASSES = 'groundtruth_classes'
GT_IS_CROWD = 'groundtruth_is_crowd'
GT_AREA = 'groundtruth_area'
NUM_OBJECTS = 'num_objects'
SOURCE_ID = 'source_id'
ORIGINAL_HEIGHT = 'original_height'
ORIGINAL_WIDTH = 'original_width'
DETECTION_CLASS_NAMES = 'detection_class_names'


def read_labels(labels_file):
  """dict label id -> name from a label_map.pbtxt (OD API) or a TF-Slim labels.txt; {} for None."""
  if not labels_file:
    return {}
  if labels_file.endswith('.pbtxt'):
    return label_maps.read_label_map(labels_file)
  return tfrecord.read_label_file(labels_file)


def ssd_anchors(image_size):
  """float32 [A, 4] normalized SSDLite anchors for a square input (A = 2034 at 320)."""
  return anchors_lib.generate_anchors(anchors_lib.feature_map_shapes_for(image_size))


def decode_image_bytes(encoded, image_size):
  """Serving preprocessing of string [B] encoded images, identical to the eval pipeline's.

  Returns:
    dict image float32 [B, S, S, 3] in [-1, 1], original_height / original_width int32 [B].
  """
  def one(data):
    image = tf.image.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    shape = tf.shape(image)
    decoded = {'image': image, 'boxes': tf.zeros([0, 4]), 'classes': tf.zeros([0], tf.int32),
               'is_crowd': tf.zeros([0], tf.bool), 'source_id': tf.constant(''), 'height': shape[0],
               'width': shape[1]}
    out = augment.preprocess_for_eval(decoded, image_size)
    return out['image'], out['original_height'], out['original_width']

  images, heights, widths = tf.map_fn(one, encoded, dtype=(tf.float32, tf.int32, tf.int32), back_prop=False)
  return {'image': images, ORIGINAL_HEIGHT: heights, ORIGINAL_WIDTH: widths}


class DetectionTask(skeleton.Task):
  """SSDLite graph methods + COCO input/serving functions."""

  model_dir = None  # set by the runner; evaluation writes model_dir/eval/detections.json

  def __init__(self, config):
    super(DetectionTask, self).__init__(config)
    self.anchors = ssd_anchors(config.model.image_size)
    self._labels = None

  # ------------------------------------------------------------------------------------------ classes

  def labels(self):
    """dict label id -> name for ids 1..num_classes (missing names are str(id))."""
    if self._labels is None:
      names = read_labels(self.config.data.labels_file)
      self._labels = dict((i, names.get(i, str(i))) for i in range(1, self.config.model.num_classes + 1))
    return self._labels

  def categories(self):
    """The categories evaluated: label-map ids within 1..num_classes (all of them without a label map)."""
    names = read_labels(self.config.data.labels_file)
    known = dict((i, n) for i, n in names.items() if 1 <= i <= self.config.model.num_classes)
    return known or self.labels()

  # ------------------------------------------------------------------------------------------- graph

  def build_outputs(self, features, is_training):
    model = self.config.model
    with slim.arg_scope(classification.backbone_scope(self.config, is_training)):
      maps = ssdlite.feature_maps(features['image'], depth_multiplier=model.depth_multiplier,
                                  min_depth=self.config.detection.min_depth,
                                  use_explicit_padding=model.use_explicit_padding)
      outputs = ssdlite.box_predictor(maps, model.num_classes, anchors_lib.num_anchors_per_location(),
                                      class_prediction_bias_init=self.config.detection.class_prediction_bias_init)
    num = outputs[ssdlite.BOX_ENCODINGS].get_shape().as_list()[1]
    if num != len(self.anchors):
      raise ValueError('model.image_size=%d: the network predicts %s boxes but there are %d anchors (feature '
                       'maps %s)' % (model.image_size, num, len(self.anchors), [m.get_shape().as_list() for m in maps]))
    return outputs

  def build_losses(self, outputs, labels, features):
    det = self.config.detection
    logits = outputs[ssdlite.CLASS_PREDICTIONS_WITH_BACKGROUND]
    reg = losses_lib.weighted_smooth_l1(outputs[ssdlite.BOX_ENCODINGS], labels[fields.REG_TARGETS],
                                        labels[fields.REG_WEIGHTS])
    if det.classification_loss == 'softmax':
      cls = losses_lib.weighted_softmax_ce(logits, labels[fields.CLS_TARGETS], labels[fields.CLS_WEIGHTS])
    else:
      cls = tf.reduce_sum(losses_lib.weighted_sigmoid_ce(logits, labels[fields.CLS_TARGETS],
                                                         labels[fields.CLS_WEIGHTS]), axis=2)
    cls, reg, num_pos, _ = losses_lib.hard_negative_mining(
        cls, reg, labels[fields.MATCHES], neg_pos_ratio=det.neg_pos_ratio,
        min_negatives_per_image=det.min_negatives_per_image)
    normalizer = tf.maximum(tf.reduce_sum(num_pos), 1.0)
    return {'localization': det.localization_weight * tf.reduce_sum(reg) / normalizer,
            'classification': det.classification_weight * tf.reduce_sum(cls) / normalizer}

  def postprocess(self, outputs, heights, widths):
    """Decoded, NMS-ed detections in absolute pixels of the original images.

    Args:
      outputs: dict from `build_outputs` (box codes float32 [B, A, 4], logits float32 [B, A, K + 1]).
      heights, widths: int32 [B] original image sizes in pixels.

    Returns:
      dict (D = detection.max_detections): detection_boxes float32 [B, D, 4] [ymin, xmin, ymax, xmax] in
      [0, height] x [0, width]; detection_scores float32 [B, D] in [0, 1]; detection_classes int32 [B, D]
      label ids in 1..K (0 on padding); detection_class_names string [B, D] ('' on padding);
      num_detections int32 [B]. Rows sorted by score, zero after num_detections.
    """
    det = self.config.detection
    logits = outputs[ssdlite.CLASS_PREDICTIONS_WITH_BACKGROUND]
    probs = tf.nn.softmax(logits) if det.classification_loss == 'softmax' else tf.sigmoid(logits)
    boxes = box_coder.decode(outputs[ssdlite.BOX_ENCODINGS], tf.constant(self.anchors))
    nms = post_processing.batch_multiclass_nms(
        boxes, probs[:, :, 1:], score_threshold=det.score_threshold, iou_threshold=det.iou_threshold,
        max_detections_per_class=det.max_detections, max_total_detections=det.max_detections,
        clip_window=[0.0, 0.0, 1.0, 1.0])
    num = nms[fields.NUM_DETECTIONS]
    valid = tf.range(det.max_detections)[None, :] < num[:, None]
    # NMS classes are 0-based over the object columns: +1 gives the label id; padding rows stay 0.
    classes = (tf.cast(nms[fields.DETECTION_CLASSES], tf.int32) + 1) * tf.cast(valid, tf.int32)
    sizes = tf.cast(tf.stack([heights, widths, heights, widths], axis=1), tf.float32)
    names = [''] + [self.labels()[i] for i in range(1, self.config.model.num_classes + 1)]
    return {fields.DETECTION_BOXES: nms[fields.DETECTION_BOXES] * sizes[:, None, :],
            fields.DETECTION_SCORES: nms[fields.DETECTION_SCORES],
            fields.DETECTION_CLASSES: classes,
            DETECTION_CLASS_NAMES: tf.gather(tf.constant(names), classes),
            fields.NUM_DETECTIONS: num}

  def build_predictions(self, outputs, features):
    size = self.config.model.image_size
    batch = tf.shape(features['image'])[0]
    heights = features.get(ORIGINAL_HEIGHT, tf.fill([batch], size))
    widths = features.get(ORIGINAL_WIDTH, tf.fill([batch], size))
    return self.postprocess(outputs, heights, widths)

  def build_metrics(self, outputs, labels, features):
    results = os.path.join(self.model_dir, 'eval', coco_metrics.RESULTS_NAME) if self.model_dir else None
    evaluator = coco_metrics.CocoEvaluator(self.categories(), results_path=results)
    heights, widths = labels[ORIGINAL_HEIGHT], labels[ORIGINAL_WIDTH]
    pred = self.postprocess(outputs, heights, widths)
    groundtruth = [labels[k] for k in (GT_BOXES, GT_CLASSES, GT_IS_CROWD, GT_AREA, NUM_OBJECTS)]
    detections = [pred[k] for k in fields.DETECTION_KEYS]
    return coco_metrics.metric_ops(evaluator, labels[SOURCE_ID], (heights, widths), groundtruth, detections)

  # ------------------------------------------------------------------------------------------- input

  def _checked_classes(self, classes, source_id, pattern):
    """classes int32 [N], with a runtime check that they are label ids in 1..num_classes."""
    num_classes = self.config.model.num_classes
    ok = tf.reduce_all(tf.logical_and(classes >= 1, classes <= num_classes))
    check = tf.Assert(ok, ['%s: record with source_id' % pattern, source_id, 'has class ids', classes,
                           'outside 1..model.num_classes=%d (ids are label-map ids; set model.num_classes to '
                           'the largest id, 90 for COCO)' % num_classes], summarize=100)
    with tf.control_dependencies([check]):
      return tf.identity(classes)

  def _targets(self, boxes, classes, is_crowd, num_objects):
    det = self.config.detection
    targets = target_assigner.assign(self.anchors, boxes, classes, self.config.model.num_classes,
                                     gt_is_crowd=is_crowd, num_valid=num_objects,
                                     matched_threshold=det.matched_threshold,
                                     unmatched_threshold=det.unmatched_threshold)
    return dict(targets)

  def example(self, decoded, is_training, pattern=''):
    """(features, labels) of one decoded record (`datasets.coco.decode`), before batching.

    features: image float32 [S, S, 3] in [-1, 1] (+ eval: original_height/original_width int32 []).
    labels: the target assigner's dict for the `A` anchors (+ eval: groundtruth_boxes float32 [M, 4]
    normalized, groundtruth_classes int32 [M], groundtruth_is_crowd bool [M], groundtruth_area float32 [M],
    num_objects int32 [], source_id string [], original_height/original_width int32 []), M = max_objects.
    `pattern` names the files in the error raised for class ids outside 1..num_classes.
    """
    cfg = self.config
    size, max_objects = cfg.model.image_size, cfg.detection.max_objects
    if is_training and cfg.detection.random_crop:
      pre = augment.preprocess_for_train(decoded, size, seed=cfg.runtime.seed)
    elif is_training:
      image, boxes = augment.random_horizontal_flip(decoded['image'], decoded['boxes'], seed=cfg.runtime.seed)
      pre = augment.preprocess_for_eval(dict(decoded, image=image, boxes=boxes), size)
    else:
      pre = augment.preprocess_for_eval(decoded, size)
    classes = self._checked_classes(pre['classes'], decoded['source_id'], pattern)
    boxes, classes, is_crowd, num = augment.pad_objects(pre['boxes'], classes, pre['is_crowd'], max_objects)
    labels = self._targets(boxes, classes, is_crowd, num)
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

  def dataset(self, mode, batch_size=None, repeat=None):
    """tf.data.Dataset of batched (features, labels); training batches are full (static batch size)."""
    pattern, _, is_training = self.split(mode)
    return self.read_records(mode, coco.decode, lambda decoded: self.example(decoded, is_training, pattern),
                             batch_size=batch_size, repeat=repeat)

  def input_fn(self, mode):
    return lambda params=None: self.dataset(mode)

  def features_from_bytes(self, encoded):
    return decode_image_bytes(encoded, self.config.model.image_size)
