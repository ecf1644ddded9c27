"""Multi-task model: one MobileNetV2 backbone shared by the classification, SSDLite and DeepLab heads.

`task: multitask` names two or three members in its `multitask` section, each with its own records, batch
size, loss weight and head warm start; the head settings stay in the task's own section. Every member is
its single-task `Task` (`pipelines/<task>.py`) built on a member config (`config.member_config`), so its
input pipeline, head, losses, metrics and predictions are exactly the single-task ones; this module only
shares the backbone:

- Variables: the backbone once under `MobilenetV2/` (built with the classifier's TF-Slim conventions, see
  `pipelines.model_builder`), the classifier under `MobilenetV2/Logits/`, SSDLite's extra layers under
  `FeatureExtractor/MobilenetV2/layer_19_*` and `BoxPredictor_*`, DeepLab's `aspp0`, `image_pooling`, ...
  at the top -- each head under its single-task model's scopes, so single-task checkpoints warm-start the
  heads (`multitask.<task>.warm_start`) and a classification checkpoint the backbone (`train.warm_start`).
- Training: each step draws one batch per member through that member's own input pipeline, runs the
  shared backbone on each batch (variables shared) and only that member's head on it, and minimizes the sum
  of the members' losses times their `loss_weight` (each logged as `<task>/<loss>`).
- Evaluation: each member on its own eval split (`eval_input_fns`), metrics `<task>/<name>` in one
  `metrics.json`.
- Inference (serving, predict): ONE backbone pass feeds every head. The image is resized to the serving
  size (detection.image_size when detection is a member, else classification.image_size, else
  segmentation.crop_size) without cropping; predictions are the members' own, keys `<task>/<key>`.

Not here: the heads and their maths (the task modules), the input pipelines (`pipelines/<task>_input.py`).
"""
import collections

import tensorflow.compat.v1 as tf
import tf_slim as slim

from datasets import classification_preprocessing
from datasets import decoders
from pipelines.tasks import classification
from pipelines import config as config_schema
from pipelines.tasks import detection
from pipelines.inputs import detection_input
from pipelines.tasks import model_builder
from pipelines.tasks import segmentation
from pipelines.training import skeleton

ModeKeys = tf.estimator.ModeKeys
# SSDLite's extra layers keep the public model's scope when the backbone is shared.
DETECTION_HEAD_SCOPE = 'FeatureExtractor/' + model_builder.MULTITASK_SCOPE
SEPARATOR = '/'


def prefixed(name, values):
  """{'<name>/<key>': value} for a member's dict of losses, metrics or predictions."""
  return dict(('%s%s%s' % (name, SEPARATOR, key), value) for key, value in values.items())


def split_prefixed(values):
  """Inverse of `prefixed` over several members: {member: {key: value}}."""
  parts = collections.OrderedDict()
  for key, value in sorted(values.items()):
    name, sep, rest = key.partition(SEPARATOR)
    if sep:
      parts.setdefault(name, {})[rest] = value
  return parts


def serving_size(config):
  """Input side of the one-pass model (see the module docstring)."""
  members = config.multitask.members()
  if 'detection' in members:
    return config.detection.image_size
  if 'classification' in members:
    return config.classification.image_size
  return config.segmentation.crop_size


def _member_task(config, name):
  member = config_schema.member_config(config, name)
  if name == 'classification':
    return classification.ClassificationTask(member)
  if name == 'detection':
    return detection.DetectionTask(member, backbone_config=config)  # anchors follow the shared backbone
  return segmentation.SegmentationTask(member)


class MultitaskTask(skeleton.Task):
  """The members' single-task graph methods on one shared backbone."""

  def __init__(self, config):
    super(MultitaskTask, self).__init__(config)
    self.members = collections.OrderedDict((name, _member_task(config, name)) for name in config.multitask.members())
    self._model_dir = None

  @property
  def model_dir(self):
    return self._model_dir

  @model_dir.setter
  def model_dir(self, value):
    # Members write their own evaluation artefacts (detection: eval/detections.json) there too.
    self._model_dir = value
    for task in self.members.values():
      task.model_dir = value

  def endpoints(self):
    return sorted(set(name for task in self.members.values() for name in task.endpoints()))

  def _head(self, name, end_points, scope, images, is_training):
    task = self.members[name]
    if name == 'detection':
      return task.build_head(end_points, DETECTION_HEAD_SCOPE, is_training)
    if name == 'segmentation':
      logits = task.build_head(end_points, scope, is_training)[segmentation.LOGITS]
      return task.outputs_at(logits, images.get_shape().as_list()[1:3])
    return task.build_head(end_points, scope, is_training)

  def build_outputs(self, features, is_training):
    """{member: member outputs}. `features` is {member: member features} (one backbone pass per member's
    batch) or, for inference, one image batch {'image': ...} (one backbone pass for every head)."""
    cfg, outputs = self.config, {}
    with slim.arg_scope(model_builder.arg_scope(cfg, is_training)):
      if 'image' in features:
        end_points, scope = model_builder.backbone(cfg, features['image'], self.endpoints())
        for name in self.members:
          outputs[name] = self._head(name, end_points, scope, features['image'], is_training)
        return outputs
      for index, name in enumerate(name for name in self.members if name in features):
        images = features[name]['image']
        end_points, scope = model_builder.backbone(cfg, images, self.endpoints(), reuse=True if index else None)
        outputs[name] = self._head(name, end_points, scope, images, is_training)
    return outputs

  def build_losses(self, outputs, labels, features):
    losses = {}
    for name, out in outputs.items():
      weight = getattr(self.config.multitask, name).loss_weight
      member = self.members[name].build_losses(out, labels[name], features[name])
      losses.update(prefixed(name, dict((k, weight * v) for k, v in member.items())))
    return losses

  def build_metrics(self, outputs, labels, features):
    metrics = {}
    for name, out in outputs.items():
      metrics.update(prefixed(name, self.members[name].build_metrics(out, labels[name], features[name])))
    return metrics

  def build_predictions(self, outputs, features):
    """Every member's predictions from the one-pass outputs, keys `<task>/<key>`."""
    size = features['image'].get_shape().as_list()[1]
    height, width = features[detection_input.ORIGINAL_HEIGHT], features[detection_input.ORIGINAL_WIDTH]
    member_features = {
        'classification': {'image': features['image']},
        'detection': {'image': features['image'], detection_input.ORIGINAL_HEIGHT: height,
                      detection_input.ORIGINAL_WIDTH: width},
        # The whole resized square is the image: crop nothing, resize the class map to the original size.
        'segmentation': {'height': height, 'width': width, 'valid_height': tf.fill(tf.shape(height), size),
                         'valid_width': tf.fill(tf.shape(width), size)},
    }
    predictions = {}
    for name, out in outputs.items():
      predictions.update(prefixed(name, self.members[name].build_predictions(out, member_features[name])))
    return predictions

  def warm_start_configs(self):
    """The backbone's warm start (train.warm_start), then each member's head warm start."""
    return [self.config.train.warm_start] + [task.config.train.warm_start for task in self.members.values()]

  # ------------------------------------------------------------------------------------------- input

  def _member_input(self, name, mode):
    """The member's own input pipeline, its elements keyed by the member's name."""
    dataset = self.members[name].input_fn(mode)()
    return dataset.map(lambda features, labels: ({name: features}, {name: labels}))

  def input_fn(self, mode):
    """TRAIN: one batch of every member per step (their pipelines zipped). Other modes: see eval_input_fns."""
    if mode != ModeKeys.TRAIN:
      raise ValueError('a multitask model evaluates each member on its own split: use eval_input_fns()')

    def fn(params=None):  # pylint: disable=unused-argument
      datasets = tuple(self._member_input(name, mode) for name in self.members)

      def merge(*elements):
        features, labels = {}, {}
        for member_features, member_labels in elements:
          features.update(member_features)
          labels.update(member_labels)
        return features, labels
      return tf.data.Dataset.zip(datasets).map(merge)
    return fn

  def eval_input_fns(self):
    """(name, input_fn) per member: each is evaluated on its own split (`runner.evaluate`)."""
    return [(name, lambda params=None, name=name: self._member_input(name, ModeKeys.EVAL)) for name in self.members]

  def features_from_bytes(self, encoded):
    """One-pass serving features of string [B] encoded images: the image resized (no crop) to the serving
    size, in [-1, 1], and the original sizes (int32 [B]) that boxes and masks are mapped back to."""
    size = serving_size(self.config)

    def one(data):
      image = decoders.decode_rgb(data)
      shape = tf.shape(image)
      resized = classification_preprocessing.preprocess_for_eval(image, size, central_fraction=1.0)
      return resized, shape[0], shape[1]

    images, heights, widths = tf.map_fn(one, encoded, dtype=(tf.float32, tf.int32, tf.int32), back_prop=False)
    images.set_shape([None, size, size, 3])
    return {'image': images, detection_input.ORIGINAL_HEIGHT: heights, detection_input.ORIGINAL_WIDTH: widths}
