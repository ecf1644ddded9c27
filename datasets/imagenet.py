"""ImageNet in TF-Slim's TFRecord format: converter (+ CLI), decoder, MobileNetV2 preprocessing, dataset.

Records carry TF-Slim's feature keys (the `*_KEY` constants), so shards written here and shards from
TF-Slim's `build_imagenet_data.py` are interchangeable. Labels are 1..K with 0 reserved for background
(TF-Slim's 1001-way classifiers), and `labels.txt` maps them to human-readable names.

Input layouts: one folder per synset (`<input_dir>/n01440764/*.JPEG`), or the official flat validation
folder plus a ground-truth file (one synset per line, images in sorted filename order).

Not here: bounding-box annotations (the records carry none; training crops use the whole image, as
MobileNetV2 did), colour distortion by default, and model code.
"""
import io
import os
import sys

import tensorflow.compat.v1 as tf

from datasets import shard_writer
from datasets import tfrecord

ENCODED_KEY = 'image/encoded'
FORMAT_KEY = 'image/format'
LABEL_KEY = 'image/class/label'
SYNSET_KEY = 'image/class/synset'
TEXT_KEY = 'image/class/text'
HEIGHT_KEY = 'image/height'
WIDTH_KEY = 'image/width'
CHANNELS_KEY = 'image/channels'
COLORSPACE_KEY = 'image/colorspace'
FILENAME_KEY = 'image/filename'

IMAGE_EXTENSIONS = ('.jpeg', '.jpg', '.png')
LABELS_FILENAME = 'labels.txt'
BACKGROUND = 'background'


# ---------------------------------------------------------------------------------------------- converter


def read_synset_texts(path):
  """`synset_words.txt` / `imagenet_metadata.txt` -> (dict synset -> text, synsets in file order).

  Raises:
    ValueError: naming the file and line, for a line without a synset or a repeated synset.
  """
  texts, order = {}, []
  with io.open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      parts = line.strip().split(None, 1)
      if not parts:
        continue
      synset = parts[0]
      if synset in texts:
        raise ValueError('%s:%d: synset %s listed twice' % (path, number, synset))
      texts[synset] = parts[1].strip() if len(parts) > 1 else synset
      order.append(synset)
  if not order:
    raise ValueError('labels file %s lists no synsets' % path)
  return texts, order


def _images_in(directory):
  names = [n for n in os.listdir(directory) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
  return [os.path.join(directory, n) for n in sorted(names)
          if os.path.isfile(os.path.join(directory, n))]


def _text_of(synset, texts, labels_file):
  if texts is None:
    return synset
  if synset not in texts:
    raise ValueError('synset %s is missing from labels file %s' % (synset, labels_file))
  return texts[synset]


def _folder_items(input_dir, texts, labels_file):
  """Standard layout: sorted synset folders -> labels 1..K; returns (items, {label: text})."""
  synsets = sorted(n for n in os.listdir(input_dir)
                   if not n.startswith('.') and os.path.isdir(os.path.join(input_dir, n)))
  items, names = [], {}
  for label, synset in enumerate(synsets, 1):
    names[label] = text = _text_of(synset, texts, labels_file)
    items.extend((path, label, synset, text) for path in _images_in(os.path.join(input_dir, synset)))
  if not items:
    raise ValueError('No images (%s) in synset folders under %s; for the flat validation layout pass a '
                     'ground-truth file' % ('/'.join(IMAGE_EXTENSIONS), input_dir))
  return items, names


def _flat_items(input_dir, ground_truth_file, texts, order, labels_file):
  """Flat layout: image i (sorted by name) has the synset on line i of the ground-truth file."""
  paths = _images_in(input_dir)
  if not paths:
    raise ValueError('No images (%s) directly in %s' % ('/'.join(IMAGE_EXTENSIONS), input_dir))
  with io.open(ground_truth_file, encoding='utf-8') as f:
    truth = [line.strip() for line in f if line.strip()]
  if len(truth) != len(paths):
    raise ValueError('Ground-truth file %s has %d synsets but %s has %d images; they must match one to one '
                     '(images in sorted filename order)' % (ground_truth_file, len(truth), input_dir,
                                                            len(paths)))
  synsets = order if order is not None else sorted(set(truth))
  labels = dict((synset, label) for label, synset in enumerate(synsets, 1))
  for synset in truth:
    if synset not in labels:
      raise ValueError('synset %s of %s is missing from labels file %s' % (synset, ground_truth_file,
                                                                           labels_file))
  names = dict((label, _text_of(synset, texts, labels_file)) for synset, label in labels.items())
  items = [(path, labels[s], s, names[labels[s]]) for path, s in zip(paths, truth)]
  return items, names


def encode_example(item):
  """(path, label, synset, text) -> [serialized tf.train.Example]; module-level so workers can pickle it.

  Raises:
    tfrecord.ConversionError: naming the path, if the file cannot be read or decoded.
  """
  path, label, synset, text = item
  jpeg, height, width = tfrecord.read_rgb_jpeg(path)
  feature = {
      ENCODED_KEY: tfrecord.bytes_feature(jpeg),
      FORMAT_KEY: tfrecord.bytes_feature('JPEG'),
      LABEL_KEY: tfrecord.int64_feature(label),
      SYNSET_KEY: tfrecord.bytes_feature(synset),
      TEXT_KEY: tfrecord.bytes_feature(text),
      HEIGHT_KEY: tfrecord.int64_feature(height),
      WIDTH_KEY: tfrecord.int64_feature(width),
      CHANNELS_KEY: tfrecord.int64_feature(3),
      COLORSPACE_KEY: tfrecord.bytes_feature('RGB'),
      FILENAME_KEY: tfrecord.bytes_feature(os.path.basename(path)),
  }
  return [tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()]


def _write_labels(names, output_dir):
  """Writes labels.txt; refuses to change one that another split wrote with different classes."""
  labels = dict(names)
  labels[0] = BACKGROUND
  path = os.path.join(output_dir, LABELS_FILENAME)
  if os.path.exists(path) and tfrecord.read_label_file(path) != labels:
    raise ValueError('%s already exists with different classes: the splits would disagree on label '
                     'numbers. Pass a labels file listing the training classes, use another output '
                     'directory, or delete it if the change is intended.' % path)
  tfrecord.write_label_file(labels, path)
  return path


def convert(input_dir, output_dir, split, labels_file=None, ground_truth_file=None, num_shards=4,
            num_workers=None, on_error='skip'):
  """Converts an ImageNet folder to `<output_dir>/<split>-%05d-of-%05d` shards plus `labels.txt`.

  Args:
    input_dir: str, synset folders, or (with ground_truth_file) a flat folder of images.
    output_dir: str, local output directory.
    split: str, shard name prefix ('train', 'validation').
    labels_file: str or None, `synset<whitespace>text` lines. Gives the human-readable names; in the flat
      layout its order also gives the labels, so list exactly the training classes (e.g. the 1000-line
      `synset_words.txt`), else labels would differ from the training split's.
    ground_truth_file: str or None, one synset per line for the flat layout.
    num_shards, num_workers, on_error: see `shard_writer.write_sharded`.

  Returns:
    `shard_writer.write_sharded`'s stats plus 'num_classes' and 'labels_path'.

  Raises:
    ValueError: naming the folder or file, for an empty/missing input_dir or inconsistent label files.
    tfrecord.ConversionError: on_error='fail' and an image could not be converted.
  """
  if not os.path.isdir(input_dir):
    raise ValueError('Input folder %s does not exist' % input_dir)
  texts, order = read_synset_texts(labels_file) if labels_file else (None, None)
  if ground_truth_file:
    items, names = _flat_items(input_dir, ground_truth_file, texts, order, labels_file)
  else:
    items, names = _folder_items(input_dir, texts, labels_file)
  if not os.path.isdir(output_dir):
    os.makedirs(output_dir)
  labels_path = _write_labels(names, output_dir)
  stats = shard_writer.write_sharded(items, encode_example, output_dir, split, num_shards,
                                     num_workers=num_workers, on_error=on_error, desc='imagenet %s' % split)
  stats.update(num_classes=len(names), labels_path=labels_path)
  return stats


def add_arguments(parser):
  """Flags of `mnv2 convert imagenet`."""
  parser.add_argument('--input-dir', required=True, help='synset folders, or flat images with '
                      '--ground-truth-file')
  parser.add_argument('--output-dir', required=True, help='where shards and labels.txt are written')
  parser.add_argument('--split', required=True, help="shard name prefix, e.g. 'train' or 'validation'")
  parser.add_argument('--labels-file', help='synset -> human-readable text (synset_words.txt)')
  parser.add_argument('--ground-truth-file', help='one synset per line for a flat validation folder')
  parser.add_argument('--num-shards', type=int, default=4, help='number of output files (default 4)')
  parser.add_argument('--num-workers', type=int, help='worker processes (default: min(shards, cores))')
  parser.add_argument('--on-error', choices=('skip', 'fail'), default='skip',
                      help='skip (report and continue) or fail at the first unreadable image')


def run(args):
  """Runs the conversion; prints a summary. Returns 0, or 1 on bad input / a failed conversion."""
  try:
    stats = convert(args.input_dir, args.output_dir, args.split, args.labels_file, args.ground_truth_file,
                    args.num_shards, args.num_workers, args.on_error)
  except (ValueError, tfrecord.ConversionError) as e:
    print('error: %s' % e, file=sys.stderr)
    return 1
  print('%s: %d images written, %d skipped (%d errors), %d complete shards kept; %d classes, labels in %s'
        % (args.split, stats['written'], stats['skipped'], len(stats['errors']), stats['shards_skipped'],
           stats['num_classes'], stats['labels_path']))
  return 0


# ------------------------------------------------------------------------------------------------ reading


def decode(serialized):
  """Parses one record (ours or TF-Slim's; text and filename may be missing).

  Args:
    serialized: string scalar tensor, a serialized tf.train.Example.

  Returns:
    dict with image (uint8 [H, W, 3], 0..255), label (int32 [], 0..K), text (string [], the class
    name; the synset when the record has no text) and filename (string [], '' when absent).
  """
  spec = {
      ENCODED_KEY: tf.FixedLenFeature([], tf.string),
      LABEL_KEY: tf.FixedLenFeature([], tf.int64),
      SYNSET_KEY: tf.FixedLenFeature([], tf.string, default_value=''),
      TEXT_KEY: tf.FixedLenFeature([], tf.string, default_value=''),
      FILENAME_KEY: tf.FixedLenFeature([], tf.string, default_value=''),
  }
  parsed = tf.parse_single_example(serialized, spec)
  image = tf.image.decode_jpeg(parsed[ENCODED_KEY], channels=3)
  image.set_shape([None, None, 3])
  text = tf.where(tf.equal(parsed[TEXT_KEY], ''), parsed[SYNSET_KEY], parsed[TEXT_KEY])
  return {'image': image, 'label': tf.cast(parsed[LABEL_KEY], tf.int32), 'text': text,
          'filename': parsed[FILENAME_KEY]}


def _resize_to_unit_range(image, image_size):
  """Bilinear resize (TF-Slim's `resize_images`: no corner alignment) then 0..255 -> [-1, 1]."""
  resized = tf.image.resize_bilinear(tf.expand_dims(image, 0), [image_size, image_size], align_corners=False)
  resized = tf.squeeze(resized, [0])
  resized.set_shape([image_size, image_size, 3])
  return resized * (2.0 / 255.0) - 1.0


def _distort_color(image):
  """TF-Slim's fast colour distortion on [0, 1] floats: brightness, saturation, hue, contrast."""
  image = tf.image.random_brightness(image, max_delta=32.0 / 255.0)
  image = tf.image.random_saturation(image, lower=0.5, upper=1.5)
  image = tf.image.random_hue(image, max_delta=0.2)
  image = tf.image.random_contrast(image, lower=0.5, upper=1.5)
  return tf.clip_by_value(image, 0.0, 1.0)


def preprocess_for_train(image, image_size, area_range=(0.08, 1.0), aspect_ratio_range=(0.75, 1.33),
                         seed=None, distort_color=False):
  """Inception-style random crop, resize and flip (the MobileNetV2 ImageNet recipe).

  Args:
    image: uint8 [H, W, 3] tensor, 0..255.
    image_size: int, output side S.
    area_range: (min, max) fraction of the image area the crop covers.
    aspect_ratio_range: (min, max) width / height of the crop.
    seed: int or None, op seed of the crop and flip.
    distort_color: bool, add TF-Slim's colour distortion (off in the MobileNet recipe).

  Returns:
    float32 [S, S, 3] tensor in [-1, 1].
  """
  whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4])
  begin, size, _ = tf.image.sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=whole_image, seed=seed, min_object_covered=0.1,
      aspect_ratio_range=aspect_ratio_range, area_range=area_range, max_attempts=100,
      use_image_if_no_bounding_boxes=True)
  # Crop the uint8 image before any float work: the crop is usually much smaller than the image.
  image = _resize_to_unit_range(tf.slice(image, begin, size), image_size)
  image = tf.image.random_flip_left_right(image, seed=seed)
  if distort_color:
    image = _distort_color((image + 1.0) * 0.5) * 2.0 - 1.0
  return image


def preprocess_for_eval(image, image_size, central_fraction=0.875):
  """Central crop (87.5% of each side, as TF-Slim evaluates) then bilinear resize.

  Args:
    image: uint8 [H, W, 3] tensor, 0..255.
    image_size: int, output side S.
    central_fraction: float in (0, 1], kept fraction of each side; 1 keeps the whole image.

  Returns:
    float32 [S, S, 3] tensor in [-1, 1].
  """
  if central_fraction < 1.0:
    image = tf.image.central_crop(image, central_fraction)
  return _resize_to_unit_range(image, image_size)


def dataset(file_pattern, is_training, batch_size, image_size, shuffle_buffer=1024, num_parallel_reads=8,
            num_parallel_calls=None, prefetch=2, seed=None, area_range=(0.08, 1.0)):
  """The ImageNet input pipeline for tf.estimator (see `tfrecord.read_dataset` for the tuning).

  Training repeats forever with full batches (static batch size). Evaluation reads every record once
  and keeps the last, partial batch, so its batch dimension is None: no image is left out of the metrics.

  `area_range` is the training crop's area range (Inception-style, the paper's 0.08-1 by default).

  Returns:
    tf.data.Dataset of (features, labels): features = {'image': float32 [B, S, S, 3] in [-1, 1]},
    labels = int32 [B] in 0..K.
  """
  def map_fn(decoded):
    if is_training:
      image = preprocess_for_train(decoded['image'], image_size, area_range=area_range, seed=seed)
    else:
      image = preprocess_for_eval(decoded['image'], image_size)
    return {'image': image}, decoded['label']

  return tfrecord.read_dataset(
      file_pattern, decode, map_fn, batch_size, is_training, shuffle_buffer=shuffle_buffer,
      num_parallel_reads=num_parallel_reads, num_parallel_calls=num_parallel_calls, prefetch=prefetch,
      seed=seed, drop_remainder=is_training)
