"""Record decoders: one serialized tf.train.Example -> a dict of tensors, one decoder per task.

* `decode_classification`: TF-Slim ImageNet records (`datasets.imagenet`, or TF-Slim's own).
* `decode_detection`: Object Detection API records (`datasets.coco`, or the OD API's own).
* `decode_segmentation`: DeepLab records (`datasets.voc`, or DeepLab's own).
* `decode_rgb`: encoded JPEG/PNG/GIF/BMP bytes -> uint8 RGB, the image decoder of segmentation records and
  of segmentation serving.

Decoders only parse and decode: images come out as stored (uint8, original size), labels as stored
(dataset ids, not remapped). The feature keys are those the converters write; they are defined next to
the writer (`datasets.imagenet`, `datasets.coco`, `datasets.voc`) and imported from there.

Not here: writing records (the converters), preprocessing (`datasets.classification_preprocessing`,
`datasets.detection_preprocessing`, `datasets.segmentation_preprocessing`), the tf.data pipeline
(`datasets.tfrecord.read_dataset`) and the per-task input pipelines (`pipelines.inputs.*_input`).
"""
import tensorflow.compat.v1 as tf
from google.protobuf import message as protobuf_message

from datasets import coco
from datasets import imagenet
from datasets import voc


def decode_classification(serialized):
  """Parses one record (ours or TF-Slim's; text and filename may be missing).

  Args:
    serialized: string scalar tensor, a serialized tf.train.Example.

  Returns:
    dict with image (uint8 [H, W, 3], 0..255), label (int32 [], 0..K), text (string [], the class
    name; the synset when the record has no text) and filename (string [], '' when absent).
  """
  spec = {
      imagenet.ENCODED_KEY: tf.FixedLenFeature([], tf.string),
      imagenet.LABEL_KEY: tf.FixedLenFeature([], tf.int64),
      imagenet.SYNSET_KEY: tf.FixedLenFeature([], tf.string, default_value=''),
      imagenet.TEXT_KEY: tf.FixedLenFeature([], tf.string, default_value=''),
      imagenet.FILENAME_KEY: tf.FixedLenFeature([], tf.string, default_value=''),
  }
  parsed = tf.parse_single_example(serialized, spec)
  # Any image format (TF-Slim's CIFAR-10 records hold PNGs, which TF 1.15's decode_jpeg rejects); JPEGs
  # decode as decode_jpeg's default, like serving (`pipelines.inputs.classification_input.features_from_bytes`).
  image = tf.image.decode_image(parsed[imagenet.ENCODED_KEY], channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  text = tf.where(tf.equal(parsed[imagenet.TEXT_KEY], ''), parsed[imagenet.SYNSET_KEY],
                  parsed[imagenet.TEXT_KEY])
  return {'image': image, 'label': tf.cast(parsed[imagenet.LABEL_KEY], tf.int32), 'text': text,
          'filename': parsed[imagenet.FILENAME_KEY]}


def decode_detection(serialized):
  """Parses one OD API detection record (ours or the OD API's own `create_coco_tf_record.py`).

  Args:
    serialized: string scalar tensor, a serialized tf.train.Example.

  Returns:
    dict with image uint8 [H, W, 3] (0..255); boxes float32 [N, 4] normalized [ymin, xmin, ymax, xmax];
    classes int32 [N] (the stored labels, COCO ids); is_crowd bool [N] (False when the key is absent);
    area float32 [N] (0 when absent); source_id string []; height, width int32 [] (of the decoded image).
  """
  keys = {
      coco.ENCODED: tf.FixedLenFeature((), tf.string),
      coco.SOURCE_ID: tf.FixedLenFeature((), tf.string, default_value=''),
      coco.CLASS_LABEL: tf.VarLenFeature(tf.int64),
      coco.IS_CROWD: tf.VarLenFeature(tf.int64),
      coco.AREA: tf.VarLenFeature(tf.float32),
  }
  for key in (coco.YMIN, coco.XMIN, coco.YMAX, coco.XMAX):
    keys[key] = tf.VarLenFeature(tf.float32)
  parsed = tf.parse_single_example(serialized, keys)
  dense = {k: tf.sparse_tensor_to_dense(v) for k, v in parsed.items() if isinstance(v, tf.SparseTensor)}
  image = tf.image.decode_image(parsed[coco.ENCODED], channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  boxes = tf.stack([dense[coco.YMIN], dense[coco.XMIN], dense[coco.YMAX], dense[coco.XMAX]], axis=1)
  num = tf.shape(boxes)[0]

  def per_object(values, dtype):
    # Absent keys parse as empty lists: pad with zeros up to the object count (a no-op when present).
    values = tf.cast(values, dtype)
    return tf.concat([values, tf.zeros([num], dtype)], 0)[:num]

  shape = tf.shape(image)
  return {
      'image': image,
      'boxes': boxes,
      'classes': tf.cast(dense[coco.CLASS_LABEL], tf.int32),
      'is_crowd': tf.cast(per_object(dense[coco.IS_CROWD], tf.int32), tf.bool),
      'area': per_object(dense[coco.AREA], tf.float32),
      'source_id': parsed[coco.SOURCE_ID],
      'height': shape[0],
      'width': shape[1],
  }


def decode_rgb(encoded):
  """Encoded image string [] -> uint8 [H, W, 3] in [0, 255].

  JPEG with the accurate integer DCT (the fast default is off by up to ~7 levels); PNG/GIF/BMP too
  (a GIF gives its first frame).
  """
  image = tf.cond(tf.image.is_jpeg(encoded),
                  lambda: tf.image.decode_jpeg(encoded, channels=3, dct_method='INTEGER_ACCURATE'),
                  lambda: tf.image.decode_image(encoded, channels=3, expand_animations=False))
  image.set_shape([None, None, 3])
  return image


def decode_segmentation(serialized):
  """Parses one DeepLab segmentation record (ours or DeepLab's build_voc2012_data.py).

  Args:
    serialized: string scalar tensor, a serialized tf.train.Example.

  Returns:
    dict: 'image' uint8 [H, W, 3] in [0, 255]; 'label' uint8 [H, W, 1] class indices (255 ignore);
    'filename' string []; 'height', 'width' int32 [] (of the decoded image).
  """
  features = tf.parse_single_example(serialized, {
      voc.KEY_IMAGE_ENCODED: tf.FixedLenFeature([], tf.string),
      voc.KEY_IMAGE_FILENAME: tf.FixedLenFeature([], tf.string, default_value=''),
      voc.KEY_LABEL_ENCODED: tf.FixedLenFeature([], tf.string),
  })
  image = decode_rgb(features[voc.KEY_IMAGE_ENCODED])
  label = tf.image.decode_png(features[voc.KEY_LABEL_ENCODED], channels=1)
  image_size, label_size = tf.shape(image)[:2], tf.shape(label)[:2]
  check = tf.debugging.assert_equal(image_size, label_size, message='label size differs from image size',
                                    data=[features[voc.KEY_IMAGE_FILENAME], image_size, label_size])
  with tf.control_dependencies([check]):
    label = tf.identity(label)
  return {'image': image, 'label': label, 'filename': features[voc.KEY_IMAGE_FILENAME],
          'height': image_size[0], 'width': image_size[1]}


# Keys a record must hold to be read by each decoder (present and non-empty; detection's object keys may be
# empty lists, images without objects, but must be present as the OD API tools always write them).
decode_classification.required_keys = (imagenet.ENCODED_KEY, imagenet.LABEL_KEY)
decode_detection.required_keys = (coco.ENCODED, coco.YMIN)
decode_segmentation.required_keys = (voc.KEY_IMAGE_ENCODED, voc.KEY_LABEL_ENCODED)
_MAY_BE_EMPTY = (coco.YMIN,)


def _first_record(path):
  try:
    for record in tf.io.tf_record_iterator(path):
      return record
  except tf.errors.OpError as e:
    raise ValueError('%s: not a readable TFRecord file (%s)' % (path, e.message.split('\n')[0]))
  return None


def check_record_format(files, required_keys, what, max_files=8):
  """Checks that the first record of each file (up to `max_files`) holds the keys a decoder requires.

  A record of another format would otherwise stop the tf.data pipeline with TensorFlow's 'Feature: ... is
  required but could not be found', which names neither the file nor the format.

  Args:
    files: list of TFRecord paths.
    required_keys: feature keys the decoder needs (e.g. `decode_classification.required_keys`).
    what: str naming the files in messages, e.g. "data.train_files 'x/train-*'".
    max_files: int, files checked.

  Raises:
    ValueError: naming the file, the record and the missing key (and telling a SequenceExample apart).
  """
  for path in list(files)[:max_files]:
    record = _first_record(path)
    if record is None:
      continue  # an empty shard is fine
    try:
      example = tf.train.Example.FromString(record)
    except protobuf_message.DecodeError:
      raise ValueError('%s (%s): record 0 is not a tf.train.Example' % (path, what))
    features = example.features.feature
    for key in required_keys:
      feature = features.get(key) if key in features else None
      empty = feature is None or (key not in _MAY_BE_EMPTY and not (
          feature.bytes_list.value or feature.int64_list.value or feature.float_list.value))
      if not empty:
        continue
      hint = ''
      try:
        if tf.train.SequenceExample.FromString(record).feature_lists.feature_list:
          hint = '; it is a tf.train.SequenceExample (per-frame data), not a tf.train.Example'
      except protobuf_message.DecodeError:
        pass
      raise ValueError('%s (%s): record 0 has no feature %r, which this task requires (it has: %s)%s; '
                       'point the config at records of the task\'s format (README: TFRecord formats)'
                       % (path, what, key, ', '.join(sorted(features)) or 'no features', hint))
