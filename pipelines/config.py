"""The config schema of every task: what a YAML file under `configs/` may contain.

Each section is a frozen dataclass with defaults and a `validate()` for cross-field rules; rules raise
`ValueError('key: message')`, which `config_lib` turns into an error naming the file and dotted key.
Only the builders in `pipelines/` read these objects; `nets/`, `heads/` and `datasets/` take plain arguments.
"""
import collections
import dataclasses
import re
from typing import Any, Dict, List, Optional

from pipelines import config_lib
from pipelines.tasks import registry
from pipelines.tasks import sections
# The built-in task sections, importable from here as before.
from pipelines.tasks.sections import ClassificationConfig  # noqa: F401
from pipelines.tasks.sections import DetectionConfig  # noqa: F401
from pipelines.tasks.sections import SegmentationConfig  # noqa: F401

OPTIMIZERS = ('rmsprop', 'momentum', 'sgd', 'adam')
SCHEDULES = ('constant', 'exponential', 'cosine', 'poly')


_positive = config_lib.check_positive
_in = config_lib.check_one_of


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
class QuantizationConfig:
  """Quantization-aware training (`pipelines.training.quantization`), as contrib.quantize's training rewrite."""
  delay: Optional[int] = None  # steps of float training before fake quantization starts; null = off
  weight_bits: int = 8
  activation_bits: int = 8
  symmetric: bool = False  # weight ranges symmetric around 0 (narrow range), else learned min / max
  per_channel: bool = False  # one weight range per output channel
  # step after which batch norm uses (and stops updating) its moving statistics, folded as at inference; null = never
  freeze_bn_delay: Optional[int] = None
  ema_decay: float = 0.999  # activation ranges: moving average of the batch min / max (contrib's decay)

  def validate(self):
    for name in ('delay', 'freeze_bn_delay'):
      value = getattr(self, name)
      if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError('%s: must be an integer >= 0 or null, got %r' % (name, value))
    for name in ('weight_bits', 'activation_bits'):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 16:
        raise ValueError('%s: must be an integer in [2, 16] (TFLite integer models take 8), got %r' % (name, value))
    if not 0 < self.ema_decay < 1:
      raise ValueError('ema_decay: must be in (0, 1), got %r' % (self.ema_decay,))


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
  # Quantization-aware training (README "Quantization-aware training"); delay null = float training.
  quantization: QuantizationConfig = dataclasses.field(default_factory=QuantizationConfig)

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
  """Where training runs (see README "Training on several GPUs and machines", `pipelines.training.distribution`)."""
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
  # graph.pbtxt and a .meta beside each checkpoint, as TensorFlow writes them (RunConfig's
  # checkpoint_save_graph_def); false skips them (~8 s per training start for a detection graph on TF 1.15).
  # TensorBoard's graph (in the events file) is written either way.
  save_graph_def: bool = True
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

  @classmethod
  def member_names(cls):
    """The tasks a multitask config can combine: this section's member fields, in order."""
    return [f.name for f in dataclasses.fields(cls) if f.name != 'output_stride']

  def members(self):
    """Names of the combined tasks, in `member_names` order."""
    return [name for name in self.member_names() if getattr(self, name) is not None]

  def validate(self):
    if self.output_stride not in (None, 16, 32):
      raise ValueError('output_stride: must be null, 16 or 32, got %r' % (self.output_stride,))

  def backbone_stride(self):
    return self.output_stride or 32, 'multitask.output_stride'

  def validate_with(self, config):
    if len(self.members()) < 2:
      raise ValueError('<root>: combines at least two of %s, each a section of its own (got %s)'
                       % (', '.join(self.member_names()), ', '.join(self.members()) or 'none'))

  def member_config(self, config, name):
    """The single-task config of member `name`: its data, batch sizes and head warm start, with the shared
    model / train / eval / runtime sections and the task's own section."""
    member = getattr(self, name)
    train = dataclasses.replace(config.train, batch_size=member.batch_size or config.train.batch_size,
                                warm_start=member.warm_start)
    evaluation = dataclasses.replace(config.eval, batch_size=member.eval_batch_size or config.eval.batch_size)
    return dataclasses.replace(config, task=name, data=member.data, train=train, eval=evaluation,
                               multitask=MultitaskConfig())

  @classmethod
  def unread_sections(cls, data):
    """Sections a multitask config (raw dict `data`) does not read -> why."""
    section = data.get('multitask') or {}
    members = [name for name in cls.member_names() if section.get(name) is not None]
    unread = {name: 'not read by this multitask config (its multitask section combines %s)'
              % (', '.join(members) or 'no task') for name in cls.member_names() if name not in members}
    unread['data'] = 'not read by task multitask (each member has its own multitask.<task>.data)'
    return unread

  @staticmethod
  def member_key(name, key):
    """A member config's key as it is written in the multitask config (data.x -> multitask.<name>.data.x)."""
    if key.startswith(('data.', 'train.warm_start')):
      return 'multitask.%s.%s' % (name, key.replace('train.', '', 1))
    return key


@dataclasses.dataclass(frozen=True)
class Config:
  """A whole config: the task's name, the shared sections, and the task sections.

  A config reads the shared sections and its own task's section (a multitask config: its members'
  sections); any other task section in the file is an error (`unread_sections`). The sections of tasks
  registered outside this package (`pipelines.tasks.registry`) live in `extensions`, read as attributes
  like the built-in ones (`config.<task>`); in YAML they are top-level sections too.
  """
  task: str = 'classification'
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
  runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
  classification: sections.ClassificationConfig = dataclasses.field(default_factory=sections.ClassificationConfig)
  detection: sections.DetectionConfig = dataclasses.field(default_factory=sections.DetectionConfig)
  segmentation: sections.SegmentationConfig = dataclasses.field(default_factory=sections.SegmentationConfig)
  multitask: MultitaskConfig = dataclasses.field(default_factory=MultitaskConfig)
  # Not a YAML key: section name -> section of the registered tasks that are not fields above.
  extensions: Dict[str, Any] = dataclasses.field(default_factory=dict)

  def __getattr__(self, name):  # only called when `name` is not a field: an extension task's section
    extensions = self.__dict__.get(config_lib.EXTENSIONS, {})
    if name in extensions:
      return extensions[name]
    section = registry.section_type(name) if not name.startswith('_') else None
    if section is not None:  # a section the file did not write: its defaults, as a field's would be
      return section()
    raise AttributeError('%r has no section %r' % (type(self).__name__, name))

  @classmethod
  def extension_types(cls):
    """name -> section dataclass of registered tasks whose section is not a field (`config_lib` reads it)."""
    fields = set(f.name for f in dataclasses.fields(cls))
    return collections.OrderedDict((name, registry.section_type(name)) for name in registry.names()
                                   if name not in fields and registry.section_type(name) is not None)

  def section(self):
    """The config's own task section (`config.classification` for a classification config, ...)."""
    return getattr(self, self.task)

  def backbone_stride(self):
    """(output stride of the task's backbone, the key that sets it), as its section says."""
    stride = getattr(self.section(), 'backbone_stride', None)
    return stride() if stride else (32, None)

  def member_configs(self):
    """[(member name, member config)] of a config that combines tasks (multitask), else [(None, self)]."""
    member_config = getattr(self.section(), 'member_config', None)
    if member_config is None:
      return [(None, self)]
    return [(name, member_config(self, name)) for name in self.section().members()]

  def epoch_data(self):
    """The data section whose epochs per-epoch schedules count (multitask: the first member's), and its key."""
    name, member = self.member_configs()[0]
    return member.data, 'data' if name is None else 'multitask.%s.data' % name

  def validate(self):
    config_lib.check_one_of('task', self.task, registry.names())
    for name in self.sections_read():
      check = getattr(getattr(self, name), 'validate_with', None)
      if check is not None:
        try:
          check(self)
        except ValueError as e:
          key, _, message = str(e).partition(': ')
          raise ValueError('%s: %s' % (name if key == '<root>' else '%s.%s' % (name, key), message))
    if self.train.quantization.delay is not None:
      # The rewrite folds slim's fused batch norm and fake-quantizes float32 tensors.
      if self.runtime.mixed_precision is not None:
        raise ValueError('train.quantization.delay: quantization-aware training runs in float32; set '
                         'runtime.mixed_precision to null (got %r)' % (self.runtime.mixed_precision,))
      if self.train.sync_batch_norm:
        raise ValueError('train.quantization.delay: quantization-aware training folds the fused batch norm, not '
                         'train.sync_batch_norm\'s; set one of them off')
    data, key = self.epoch_data()
    if self.train.learning_rate.schedule == 'exponential' and data.num_train_examples <= 0:
      raise ValueError('%s.num_train_examples: must be > 0 for the per-epoch exponential schedule' % key)

  def sections_read(self):
    """Names of the task sections this config reads: its own, and its members' (multitask)."""
    return [self.task] + [name for name, _ in self.member_configs() if name is not None]


def unread_sections(data):
  """Task sections that the config's task does not read -> why (a config holding one is an error)."""
  task = data.get('task', Config.task)
  section = registry.section_type(task)
  own = getattr(section, 'unread_sections', None)
  if own is not None:
    return own(data)
  unread = {name: 'not read by task %r (only the %r section applies to it)' % (task, task)
            for name in registry.names() if name != task and not composes(name)}
  unread.update((name, 'not read by task %r (only %s configs have it)' % (task, name))
                for name in registry.names() if name != task and composes(name))
  return unread


def composes(name):
  """Whether task `name`'s section combines other tasks (its members)."""
  return hasattr(registry.section_type(name), 'member_config')


def load(path, overrides=()):
  """Loads and validates a task config (see `config_lib.load`); other tasks' sections are errors."""
  return config_lib.load(Config, path, overrides, unread_sections=unread_sections)


def to_dict(config):
  """The config as a nested dict without the sections its task does not read (what `save` writes)."""
  data = config_lib.to_dict(config)
  for name in unread_sections(data):
    data.pop(name, None)
  return data


FILE_NAME = 'config.yaml'  # the resolved config, saved in model dirs and beside every export


def save(config, path):
  """Writes the resolved config to `path` (YAML, atomically); it loads back to an equal config."""
  config_lib.save_dict(to_dict(config), path)


def task_section(config):
  """The config's own task section (`config.classification` for a classification config, ...)."""
  return config.section()


def member_config(config, name):
  """The single-task config of member `name` of a config that combines tasks (`MultitaskConfig`)."""
  return config.section().member_config(config, name)
