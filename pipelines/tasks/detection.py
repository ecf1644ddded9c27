"""SSDLite-MobileNetV2 detection task on COCO-style TFRecords (`datasets.coco`) for tf.estimator.

Class convention (the Object Detection API's): a class index IS the label-map id (COCO ids 1..90 used as
they are), `detection.num_classes` is the number of object classes (90 for COCO, i.e. the largest id) and
the predictor has num_classes + 1 outputs, column 0 = background. A record with an id outside
1..num_classes stops the input pipeline with an error naming the record.

The model: `pipelines.tasks.model_builder` (backbone under `FeatureExtractor/MobilenetV2`) + `heads.ssdlite`
(extra layers, box predictor), anchors from the maps' strides (`feature_map_info`); the input:
`pipelines.inputs.detection_input`. Targets are assigned in the input pipeline (tf.data map after augmentation
and padding), so the model_fn
gets dense, static-shaped labels: cls_targets [B, A, K+1], cls_weights/reg_weights/matches [B, A],
reg_targets [B, A, 4], num_positives [B]; in eval also the padded ground truth (groundtruth_boxes
normalized, groundtruth_classes, groundtruth_is_crowd, groundtruth_area, num_objects), source_id and
original_height/original_width. Losses: smooth L1 on boxes + sigmoid (or softmax) classification, the
anchors chosen by the OD API's hard example miner (`detection.hard_example_miner`), both divided by
max(1, matched anchors in the batch) (the OD API's normalize_loss_by_num_matches). Predictions (also `serving_default`,
encoded image bytes in): detection_boxes float32 [B, D, 4] absolute pixels [ymin, xmin, ymax, xmax] of
the original image, detection_scores [B, D], detection_classes int32 [B, D] label ids (0 on padding),
detection_class_names string [B, D], num_detections int32 [B]. Eval metrics: `pipelines.evaluation.coco_metrics`,
which also writes `<model_dir>/eval/detections.json` when the task has a `model_dir`. The class scores are
decided once, by `class_scores` (sigmoid or softmax, `detection.classification_loss`): postprocessing,
SavedModel and TFLite exports all use it.

Not here: the network (`heads.ssdlite`), box math (`heads.core`), augmentation
(`datasets.detection_preprocessing`), the miner's maths (`heads.core.losses.hard_example_miner`), masks.
"""
import os

import tensorflow.compat.v1 as tf

from heads import ssdlite
from heads.core import anchors as anchors_lib
from heads.core import box_coder
from heads.core import fields
from heads.core import losses as losses_lib
from heads.core import post_processing
from pipelines.evaluation import coco_metrics
from pipelines.inputs import detection_input
from pipelines.tasks import base
from pipelines.tasks import labels as labels_lib
from pipelines.tasks import model_builder
from pipelines.tasks import portable

GT_BOXES = detection_input.GT_BOXES
GT_CLASSES = detection_input.GT_CLASSES
GT_IS_CROWD = detection_input.GT_IS_CROWD
GT_AREA = detection_input.GT_AREA
NUM_OBJECTS = detection_input.NUM_OBJECTS
SOURCE_ID = detection_input.SOURCE_ID
ORIGINAL_HEIGHT = detection_input.ORIGINAL_HEIGHT
ORIGINAL_WIDTH = detection_input.ORIGINAL_WIDTH
DETECTION_CLASS_NAMES = portable.DETECTION_CLASS_NAMES
# The scope of SSDLite's extra layers (and of its own backbone): the public model's.
FEATURE_EXTRACTOR_SCOPE = ssdlite.FEATURE_EXTRACTOR_SCOPE
# TFLite model outputs: the raw network (what TF runs), then TFLite_Detection_PostProcess's (OD API layout).
BOX_ENCODINGS, CLASS_SCORES = 'box_encodings', 'class_scores'


def feature_map_info(config, backbone_config=None):
  """The six SSD feature maps' (name, stride, channels), from the backbone's `feature_info` alone.

  `backbone_config` is the config the backbone is built from when it is not `config` (a multitask model's
  shared backbone, whose output stride sets the strides of the maps).
  """
  backbone_info = model_builder.feature_info(backbone_config or config)
  return ssdlite.feature_map_info(backbone_info, depth_multiplier=config.model.depth_multiplier,
                                  min_depth=config.detection.min_depth)


def anchor_specs(config):
  """Per-layer (scale, aspect ratio) anchor shapes of `detection.anchors` (`heads.core.anchors`)."""
  anchors = config.detection.anchors
  return anchors_lib.ssd_anchor_specs(
      num_layers=anchors.num_layers, min_scale=anchors.min_scale, max_scale=anchors.max_scale,
      aspect_ratios=tuple(anchors.aspect_ratios), interpolated_scale_aspect_ratio=anchors.interpolated_scale_aspect_ratio,
      reduce_boxes_in_lowest_layer=anchors.reduce_boxes_in_lowest_layer)


def ssd_anchors(config, backbone_config=None):
  """float32 [A, 4] normalized SSDLite anchors for `detection.image_size` (A = 2034 at 320, 1917 at 300)."""
  strides = [info.stride for info in feature_map_info(config, backbone_config)]
  return anchors_lib.generate_anchors(anchors_lib.feature_map_shapes(config.detection.image_size, strides),
                                      anchor_specs(config))


class DetectionTask(base.Task, portable.Detection):
  """SSDLite on the Object Detection API's records, outputs and client signatures."""

  name = 'detection'
  UINT8_INPUT_NAME = 'image_tensor'
  LABELS_FIRST_ID = 1
  DEMO = base.DemoMetric('AP50', 0.5, 'COCO AP50')
  DEMO_FORMAT = 'coco'
  DEMO_BACKBONE_FROM = 'classification'

  def __init__(self, config, backbone_config=None, model_dir=None):
    super(DetectionTask, self).__init__(config, backbone_config, model_dir)
    self.anchors = ssd_anchors(config, backbone_config)  # anchors follow the (shared) backbone's strides
    self._labels = None

  @classmethod
  def backbone_options(cls, config):
    """The OD API's feature extractor: scope `FeatureExtractor/MobilenetV2`, stride 32, `detection.min_depth`."""
    return model_builder.tf_slim_options(config, FEATURE_EXTRACTOR_SCOPE, None, min_depth=config.detection.min_depth)

  # ------------------------------------------------------------------------------------------ classes

  def labels(self):
    """dict label id -> name for ids 1..num_classes (missing names are str(id))."""
    if self._labels is None:
      names = labels_lib.class_names(self.config.data.labels_file, self.config.detection.num_classes, first=1)
      self._labels = dict(enumerate(names, 1))
    return self._labels

  def categories(self):
    """The categories evaluated: label-map ids within 1..num_classes (all of them without a label map)."""
    names = labels_lib.read_labels(self.config.data.labels_file)
    known = dict((i, n) for i, n in names.items() if 1 <= i <= self.config.detection.num_classes)
    return known or self.labels()

  # ------------------------------------------------------------------------------------------- graph

  def endpoints(self):
    """Backbone endpoints the head reads."""
    return list(ssdlite.FEATURE_ENDPOINTS)

  def build_shared_head(self, end_points, scope, images, is_training):
    """On a shared backbone the extra layers keep the public model's scope (`FeatureExtractor/MobilenetV2`)."""
    del scope, images
    return self.build_head(end_points, FEATURE_EXTRACTOR_SCOPE, is_training)

  def build_head(self, end_points, scope, is_training):  # pylint: disable=unused-argument
    """Extra layers + box predictor on `end_points`. Call inside `model_builder.arg_scope`.

    The extra layers live under `scope` (the public `FeatureExtractor/MobilenetV2/layer_19_...`: the
    backbone's own scope, or that name when the backbone is shared), the predictor at the top level.
    """
    cfg, det = self.config, self.config.detection
    with model_builder.in_scope(scope):
      maps = ssdlite.extra_feature_maps(end_points, depth_multiplier=cfg.model.depth_multiplier,
                                        min_depth=det.min_depth, use_explicit_padding=cfg.model.use_explicit_padding)
    outputs = ssdlite.box_predictor(maps, det.num_classes, anchors_lib.num_anchors_per_location(anchor_specs(cfg)),
                                    class_prediction_bias_init=det.class_prediction_bias_init)
    num = outputs[ssdlite.BOX_ENCODINGS].get_shape().as_list()[1]
    if num != len(self.anchors):
      raise ValueError('detection.image_size=%d: the network predicts %s boxes but there are %d anchors (feature '
                       'maps %s)' % (det.image_size, num, len(self.anchors), [m.get_shape().as_list() for m in maps]))
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
    miner = det.hard_example_miner
    if miner is not None:
      boxes = tf.stop_gradient(box_coder.decode(outputs[ssdlite.BOX_ENCODINGS], tf.constant(self.anchors)))
      cls, reg, _, _ = losses_lib.hard_example_miner(
          cls, reg, boxes, labels[fields.MATCHES], num_hard_examples=miner.num_hard_examples,
          iou_threshold=miner.iou_threshold, loss_type=miner.loss_type,
          max_negatives_per_positive=miner.max_negatives_per_positive,
          min_negatives_per_image=miner.min_negatives_per_image)
    # The OD API's normalize_loss_by_num_matches: the matched anchors of the batch, mined or not.
    normalizer = tf.maximum(tf.reduce_sum(labels[fields.REG_WEIGHTS]), 1.0)
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
    return self.detections(outputs[ssdlite.BOX_ENCODINGS], self.class_scores(outputs), heights, widths)

  def class_scores(self, outputs):
    """float32 [B, A, K + 1] in [0, 1], column 0 = background: the score activation of every output path
    (the loss's: softmax for `classification_loss: softmax`, else sigmoid)."""
    logits = outputs[ssdlite.CLASS_PREDICTIONS_WITH_BACKGROUND]
    return tf.nn.softmax(logits) if self.config.detection.classification_loss == 'softmax' else tf.sigmoid(logits)

  def detections(self, box_encodings, probs, heights, widths):
    """`postprocess` from the class probabilities (background column first): box decoding and NMS.

    What TF runs where a TFLite model runs `TFLite_Detection_PostProcess` (the benches compare the two).
    """
    det = self.config.detection
    _, nms = self.decoded_nms(box_encodings, probs)
    num = nms[fields.NUM_DETECTIONS]
    valid = tf.range(det.max_detections)[None, :] < num[:, None]
    # NMS classes are 0-based over the object columns: +1 gives the label id; padding rows stay 0.
    classes = (tf.cast(nms[fields.DETECTION_CLASSES], tf.int32) + 1) * tf.cast(valid, tf.int32)
    sizes = tf.cast(tf.stack([heights, widths, heights, widths], axis=1), tf.float32)
    names = [''] + [self.labels()[i] for i in range(1, self.config.detection.num_classes + 1)]
    return {fields.DETECTION_BOXES: nms[fields.DETECTION_BOXES] * sizes[:, None, :],
            fields.DETECTION_SCORES: nms[fields.DETECTION_SCORES],
            fields.DETECTION_CLASSES: classes,
            DETECTION_CLASS_NAMES: tf.gather(tf.constant(names), classes),
            fields.NUM_DETECTIONS: num}

  def decoded_nms(self, box_encodings, probs, return_anchor_indices=False):
    """(decoded normalized boxes [B, A, 4], `batch_multiclass_nms` of them with the config's settings, boxes
    clipped to the image): the one NMS every output path (predictions, OD API, ONNX) runs."""
    det = self.config.detection
    boxes = box_coder.decode(box_encodings, tf.constant(self.anchors))
    return boxes, post_processing.batch_multiclass_nms(
        boxes, probs[:, :, 1:], score_threshold=det.score_threshold, iou_threshold=det.iou_threshold,
        max_detections_per_class=det.max_detections, max_total_detections=det.max_detections,
        clip_window=[0.0, 0.0, 1.0, 1.0], return_anchor_indices=return_anchor_indices)

  def build_predictions(self, outputs, features):
    size = self.config.detection.image_size
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

  def input_fn(self, mode):
    return lambda params=None, input_context=None: detection_input.dataset(self.config, mode, self.anchors,
                                                                           input_context=input_context)

  def features_from_bytes(self, encoded):
    return detection_input.features_from_bytes(self.config, encoded)

  def shared_prediction_features(self, images, heights, widths):
    return {'image': images, ORIGINAL_HEIGHT: heights, ORIGINAL_WIDTH: widths}

  # ------------------------------------------------------------------------------------------- export

  # The OD API exporter's input types (`mnv2 export --input-type`): the chosen one is `serving_default`.
  SERVING_INPUT_TYPES = ('image_tensor', 'encoded_image_string_tensor', 'tf_example')

  def client_signatures(self, uint8, images, outputs, features, predictions):
    """The Object Detection API exporter's signatures, one per input type, each under input key `inputs`:
    `image_tensor` uint8 [B, H, W, 3], `encoded_image_string_tensor` string [B] (JPEG / PNG bytes), `tf_example`
    string [B] (serialized tf.Example with `image/encoded`), with the OD API's outputs (`od_api_outputs`)."""
    del images, predictions
    od = self.od_api_outputs(outputs)
    return {'image_tensor': ({'inputs': uint8}, od),
            'encoded_image_string_tensor': ({'inputs': features['encoded_image']}, od),
            'tf_example': ({'inputs': features['tf_example']}, od)}

  def od_api_outputs(self, outputs):
    """The OD API exporter's outputs (tensors named as in its frozen graph), D = detection.max_detections:
    detection_boxes float32 [B, D, 4] normalized ymin, xmin, ymax, xmax, clipped to the image; detection_scores
    [B, D]; detection_classes float32 [B, D] label-map ids (0 on padding); num_detections float32 [B];
    detection_multiclass_scores [B, D, K + 1] every class's score of each detection's box (column 0 =
    background); raw_detection_boxes [B, A, 4] every anchor's decoded box (normalized, unclipped) and
    raw_detection_scores [B, A, K + 1] its scores, before NMS."""
    det = self.config.detection
    probs = self.class_scores(outputs)
    boxes, nms = self.decoded_nms(outputs[ssdlite.BOX_ENCODINGS], probs, return_anchor_indices=True)
    valid = tf.cast(tf.range(det.max_detections)[None, :] < nms[fields.NUM_DETECTIONS][:, None], tf.float32)
    multiclass = tf.gather(probs, nms[fields.DETECTION_ANCHOR_INDICES], batch_dims=1) * valid[:, :, None]
    named = {fields.DETECTION_BOXES: nms[fields.DETECTION_BOXES], fields.DETECTION_SCORES: nms[fields.DETECTION_SCORES],
             fields.DETECTION_CLASSES: (nms[fields.DETECTION_CLASSES] + 1.0) * valid,
             fields.NUM_DETECTIONS: tf.cast(nms[fields.NUM_DETECTIONS], tf.float32),
             'detection_multiclass_scores': multiclass, 'raw_detection_boxes': boxes, 'raw_detection_scores': probs}
    return {name: tf.identity(tensor, name=name) for name, tensor in named.items()}

  def frozen_graph(self, signatures, images, predictions):
    """The OD API's `frozen_inference_graph.pb`: uint8 `image_tensor:0` -> `detection_boxes:0`, ..."""
    del images, predictions
    inputs, outputs = signatures['image_tensor']
    return dict(inputs={'image_tensor': inputs['inputs']}, outputs=outputs)

  def tflite_outputs(self, outputs):
    return {BOX_ENCODINGS: outputs[ssdlite.BOX_ENCODINGS], CLASS_SCORES: self.class_scores(outputs)}

  def postprocess_args(self):
    """TFLite_Detection_PostProcess's settings: the config's NMS (`pipelines.export.tflite_export`)."""
    det = self.config.detection
    return dict(max_detections=det.max_detections, detections_per_class=det.max_detections,
                score_threshold=det.score_threshold, iou_threshold=det.iou_threshold,
                use_regular_nms=det.tflite_use_regular_nms)

  def onnx_outputs(self, outputs):
    """TF's decoding and per-class NMS (the SavedModel's), in the layout TFLite_Detection_PostProcess returns
    (normalized boxes, 0-based float classes, float count) so `decode_tflite` reads both."""
    _, nms = self.decoded_nms(outputs[ssdlite.BOX_ENCODINGS], self.class_scores(outputs))
    return {fields.DETECTION_BOXES: nms[fields.DETECTION_BOXES], fields.DETECTION_CLASSES: nms[fields.DETECTION_CLASSES],
            fields.DETECTION_SCORES: nms[fields.DETECTION_SCORES],
            fields.NUM_DETECTIONS: tf.cast(nms[fields.NUM_DETECTIONS], tf.float32)}

  def tflite_postprocess(self, frozen):
    from pipelines.export import tflite_export  # pylint: disable=g-import-not-at-top
    return tflite_export.add_detection_postprocess(frozen, self.anchors, self.config.detection.num_classes,
                                                   **self.postprocess_args())

  def tflite_unsupported(self, quantize):
    from pipelines.export import tflite_export  # pylint: disable=g-import-not-at-top
    from pipelines.training import quantization  # pylint: disable=g-import-not-at-top
    # TF 1.15 quantizes detection from a quantization-aware checkpoint only (TOCO's uint8 path, the OD API's).
    if quantize == 'int8' and tflite_export.is_tf1() and not quantization.enabled(self.config):
      return tflite_export.TF1_INT8_DETECTION_UNSUPPORTED
    return None

  def export_metadata(self):
    return dict(super(DetectionTask, self).export_metadata(), class_ids='label-map id = detection_classes + 1',
                nms=dict(self.postprocess_args(), clip_boxes=False))

  def exported_scorer(self):
    from pipelines.evaluation import exported_eval  # pylint: disable=g-import-not-at-top
    return exported_eval.DetectionScorer(self.categories())

  # ------------------------------------------------------------------------------------------- demo

  @classmethod
  def demo_convert(cls, raw, records_dir):
    from datasets import coco  # pylint: disable=g-import-not-at-top
    paths = raw['coco']
    for split in ('train', 'val'):
      coco.convert(paths['%s_images' % split], paths['%s_annotations' % split], records_dir, split, num_shards=2)
    return cls.demo_labels_file(records_dir)

  @classmethod
  def demo_labels_file(cls, records_dir):
    return os.path.join(records_dir, 'label_map.pbtxt')

  @classmethod
  def demo_images(cls, raw, count):
    return sorted(tf.io.gfile.glob(os.path.join(raw['coco']['val_images'], '*.jpg')))[:count]
