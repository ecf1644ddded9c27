"""TFLite export and prediction of a task from its config: the product's model, not a copy.

`export` builds the task's own inference graph (`task.build_outputs({'image': images}, False)`: the
`pipelines.model_builder` backbone + the task's head), restores the moving averages (raw weights with a
warning when the checkpoint has none), freezes it and folds batch norm (`pipelines.freeze`), then converts
it with `pipelines.tflite_export` and writes, in one directory:

  model.tflite   the flatbuffer
  model.json     input (dtype, shape, [-1, 1] range or uint8 quantization), outputs, task, class names,
                 the preprocessing of the task's serving path, the NMS settings (detection)
  config.yaml    the training config (predict rebuilds the task's serving preprocessing from it)
  labels.txt / label_map.pbtxt   the class names file (copied from data.labels_file, else written)

Per task: classification probabilities [1, C]; detection the OD API TFLite layout (boxes [1, N, 4]
normalized ymin, xmin, ymax, xmax, classes [1, N] zero-based, scores [1, N], num_detections [1]) from
`TFLite_Detection_PostProcess` with the config's NMS settings (per-class regular NMS, like the SavedModel);
segmentation the class map [1, S, S] at the input (eval crop) size; multitask one model, keys
`<member>/<key>`, the backbone run once. int8: full-integer post-training quantization calibrated on
`--calibration-images` images of the config's own eval input pipeline.

`predict` runs a model.tflite on image files and returns the same prediction dicts as the SavedModel
(`pipelines.predict`), so `pipelines.render` draws them the same way.
"""
import json
import logging
import os

import numpy as np
import tensorflow.compat.v1 as tf

from pipelines import config as config_schema
from pipelines.export import freeze as freeze_lib
from pipelines.tasks import labels as labels_lib
from pipelines.training import runner
from pipelines.export import tflite_export as te

LOG = logging.getLogger('mnv2')
CONFIG_NAME = 'config.yaml'
DEFAULT_CALIBRATION_IMAGES = 100


# ------------------------------------------------------------------------------------------ graphs


def input_size(config):
  """Side of the TFLite model's square input for this config (the serving size of the task)."""
  if config.task == 'classification':
    return config.classification.image_size
  if config.task == 'detection':
    return config.detection.image_size
  if config.task == 'segmentation':
    return config.segmentation.eval_crop_size
  from pipelines.tasks import multitask  # pylint: disable=g-import-not-at-top
  return multitask.serving_size(config)


def _classification_outputs(outputs):
  from heads import classification as head_lib  # pylint: disable=g-import-not-at-top
  return {te.PROBABILITIES: outputs[head_lib.PREDICTIONS]}


def _detection_outputs(config, outputs):
  from heads import ssdlite  # pylint: disable=g-import-not-at-top
  logits = outputs[ssdlite.CLASS_PREDICTIONS_WITH_BACKGROUND]
  scores = tf.nn.softmax(logits) if config.detection.classification_loss == 'softmax' else tf.sigmoid(logits)
  return {te.BOX_ENCODINGS: outputs[ssdlite.BOX_ENCODINGS], te.CLASS_SCORES: scores}


def _segmentation_outputs(outputs, size):
  from pipelines.tasks import segmentation  # pylint: disable=g-import-not-at-top
  logits = tf.image.resize_bilinear(outputs[segmentation.LOGITS], [size, size], align_corners=True)
  return {te.CLASS_MAP: tf.argmax(logits, 3, output_type=tf.int32)}


def _member_outputs(name, config, outputs, size):
  if name == 'classification':
    return _classification_outputs(outputs)
  if name == 'detection':
    return _detection_outputs(config, outputs)
  return _segmentation_outputs(outputs, size)


def _postprocess_args(config):
  det = config.detection
  return dict(max_detections=det.max_detections, detections_per_class=det.max_detections,
              score_threshold=det.score_threshold, iou_threshold=det.iou_threshold,
              use_regular_nms=det.tflite_use_regular_nms)


def frozen_graph(config, checkpoint_path, use_moving_averages=True):
  """FrozenGraph of the task's inference model (detection: ending in TFLite_Detection_PostProcess)."""
  task = runner.make_task(config)
  size = input_size(config)
  members = getattr(task, 'members', None)

  def build(images):
    outputs = task.build_outputs({'image': images}, False)
    if members is None:
      return _member_outputs(config.task, config, outputs, size)
    result = {}
    for name, member in members.items():
      for key, value in _member_outputs(name, member.config, outputs[name], size).items():
        result['%s/%s' % (name, key)] = value
    return result

  frozen = freeze_lib.freeze(build, checkpoint_path, [1, size, size, 3], use_moving_averages=use_moving_averages)
  if config.task == 'detection':
    return te.add_detection_postprocess(frozen, task.anchors, config.detection.num_classes,
                                        **_postprocess_args(config))
  if members is not None and 'detection' in members:
    det = members['detection']
    raw = frozen._replace(outputs={te.BOX_ENCODINGS: frozen.outputs['detection/' + te.BOX_ENCODINGS],
                                   te.CLASS_SCORES: frozen.outputs['detection/' + te.CLASS_SCORES]})
    post = te.add_detection_postprocess(raw, det.anchors, det.config.detection.num_classes,
                                        **_postprocess_args(det.config))
    outputs = type(frozen.outputs)((k, v) for k, v in frozen.outputs.items() if not k.startswith('detection/'))
    for key, value in post.outputs.items():
      outputs['detection/' + key] = value
    return post._replace(outputs=outputs)
  return frozen


# ------------------------------------------------------------------------------------------ calibration


def calibration_images(config, count):
  """`count` float32 [S, S, 3] images in [-1, 1] from the config's eval input pipeline (`<task>_input`)."""
  task = runner.make_task(config)
  size = input_size(config)
  if hasattr(task, 'eval_input_fns'):
    input_fns = [fn for _, fn in task.eval_input_fns()]
  else:
    input_fns = [task.input_fn(tf.estimator.ModeKeys.EVAL)]
  images = []
  with tf.Graph().as_default():
    # A multitask model: the members' eval splits in turn; every image resized to the one-pass size.
    per_member = int(np.ceil(count / float(len(input_fns))))
    for fn in input_fns:
      dataset = fn()
      features = tf.data.make_one_shot_iterator(dataset).get_next()[0]
      image = features['image'] if 'image' in features else list(features.values())[0]['image']
      if image.get_shape().as_list()[1:3] != [size, size]:
        image = tf.image.resize_bilinear(image, [size, size], align_corners=False)
      taken = 0
      with tf.Session() as session:
        while taken < per_member and len(images) < count:
          try:
            batch = session.run(image)
          except tf.errors.OutOfRangeError:
            break
          for one in batch[:min(per_member - taken, count - len(images))]:
            images.append(one.astype(np.float32))
          taken += len(batch)
  if not images:
    raise ValueError('no calibration images: the eval input pipeline (data.eval_files) yielded nothing')
  return images


# ------------------------------------------------------------------------------------------ export


def _class_names(config, task):
  if task == 'classification':
    return labels_lib.class_names(config.data.labels_file, config.classification.num_classes)
  if task == 'detection':
    return labels_lib.class_names(config.data.labels_file, config.detection.num_classes, first=1)
  return labels_lib.class_names(config.data.labels_file, config.segmentation.num_classes)


def _task_metadata(config, task_name):
  meta = {'class_names': _class_names(config, task_name)}
  if task_name == 'classification':
    meta['top_k'] = config.classification.top_k
    meta['class_names_first_id'] = 0
  elif task_name == 'detection':
    meta['class_names_first_id'] = 1
    meta['class_ids'] = 'label-map id = detection_classes + 1'
    meta['nms'] = dict(_postprocess_args(config), clip_boxes=False)
  else:
    meta['class_names_first_id'] = 0
  return meta


def _write_labels(config, task_name, output_dir, prefix=''):
  """Copies data.labels_file (or writes labels.txt from the class names); returns the file name."""
  source = config.data.labels_file
  if source and tf.io.gfile.exists(source):
    name = prefix + os.path.basename(source)
    tf.io.gfile.copy(source, os.path.join(output_dir, name), overwrite=True)
    return name
  names = _class_names(config, task_name)
  first = 1 if task_name == 'detection' else 0
  name = prefix + 'labels.txt'
  with tf.io.gfile.GFile(os.path.join(output_dir, name), 'w') as f:
    f.write(''.join('%d:%s\n' % (i, n) for i, n in enumerate(names, first)))
  return name


def unsupported(config, quantize):
  """Why `quantize` cannot export this config's task on this TensorFlow, or None when it can."""
  if quantize == 'int8' and te._is_tf1() and (config.task == 'detection' or (  # pylint: disable=protected-access
      config.task == 'multitask' and 'detection' in config.multitask.members())):
    return te.TF1_INT8_DETECTION_UNSUPPORTED
  return None


def export(config, model_dir, export_dir=None, checkpoint_path=None, quantize='none',
           num_calibration_images=DEFAULT_CALIBRATION_IMAGES, calibration_config=None):
  """Writes model.tflite, model.json, config.yaml and the class names file; returns the model path.

  Default directory: `<model_dir>/export/tflite_<quantize>`. int8 calibrates on the eval input pipeline of
  `calibration_config` (default `config`; the demo passes one reading training records, so its held-out
  split stays unseen by the export).
  """
  if quantize not in te.QUANTIZE_MODES:
    raise ValueError('--quantize must be one of %s, got %r' % (', '.join(te.QUANTIZE_MODES), quantize))
  reason = unsupported(config, quantize)
  if reason:
    raise ValueError(reason)
  checkpoint_path = checkpoint_path or tf.train.latest_checkpoint(model_dir)
  if not checkpoint_path:
    raise ValueError('no checkpoint in %r to export (train first, or pass --checkpoint)' % model_dir)
  output_dir = export_dir or os.path.join(model_dir, 'export', 'tflite_' + quantize)
  frozen = frozen_graph(config, checkpoint_path)
  LOG.info('tflite export: %s, %d batch norms folded, quantize=%s', checkpoint_path, frozen.folded, quantize)
  representative = None
  if quantize == 'int8':
    representative = calibration_images(calibration_config or config, num_calibration_images)
    LOG.info('tflite export: calibrating on %d eval images', len(representative))
  if not tf.gfile.IsDirectory(output_dir):
    tf.gfile.MakeDirs(output_dir)
  extra = {'checkpoint': os.path.basename(checkpoint_path), 'config': CONFIG_NAME,
           'batch_norms_folded': frozen.folded}
  if config.task == 'multitask':
    extra['members'] = {}
    for name in config.multitask.members():
      member = config_schema.member_config(config, name)
      extra['members'][name] = dict(_task_metadata(member, name),
                                    labels_file=_write_labels(member, name, output_dir, name + '_'))
  else:
    extra.update(_task_metadata(config, config.task))
    extra['labels_file'] = _write_labels(config, config.task, output_dir)
  config_schema.save(config, os.path.join(output_dir, CONFIG_NAME))
  model_path, _ = te.export(frozen, output_dir, config.task, quantize, representative, extra)
  return model_path


# ------------------------------------------------------------------------------------------ predict


class TFLitePredictor(object):
  """model.tflite + model.json + config.yaml -> the SavedModel's prediction dicts for encoded images."""

  def __init__(self, model_path, num_threads=None):
    self.model = te.TFLiteModel(model_path, num_threads=num_threads)
    self.metadata = self.model.metadata
    directory = os.path.dirname(os.path.abspath(model_path))
    config = config_schema.load(os.path.join(directory, self.metadata.get('config', CONFIG_NAME)))
    self.task = runner.make_task(config)
    self._graph = tf.Graph()
    with self._graph.as_default():
      self._encoded = tf.placeholder(tf.string, [None])
      self._features = self.task.features_from_bytes(self._encoded)
    self._session = tf.Session(graph=self._graph)

  def close(self):
    self._session.close()

  def features(self, encoded):
    """The task's serving features (numpy, batch of one) of one encoded image."""
    return {k: v[0] for k, v in self._session.run(self._features, {self._encoded: [encoded]}).items()}

  def model_input(self, image):
    """float32 [S, S, 3] in [-1, 1] -> the model's input [1, S, S, 3] (quantized for uint8 inputs)."""
    meta = self.metadata['input']
    x = np.asarray(image, np.float32)[None]
    quant = meta.get('quantization')
    dtype = np.dtype(meta['dtype'])
    if quant:
      info = np.iinfo(dtype)
      x = np.clip(np.round(x / quant['scale'] + quant['zero_point']), info.min, info.max)
    return x.astype(dtype)

  def interpreter_call(self, encoded):
    """A no-argument function that runs the interpreter alone on this image (preprocessing done once):
    what "model only" latencies time."""
    x = self.model_input(self.features(encoded)['image'])
    return lambda: self.model.run(x)

  def __call__(self, encoded):
    features = self.features(encoded)
    outputs = self.model.run(self.model_input(features['image']))
    task = self.metadata['task']
    if task != 'multitask':
      return _prediction(task, self.metadata, outputs, features)
    result = {}
    size = features['image'].shape[0]
    member_features = {'original_height': features['original_height'], 'original_width': features['original_width'],
                       'height': features['original_height'], 'width': features['original_width'],
                       'valid_height': size, 'valid_width': size}
    for name, meta in self.metadata['members'].items():
      prefix = name + '/'
      member_outputs = dict((k[len(prefix):], v) for k, v in outputs.items() if k.startswith(prefix))
      for key, value in _prediction(name, meta, member_outputs, member_features).items():
        result[prefix + key] = value
    return result


def _resize_nearest(mask, height, width):
  if mask.shape == (height, width):
    return mask
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return np.asarray(Image.fromarray(mask.astype(np.int32)).resize((width, height), Image.NEAREST)).astype(np.int32)


def _prediction(task, meta, outputs, features):
  """TFLite outputs (batch of one) -> the SavedModel's prediction dict for one image."""
  names = meta['class_names']
  if task == 'classification':
    probabilities = outputs[te.PROBABILITIES][0].astype(np.float32)
    k = min(int(meta.get('top_k', 5)), len(probabilities))
    top = np.argsort(-probabilities, kind='stable')[:k]
    return {'classes': top[0], 'class_names': names[top[0]], 'probabilities': probabilities,
            'top_k_classes': top.astype(np.int32), 'top_k_class_names': [names[i] for i in top],
            'top_k_probabilities': probabilities[top]}
  if task == 'detection':
    height, width = int(features['original_height']), int(features['original_width'])
    num = int(outputs[te.NUM_DETECTIONS].reshape(-1)[0])
    boxes = np.clip(outputs[te.DETECTION_BOXES][0], 0.0, 1.0) * np.array([height, width, height, width], np.float32)
    valid = np.arange(len(boxes)) < num
    classes = np.where(valid, np.round(outputs[te.DETECTION_CLASSES][0]).astype(np.int32) + 1, 0)
    return {'detection_boxes': boxes * valid[:, None], 'detection_scores': outputs[te.DETECTION_SCORES][0] * valid,
            'detection_classes': classes, 'num_detections': np.int32(num),
            'detection_class_names': [names[c - 1] if c > 0 else '' for c in classes]}
  class_map = outputs[te.CLASS_MAP][0]
  valid_height = int(features.get('valid_height', class_map.shape[0]))
  valid_width = int(features.get('valid_width', class_map.shape[1]))
  mask = class_map[:valid_height, :valid_width]
  return {'mask': _resize_nearest(mask, int(features['height']), int(features['width']))}


def predict(model_path, image_paths, num_threads=None):
  """One prediction dict per image file from a model.tflite (keys as `pipelines.predict`'s)."""
  predictor = TFLitePredictor(model_path, num_threads)
  try:
    results = []
    for path in image_paths:
      with tf.gfile.GFile(path, 'rb') as f:
        results.append(predictor(f.read()))
    return results
  finally:
    predictor.close()
