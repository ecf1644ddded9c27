"""The `Task` interface: everything a task does, asked of the task object by the generic code.

A task class owns, for one task: its config section (`section`), the backbone conventions of its public
model (`backbone_options`), the head on the backbone's endpoints (`endpoints`, `build_head`), losses,
eval metrics, the input function, the SavedModel's client signatures, the TFLite export (outputs,
post-processing op, metadata) and the decoding of TFLite outputs, the scorer of exported models,
the pictures and summary lines of its predictions, and its part of the demo (data, converter, metric
and target). The runner, the exporters, predict, render, the demo and the multi-task model call these
methods and never compare a task name (`pipelines.tasks.registry` maps names to classes).

The TensorFlow-free part of that list (serving size, the numpy twin of the serving preprocessing, decoding
of TFLite / ONNX outputs, pictures and summary lines) is declared in `pipelines.tasks.portable.PortableTask`,
which `Task` derives from: a task class inherits it from its portable class, so a TensorFlow-free install
predicts with the same code.

Abstract methods are what every task must write; the others have the behaviour most tasks want and are
overridden where a task differs. Class-level knowledge a config alone decides (backbone conventions,
batch-norm rule, prediction pictures, demo) is class methods, so code holding only a config or a
prediction dict can ask without building a task.

Not here: the estimator model_fn (`pipelines.training.skeleton`), the registry, the backbone builder
(`pipelines.tasks.model_builder`).
"""
import abc
import collections
import os

import tensorflow.compat.v1 as tf
import tf_slim as slim

from pipelines.tasks import labels as labels_lib
from pipelines.tasks import model_builder
from pipelines.tasks import portable
from pipelines.training import quantization

ModeKeys = tf.estimator.ModeKeys
# The demo's target for a task: the metrics.json key, the value to reach on the held-out split, its name.
DemoMetric = collections.namedtuple('DemoMetric', ['key', 'target', 'display'])


def _images(features):
  """Every `image` tensor of `features` (a member's too, in a multi-task batch)."""
  if not isinstance(features, dict):
    return []
  found = []
  for key, value in features.items():
    found += [value] if key == 'image' and isinstance(value, tf.Tensor) else _images(value)
  return found


class Task(portable.PortableTask):
  """One task on the MobileNetV2 backbone (see the module docstring).

  Args:
    config: `pipelines.config.Config` whose `task` is this task's name.
    backbone_config: the config the backbone is built from when it is not `config` (a member of a
      multi-task model: the shared backbone's config).
    model_dir: where evaluation writes its artefacts (detection: eval/detections.json), or None.
  """

  name = None  # the registry name; also the config's `task:` value and its section's name
  UINT8_INPUT_NAME = 'inputs'  # the SavedModel's uint8 image placeholder (clients feed `<name>:0`)
  LABELS_FIRST_ID = 0  # the label id of the first class name (`class_names`)
  DEMO = None  # DemoMetric of the demo, or None for a task the demo does not run

  def __init__(self, config, backbone_config=None, model_dir=None):
    self.config = config
    self.backbone_config = backbone_config or config
    self.model_dir = model_dir

  @property
  def section(self):
    """This task's config section (`config.<name>`)."""
    return getattr(self.config, self.name)

  # ------------------------------------------------------------------------------------------ model

  @classmethod
  @abc.abstractmethod
  def backbone_options(cls, config):
    """`model_builder.BackboneOptions` of this task's public model for `config` (scope, stride, rounding)."""

  @classmethod
  def freezes_batch_norm(cls, config):
    """Whether batch norm is frozen while training when `train.freeze_batch_norm` is null (automatic)."""
    del config
    return False

  @abc.abstractmethod
  def endpoints(self):
    """Backbone endpoint names the head reads (the backbone is built up to the deepest of them)."""

  @abc.abstractmethod
  def build_head(self, end_points, scope, is_training):
    """The head on `end_points` (dict of outputs); `scope` is the backbone's variable scope. Called inside
    `model_builder.arg_scope`."""

  def build_outputs(self, features, is_training):
    """Backbone + head on `features['image']` (float32 [B, H, W, 3] in [-1, 1]): dict of output tensors."""
    with slim.arg_scope(model_builder.arg_scope(self.config, is_training)):
      end_points, scope = model_builder.backbone(self.config, features['image'], self.endpoints())
      return self.build_head(end_points, scope, is_training)

  def model(self, features, is_training):
    """`build_outputs`, rewritten for quantization-aware training when `train.quantization.delay` is set
    (`pipelines.training.quantization`): what training, evaluation and every export build. Not overridden."""
    if not quantization.enabled(self.config):
      return self.build_outputs(features, is_training)
    graph = tf.get_default_graph()
    start = len(graph.get_operations())
    outputs = self.build_outputs(features, is_training)
    return quantization.rewrite(graph.get_operations()[start:], outputs, self.config.train.quantization, is_training,
                                inputs=_images(features))

  def build_shared_head(self, end_points, scope, images, is_training):
    """The head as a member of a multi-task model, on the shared backbone's `end_points` of `images`."""
    del images
    return self.build_head(end_points, scope, is_training)

  @abc.abstractmethod
  def build_losses(self, outputs, labels, features):
    """dict name -> float32 [] loss (the skeleton adds regularization)."""

  @abc.abstractmethod
  def build_metrics(self, outputs, labels, features):
    """dict name -> (value_op, update_op) eval metric ops."""

  @abc.abstractmethod
  def build_predictions(self, outputs, features):
    """dict name -> tensor with a leading batch dimension (what serving and `mnv2 predict` return)."""

  def export_outputs(self, predictions):
    return {tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY: tf.estimator.export.PredictOutput(predictions)}

  def summary_images(self, features):
    """float32 [B, H, W, 3] in [0, 1] for TensorBoard, or None."""
    image = features.get('image') if isinstance(features, dict) else None
    return None if image is None else tf.clip_by_value(image * 0.5 + 0.5, 0.0, 1.0)

  def warm_start_configs(self):
    """The `WarmStartConfig`s applied when training starts, in order."""
    return [self.config.train.warm_start]

  # ------------------------------------------------------------------------------------------ input

  @abc.abstractmethod
  def input_fn(self, mode):
    """input_fn of the Estimator for `mode`: the task's one input pipeline (`pipelines/inputs/`). It takes
    the optional arguments `params` and `input_context` (a cluster's worker reads its own part of the data:
    `pipelines.inputs.input_common.for_pipeline`)."""

  def eval_input_fns(self):
    """(name, input_fn) pairs evaluated with `Estimator.evaluate(name=...)`; one unnamed for a single task."""
    return [(None, self.input_fn(ModeKeys.EVAL))]

  @abc.abstractmethod
  def features_from_bytes(self, encoded):
    """Model features (dict of tensors) from string [B] encoded images: what serving and prediction feed."""

  def shared_prediction_features(self, images, heights, widths):
    """This member's `build_predictions` features in the one-pass model: float32 [B, S, S, 3] `images`
    resized without cropping from originals of int32 [B] `heights` x `widths`."""
    del heights, widths
    return {'image': images}

  def serving_input_receiver_fn(self):
    """Export input: `encoded_image` string [B] (JPEG/PNG bytes) -> `features_from_bytes`."""
    def fn():
      encoded = tf.placeholder(tf.string, [None], name='encoded_image')
      return tf.estimator.export.ServingInputReceiver(self.features_from_bytes(encoded), {'encoded_image': encoded})
    return fn

  def predict_input_fn(self, image_paths):
    """input_fn over image files for `Estimator.predict` from a checkpoint (one image per batch)."""
    def fn(params=None):  # pylint: disable=unused-argument
      data = tf.data.Dataset.from_tensor_slices(list(image_paths)).map(tf.io.read_file).batch(1)
      return data.map(self.features_from_bytes)
    return fn

  # ------------------------------------------------------------------------------------------ classes

  def class_names(self):
    """Names of the classes from `data.labels_file` (missing ones are their id), from `LABELS_FIRST_ID`."""
    return labels_lib.class_names(self.config.data.labels_file, self.section.num_classes,
                                  first=self.LABELS_FIRST_ID)

  def legend_names(self):
    """What the demo's pictures use to name mask classes (`render.describe`'s class_names), or None."""
    return None

  # ------------------------------------------------------------------------------------------ export

  def client_signatures(self, uint8, images, outputs, features, predictions):
    """SavedModel signatures besides `serving_default`: dict name -> (inputs, outputs), dicts of tensors.

    Args:
      uint8: uint8 [B, H, W, 3] image placeholder (`UINT8_INPUT_NAME`), PNG-encoded into the serving path.
      images: float32 [B, S, S, 3] in [-1, 1], the model's input (a placeholder with a default).
      outputs: the model's outputs (`build_outputs`), imported from the frozen graph.
      features: the serving features (`features_from_bytes`) with `image` = `images`, and the string [B]
        inputs `encoded_image` (image file bytes) and `tf_example` (serialized tf.Example with
        `image/encoded`) that feed the same path (`pipelines.export.saved_model_export`).
      predictions: `build_predictions(outputs, features)`.
    """
    del images, outputs, features
    return {'image_tensor': ({'inputs': uint8}, predictions)}

  # `mnv2 export --input-type` values a SavedModel of this task takes: the client signature each makes
  # `serving_default` (the first is the default); empty: `serving_default` is this project's encoded-image one.
  SERVING_INPUT_TYPES = ()

  def serving_signature(self, input_type=None):
    """The signature `serving_default` aliases: a `client_signatures` name, or None for the encoded-image one
    (`pipelines.export.saved_model_export.ENCODED_SIGNATURE`). ValueError naming --input-type otherwise."""
    if input_type is None:
      return self.SERVING_INPUT_TYPES[0] if self.SERVING_INPUT_TYPES else None
    if input_type not in self.SERVING_INPUT_TYPES:
      raise ValueError('--input-type %s: a %s SavedModel takes %s' % (
          input_type, self.name, ', '.join(self.SERVING_INPUT_TYPES) or 'no --input-type (its serving_default '
                                                                          'takes encoded images)'))
    return input_type

  def frozen_graph(self, signatures, images, predictions):
    """`frozen_inference_graph.pb`'s tensors, named as the anchor's published frozen graph, or None for none.

    Returns dict(inputs={name: tensor}, outputs={name: tensor}): a client feeds `<input name>:0` and fetches
    `<output name>:0` (`pipelines.export.saved_model_export` renames or aliases the tensors to those names).
    `signatures` is `client_signatures`' result; `images` and `predictions` as there.
    """
    del signatures, images, predictions
    return None

  @abc.abstractmethod
  def tflite_outputs(self, outputs):
    """The tensors a TFLite model of this task returns (dict key -> tensor), from `build_outputs`."""

  def onnx_outputs(self, outputs):
    """The tensors an ONNX model of this task returns, post-processing included (`tflite_outputs` where TFLite
    appends nothing); `decode_tflite` reads them as it reads the TFLite model's."""
    return self.tflite_outputs(outputs)

  def tflite_postprocess(self, frozen):
    """The frozen TFLite graph with what only TFLite runs appended (an op, e.g. detection's NMS)."""
    return frozen

  def tflite_unsupported(self, quantize):
    """Why a TFLite export with `quantize` cannot be made on this TensorFlow, or None when it can."""
    del quantize
    return None

  def export_metadata(self):
    """model.json entries of this task: class names, the id of the first, and what decoding needs."""
    return {'class_names': self.class_names(), 'class_names_first_id': self.LABELS_FIRST_ID}

  def write_labels(self, output_dir, prefix=''):
    """Copies data.labels_file into `output_dir` (or writes labels.txt from the class names); its name."""
    source = self.config.data.labels_file
    if source and tf.io.gfile.exists(source):
      name = prefix + os.path.basename(source)
      tf.io.gfile.copy(source, os.path.join(output_dir, name), overwrite=True)
      return name
    from datasets import tfrecord  # pylint: disable=g-import-not-at-top
    name = prefix + 'labels.txt'
    tfrecord.write_label_file(dict(enumerate(self.class_names(), self.LABELS_FIRST_ID)),
                              os.path.join(output_dir, name))
    return name

  # ------------------------------------------------------------------------------------------ evaluation

  @abc.abstractmethod
  def exported_scorer(self):
    """The scorer of an exported model on the eval split (`pipelines.evaluation.exported_eval`)."""

  # ------------------------------------------------------------------------------------------ demo

  @classmethod
  def demo_members(cls):
    """The tasks the demo trains first and this task combines, or None for a single task."""
    return None

  @classmethod
  def demo_convert(cls, raw, records_dir):
    """Converts the demo's raw data (`datasets.shapes.generate`) with the task's converter into
    `records_dir` (train-* and val-* shards); returns the labels file written there."""
    raise NotImplementedError('task %r has no demo data' % cls.name)

  @classmethod
  def demo_labels_file(cls, records_dir):
    """The labels file `demo_convert` writes in `records_dir`."""
    return os.path.join(records_dir, 'labels.txt')

  @classmethod
  def demo_images(cls, raw, count):
    """`count` held-out image files of the demo data to predict on."""
    raise NotImplementedError('task %r has no demo data' % cls.name)

  # The demo's raw format of this task ('imagenet', 'coco', 'voc'; `datasets.shapes.generate`).
  DEMO_FORMAT = None
  # The demo task whose trained model this task's backbone warm-starts from (the paper's recipe), or None.
  DEMO_BACKBONE_FROM = None
