"""ImageNet-style classification task: MobileNetV2 + classification head on tf.estimator.

The model: `pipelines.tasks.model_builder` (backbone) + `heads.classification` (logits); the input:
`pipelines.inputs.classification_input`. Inputs are TF-Slim ImageNet TFRecords (`datasets.imagenet`); labels are
1..K with 0 = background, so an ImageNet model has `classification.num_classes` = 1001 outputs.
Losses: softmax cross-entropy with optional label smoothing. Metrics: top-1, top-5. Export: `serving_default` takes encoded image bytes; `float_images:serving_default` takes a
float32 image batch already preprocessed to [-1, 1].
"""
import collections
import os

import tensorflow.compat.v1 as tf
import tf_slim as slim

from heads import classification as head_lib
from nets import mobilenet_v2
from pipelines.inputs import classification_input
from pipelines.tasks import base
from pipelines.tasks import model_builder
from pipelines.tasks import portable

PROBABILITIES = portable.PROBABILITIES  # the TFLite model's output


def serving_receiver(image_size, preprocess_bytes):
  """Receiver with two signatures: encoded bytes (default) and an already preprocessed float batch."""
  encoded = tf.placeholder(tf.string, [None], name='encoded_image')
  images = tf.placeholder_with_default(preprocess_bytes(encoded), [None, image_size, image_size, 3], name='images')
  return tf.estimator.export.ServingInputReceiver(
      features={'image': images}, receiver_tensors={'encoded_image': encoded},
      receiver_tensors_alternatives={'float_images': {'images': images}})


class ClassificationTask(base.Task, portable.Classification):
  """MobileNetV2 + the TF-Slim classifier, on TF-Slim ImageNet records."""

  name = 'classification'
  DEMO = base.DemoMetric('top1_accuracy', 0.90, 'top-1 accuracy')
  DEMO_FORMAT = 'imagenet'

  @classmethod
  def backbone_options(cls, config):
    """TF-Slim's classifier: scope `MobilenetV2`, `classification.output_stride`, channels rounded to 8."""
    cls_config = config.classification
    return model_builder.tf_slim_options(config, mobilenet_v2.DEFAULT_SCOPE, cls_config.output_stride,
                                         finegrain=cls_config.finegrain_classification_mode)

  def endpoints(self):
    """Backbone endpoints the head reads."""
    return [head_lib.DEFAULT_ENDPOINT]

  def build_head(self, end_points, scope, is_training):
    """The classifier on `end_points`; its variables live under the backbone's `scope`
    (`MobilenetV2/Logits/...`), as in TF-Slim. Call inside `model_builder.arg_scope`."""
    cls = self.config.classification
    with model_builder.in_scope(scope), slim.arg_scope([slim.dropout], keep_prob=cls.dropout_keep_prob):
      return head_lib.head(end_points, cls.num_classes, is_training)

  def build_losses(self, outputs, labels, features):
    onehot = tf.one_hot(labels, self.config.classification.num_classes)
    loss = tf.losses.softmax_cross_entropy(onehot, outputs[head_lib.LOGITS],
                                           label_smoothing=self.config.train.label_smoothing, loss_collection=None)
    return {'classification': loss}

  def build_metrics(self, outputs, labels, features):
    logits = outputs[head_lib.LOGITS]
    labels = tf.cast(labels, tf.int32)
    top_k = min(5, self.config.classification.num_classes)
    return {
        'top1_accuracy': tf.metrics.accuracy(labels, tf.argmax(logits, 1, output_type=tf.int32)),
        'top5_accuracy': tf.metrics.mean(tf.cast(tf.nn.in_top_k(logits, labels, top_k), tf.float32)),
    }

  def build_predictions(self, outputs, features):
    cls = self.config.classification
    probabilities = outputs[head_lib.PREDICTIONS]
    k = min(cls.top_k, cls.num_classes)
    top_probs, top_classes = tf.nn.top_k(probabilities, k)
    names = tf.constant(self.class_names())
    return {
        'classes': top_classes[:, 0],
        'class_names': tf.gather(names, top_classes[:, 0]),
        'probabilities': probabilities,
        'top_k_classes': top_classes,
        'top_k_class_names': tf.gather(names, top_classes),
        'top_k_probabilities': top_probs,
    }

  def frozen_graph(self, signatures, images, predictions):
    """TF-Slim's published frozen graphs: float `input:0` [B, S, S, 3] in [-1, 1] ->
    `MobilenetV2/Predictions/Reshape_1:0` (softmax probabilities)."""
    del signatures
    return dict(inputs={'input': images}, outputs={'MobilenetV2/Predictions/Reshape_1': predictions['probabilities']})

  def input_fn(self, mode):
    return lambda params=None, input_context=None: classification_input.dataset(self.config, mode,
                                                                                input_context=input_context)

  def features_from_bytes(self, encoded):
    return classification_input.features_from_bytes(self.config, encoded)

  def serving_input_receiver_fn(self):
    """Adds a `float_images` signature (preprocessed float32 batch) to the encoded-bytes default."""
    size = self.config.classification.image_size
    return lambda: serving_receiver(size, lambda encoded: self.features_from_bytes(encoded)['image'])

  # ------------------------------------------------------------------------------------------ export

  def client_signatures(self, uint8, images, outputs, features, predictions):
    """TF-Slim clients: `float_images:serving_default` (preprocessed floats) and `image_tensor` (uint8)."""
    return {'float_images:serving_default': ({'images': images}, predictions),
            'image_tensor': ({'inputs': uint8}, predictions)}

  def tflite_outputs(self, outputs):
    return {PROBABILITIES: outputs[head_lib.PREDICTIONS]}

  def export_metadata(self):
    return dict(super(ClassificationTask, self).export_metadata(), top_k=self.config.classification.top_k)

  def exported_scorer(self):
    from pipelines.evaluation import exported_eval  # pylint: disable=g-import-not-at-top
    return exported_eval.ClassificationScorer(self.config)

  # ------------------------------------------------------------------------------------------ demo

  @classmethod
  def demo_convert(cls, raw, records_dir):
    from datasets import imagenet  # pylint: disable=g-import-not-at-top
    paths = raw['imagenet']
    for split, source in (('train', paths['train_dir']), ('val', paths['val_dir'])):
      imagenet.convert(source, records_dir, split, labels_file=paths['labels_file'], num_shards=2)
    return cls.demo_labels_file(records_dir)

  @classmethod
  def demo_images(cls, raw, count):
    """One image of each class first, so the pictures show every class."""
    files = sorted(tf.io.gfile.glob(os.path.join(raw['imagenet']['val_dir'], '*', '*.JPEG')))
    by_class = collections.OrderedDict()
    for path in files:
      by_class.setdefault(os.path.basename(os.path.dirname(path)), []).append(path)
    return [p for group in zip(*by_class.values()) for p in group][:count]
