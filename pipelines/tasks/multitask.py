"""Multi-task model: one MobileNetV2 backbone shared by the classification, SSDLite and DeepLab heads.

`task: multitask` names two or three members in its `multitask` section, each with its own records, batch
size, loss weight and head warm start; the head settings stay in the task's own section. Every member is
its single-task `Task` (`pipelines/tasks/<task>.py`, from the registry) built on a member config
(`MultitaskConfig.member_config`), so its
input pipeline, head, losses, metrics and predictions are exactly the single-task ones; this module only
shares the backbone:

- Variables: the backbone once under `MobilenetV2/` (built with the classifier's TF-Slim conventions, see
  `pipelines.tasks.model_builder`), the classifier under `MobilenetV2/Logits/`, SSDLite's extra layers under
  `FeatureExtractor/MobilenetV2/layer_19_*` and `BoxPredictor_*`, DeepLab's `aspp0`, `image_pooling`, ...
  at the top -- each head under its single-task model's scopes, so single-task checkpoints warm-start the
  heads (`multitask.<task>.warm_start`) and a classification checkpoint the backbone (`train.warm_start`).
- Training: each step draws one batch per member through that member's own input pipeline, runs the
  shared backbone on each batch (variables shared) and only that member's head on it, and minimizes the sum
  of the members' losses times their `loss_weight` (each logged as `<task>/<loss>`).
- Evaluation: each member on its own eval split (`eval_input_fns`), metrics `<task>/<name>` in one
  `metrics.json`.
- Inference (serving, predict): ONE backbone pass feeds every head. The image is resized to the serving
  size (the member whose `shared_input_size` ranks first: detection.image_size when detection is a member,
  else classification.image_size, else segmentation.crop_size) without cropping; predictions are the
  members' own (`shared_prediction_features`), keys `<task>/<key>`.
- Export, TFLite, scoring and pictures: each member's own, keys and files prefixed with its name.

Not here: the heads and their maths (the task modules), the input pipelines (`pipelines/inputs/`). No member
is named here: the members are whatever the `multitask` section combines.
"""

import collections

import tensorflow.compat.v1 as tf
import tf_slim as slim

from datasets import classification_preprocessing
from datasets import decoders
from nets import mobilenet_v2
from pipelines import config as config_schema
from pipelines.inputs import detection_input
from pipelines.tasks import base
from pipelines.tasks import model_builder
from pipelines.tasks import portable
from pipelines.tasks import registry

ModeKeys = tf.estimator.ModeKeys
SEPARATOR = portable.SEPARATOR
ORIGINAL_HEIGHT = detection_input.ORIGINAL_HEIGHT
ORIGINAL_WIDTH = detection_input.ORIGINAL_WIDTH


prefixed = portable.prefixed
split_prefixed = portable.split_prefixed


def member_tasks(config, model_dir=None):
  """{member name: its task object on the member config}, the shared backbone's config as their backbone."""
  return collections.OrderedDict(
      (name, registry.make_task(member, backbone_config=config, model_dir=model_dir))
      for name, member in config.member_configs())


class MultitaskTask(base.Task, portable.Multitask):
  """The members' single-task methods on one shared backbone."""

  name = 'multitask'
  DEMO_BACKBONE_FROM = 'classification'

  def __init__(self, config, backbone_config=None, model_dir=None):
    super(MultitaskTask, self).__init__(config, backbone_config, model_dir)
    # Members write their own evaluation artefacts (detection: eval/detections.json) in model_dir too.
    self.members = member_tasks(config, model_dir)

  @classmethod
  def backbone_options(cls, config):
    """One backbone for every head: the classifier's (TF-Slim's) conventions, so the public classification
    checkpoint restores it as it is; `multitask.output_stride`."""
    return model_builder.tf_slim_options(config, mobilenet_v2.DEFAULT_SCOPE, config.multitask.output_stride)

  def endpoints(self):
    return sorted(set(name for task in self.members.values() for name in task.endpoints()))

  def build_head(self, end_points, scope, is_training):
    raise NotImplementedError('a multitask model builds its members\' heads (build_outputs)')

  def build_outputs(self, features, is_training):
    """{member: member outputs}. `features` is {member: member features} (one backbone pass per member's
    batch) or, for inference, one image batch {'image': ...} (one backbone pass for every head)."""
    cfg, outputs = self.config, {}
    with slim.arg_scope(model_builder.arg_scope(cfg, is_training)):
      if 'image' in features:
        end_points, scope = model_builder.backbone(cfg, features['image'], self.endpoints())
        for name, task in self.members.items():
          outputs[name] = task.build_shared_head(end_points, scope, features['image'], is_training)
        return outputs
      for index, name in enumerate(name for name in self.members if name in features):
        images = features[name]['image']
        end_points, scope = model_builder.backbone(cfg, images, self.endpoints(), reuse=True if index else None)
        outputs[name] = self.members[name].build_shared_head(end_points, scope, images, is_training)
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
    images, heights, widths = features['image'], features[ORIGINAL_HEIGHT], features[ORIGINAL_WIDTH]
    predictions = {}
    for name, out in outputs.items():
      task = self.members[name]
      predictions.update(prefixed(name, task.build_predictions(out, task.shared_prediction_features(
          images, heights, widths))))
    return predictions

  def warm_start_configs(self):
    """The backbone's warm start (train.warm_start), then each member's head warm start."""
    return [self.config.train.warm_start] + [task.config.train.warm_start for task in self.members.values()]

  # ------------------------------------------------------------------------------------------- input

  def _member_input(self, name, mode, input_context=None):
    """The member's own input pipeline (its part of the data in a cluster), its elements keyed by its name."""
    dataset = self.members[name].input_fn(mode)(input_context=input_context)
    return dataset.map(lambda features, labels: ({name: features}, {name: labels}))

  def input_fn(self, mode):
    """TRAIN: one batch of every member per step (their pipelines zipped). Other modes: see eval_input_fns."""
    if mode != ModeKeys.TRAIN:
      raise ValueError('a multitask model evaluates each member on its own split: use eval_input_fns()')

    def fn(params=None, input_context=None):  # pylint: disable=unused-argument
      datasets = tuple(self._member_input(name, mode, input_context) for name in self.members)

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
    size = self.serving_size()

    def one(data):
      image = decoders.decode_rgb(data)
      shape = tf.shape(image)
      resized = classification_preprocessing.preprocess_for_eval(image, size, central_fraction=1.0)
      return resized, shape[0], shape[1]

    images, heights, widths = tf.map_fn(one, encoded, dtype=(tf.float32, tf.int32, tf.int32), back_prop=False)
    images.set_shape([None, size, size, 3])
    return {'image': images, ORIGINAL_HEIGHT: heights, ORIGINAL_WIDTH: widths}

  def legend_names(self):
    """{member: its legend names} of the members that have them."""
    names = dict((name, task.legend_names()) for name, task in self.members.items())
    return dict((name, value) for name, value in names.items() if value is not None) or None

  # ------------------------------------------------------------------------------------------- export

  def tflite_outputs(self, outputs):
    result = {}
    for name, task in self.members.items():
      result.update(prefixed(name, task.tflite_outputs(outputs[name])))
    return result

  def onnx_outputs(self, outputs):
    result = {}
    for name, task in self.members.items():
      result.update(prefixed(name, task.onnx_outputs(outputs[name])))
    return result

  def tflite_postprocess(self, frozen):
    """Each member's post-processing on its own outputs (`<member>/<key>`), the others kept as they are."""
    for name, task in self.members.items():
      prefix = name + SEPARATOR
      own = frozen._replace(outputs=type(frozen.outputs)(
          (k[len(prefix):], v) for k, v in frozen.outputs.items() if k.startswith(prefix)))
      post = task.tflite_postprocess(own)
      if post is own:  # nothing appended for this member
        continue
      outputs = type(frozen.outputs)((k, v) for k, v in frozen.outputs.items() if not k.startswith(prefix))
      outputs.update(prefixed(name, post.outputs))
      frozen = post._replace(outputs=outputs)
    return frozen

  def tflite_unsupported(self, quantize):
    reasons = [task.tflite_unsupported(quantize) for task in self.members.values()]
    return next((reason for reason in reasons if reason), None)

  def export_metadata(self):
    return {'members': dict((name, task.export_metadata()) for name, task in self.members.items())}

  def write_labels(self, output_dir, prefix=''):
    return dict((name, task.write_labels(output_dir, prefix + name + '_')) for name, task in self.members.items())

  def exported_scorer(self):
    raise NotImplementedError('a multitask model is scored member by member (exported_eval.evaluate)')

  # ------------------------------------------------------------------------------------------- demo

  @classmethod
  def demo_members(cls):
    return config_schema.MultitaskConfig.member_names()

  @classmethod
  def demo_images(cls, raw, count):
    """Scenes with several shapes: every head has something to show."""
    return registry.task_class('detection').demo_images(raw, count)
