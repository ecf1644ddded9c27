"""DeepLabv3 semantic segmentation on PASCAL VOC: MobileNetV2 + ASPP head as a tf.estimator task.

Model: `pipelines.tasks.model_builder.backbone` (MobilenetV2 up to layer_18, atrous past
`segmentation.output_stride`, DeepLab's channel rounding) and `heads.deeplab.aspp_head` on its end_points
(image pooling + aspp0 [+ aspp<i> per `segmentation.aspp_rates`] -> concat_projection -> dropout [->
decoder] -> logits/semantic), variable names as the public DeepLab checkpoints. Input:
`pipelines.inputs.segmentation_input`. Batch norm follows DeepLab: the backbone uses the MobileNetV2 training
scope (decay `model.bn_decay`, epsilon 1e-3), the head decay 0.9997 / epsilon 1e-5;
`train.freeze_batch_norm` null freezes every batch norm while training when `train.batch_size` < 12
(DeepLab's advice, `model_builder.batch_norm_training`), dropout still follows the mode. Logits are
upsampled bilinearly (corners aligned) to the label / input size.

Loss: softmax cross-entropy over pixels whose label is a class in [0, num_classes) other than
`segmentation.ignore_label` (which also marks the eval padding; other values are rejected by the input
pipeline), optionally only the `segmentation.hard_pixel_top_k` fraction of the hardest of them, divided by
the number of pixels kept. Metrics: `pipelines.evaluation.segmentation_metrics` (one split-level confusion matrix).
Evaluation may average softmax probabilities over `segmentation.eval_scales` and left-right flips at the
label resolution, with the variables shared across scales.

Inference (SavedModel `serving_default` and `predict_input_fn`): an image is downscaled only if a side
exceeds `segmentation.eval_crop_size` (keeping its aspect ratio), padded bottom/right to that square like
the eval input, run through the same (multi-scale) model, then the probabilities are cropped back and
resized to the original size: prediction `mask` int32 [B, H, W] has the input image's resolution.
Images of one request must share a size (send one image per request for mixed sizes).

Not here: the network layers (`heads.deeplab`), record decoding and augmentation (`datasets.decoders`,
`datasets.segmentation_preprocessing`), the metric maths (`pipelines.evaluation.segmentation_metrics`).
"""
import os

import tensorflow.compat.v1 as tf
import tf_slim as slim

from heads import deeplab
from nets import mobilenet_v2
from pipelines.evaluation import segmentation_metrics
from pipelines.inputs import segmentation_input
from pipelines.tasks import base
from pipelines.tasks import labels
from pipelines.tasks import model_builder
from pipelines.tasks import portable

# DeepLab's batch-norm settings of its own layers (ASPP, decoder); the backbone keeps MobileNetV2's.
HEAD_BN_DECAY = 0.9997
HEAD_BN_EPSILON = 1e-5
LOGITS = 'logits'
PROBABILITIES = 'probabilities'
MASK = portable.MASK
CLASS_MAP = portable.CLASS_MAP  # the TFLite model's output: int32 [1, S, S] class ids at the input size
# DeepLab trains batch norm only with at least this many images per step (research/deeplab/train.py).
MIN_BATCH_FOR_BATCH_NORM = 12
_MIN_PROBABILITY = 1e-12


def class_names(config):
  """`segmentation.num_classes` names from `data.labels_file` (TF-Slim labels.txt); missing ones are the index."""
  return labels.class_names(config.data.labels_file, config.segmentation.num_classes)


def _size(images):
  """[height, width] of a [B, H, W, C] tensor: Python ints where static, else int32 scalars."""
  static = images.get_shape().as_list()[1:3]
  dynamic = tf.shape(images)
  return [static[0] if static[0] is not None else dynamic[1], static[1] if static[1] is not None else dynamic[2]]


def _scaled_size(size, scale):
  """DeepLab's `scale_dimension`: (dim - 1) * scale + 1, so corner-aligned resizes keep the grid."""
  def one(dim):
    if isinstance(dim, int):
      return int((dim - 1.0) * scale + 1.0)
    return tf.cast((tf.cast(dim, tf.float32) - 1.0) * scale + 1.0, tf.int32)
  return [one(d) for d in size]


def single_scale_logits(config, images, is_training, reuse=None):
  """DeepLabv3 logits at the feature (or decoder) resolution.

  Args:
    config: `pipelines.config.Config`.
    images: float32 [B, H, W, 3] in [-1, 1].
    is_training: bool; dropout mode, and batch-norm mode unless `model_builder.batch_norm_training` freezes it.
    reuse: None, or True to share the variables of an earlier call (multi-scale evaluation).

  Returns:
    float32 [B, ceil(H / os), ceil(W / os), num_classes] (segmentation.decoder_output_stride with the decoder).
  """
  with tf.variable_scope(tf.get_variable_scope(), reuse=reuse), \
      slim.arg_scope(model_builder.arg_scope(config, is_training)):
    end_points, _ = model_builder.backbone(config, images, head_endpoints(config), reuse=reuse)
    return head_logits(config, end_points)


def _decoder_endpoint(config):
  seg = config.segmentation
  return deeplab.DECODER_ENDPOINTS[seg.decoder_output_stride] if seg.decoder else None


def head_endpoints(config):
  """Backbone endpoints the DeepLab head reads (the decoder's low-level endpoint too, when enabled)."""
  decoder = _decoder_endpoint(config)
  return [deeplab.FEATURE_ENDPOINT] + ([decoder] if decoder else [])


def head_logits(config, end_points):
  """DeepLab's ASPP (+ decoder) + logits on `end_points`, with its own batch-norm settings; float32
  [B, h, w, num_classes] at the feature (or decoder) resolution. Call inside `model_builder.arg_scope`."""
  seg = config.segmentation
  with slim.arg_scope([slim.batch_norm], decay=HEAD_BN_DECAY, epsilon=HEAD_BN_EPSILON):
    outputs = deeplab.aspp_head(end_points, seg.num_classes, aspp_rates=seg.aspp_rates,
                                image_pooling=seg.image_pooling, depth=seg.aspp_convs_filters,
                                dropout_keep_prob=seg.dropout_keep_prob, decoder_endpoint=_decoder_endpoint(config),
                                decoder_depth=seg.decoder_filters)
  return outputs[deeplab.LOGITS]


def multi_scale_probabilities(config, images):
  """Softmax probabilities averaged over `segmentation.eval_scales` (x left-right flips if `eval_flip`).

  Args:
    config: `pipelines.config.Config`.
    images: float32 [B, H, W, 3] in [-1, 1].

  Returns:
    float32 [B, H, W, num_classes], each pixel sums to 1.
  """
  seg = config.segmentation
  size = _size(images)
  total, count = None, 0
  for scale in seg.eval_scales:
    scaled = images if scale == 1.0 else deeplab.upsample_logits(images, _scaled_size(size, scale))
    for flip in ((False, True) if seg.eval_flip else (False,)):
      net = tf.reverse(scaled, [2]) if flip else scaled
      logits = single_scale_logits(config, net, False, reuse=True if count else None)
      logits = deeplab.upsample_logits(logits, size)
      probabilities = tf.nn.softmax(tf.reverse(logits, [2]) if flip else logits)
      total = probabilities if total is None else total + probabilities
      count += 1
  return total / float(count)


def pixel_loss(logits, labels, num_classes, top_k_fraction=1.0, ignore_label=None):
  """Softmax cross-entropy over labelled pixels, optionally over the hardest ones only.

  Args:
    logits: float32 [B, H, W, num_classes].
    labels: integer [B, H, W] or [B, H, W, 1]; ids outside [0, num_classes) (255) are skipped.
    num_classes: int.
    top_k_fraction: float in (0, 1]; keep the ceil(fraction x labelled pixels) largest losses of the batch.
    ignore_label: int or None, pixels with this label are skipped (`segmentation.ignore_label`).

  Returns:
    float32 [] >= 0: sum of the kept pixel losses / their count (0 when no pixel is labelled).
  """
  labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
  logits = tf.reshape(logits, [-1, num_classes])
  valid = tf.logical_and(labels >= 0, labels < num_classes)
  if ignore_label is not None:
    valid = tf.logical_and(valid, tf.not_equal(labels, ignore_label))
  losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.where(valid, labels, tf.zeros_like(labels)), logits=logits)
  num_valid = tf.reduce_sum(tf.cast(valid, tf.int32))
  if top_k_fraction >= 1.0:
    kept = tf.where(valid, losses, tf.zeros_like(losses))
    count = num_valid
  else:
    # Skipped pixels get -1 so top_k (k <= labelled pixels) never picks them: every real loss is >= 0.
    ranked = tf.where(valid, losses, -tf.ones_like(losses))
    count = tf.minimum(tf.cast(tf.ceil(top_k_fraction * tf.cast(num_valid, tf.float32)), tf.int32), num_valid)
    kept = tf.nn.top_k(ranked, k=count, sorted=False).values
  return tf.reduce_sum(kept) / tf.cast(tf.maximum(count, 1), tf.float32)


class SegmentationTask(base.Task, portable.Segmentation):
  """DeepLabv3 + MobileNetV2 on DeepLab's records, with its exporter's `ImageTensor` signature."""

  name = 'segmentation'
  UINT8_INPUT_NAME = 'ImageTensor'
  DEMO = base.DemoMetric('miou', 0.6, 'mIoU')
  DEMO_FORMAT = 'voc'
  DEMO_BACKBONE_FROM = 'classification'

  @classmethod
  def backbone_options(cls, config):
    """DeepLab's feature extractor: scope `MobilenetV2`, `segmentation.output_stride`, and channels rounded
    to 8 only at multiplier 1.0 (min_depth 8), else to 1."""
    model = config.model
    exact = model.depth_multiplier == 1.0
    return model_builder.BackboneOptions(mobilenet_v2.DEFAULT_SCOPE, model.depth_multiplier,
                                         config.segmentation.output_stride, 8 if exact else 1,
                                         model.divisible_by or (8 if exact else 1), False, model.use_explicit_padding)

  @classmethod
  def freezes_batch_norm(cls, config):
    """DeepLab's advice: batch norm trains only with at least 12 images per step."""
    return config.train.batch_size < MIN_BATCH_FOR_BATCH_NORM

  def build_outputs(self, features, is_training):
    """dict: LOGITS float32 [B, H, W, C] at the input size; PROBABILITIES float32 [B, H, W, C] in [0, 1].

    With several eval scales or flips (not training), LOGITS are the log of the averaged probabilities.
    """
    images = features['image']
    seg = self.config.segmentation
    if is_training or (list(seg.eval_scales) == [1.0] and not seg.eval_flip):
      return self.outputs_at(single_scale_logits(self.config, images, is_training), _size(images))
    probabilities = multi_scale_probabilities(self.config, images)
    return {LOGITS: tf.log(tf.maximum(probabilities, _MIN_PROBABILITY)), PROBABILITIES: probabilities}

  def endpoints(self):
    """Backbone endpoints the head reads."""
    return head_endpoints(self.config)

  def build_head(self, end_points, scope, is_training):  # pylint: disable=unused-argument
    """{LOGITS: float32 [B, h, w, C]} at the feature resolution; the head's variables are top-level."""
    return {LOGITS: head_logits(self.config, end_points)}

  def build_shared_head(self, end_points, scope, images, is_training):
    """LOGITS / PROBABILITIES at the size of `images` (the shared backbone's input)."""
    logits = self.build_head(end_points, scope, is_training)[LOGITS]
    return self.outputs_at(logits, images.get_shape().as_list()[1:3])

  @staticmethod
  def outputs_at(logits, size):
    """LOGITS / PROBABILITIES float32 [B, H, W, C] upsampled (corners aligned) to `size` [H, W]."""
    logits = deeplab.upsample_logits(logits, size)
    return {LOGITS: logits, PROBABILITIES: tf.nn.softmax(logits)}

  def build_losses(self, outputs, labels, features):
    seg = self.config.segmentation
    return {'segmentation': pixel_loss(outputs[LOGITS], labels, seg.num_classes, seg.hard_pixel_top_k,
                                       ignore_label=seg.ignore_label)}

  def build_metrics(self, outputs, labels, features):
    predictions = tf.argmax(outputs[PROBABILITIES], 3, output_type=tf.int32)
    return segmentation_metrics.eval_metric_ops(labels, predictions, class_names(self.config),
                                                ignore_label=self.config.segmentation.ignore_label)

  def build_predictions(self, outputs, features):
    """MASK int32 [B, H, W] class ids at the input image size (+ PROBABILITIES if `export_probabilities`)."""
    height, width = features['height'], features['width']
    valid_height = features.get('valid_height', height)
    valid_width = features.get('valid_width', width)
    same = tf.reduce_all(tf.logical_and(tf.equal(height, height[0]), tf.equal(width, width[0])))
    check = tf.debugging.Assert(same, ['images of one batch must have the same size (send one image per '
                                       'request for mixed sizes); heights, widths:', height, width])
    with tf.control_dependencies([check]):
      probabilities = outputs[PROBABILITIES][:, :valid_height[0], :valid_width[0], :]
    # An identity when the image was not downscaled (corner-aligned resize to the same size).
    probabilities = tf.image.resize_bilinear(probabilities, tf.stack([height[0], width[0]]), align_corners=True)
    predictions = {MASK: tf.argmax(probabilities, 3, output_type=tf.int32)}
    if self.config.segmentation.export_probabilities:
      predictions[PROBABILITIES] = probabilities
    return predictions

  def input_fn(self, mode):
    return lambda params=None, input_context=None: segmentation_input.dataset(self.config, mode,
                                                                              input_context=input_context)

  def features_from_bytes(self, encoded):
    """Images padded to `eval_crop_size` (shrunk first only if larger), with their sizes to crop back."""
    return segmentation_input.features_from_bytes(self.config, encoded)

  def shared_prediction_features(self, images, heights, widths):
    """The whole resized square is the image: crop nothing, resize the class map to the original size."""
    size = images.get_shape().as_list()[1]
    return {'height': heights, 'width': widths, 'valid_height': tf.fill(tf.shape(heights), size),
            'valid_width': tf.fill(tf.shape(widths), size)}

  def class_names(self):
    return class_names(self.config)

  def legend_names(self):
    return self.class_names()

  # ------------------------------------------------------------------------------------------ export

  def client_signatures(self, uint8, images, outputs, features, predictions):
    """DeepLab's exporter: `ImageTensor` uint8 -> `SemanticPredictions` (tensor names as its frozen graph)."""
    semantic = tf.identity(predictions[MASK], name='SemanticPredictions')
    return {'ImageTensor': ({'ImageTensor': uint8}, {'SemanticPredictions': semantic})}

  def frozen_graph(self, signatures, images, predictions):
    """DeepLab's `frozen_inference_graph.pb`: uint8 `ImageTensor:0` [1, H, W, 3] -> `SemanticPredictions:0`."""
    del images, predictions
    inputs, outputs = signatures['ImageTensor']
    return dict(inputs=inputs, outputs=outputs)

  def tflite_outputs(self, outputs):
    """The class map at the input size (logits resized bilinearly, corners aligned, then argmax)."""
    size = self.serving_size()
    logits = tf.image.resize_bilinear(outputs[LOGITS], [size, size], align_corners=True)
    return {CLASS_MAP: tf.argmax(logits, 3, output_type=tf.int32)}

  def exported_scorer(self):
    from pipelines.evaluation import exported_eval  # pylint: disable=g-import-not-at-top
    return exported_eval.SegmentationScorer(self.config)

  # ------------------------------------------------------------------------------------------ demo

  @classmethod
  def demo_convert(cls, raw, records_dir):
    from datasets import shapes, voc  # pylint: disable=g-import-not-at-top
    names = ('background',) + tuple(shapes.CLASSES)
    for split in ('train', 'val'):
      voc.convert(raw['voc']['devkit_dir'], records_dir, split, num_shards=2, num_classes=len(names),
                  class_names=names)
    return cls.demo_labels_file(records_dir)

  @classmethod
  def demo_images(cls, raw, count):
    with tf.io.gfile.GFile(os.path.join(raw['voc']['sets_dir'], 'val.txt')) as f:
      ids = [line.strip() for line in f if line.strip()][:count]
    return [os.path.join(raw['voc']['images_dir'], i + '.jpg') for i in ids]
