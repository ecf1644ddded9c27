"""The config sections of the built-in tasks: `classification`, `detection`, `segmentation`.

Each is a frozen dataclass with defaults and a `validate()` for its own keys (rules raise
`ValueError('key: message')`, reported with the file and the dotted key). Rules that read other sections
(the backbone's output stride) are `validate_with(config)`, which `pipelines.config.Config.validate` calls
on the sections the config reads. `backbone_stride()` says what output stride the task's own backbone has,
and which key sets it. The registry (`pipelines.tasks.registry`) ties each to its task; no TensorFlow here,
so a config loads and validates without it.

Not here: the shared sections (`pipelines.config`), the multi-task section (`pipelines.config`,
`MultitaskConfig`), what a task does with its section (its task class).
"""
import dataclasses
from typing import List, Optional

from pipelines.config_lib import check_keep_prob
from pipelines.config_lib import check_one_of
from pipelines.config_lib import check_positive

CLASSIFICATION_LOSSES = ('sigmoid', 'softmax')
MINER_LOSS_TYPES = ('classification', 'localization', 'both')
CROP_SAMPLERS = ('od_api', 'iou')  # datasets.detection_preprocessing.CROP_SAMPLERS


COLOR_DISTORTIONS = ('fast', 'full', 'none')  # datasets.classification_preprocessing.COLOR_DISTORTIONS


@dataclasses.dataclass(frozen=True)
class ClassificationPreprocessingConfig:
  """TF-Slim's `inception_preprocessing` (what `train_image_classifier` runs for MobileNetV2), its defaults."""
  min_object_covered: float = 0.1  # of the whole image, by the training crop
  aspect_ratio_range: List[float] = dataclasses.field(default_factory=lambda: [0.75, 1.33])
  area_range: List[float] = dataclasses.field(default_factory=lambda: [0.05, 1.0])
  max_attempts: int = 100
  random_flip: bool = True
  color_distortion: str = 'fast'  # fast (brightness, saturation) | full (+ hue, contrast; 4 orderings) | none
  eval_central_fraction: float = 0.875  # evaluation and serving: central crop of each side, then resize

  def validate(self):
    for name in ('aspect_ratio_range', 'area_range'):
      low_high = getattr(self, name)
      if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1]:
        raise ValueError('%s: must be [min, max] with 0 < min <= max, got %r' % (name, low_high))
    if self.area_range[1] > 1:
      raise ValueError('area_range: fractions of the image area, at most 1, got %r' % (self.area_range,))
    if not 0 <= self.min_object_covered <= 1:
      raise ValueError('min_object_covered: must be in [0, 1], got %r' % (self.min_object_covered,))
    check_positive('max_attempts', self.max_attempts)
    check_one_of('color_distortion', self.color_distortion, COLOR_DISTORTIONS)
    if not 0 < self.eval_central_fraction <= 1:
      raise ValueError('eval_central_fraction: must be in (0, 1], got %r' % (self.eval_central_fraction,))


@dataclasses.dataclass(frozen=True)
class ClassificationConfig:
  NUM_CLASSES_RULE = (1, 'ids 0..largest, background 0 included')  # (not a field: no annotation)
  # Logits, INCLUDING the background class 0 of TF-Slim's ImageNet records: 1001 for ImageNet's 1000
  # classes. With data.labels_file (labels.txt), it must be the largest label id + 1.
  num_classes: int = 1001
  image_size: int = 224  # square training/eval/serving input side
  output_stride: Optional[int] = None  # null = 32; 8 or 16 make the backbone atrous past that stride
  finegrain_classification_mode: bool = False  # keep the last layer at 1280 channels below multiplier 1.0
  dropout_keep_prob: float = 0.8  # before the logits
  top_k: int = 5  # classes returned by predict/export
  preprocessing: ClassificationPreprocessingConfig = dataclasses.field(
      default_factory=ClassificationPreprocessingConfig)
  # Added to every record's label: the label used is record label + label_offset, and it must be a class
  # 1..num_classes - 1 (logit 0 is always the background). 0 for TF-Slim ImageNet records (labels 1..1000);
  # 1 for records whose labels start at 0 without a background (TF-Slim's CIFAR-10, tf_cnn_benchmarks).
  label_offset: int = 0

  def validate(self):
    check_positive('num_classes', self.num_classes)
    if self.num_classes < 2:
      raise ValueError('num_classes: must be >= 2 (background 0 plus at least one class), got %r'
                       % (self.num_classes,))
    check_positive('image_size', self.image_size)
    if self.output_stride not in (None, 8, 16, 32):
      raise ValueError('output_stride: must be null, 8, 16 or 32, got %r' % (self.output_stride,))
    check_keep_prob('dropout_keep_prob', self.dropout_keep_prob)
    check_positive('top_k', self.top_k)

  def backbone_stride(self):
    """(output stride of the classifier's backbone, the key that sets it)."""
    return self.output_stride or 32, 'classification.output_stride'


# SSDLite's feature maps: layer_15/expansion_output, layer_19 and four extra layers (`heads.ssdlite`).
SSD_FEATURE_MAPS = 6


@dataclasses.dataclass(frozen=True)
class AnchorsConfig:
  """The OD API's `ssd_anchor_generator` fields (its SSDLite config's values; 2034 anchors at 320)."""
  num_layers: int = SSD_FEATURE_MAPS
  min_scale: float = 0.2
  max_scale: float = 0.95
  # 1/3 exactly (the OD API's config writes 0.3333): today's anchors, so trained models keep theirs.
  aspect_ratios: List[float] = dataclasses.field(default_factory=lambda: [1.0, 2.0, 0.5, 3.0, 1.0 / 3])
  reduce_boxes_in_lowest_layer: bool = True  # the lowest layer has (0.1, 1.0), (min_scale, 2.0), (min_scale, 0.5)
  interpolated_scale_aspect_ratio: float = 1.0  # > 0: each layer also gets sqrt(s_i * s_i+1) at this ratio

  def validate(self):
    if self.num_layers != SSD_FEATURE_MAPS:
      raise ValueError('num_layers: must be %d (one per SSDLite feature map), got %r'
                       % (SSD_FEATURE_MAPS, self.num_layers))
    if not 0 < self.min_scale <= self.max_scale <= 1:
      raise ValueError('min_scale: and max_scale must satisfy 0 < min_scale <= max_scale <= 1, got %r and %r'
                       % (self.min_scale, self.max_scale))
    if not self.aspect_ratios or any(ratio <= 0 for ratio in self.aspect_ratios):
      raise ValueError('aspect_ratios: must be a non-empty list of ratios > 0, got %r' % (self.aspect_ratios,))
    if self.interpolated_scale_aspect_ratio < 0:
      raise ValueError('interpolated_scale_aspect_ratio: must be >= 0 (0 = none), got %r'
                       % (self.interpolated_scale_aspect_ratio,))


@dataclasses.dataclass(frozen=True)
class HardExampleMinerConfig:
  """The OD API's `hard_example_miner` (its SSDLite config's values); `heads.core.losses.hard_example_miner`."""
  num_hard_examples: Optional[int] = 3000  # NMS keeps at most this many anchors per image; null = all
  iou_threshold: float = 0.99  # NMS over the decoded predicted boxes, the anchor's loss as score
  loss_type: str = 'classification'  # classification | localization | both: the NMS score
  max_negatives_per_positive: Optional[float] = 3.0  # null = keep every negative NMS selects
  min_negatives_per_image: int = 3  # negatives kept even in images without positives

  def validate(self):
    if self.num_hard_examples is not None:
      check_positive('num_hard_examples', self.num_hard_examples)
    if not 0 < self.iou_threshold <= 1:
      raise ValueError('iou_threshold: must be in (0, 1], got %r' % (self.iou_threshold,))
    check_one_of('loss_type', self.loss_type, MINER_LOSS_TYPES)
    if self.max_negatives_per_positive is not None and self.max_negatives_per_positive < 0:
      raise ValueError('max_negatives_per_positive: must be >= 0 or null, got %r' % (self.max_negatives_per_positive,))
    if self.min_negatives_per_image < 0:
      raise ValueError('min_negatives_per_image: must be >= 0, got %r' % (self.min_negatives_per_image,))


@dataclasses.dataclass(frozen=True)
class DetectionConfig:
  NUM_CLASSES_RULE = (0, 'object classes 1..largest id, the Object Detection API convention')
  # Object classes WITHOUT the background, and a class index IS its label-map id (the Object Detection
  # API's convention): the largest id, 90 for COCO (whose ids have gaps). The predictor has num_classes + 1
  # outputs, column 0 = background. With data.labels_file, it must equal the largest id of the label map.
  num_classes: int = 90
  image_size: int = 320  # square SSD input side (the anchors follow it)
  min_depth: int = 16  # smallest channel count of the backbone and the extra layers (public config: 16)
  max_objects: int = 100  # ground-truth boxes per image after padding
  matched_threshold: float = 0.5
  unmatched_threshold: float = 0.5
  classification_loss: str = 'sigmoid'  # sigmoid | softmax
  localization_weight: float = 1.0
  classification_weight: float = 1.0
  score_threshold: float = 1e-8
  iou_threshold: float = 0.6
  max_detections: int = 100
  class_prediction_bias_init: float = 0.0
  random_crop: bool = True
  # od_api: the OD API's ssd_random_crop and its defaults; iou: the SSD paper's sampler with an IoU test
  # (this project's before #20).
  crop_sampler: str = 'od_api'
  # TFLite_Detection_PostProcess: per-class (regular) NMS, the SavedModel's; false = the OD API TFLite
  # exporter's default, one class-agnostic NMS over each box's best class (much cheaper with many classes).
  tflite_use_regular_nms: bool = True
  anchors: AnchorsConfig = dataclasses.field(default_factory=AnchorsConfig)
  # null: no mining (every anchor's loss counts). Top-k mining by loss (this project before #20):
  # {num_hard_examples: null, iou_threshold: 1.0} (NMS then suppresses nothing).
  hard_example_miner: Optional[HardExampleMinerConfig] = dataclasses.field(default_factory=HardExampleMinerConfig)

  def validate(self):
    check_positive('num_classes', self.num_classes)
    check_positive('image_size', self.image_size)
    check_positive('min_depth', self.min_depth)
    check_one_of('classification_loss', self.classification_loss, CLASSIFICATION_LOSSES)
    check_one_of('crop_sampler', self.crop_sampler, CROP_SAMPLERS)
    check_positive('max_objects', self.max_objects)
    check_positive('max_detections', self.max_detections)
    if not 0 < self.iou_threshold <= 1:
      raise ValueError('iou_threshold: must be in (0, 1], got %r' % (self.iou_threshold,))
    if self.unmatched_threshold > self.matched_threshold:
      raise ValueError('unmatched_threshold: must be <= matched_threshold')

  def backbone_stride(self):
    """SSDLite's backbone always runs at output stride 32 (its maps are at strides 16 and 32)."""
    return 32, None


@dataclasses.dataclass(frozen=True)
class SegmentationConfig:
  NUM_CLASSES_RULE = (1, 'ids 0..largest, background 0 included')
  # Classes INCLUDING background 0 (21 for PASCAL VOC); labels >= num_classes other than ignore_label are
  # not classes. With data.labels_file (labels.txt), it must be the largest label id + 1.
  num_classes: int = 21
  output_stride: int = 16  # 8, 16 or 32; atrous backbone past it (DeepLab's default 16)
  dropout_keep_prob: float = 0.9  # DeepLab's dropout after concat_projection
  crop_size: int = 513
  eval_crop_size: int = 513  # >= every eval image side (images are padded, never resized)
  min_scale: float = 0.5
  max_scale: float = 2.0
  scale_step: float = 0.25
  aspp_rates: List[int] = dataclasses.field(default_factory=list)  # [] = MobileNetV2 setting (no atrous branches)
  image_pooling: bool = True
  aspp_convs_filters: int = 256  # channels of every ASPP branch and of concat_projection (DeepLab's flag)
  decoder: bool = False  # DeepLabv3+ decoder on the low-level endpoint of decoder_output_stride
  # 4: layer_4/depthwise_output (DeepLabv3+), 8: layer_7/depthwise_output, 16: layer_14/depthwise_output
  # (DeepLab's MobileNetV2 decoder endpoints); must be below the backbone's output stride.
  decoder_output_stride: int = 4
  decoder_filters: int = 256  # channels of decoder_conv0/1 (DeepLab's flag)
  ignore_label: int = 255
  hard_pixel_top_k: float = 1.0  # fraction of the hardest pixels kept in the loss (1.0 = all)
  eval_scales: List[float] = dataclasses.field(default_factory=lambda: [1.0])
  eval_flip: bool = False
  export_probabilities: bool = False  # predict/export also return float32 [B, H, W, C] softmax probabilities

  def validate(self):
    check_positive('num_classes', self.num_classes)
    if self.output_stride not in (8, 16, 32):
      raise ValueError('output_stride: must be 8, 16 or 32, got %r' % (self.output_stride,))
    check_keep_prob('dropout_keep_prob', self.dropout_keep_prob)
    check_positive('crop_size', self.crop_size)
    check_positive('eval_crop_size', self.eval_crop_size)
    if not 0 < self.min_scale <= self.max_scale:
      raise ValueError('min_scale: must be > 0 and <= max_scale')
    if self.scale_step < 0 or (self.max_scale > self.min_scale and
                               self.scale_step > self.max_scale - self.min_scale):
      raise ValueError('scale_step: must be in [0, max_scale - min_scale = %g] (0 = any scale in the range), '
                       'got %r' % (self.max_scale - self.min_scale, self.scale_step))
    check_positive('aspp_convs_filters', self.aspp_convs_filters)
    check_positive('decoder_filters', self.decoder_filters)
    if self.decoder_output_stride not in (4, 8, 16):
      raise ValueError('decoder_output_stride: must be 4, 8 or 16, got %r' % (self.decoder_output_stride,))
    if not 0 < self.hard_pixel_top_k <= 1:
      raise ValueError('hard_pixel_top_k: must be in (0, 1], got %r' % (self.hard_pixel_top_k,))
    if not self.eval_scales or any(s <= 0 for s in self.eval_scales):
      raise ValueError('eval_scales: must be a non-empty list of positive scales')

  def backbone_stride(self):
    return self.output_stride, 'segmentation.output_stride'

  def validate_with(self, config):
    """The decoder must read a finer endpoint than the backbone's output (`config.backbone_stride()`)."""
    if not self.decoder:
      return
    stride, key = config.backbone_stride()
    if self.decoder_output_stride >= stride:
      raise ValueError('decoder_output_stride: must be below the backbone\'s output stride (%s = %d) to add '
                       'detail, got %d' % (key, stride, self.decoder_output_stride))
