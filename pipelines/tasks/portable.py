"""The TensorFlow-free half of each task: what predicting with an exported model.tflite / model.onnx needs.

Per task, numpy and Pillow only:

- `serving_size` / `shared_input_size`: the model input's side (a multi-task model: its members decide);
- `numpy_features(image)`: the serving preprocessing of one decoded image (`datasets.numpy_preprocessing`,
  the same arithmetic as the task's `features_from_bytes`), used where TensorFlow is not installed;
- `decode_tflite`: the model's outputs -> the SavedModel's prediction dict of one image;
- `owns_prediction`, `describe`, `summary`: what a prediction means to a person (JSON and pictures).

The task classes (`pipelines.tasks.<task>`) inherit these, so each is written once: `base.Task` derives
from `PortableTask`, and `ClassificationTask` from `Classification`, etc. The registry maps a task name to
both (`registry.portable_class`). A `lite` install (no TensorFlow) imports this module, never the task modules.

Not here: the runtimes and the predictor (`pipelines.export.runtime_predict`), the TF half of a task.
"""
import abc
import collections

import numpy as np

from datasets import numpy_preprocessing as npp
from heads.core import fields  # constants only (no TensorFlow)

ORIGINAL_HEIGHT = 'original_height'  # detection's serving features: the decoded image's size
ORIGINAL_WIDTH = 'original_width'
DETECTION_CLASS_NAMES = 'detection_class_names'
PROBABILITIES = 'probabilities'  # the classifier's TFLite / ONNX output
MASK = 'mask'  # segmentation's prediction: class ids at the image's size
CLASS_MAP = 'class_map'  # segmentation's TFLite / ONNX output: int32 [1, S, S] class ids at the input size
SEPARATOR = '/'  # a multi-task model's keys: '<member>/<key>'


class PortableTask(abc.ABC):
  """The TF-free methods of a task (see the module docstring); `base.Task` adds the TensorFlow ones."""

  name = None

  def __init__(self, config):
    self.config = config

  @abc.abstractmethod
  def serving_size(self):
    """Side of the square float image the serving path feeds the model (the TFLite input size)."""

  def shared_input_size(self):
    """(rank, side) of the one-pass input this task wants as a member of a multi-task model: the member
    with the lowest rank sets the shared input size (`pipelines.tasks.multitask`)."""
    return 1, self.serving_size()

  def numpy_features(self, image):
    """uint8 [H, W, 3] RGB -> the serving features of one image (numpy, no batch dimension): `image` float32
    [S, S, 3] in [-1, 1] and what `decode_tflite` needs, as `features_from_bytes` computes them."""
    raise NotImplementedError('task %r has no numpy preprocessing: predicting without TensorFlow is not '
                              'available for it' % self.name)

  @abc.abstractmethod
  def decode_tflite(self, meta, outputs, features):
    """TFLite / ONNX outputs (numpy, batch of one) -> the SavedModel's prediction dict of one image.

    Args:
      meta: this task's model.json entries (`export_metadata`).
      outputs: dict key -> numpy array, the model's outputs (dequantized).
      features: dict of numpy serving features of the image (`numpy_features`, or `features_from_bytes`
        with the batch removed).
    """

  @classmethod
  @abc.abstractmethod
  def owns_prediction(cls, prediction):
    """Whether a prediction dict (keys of `build_predictions`) is this task's."""

  @classmethod
  @abc.abstractmethod
  def describe(cls, path, prediction, out, min_score, class_names):
    """JSON-able dict of one prediction (`task` = the name); writes the picture to `out` when given."""

  @classmethod
  @abc.abstractmethod
  def summary(cls, item):
    """One line for a person about a `describe` item (without the image path)."""


class Classification(PortableTask):
  """Top-k classes with names and probabilities; the picture is the image captioned with the top 3."""

  name = 'classification'

  def serving_size(self):
    return self.config.classification.image_size

  def numpy_features(self, image):
    section = self.config.classification
    return {'image': npp.classification_eval(image, section.image_size, section.preprocessing.eval_central_fraction)}

  def decode_tflite(self, meta, outputs, features):
    names = meta['class_names']
    probabilities = outputs[PROBABILITIES][0].astype(np.float32)
    k = min(int(meta.get('top_k', 5)), len(probabilities))
    top = np.argsort(-probabilities, kind='stable')[:k]
    return {'classes': top[0], 'class_names': names[top[0]], 'probabilities': probabilities,
            'top_k_classes': top.astype(np.int32), 'top_k_class_names': [names[i] for i in top],
            'top_k_probabilities': probabilities[top]}

  @classmethod
  def owns_prediction(cls, prediction):
    return 'top_k_classes' in prediction

  @classmethod
  def describe(cls, path, prediction, out, min_score, class_names):
    del min_score, class_names
    from pipelines.cli import render  # pylint: disable=g-import-not-at-top
    top = [{'class': int(c), 'name': render.text(n), 'probability': float(p)}
           for c, n, p in zip(prediction['top_k_classes'], prediction['top_k_class_names'],
                              prediction['top_k_probabilities'])]
    item = {'image': path, 'task': cls.name, 'top_k': top}
    if out:
      image = render.upscaled_image(path)[0]
      render.save(render.caption(image, ['%s %.2f' % (t['name'], t['probability']) for t in top[:3]]), out)
      item['output'] = out
    return item

  @classmethod
  def summary(cls, item):
    return ', '.join('%s (%.3f)' % (t['name'], t['probability']) for t in item['top_k'])


class Detection(PortableTask):
  """Boxes in absolute pixels with class names and scores; the picture draws those above `min_score`."""

  name = 'detection'

  def serving_size(self):
    return self.config.detection.image_size

  def shared_input_size(self):
    """(rank, side) of the one-pass input this head wants on a shared backbone (the lowest rank wins):
    SSD's anchors are laid out for `detection.image_size`."""
    return 0, self.config.detection.image_size

  def numpy_features(self, image):
    return {'image': npp.detection_eval(image, self.serving_size()), ORIGINAL_HEIGHT: np.int32(image.shape[0]),
            ORIGINAL_WIDTH: np.int32(image.shape[1])}

  def decode_tflite(self, meta, outputs, features):
    """The OD API's TFLite outputs (normalized boxes, zero-based classes) -> the SavedModel's dict."""
    names = meta['class_names']
    height, width = int(features[ORIGINAL_HEIGHT]), int(features[ORIGINAL_WIDTH])
    num = int(outputs[fields.NUM_DETECTIONS].reshape(-1)[0])
    boxes = np.clip(outputs[fields.DETECTION_BOXES][0], 0.0, 1.0) * np.array([height, width, height, width],
                                                                              np.float32)
    valid = np.arange(len(boxes)) < num
    classes = np.where(valid, np.round(outputs[fields.DETECTION_CLASSES][0]).astype(np.int32) + 1, 0)
    return {'detection_boxes': boxes * valid[:, None], 'detection_scores': outputs[fields.DETECTION_SCORES][0] * valid,
            'detection_classes': classes, 'num_detections': np.int32(num),
            DETECTION_CLASS_NAMES: [names[c - 1] if c > 0 else '' for c in classes]}

  @classmethod
  def owns_prediction(cls, prediction):
    return 'detection_boxes' in prediction

  @classmethod
  def describe(cls, path, prediction, out, min_score, class_names):
    """Boxes scoring at least `min_score` (absolute pixels), drawn with 'name score' labels."""
    del class_names
    from pipelines.cli import render  # pylint: disable=g-import-not-at-top
    item = {'image': path, 'task': cls.name, 'detections': cls.detections_of(prediction, min_score)}
    if out:
      image, factor = render.upscaled_image(path)
      render.draw_boxes(image, item['detections'], factor)
      render.save(image, out)
      item['output'] = out
    return item

  @staticmethod
  def detections_of(prediction, min_score):
    """[{box, class, name, score}] of a prediction's detections scoring at least `min_score`."""
    from pipelines.cli import render  # pylint: disable=g-import-not-at-top
    count = int(prediction['num_detections'])
    names = prediction.get(DETECTION_CLASS_NAMES, [str(int(c)) for c in prediction['detection_classes']])
    return [{'box': [float(v) for v in prediction['detection_boxes'][i]],
             'class': int(prediction['detection_classes'][i]), 'name': render.text(names[i]),
             'score': float(prediction['detection_scores'][i])}
            for i in range(count) if prediction['detection_scores'][i] >= min_score]

  @classmethod
  def summary(cls, item):
    dets = ', '.join('%s %.2f' % (d['name'], d['score']) for d in item['detections'][:5])
    return '%d detections %s' % (len(item['detections']), dets)


class Segmentation(PortableTask):
  """A class id per pixel at the image's size; the pictures are the mask PNG and an overlay with a legend."""

  name = 'segmentation'

  def serving_size(self):
    return self.config.segmentation.eval_crop_size

  def shared_input_size(self):
    """(rank, side) on a shared backbone: the training crop, after detection's and classification's sizes."""
    return 2, self.config.segmentation.crop_size

  def numpy_features(self, image):
    padded, valid_height, valid_width = npp.segmentation_fit_and_pad(image, self.serving_size())
    return {'image': padded, 'height': np.int32(image.shape[0]), 'width': np.int32(image.shape[1]),
            'valid_height': np.int32(valid_height), 'valid_width': np.int32(valid_width)}

  def decode_tflite(self, meta, outputs, features):
    del meta
    class_map = outputs[CLASS_MAP][0]
    valid_height = int(features.get('valid_height', class_map.shape[0]))
    valid_width = int(features.get('valid_width', class_map.shape[1]))
    mask = class_map[:valid_height, :valid_width]
    return {MASK: resize_nearest(mask, int(features['height']), int(features['width']))}

  @classmethod
  def owns_prediction(cls, prediction):
    return MASK in prediction

  @classmethod
  def describe(cls, path, prediction, out, min_score, class_names):
    """Pixels per class; the class-id mask PNG at `out` and input / mask / overlay with a legend beside it."""
    del min_score
    from pipelines.cli import render  # pylint: disable=g-import-not-at-top
    mask = np.asarray(prediction[MASK]).astype(np.uint8)
    classes, counts = np.unique(mask, return_counts=True)
    item = {'image': path, 'task': cls.name, 'pixels_per_class': {int(c): int(n) for c, n in zip(classes, counts)}}
    if out:
      item.update(output=out, overlay=render.draw_mask(path, mask, out, class_names))
    return item

  @classmethod
  def summary(cls, item):
    return 'classes %s' % sorted(item['pixels_per_class'])


def resize_nearest(mask, height, width):
  """int [h, w] class ids -> int32 [height, width], nearest neighbour (Pillow's, as the SavedModel's path)."""
  if mask.shape == (height, width):
    return mask
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return np.asarray(Image.fromarray(mask.astype(np.int32)).resize((width, height), Image.NEAREST)).astype(np.int32)


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


class Multitask(PortableTask):
  """The members' TF-free halves on one input: features of the one-pass image, each member's decoding."""

  name = 'multitask'

  def __init__(self, config):
    super(Multitask, self).__init__(config)
    from pipelines.tasks import registry  # pylint: disable=g-import-not-at-top
    self.members = collections.OrderedDict(
        (name, registry.portable_class(name)(member)) for name, member in config.member_configs())

  def serving_size(self):
    return min(task.shared_input_size() for task in self.members.values())[1]

  def numpy_features(self, image):
    """The one-pass image: resized without cropping (accurate JPEG decoding, as its TF path), and its size."""
    return {'image': npp.classification_eval(image, self.serving_size(), central_fraction=1.0),
            ORIGINAL_HEIGHT: np.int32(image.shape[0]), ORIGINAL_WIDTH: np.int32(image.shape[1])}

  def decode_tflite(self, meta, outputs, features):
    """Each member's decoding of its `<member>/` outputs; the member features of the one-pass image."""
    size = features['image'].shape[0]
    member_features = {ORIGINAL_HEIGHT: features[ORIGINAL_HEIGHT], ORIGINAL_WIDTH: features[ORIGINAL_WIDTH],
                       'height': features[ORIGINAL_HEIGHT], 'width': features[ORIGINAL_WIDTH],
                       'valid_height': size, 'valid_width': size}
    parts = split_prefixed(outputs)
    result = {}
    for name, task in self.members.items():
      result.update(prefixed(name, task.decode_tflite(meta['members'][name], parts.get(name, {}), member_features)))
    return result

  @classmethod
  def owns_prediction(cls, prediction):
    return any(SEPARATOR in key for key in prediction)

  @classmethod
  def describe(cls, path, prediction, out, min_score, class_names):
    """Every member's result (its own `describe`), drawn in one picture: mask blended, boxes, a caption."""
    from pipelines.cli import render  # pylint: disable=g-import-not-at-top
    from pipelines.tasks import registry  # pylint: disable=g-import-not-at-top
    parts = split_prefixed(prediction)
    item = {'image': path, 'task': cls.name}
    for name in sorted(parts):
      item[name] = registry.prediction_class(name).describe(path, parts[name], None, min_score, None)
    if out:
      render.draw_combined(path, parts, item, out, class_names or {})
      item['output'] = out
    return item

  @classmethod
  def summary(cls, item):
    from pipelines.tasks import registry  # pylint: disable=g-import-not-at-top
    return '; '.join('%s: %s' % (name, registry.prediction_class(name).summary(item[name]))
                     for name in registry.names() if isinstance(item.get(name), dict))
