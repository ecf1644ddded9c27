"""ImageNet-style classification task: MobileNetV2 + classification head on tf.estimator.

Inputs are TF-Slim ImageNet TFRecords (`datasets.imagenet`); labels are 1..K with 0 = background, so an
ImageNet model has 1001 outputs. Losses: softmax cross-entropy with optional label smoothing. Metrics:
top-1, top-5. Export: `serving_default` takes encoded image bytes; `float_images:serving_default` takes a
float32 image batch already preprocessed to [-1, 1].
"""
import tensorflow.compat.v1 as tf
import tf_slim as slim

from datasets import imagenet
from datasets import tfrecord
from heads import classification as head_lib
from nets import mobilenet_v2
from pipelines import skeleton

BACKBONE_SCOPE = 'MobilenetV2'


def class_names(labels_file, num_classes):
  """List of `num_classes` names from a TF-Slim labels.txt; missing entries become their index."""
  names = tfrecord.read_label_file(labels_file) if labels_file else {}
  return [names.get(i, str(i)) for i in range(num_classes)]


def backbone_scope(config, is_training):
  """The training arg_scope of the paper, with batch norm frozen when `train.freeze_batch_norm`."""
  model = config.model
  bn_training = is_training and not config.train.freeze_batch_norm  # None (auto) trains batch norm here
  return mobilenet_v2.training_scope(is_training=bn_training, weight_decay=model.weight_decay,
                                     stddev=model.init_stddev, dropout_keep_prob=model.dropout_keep_prob,
                                     bn_decay=model.bn_decay)


def decode_and_preprocess_bytes(encoded, image_size):
  """float32 [B, S, S, 3] in [-1, 1] from string [B] encoded images (eval preprocessing)."""
  def one(data):
    image = tf.image.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return imagenet.preprocess_for_eval(image, image_size)
  return tf.map_fn(one, encoded, dtype=tf.float32, back_prop=False)


def serving_receiver(image_size, preprocess_bytes):
  """Receiver with two signatures: encoded bytes (default) and an already preprocessed float batch."""
  encoded = tf.placeholder(tf.string, [None], name='encoded_image')
  images = tf.placeholder_with_default(preprocess_bytes(encoded), [None, image_size, image_size, 3], name='images')
  return tf.estimator.export.ServingInputReceiver(
      features={'image': images}, receiver_tensors={'encoded_image': encoded},
      receiver_tensors_alternatives={'float_images': {'images': images}})


class ClassificationTask(skeleton.Task):
  """Four graph methods + input/serving functions for classification."""

  def build_outputs(self, features, is_training):
    model = self.config.model
    with slim.arg_scope(backbone_scope(self.config, is_training)):
      with tf.variable_scope(BACKBONE_SCOPE) as scope:
        _, end_points = mobilenet_v2.mobilenet_base(
            features['image'], depth_multiplier=model.depth_multiplier, scope=scope,
            finegrain_classification_mode=model.finegrain_classification_mode,
            output_stride=model.output_stride, use_explicit_padding=model.use_explicit_padding,
            divisible_by=model.divisible_by)
        return head_lib.head(end_points, model.num_classes, is_training)

  def build_losses(self, outputs, labels, features):
    onehot = tf.one_hot(labels, self.config.model.num_classes)
    loss = tf.losses.softmax_cross_entropy(onehot, outputs[head_lib.LOGITS],
                                           label_smoothing=self.config.train.label_smoothing, loss_collection=None)
    return {'classification': loss}

  def build_metrics(self, outputs, labels, features):
    logits = outputs[head_lib.LOGITS]
    labels = tf.cast(labels, tf.int32)
    top_k = min(5, self.config.model.num_classes)
    return {
        'top1_accuracy': tf.metrics.accuracy(labels, tf.argmax(logits, 1, output_type=tf.int32)),
        'top5_accuracy': tf.metrics.mean(tf.cast(tf.nn.in_top_k(logits, labels, top_k), tf.float32)),
    }

  def build_predictions(self, outputs, features):
    probabilities = outputs[head_lib.PREDICTIONS]
    k = min(self.config.classification.top_k, self.config.model.num_classes)
    top_probs, top_classes = tf.nn.top_k(probabilities, k)
    names = tf.constant(class_names(self.config.data.labels_file, self.config.model.num_classes))
    return {
        'classes': top_classes[:, 0],
        'class_names': tf.gather(names, top_classes[:, 0]),
        'probabilities': probabilities,
        'top_k_classes': top_classes,
        'top_k_class_names': tf.gather(names, top_classes),
        'top_k_probabilities': top_probs,
    }

  def input_fn(self, mode):
    cfg = self.config
    pattern, batch, is_training = self.split(mode)

    def fn(params=None):  # pylint: disable=unused-argument
      return imagenet.dataset(pattern, is_training, batch, cfg.model.image_size,
                              shuffle_buffer=cfg.data.shuffle_buffer, num_parallel_reads=cfg.data.num_parallel_reads,
                              num_parallel_calls=cfg.data.num_parallel_calls or None, prefetch=cfg.data.prefetch,
                              seed=cfg.runtime.seed, area_range=(cfg.classification.min_crop_area, 1.0))
    return fn

  def features_from_bytes(self, encoded):
    return {'image': decode_and_preprocess_bytes(encoded, self.config.model.image_size)}

  def serving_input_receiver_fn(self):
    """Adds a `float_images` signature (preprocessed float32 batch) to the encoded-bytes default."""
    size = self.config.model.image_size
    return lambda: serving_receiver(size, lambda encoded: self.features_from_bytes(encoded)['image'])
