"""ImageNet-style classification task: MobileNetV2 + classification head on tf.estimator.

The model: `pipelines.model_builder` (backbone) + `heads.classification` (logits); the input:
`pipelines.classification_input`. Inputs are TF-Slim ImageNet TFRecords (`datasets.imagenet`); labels are
1..K with 0 = background, so an ImageNet model has `classification.num_classes` = 1001 outputs.
Losses: softmax cross-entropy with optional label smoothing. Metrics: top-1, top-5. Export: `serving_default` takes encoded image bytes; `float_images:serving_default` takes a
float32 image batch already preprocessed to [-1, 1].
"""
import tensorflow.compat.v1 as tf
import tf_slim as slim

from heads import classification as head_lib
from pipelines.inputs import classification_input
from pipelines.tasks import labels
from pipelines.tasks import model_builder
from pipelines.training import skeleton


def serving_receiver(image_size, preprocess_bytes):
  """Receiver with two signatures: encoded bytes (default) and an already preprocessed float batch."""
  encoded = tf.placeholder(tf.string, [None], name='encoded_image')
  images = tf.placeholder_with_default(preprocess_bytes(encoded), [None, image_size, image_size, 3], name='images')
  return tf.estimator.export.ServingInputReceiver(
      features={'image': images}, receiver_tensors={'encoded_image': encoded},
      receiver_tensors_alternatives={'float_images': {'images': images}})


class ClassificationTask(skeleton.Task):
  """Four graph methods + input/serving functions for classification."""

  def endpoints(self):
    """Backbone endpoints the head reads."""
    return [head_lib.DEFAULT_ENDPOINT]

  def build_outputs(self, features, is_training):
    cfg = self.config
    with slim.arg_scope(model_builder.arg_scope(cfg, is_training)):
      end_points, scope = model_builder.backbone(cfg, features['image'], self.endpoints())
      return self.build_head(end_points, scope, is_training)

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
    names = tf.constant(labels.class_names(self.config.data.labels_file, cls.num_classes))
    return {
        'classes': top_classes[:, 0],
        'class_names': tf.gather(names, top_classes[:, 0]),
        'probabilities': probabilities,
        'top_k_classes': top_classes,
        'top_k_class_names': tf.gather(names, top_classes),
        'top_k_probabilities': top_probs,
    }

  def input_fn(self, mode):
    return lambda params=None: classification_input.dataset(self.config, mode)

  def features_from_bytes(self, encoded):
    return classification_input.features_from_bytes(self.config, encoded)

  def serving_input_receiver_fn(self):
    """Adds a `float_images` signature (preprocessed float32 batch) to the encoded-bytes default."""
    size = self.config.classification.image_size
    return lambda: serving_receiver(size, lambda encoded: self.features_from_bytes(encoded)['image'])
