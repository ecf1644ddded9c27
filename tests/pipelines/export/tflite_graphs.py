"""Frozen TFLite graphs of the tiny test models (`tiny_models`): what `pipelines.export.tflite_export`
converts, built here from a model function rather than from a task (the product builds them from the task:
`pipelines.export.tflite_task.frozen_graph`)."""
import collections

import tensorflow.compat.v1 as tf

from pipelines.export import freeze as freeze_lib
from pipelines.export.tflite_export import BOX_ENCODINGS
from pipelines.export.tflite_export import CLASS_LOGITS
from pipelines.export.tflite_export import CLASS_MAP
from pipelines.export.tflite_export import CLASS_SCORES
from pipelines.export.tflite_export import LOGITS
from pipelines.export.tflite_export import PROBABILITIES
from pipelines.export.tflite_export import add_detection_postprocess

CLASSIFICATION, DETECTION, SEGMENTATION = 'classification', 'detection', 'segmentation'


def _image_shape(image_size):
  return [1, int(image_size), int(image_size), 3]



def classification_graph(build, checkpoint_path, image_size, use_moving_averages=True):
  """Frozen classifier: input float32 [1, S, S, 3] in [-1, 1] -> `probabilities` [1, num_classes].

  Args:
    build: callable images -> dict with PROBABILITIES (or only LOGITS, then softmax is added), built in
      inference mode.
    checkpoint_path: checkpoint prefix or directory.
    image_size: S.
    use_moving_averages: restore the EMA shadow variables when the checkpoint has them.

  Returns:
    pipelines.export.freeze.FrozenGraph with the one output PROBABILITIES.
  """
  def graph(images):
    outputs = build(images)
    if PROBABILITIES in outputs:
      return {PROBABILITIES: outputs[PROBABILITIES]}
    return {PROBABILITIES: tf.nn.softmax(outputs[LOGITS])}
  return freeze_lib.freeze(graph, checkpoint_path, _image_shape(image_size),
                           use_moving_averages=use_moving_averages)


def detection_raw_graph(build, checkpoint_path, image_size, score_converter='sigmoid', use_moving_averages=True):
  """Frozen SSD network up to the post-processing: box encodings [1, A, 4] and scores [1, A, K + 1].

  Args:
    build: callable images -> dict with BOX_ENCODINGS [1, A, 4] and CLASS_LOGITS [1, A, K + 1]
      (e.g. `heads.ssdlite.box_predictor`'s result), built in inference mode.
    checkpoint_path, image_size, use_moving_averages: see `classification_graph`.
    score_converter: 'sigmoid' (this library's SSDLite training default) or 'softmax'.

  Returns:
    FrozenGraph with outputs BOX_ENCODINGS and CLASS_SCORES (runs in TensorFlow: the TF reference).
  """
  if score_converter not in ('sigmoid', 'softmax'):
    raise ValueError("score_converter must be 'sigmoid' or 'softmax', got %r" % (score_converter,))

  def graph(images):
    outputs = build(images)
    logits = outputs[CLASS_LOGITS]
    scores = tf.sigmoid(logits) if score_converter == 'sigmoid' else tf.nn.softmax(logits)
    return collections.OrderedDict([(BOX_ENCODINGS, outputs[BOX_ENCODINGS]), (CLASS_SCORES, scores)])
  return freeze_lib.freeze(graph, checkpoint_path, _image_shape(image_size),
                           use_moving_averages=use_moving_averages)


def detection_graph(build, checkpoint_path, image_size, anchors, num_classes, score_converter='sigmoid',
                    use_moving_averages=True, **postprocess_args):
  """`detection_raw_graph` + `add_detection_postprocess`: (raw FrozenGraph, FrozenGraph for TFLite)."""
  raw = detection_raw_graph(build, checkpoint_path, image_size, score_converter, use_moving_averages)
  return raw, add_detection_postprocess(raw, anchors, num_classes, **postprocess_args)


def segmentation_graph(build, checkpoint_path, image_size, use_moving_averages=True):
  """Frozen segmenter: input [1, S, S, 3] -> CLASS_MAP int32 [1, S, S].

  Args:
    build: callable images -> dict with LOGITS float32 [1, h, w, C] at any resolution (e.g. the
      `heads.deeplab.aspp_head` result), built in inference mode.
    checkpoint_path, image_size, use_moving_averages: see `classification_graph`.
  """
  size = int(image_size)

  def graph(images):
    logits = build(images)[LOGITS]
    logits = tf.image.resize_bilinear(logits, [size, size], align_corners=True)
    return {CLASS_MAP: tf.argmax(logits, 3, output_type=tf.int32)}
  return freeze_lib.freeze(graph, checkpoint_path, _image_shape(size), use_moving_averages=use_moving_averages)
