"""The config schema of every task: what a YAML file under `configs/` may contain.

Each section is a frozen dataclass with defaults and a `validate()` for cross-field rules; rules raise
`ValueError('key: message')`, which `config_lib` turns into an error naming the file and dotted key.
Only the builders in `pipelines/` read these objects; `nets/`, `heads/` and `datasets/` take plain arguments.
"""
import dataclasses
import re
from typing import Dict, List, Optional

from pipelines import config_lib

TASKS = ('classification', 'detection', 'segmentation')
MULTITASK = 'multitask'  # one shared backbone, the heads of several TASKS (see MultitaskConfig)
OPTIMIZERS = ('rmsprop', 'momentum', 'sgd', 'adam')
SCHEDULES = ('constant', 'exponential', 'cosine', 'poly')


def _positive(name, value):
  if value is None or value <= 0:
    raise ValueError('%s: must be > 0, got %r' % (name, value))


def _in(name, value, valid):
  if value not in valid:
    raise ValueError('%s: %r is not one of %s' % (name, value, ', '.join(valid)))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The backbone, shared by every task (task-only settings live in the task's own section)."""
  depth_multiplier: float = 1.0
  # Channel rounding of the backbone; null = the task's public convention: 8 (TF-Slim, OD API) for
  # classification/detection, DeepLab's (8 at multiplier 1.0, else 1) for segmentation. Set 8 to warm-start
  # a segmentation model from a TF-Slim classifier of another width.
  divisible_by: Optional[int] = None
  use_explicit_padding: bool = False  # input-size-independent padding (exporters)
  weight_decay: float = 0.00004
  bn_decay: float = 0.997
  init_stddev: float = 0.09

  def validate(self):
    _positive('depth_multiplier', self.depth_multiplier)
    if self.divisible_by is not None and self.divisible_by <= 0:
      raise ValueError('divisible_by: must be > 0 or null, got %r' % (self.divisible_by,))
    if self.weight_decay < 0:
      raise ValueError('weight_decay: must be >= 0, got %r' % (self.weight_decay,))
    if not 0 < self.bn_decay < 1:
      raise ValueError('bn_decay: must be in (0, 1), got %r' % (self.bn_decay,))


def _keep_prob(name, value):
  if not 0 < value <= 1:
    raise ValueError('%s: must be in (0, 1], got %r' % (name, value))


@dataclasses.dataclass(frozen=True)
class DataConfig:
  train_files: str = ''  # glob of training TFRecord shards, e.g. /data/imagenet/train-*
  eval_files: str = ''  # glob of evaluation shards
  labels_file: Optional[str] = None  # labels.txt (classification, segmentation) or label_map.pbtxt (detection)
  num_train_examples: int = 0  # needed by per-epoch schedules (steps per epoch = examples / batch size)
  shuffle_buffer: int = 1024
  num_parallel_reads: int = 8  # shards read at once
  num_parallel_calls: int = 0  # decode/augment threads; 0 = AUTOTUNE
  prefetch: int = 2  # batches; a fixed value (AUTOTUNE sometimes stalled tf.data on 2-core hosts)

  def validate(self):
    for name in ('shuffle_buffer', 'num_parallel_reads', 'prefetch'):
      _positive(name, getattr(self, name))
    for name in ('num_parallel_calls', 'num_train_examples'):
      if getattr(self, name) < 0:
        raise ValueError('%s: must be >= 0, got %r' % (name, getattr(self, name)))


@dataclasses.dataclass(frozen=True)
class LearningRateConfig:
  schedule: str = 'exponential'
  base: float = 0.045
  decay_rate: float = 0.98  # exponential: multiply by this every `decay_epochs`
  decay_epochs: float = 1.0
  staircase: bool = True
  power: float = 0.9  # poly: (1 - step/steps)^power
  end: float = 0.0  # cosine/poly: final value
  warmup_steps: int = 0  # linear ramp from warmup_start * base to the schedule
  warmup_start: float = 0.0

  def validate(self):
    _in('schedule', self.schedule, SCHEDULES)
    _positive('base', self.base)
    _positive('decay_epochs', self.decay_epochs)
    if not 0 < self.decay_rate <= 1:
      raise ValueError('decay_rate: must be in (0, 1], got %r' % (self.decay_rate,))
    if self.warmup_steps < 0:
      raise ValueError('warmup_steps: must be >= 0, got %r' % (self.warmup_steps,))


@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
  checkpoint: Optional[str] = None  # a checkpoint file prefix or a directory (its latest checkpoint)
  include: List[str] = dataclasses.field(default_factory=lambda: ['.*'])  # regexes on model variable names
  exclude: List[str] = dataclasses.field(default_factory=list)
  # model-name prefix -> checkpoint-name prefix, e.g. {'FeatureExtractor/MobilenetV2/': 'MobilenetV2/'}
  scope_map: Dict[str, str] = dataclasses.field(default_factory=dict)

  def validate(self):
    for name in ('include', 'exclude'):
      for index, pattern in enumerate(getattr(self, name)):
        try:
          re.compile(pattern)
        except re.error as e:
          raise ValueError('%s[%d]: invalid regular expression %r: %s' % (name, index, pattern, e))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  batch_size: int = 96
  steps: int = 0
  optimizer: str = 'rmsprop'
  momentum: float = 0.9
  rmsprop_decay: float = 0.9
  rmsprop_epsilon: float = 1.0  # TF-Slim's train_image_classifier default, used for the public checkpoints
  learning_rate: LearningRateConfig = dataclasses.field(default_factory=LearningRateConfig)
  label_smoothing: float = 0.0
  moving_average_decay: Optional[float] = 0.9999  # null disables the EMA of weights
  warm_start: WarmStartConfig = dataclasses.field(default_factory=WarmStartConfig)
  # Use moving statistics while training. null = automatic: segmentation freezes below 12 images per step
  # (DeepLab's advice), other tasks train batch norm.
  freeze_batch_norm: Optional[bool] = None
  clip_gradient_norm: float = 0.0  # 0 = no clipping
  summary_images: int = 3  # input images written to TensorBoard
  evaluate_every_checkpoint: bool = False  # train_and_evaluate: evaluate each new checkpoint
  # Batch-norm moments all-reduced over the replicas of a synchronous strategy (global-batch statistics,
  # DeepLab's recipe); checkpoint variables unchanged. No effect with one replica.
  sync_batch_norm: bool = False

  def validate(self):
    _positive('batch_size', self.batch_size)
    _positive('steps', self.steps)
    _in('optimizer', self.optimizer, OPTIMIZERS)
    if not 0 <= self.label_smoothing < 1:
      raise ValueError('label_smoothing: must be in [0, 1), got %r' % (self.label_smoothing,))
    if self.moving_average_decay is not None and not 0 < self.moving_average_decay < 1:
      raise ValueError('moving_average_decay: must be in (0, 1) or null, got %r' % (self.moving_average_decay,))


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  batch_size: int = 32
  steps: Optional[int] = None  # null = the whole split
  continuous_timeout_secs: int = 3600  # `mnv2 eval --continuous` stops after this long without a checkpoint

  def validate(self):
    _positive('batch_size', self.batch_size)
    if self.steps is not None:
      _positive('steps', self.steps)


STRATEGIES = ('none', 'mirrored', 'multi_worker_mirrored', 'parameter_server')
MIXED_PRECISIONS = ('float16', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class DistributionConfig:
  """Where training runs (see README "Training on several GPUs and machines", `pipelines.distribution`)."""
  strategy: str = 'none'  # none | mirrored | multi_worker_mirrored | parameter_server
  num_devices: int = 0  # mirrored: GPUs to use, 0 = every visible GPU
  cpu_devices: int = 1  # mirrored without a GPU: N > 1 splits the host CPU into N logical devices

  def validate(self):
    _in('strategy', self.strategy, STRATEGIES)
    if self.num_devices < 0:
      raise ValueError('num_devices: must be >= 0 (0 = every visible GPU), got %r' % (self.num_devices,))
    if self.cpu_devices < 1:
      raise ValueError('cpu_devices: must be >= 1, got %r' % (self.cpu_devices,))


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
  seed: Optional[int] = None
  save_checkpoints_steps: int = 1000
  keep_checkpoint_max: int = 5
  log_every_n_steps: int = 100
  save_summary_steps: int = 100
  intra_op_threads: int = 0  # 0 = TensorFlow's choice
  inter_op_threads: int = 0
  distribution: DistributionConfig = dataclasses.field(default_factory=DistributionConfig)
  mixed_precision: Optional[str] = None  # null | float16 (GPU, loss scaling) | bfloat16 (AVX512_BF16/AMX CPUs)
  xla: bool = False  # XLA JIT for training and evaluation

  def validate(self):
    if self.mixed_precision is not None:
      _in('mixed_precision', self.mixed_precision, MIXED_PRECISIONS)
    for name in ('save_checkpoints_steps', 'keep_checkpoint_max', 'log_every_n_steps', 'save_summary_steps'):
      _positive(name, getattr(self, name))


@dataclasses.dataclass(frozen=True)
class ClassificationConfig:
  # Logits, INCLUDING the background class 0 of TF-Slim's ImageNet records: 1001 for ImageNet's 1000
  # classes. With data.labels_file (labels.txt), it must be the largest label id + 1.
  num_classes: int = 1001
  image_size: int = 224  # square training/eval/serving input side
  output_stride: Optional[int] = None  # null = 32; 8 or 16 make the backbone atrous past that stride
  finegrain_classification_mode: bool = False  # keep the last layer at 1280 channels below multiplier 1.0
  dropout_keep_prob: float = 0.8  # before the logits
  top_k: int = 5  # classes returned by predict/export
  min_crop_area: float = 0.08  # Inception-style training crop covers this to 100% of the image area
  # Added to every record's label: the label used is record label + label_offset, and it must be a class
  # 1..num_classes - 1 (logit 0 is always the background). 0 for TF-Slim ImageNet records (labels 1..1000);
  # 1 for records whose labels start at 0 without a background (TF-Slim's CIFAR-10, tf_cnn_benchmarks).
  label_offset: int = 0

  def validate(self):
    _positive('num_classes', self.num_classes)
    if self.num_classes < 2:
      raise ValueError('num_classes: must be >= 2 (background 0 plus at least one class), got %r'
                       % (self.num_classes,))
    _positive('image_size', self.image_size)
    if self.output_stride not in (None, 8, 16, 32):
      raise ValueError('output_stride: must be null, 8, 16 or 32, got %r' % (self.output_stride,))
    _keep_prob('dropout_keep_prob', self.dropout_keep_prob)
    _positive('top_k', self.top_k)
    if not 0 < self.min_crop_area <= 1:
      raise ValueError('min_crop_area: must be in (0, 1], got %r' % (self.min_crop_area,))


@dataclasses.dataclass(frozen=True)
class DetectionConfig:
  # Object classes WITHOUT the background, and a class index IS its label-map id (the Object Detection
  # API's convention): the largest id, 90 for COCO (whose ids have gaps). The predictor has num_classes + 1
  # outputs, column 0 = background. With data.labels_file, it must equal the largest id of the label map.
  num_classes: int = 90
  image_size: int = 320  # square SSD input side (the anchors follow it)
  min_depth: int = 16  # smallest channel count of the backbone and the extra layers (public config: 16)
  max_objects: int = 100  # ground-truth boxes per image after padding
  matched_threshold: float = 0.5
  unmatched_threshold: float = 0.5
  neg_pos_ratio: float = 3.0
  min_negatives_per_image: int = 3  # hard negatives kept even in images without positives (public SSD configs)
  classification_loss: str = 'sigmoid'  # sigmoid | softmax
  localization_weight: float = 1.0
  classification_weight: float = 1.0
  score_threshold: float = 1e-8
  iou_threshold: float = 0.6
  max_detections: int = 100
  class_prediction_bias_init: float = 0.0
  random_crop: bool = True
  # TFLite_Detection_PostProcess: per-class (regular) NMS, the SavedModel's; false = the OD API TFLite
  # exporter's default, one class-agnostic NMS over each box's best class (much cheaper with many classes).
  tflite_use_regular_nms: bool = True

  def validate(self):
    _positive('num_classes', self.num_classes)
    _positive('image_size', self.image_size)
    _positive('min_depth', self.min_depth)
    _in('classification_loss', self.classification_loss, ('sigmoid', 'softmax'))
    _positive('max_objects', self.max_objects)
    _positive('max_detections', self.max_detections)
    if not 0 < self.iou_threshold <= 1:
      raise ValueError('iou_threshold: must be in (0, 1], got %r' % (self.iou_threshold,))
    if self.unmatched_threshold > self.matched_threshold:
      raise ValueError('unmatched_threshold: must be <= matched_threshold')
    if self.min_negatives_per_image < 0:
      raise ValueError('min_negatives_per_image: must be >= 0, got %r' % (self.min_negatives_per_image,))


@dataclasses.dataclass(frozen=True)
class SegmentationConfig:
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
    _positive('num_classes', self.num_classes)
    if self.output_stride not in (8, 16, 32):
      raise ValueError('output_stride: must be 8, 16 or 32, got %r' % (self.output_stride,))
    _keep_prob('dropout_keep_prob', self.dropout_keep_prob)
    _positive('crop_size', self.crop_size)
    _positive('eval_crop_size', self.eval_crop_size)
    if not 0 < self.min_scale <= self.max_scale:
      raise ValueError('min_scale: must be > 0 and <= max_scale')
    if self.scale_step < 0 or (self.max_scale > self.min_scale and
                               self.scale_step > self.max_scale - self.min_scale):
      raise ValueError('scale_step: must be in [0, max_scale - min_scale = %g] (0 = any scale in the range), '
                       'got %r' % (self.max_scale - self.min_scale, self.scale_step))
    _positive('aspp_convs_filters', self.aspp_convs_filters)
    _positive('decoder_filters', self.decoder_filters)
    if self.decoder_output_stride not in (4, 8, 16):
      raise ValueError('decoder_output_stride: must be 4, 8 or 16, got %r' % (self.decoder_output_stride,))
    if not 0 < self.hard_pixel_top_k <= 1:
      raise ValueError('hard_pixel_top_k: must be in (0, 1], got %r' % (self.hard_pixel_top_k,))
    if not self.eval_scales or any(s <= 0 for s in self.eval_scales):
      raise ValueError('eval_scales: must be a non-empty list of positive scales')


@dataclasses.dataclass(frozen=True)
class MemberConfig:
  """One task of a multi-task model: its own records, batch, loss weight and head warm start."""
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  loss_weight: float = 1.0  # the member's losses are multiplied by this in the summed objective
  batch_size: int = 0  # images of this task per training step; 0 = train.batch_size
  eval_batch_size: int = 0  # 0 = eval.batch_size
  # e.g. the single-task detection checkpoint for the SSDLite head (include ['^BoxPredictor', ...])
  warm_start: WarmStartConfig = dataclasses.field(default_factory=WarmStartConfig)

  def validate(self):
    if self.loss_weight < 0:
      raise ValueError('loss_weight: must be >= 0, got %r' % (self.loss_weight,))
    if self.batch_size < 0 or self.eval_batch_size < 0:
      raise ValueError('batch_size: and eval_batch_size must be >= 0 (0 = the train/eval section\'s)')


@dataclasses.dataclass(frozen=True)
class MultitaskConfig:
  """`task: multitask`: which tasks share the backbone (a section each; the head settings stay in the
  task's own section, e.g. `detection.num_classes`)."""
  classification: Optional[MemberConfig] = None
  detection: Optional[MemberConfig] = None
  segmentation: Optional[MemberConfig] = None
  # Output stride of the shared backbone: 32 keeps SSDLite's stride-16/32 maps and the classifier as
  # published; DeepLab then reads layer_18 at stride 32 (use segmentation.decoder for detail).
  output_stride: Optional[int] = None  # null = 32; 16 makes layers 16..19 atrous for every head

  def members(self):
    """Names of the combined tasks, in TASKS order."""
    return [name for name in TASKS if getattr(self, name) is not None]

  def validate(self):
    if self.output_stride not in (None, 16, 32):
      raise ValueError('output_stride: must be null, 16 or 32, got %r' % (self.output_stride,))


@dataclasses.dataclass(frozen=True)
class Config:
  task: str = 'classification'
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
  runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
  classification: ClassificationConfig = dataclasses.field(default_factory=ClassificationConfig)
  detection: DetectionConfig = dataclasses.field(default_factory=DetectionConfig)
  segmentation: SegmentationConfig = dataclasses.field(default_factory=SegmentationConfig)
  multitask: MultitaskConfig = dataclasses.field(default_factory=MultitaskConfig)

  def validate(self):
    _in('task', self.task, TASKS + (MULTITASK,))
    if self.task == MULTITASK and len(self.multitask.members()) < 2:
      raise ValueError('multitask: combines at least two of %s, each a section of its own (got %s)'
                       % (', '.join(TASKS), ', '.join(self.multitask.members()) or 'none'))
    seg = self.segmentation
    if seg.decoder and (self.task == 'segmentation' or
                        (self.task == MULTITASK and self.multitask.segmentation is not None)):
      stride, key = ((self.multitask.output_stride or 32, 'multitask.output_stride') if self.task == MULTITASK
                     else (seg.output_stride, 'segmentation.output_stride'))
      if seg.decoder_output_stride >= stride:
        raise ValueError('segmentation.decoder_output_stride: must be below the backbone\'s output stride '
                         '(%s = %d) to add detail, got %d' % (key, stride, seg.decoder_output_stride))
    schedule = self.train.learning_rate
    if schedule.schedule == 'exponential' and epoch_data(self).num_train_examples <= 0:
      raise ValueError('%s.num_train_examples: must be > 0 for the per-epoch exponential schedule'
                       % ('data' if self.task != MULTITASK else 'multitask.%s.data' % self.multitask.members()[0]))


def epoch_data(config):
  """The data section whose epochs per-epoch schedules count (multitask: the first member's)."""
  if config.task == MULTITASK and config.multitask.members():
    return getattr(config.multitask, config.multitask.members()[0]).data
  return config.data


def member_config(config, name):
  """The single-task config of member `name` of a multitask config: its data, batch sizes and head warm
  start, with the shared model / train / eval / runtime sections and the task's own section."""
  member = getattr(config.multitask, name)
  train = dataclasses.replace(config.train, batch_size=member.batch_size or config.train.batch_size,
                              warm_start=member.warm_start)
  evaluation = dataclasses.replace(config.eval, batch_size=member.eval_batch_size or config.eval.batch_size)
  return dataclasses.replace(config, task=name, data=member.data, train=train, eval=evaluation,
                             multitask=MultitaskConfig())


def unread_sections(data):
  """Task sections that the config's task does not read -> why (a config holding one is an error)."""
  task = data.get('task', Config.task)
  if task == MULTITASK:
    members = [name for name in TASKS if (data.get(MULTITASK) or {}).get(name) is not None]
    unread = {name: 'not read by this multitask config (its multitask section combines %s)'
              % (', '.join(members) or 'no task') for name in TASKS if name not in members}
    unread['data'] = 'not read by task multitask (each member has its own multitask.<task>.data)'
    return unread
  unread = {name: 'not read by task %r (only the %r section applies to it)' % (task, task)
            for name in TASKS if name != task}
  unread[MULTITASK] = 'not read by task %r (only multitask configs have it)' % task
  return unread


def load(path, overrides=()):
  """Loads and validates a task config (see `config_lib.load`); other tasks' sections are errors."""
  return config_lib.load(Config, path, overrides, unread_sections=unread_sections)


def to_dict(config):
  """The config as a nested dict without the sections its task does not read (what `save` writes)."""
  data = config_lib.to_dict(config)
  for name in unread_sections(data):
    data.pop(name, None)
  return data


def save(config, path):
  """Writes the resolved config to `path` (YAML, atomically); it loads back to an equal config."""
  config_lib.save_dict(to_dict(config), path)


def task_section(config):
  """The config's own task section (`config.classification` for a classification config, ...)."""
  return getattr(config, config.task)


# Which data keys each mode needs; checked before a graph is built.
_FILES_FOR_MODE = {'train': ('data.train_files',), 'eval': ('data.eval_files',),
                   'train_and_eval': ('data.train_files', 'data.eval_files')}


def check_files(config, mode, source=''):
  """Raises ConfigError naming the key if a file/glob the mode needs is unset or matches nothing."""
  if config.task == MULTITASK:
    for name in config.multitask.members():
      try:
        check_files(member_config(config, name), mode, source)
      except config_lib.ConfigError as e:
        key = e.key
        if key.startswith(('data.', 'train.warm_start')):
          key = 'multitask.%s.%s' % (name, key.replace('train.', '', 1))
        raise config_lib.ConfigError(source, key, e.message)
    return
  for key in _FILES_FOR_MODE.get(mode, ()):
    pattern = getattr(config.data, key.split('.')[1])
    if not pattern:
      raise config_lib.ConfigError(source, key, 'is required for %s' % mode)
    if not _glob(pattern):
      raise config_lib.ConfigError(source, key, 'no file matches %r' % pattern)
  labels = config.data.labels_file
  if labels and not _glob(labels):
    raise config_lib.ConfigError(source, 'data.labels_file', 'file not found: %r' % labels)
  if labels:
    check_num_classes(config, source)
  checkpoint = config.train.warm_start.checkpoint
  if mode in ('train', 'train_and_eval') and checkpoint and not (
      _glob(checkpoint) or _glob(checkpoint + '.index') or _glob(checkpoint + '*')):
    raise config_lib.ConfigError(source, 'train.warm_start.checkpoint', 'no checkpoint at %r' % checkpoint)


def _glob(pattern):
  """tf.io.gfile.glob (local paths, gs://, ...); TensorFlow is imported only when a file is checked."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  try:
    return tf.io.gfile.glob(pattern)
  except tf.errors.OpError:
    return []


def check_num_classes(config, source=''):
  """Raises ConfigError naming `<task>.num_classes` and `data.labels_file` when the two disagree."""
  from pipelines import labels as labels_lib  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  path = config.data.labels_file
  try:
    expected, why = labels_lib.expected_num_classes(config.task, path)
  except ValueError as e:
    raise config_lib.ConfigError(source, 'data.labels_file', str(e))
  got = task_section(config).num_classes
  if got != expected:
    raise config_lib.ConfigError(source, '%s.num_classes' % config.task,
                                 '%d disagrees with data.labels_file %r, which needs %d (%s)'
                                 % (got, path, expected, why))
