"""ImageNet in TF-Slim's TFRecord format: the converter (+ the `mnv2 convert imagenet` CLI) and its feature keys.

Records carry TF-Slim's feature keys (the `*_KEY` constants), so shards written here and shards from
TF-Slim's `build_imagenet_data.py` are interchangeable. Labels are 1..K with 0 reserved for background
(TF-Slim's 1001-way classifiers), and `labels.txt` maps them to human-readable names.

Input layouts: one folder per synset (`<input_dir>/n01440764/*.JPEG`), or the official flat validation
folder plus a ground-truth file (one synset per line, images in sorted filename order).

Not here: reading records back (`datasets.decoders.decode_classification`), preprocessing
(`datasets.classification_preprocessing`), the input pipeline (`pipelines.inputs.classification_input`),
bounding-box annotations (the records carry none; training crops use the whole image, as MobileNetV2 did)
and model code.
"""
import os

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


def read_synset_texts(path):
  """`synset_words.txt` / `imagenet_metadata.txt` -> (dict synset -> text, synsets in file order).

  Raises:
    ValueError: naming the file and line, for a line without a synset or a repeated synset.
  """
  texts, order = {}, []
  with tf.io.gfile.GFile(path, 'rb') as f:
    lines = f.read().decode('utf-8').splitlines()
  if True:  # pylint: disable=using-constant-test  (keeps the loop's indentation)
    for number, line in enumerate(lines, 1):
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
  names = [n for n in tf.io.gfile.listdir(directory) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
  return [os.path.join(directory, n) for n in sorted(names)
          if not tf.io.gfile.isdir(os.path.join(directory, n))]


def _text_of(synset, texts, labels_file):
  if texts is None:
    return synset
  if synset not in texts:
    raise ValueError('synset %s is missing from labels file %s' % (synset, labels_file))
  return texts[synset]


def _folder_items(input_dir, texts, labels_file):
  """Standard layout: sorted synset folders -> labels 1..K; returns (items, {label: text})."""
  synsets = sorted(n.rstrip('/') for n in tf.io.gfile.listdir(input_dir)
                   if not n.startswith('.') and tf.io.gfile.isdir(os.path.join(input_dir, n)))
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
  with tf.io.gfile.GFile(ground_truth_file, 'rb') as f:
    truth = [line.strip() for line in f.read().decode('utf-8').splitlines() if line.strip()]
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
  return [tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)]


def _write_labels(names, output_dir):
  """Writes labels.txt; refuses to change one that another split wrote with different classes."""
  labels = dict(names)
  labels[0] = BACKGROUND
  path = os.path.join(output_dir, LABELS_FILENAME)
  if tf.io.gfile.exists(path) and tfrecord.read_label_file(path) != labels:
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
  if not tf.io.gfile.isdir(input_dir):
    raise ValueError('Input folder %s does not exist' % input_dir)
  texts, order = read_synset_texts(labels_file) if labels_file else (None, None)
  if ground_truth_file:
    items, names = _flat_items(input_dir, ground_truth_file, texts, order, labels_file)
  else:
    items, names = _folder_items(input_dir, texts, labels_file)
  shard_writer.make_output_dir(output_dir)
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
  """Runs the conversion; prints a summary. Returns 0, or 2 (one `error:` line) on bad input / a failed conversion."""
  try:
    stats = convert(args.input_dir, args.output_dir, args.split, args.labels_file, args.ground_truth_file,
                    args.num_shards, args.num_workers, args.on_error)
  except shard_writer.USER_ERRORS as e:
    return shard_writer.report_error(e)
  print('%s: %d images written, %d skipped (%d errors), %d complete shards kept; %d classes, labels in %s'
        % (args.split, stats['written'], stats['skipped'], len(stats['errors']), stats['shards_skipped'],
           stats['num_classes'], stats['labels_path']))
  return 0
