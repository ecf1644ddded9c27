"""Throughput of the DeepLabv3-MobileNetV2 segmentation task on this machine.

Measures (1) inference images/s of the paper config (`configs/deeplabv3_mobilenet_v2_voc.yaml`) on one
513x513 image, at output stride 16 and 8: backbone + head + bilinear upsampling of the logits + argmax,
as `SegmentationTask.build_outputs` / the exported model run it, without JPEG decoding; and (2) the
training input pipeline of the task (`pipelines.inputs.segmentation_input.dataset`: decode, random scale, pad, 513 crop,
flip, batch) on a VOC devkit of VOC-sized images generated with `datasets.shapes` in a temporary folder.
Graph mode, tf.compat.v1 Session, TensorFlow's default thread settings.

Not here: accuracy, multi-scale evaluation timing, training steps, GPUs.
Run: `python bench/segmentation_bench.py [--quick] [--json out.json]`.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
from pipelines.cli import environment  # noqa: E402  pylint: disable=g-import-not-at-top

environment.configure()  # oneDNN and TensorFlow's log level, as the `mnv2` command (before TensorFlow)

from pipelines.tasks import segmentation  # noqa: E402  pylint: disable=g-import-not-at-top (after sys.path)
from pipelines import config as config_schema  # noqa: E402
from pipelines.inputs import segmentation_input  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

CONFIG = os.path.join(ROOT, 'configs', 'deeplabv3_mobilenet_v2_voc.yaml')
VOC_IMAGE_SIZE = (375, 500)  # the most common PASCAL VOC image size (height, width)


def _config(overrides):
  return config_schema.load(CONFIG, list(overrides))


def inference_rate(output_stride, size, iterations, warmup):
  """Median images/s of one [1, size, size, 3] image through the model to the int32 mask."""
  config = _config(['segmentation.output_stride=%d' % output_stride])
  with tf.Graph().as_default():
    image = tf.constant(np.random.RandomState(0).uniform(-1, 1, [1, size, size, 3]).astype(np.float32))
    outputs = segmentation.SegmentationTask(config).build_outputs({'image': image}, is_training=False)
    mask = tf.argmax(outputs[segmentation.LOGITS], 3, output_type=tf.int32)
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      for _ in range(warmup):
        sess.run(mask)
      times = []
      for _ in range(iterations):
        start = time.time()
        sess.run(mask)
        times.append(time.time() - start)
  return 1.0 / statistics.median(times)


def make_dataset(directory, num_images):
  """Writes a shapes VOC devkit of VOC-sized images and converts it; returns the records' directory."""
  from datasets import shapes  # pylint: disable=g-import-not-at-top
  from datasets import voc  # pylint: disable=g-import-not-at-top
  paths = shapes.generate(os.path.join(directory, 'raw'), formats=('voc',), image_size=VOC_IMAGE_SIZE,
                          counts={'voc': {'train': num_images, 'val': 0}})['voc']
  records = os.path.join(directory, 'records')
  voc.convert(paths['devkit_dir'], records, 'train', num_shards=2, num_workers=1, num_classes=5,
              class_names=['background'] + list(shapes.CLASSES))
  return records


def pipeline_rate(records, batch_size, num_batches, warmup):
  """Images/s of the training input pipeline (decode + DeepLab augmentation + batching) after `warmup` batches."""
  config = _config(['data.train_files=%s' % os.path.join(records, 'train-*'), 'data.shuffle_buffer=64',
                    'train.batch_size=%d' % batch_size])
  with tf.Graph().as_default():
    dataset = segmentation_input.dataset(config, tf.estimator.ModeKeys.TRAIN)
    features, labels = tf.data.make_one_shot_iterator(dataset).get_next()
    fetch = [features['image'], labels]
    with tf.Session() as sess:
      for _ in range(warmup):
        sess.run(fetch)
      start = time.time()
      for _ in range(num_batches):
        sess.run(fetch)
      elapsed = time.time() - start
  return num_batches * batch_size / elapsed


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='few iterations (a smoke run, noisy numbers)')
  parser.add_argument('--size', type=int, default=513, help='inference image side (default 513)')
  parser.add_argument('--output-strides', default='16,8', help='comma-separated (default 16,8)')
  parser.add_argument('--json', help='also write the results to this JSON file')
  args = parser.parse_args(argv)
  tf.logging.set_verbosity(tf.logging.ERROR)
  warnings.filterwarnings('ignore', category=UserWarning)  # tf-slim's `layer.apply` deprecation notice
  iterations, warmup = (3, 1) if args.quick else (20, 3)
  num_images, batch_size, num_batches = (8, 4, 4) if args.quick else (64, 8, 20)
  results = {'tensorflow': tf.__version__, 'python': platform.python_version(), 'cpus': os.cpu_count(),
             'quick': args.quick, 'inference_images_per_s': {}}
  for output_stride in [int(s) for s in args.output_strides.split(',')]:
    rate = inference_rate(output_stride, args.size, iterations, warmup)
    results['inference_images_per_s']['os%d' % output_stride] = rate
    print('inference %dx%d OS%d batch 1: %.2f images/s' % (args.size, args.size, output_stride, rate))
  directory = tempfile.mkdtemp(prefix='segmentation_bench_')
  try:
    records = make_dataset(directory, num_images)
    rate = pipeline_rate(records, batch_size, num_batches, warmup)
  finally:
    shutil.rmtree(directory, ignore_errors=True)
  results['pipeline_images_per_s'] = rate
  print('training input pipeline (%dx%d images -> 513 crops, batch %d): %.1f images/s' % (
      VOC_IMAGE_SIZE[0], VOC_IMAGE_SIZE[1], batch_size, rate))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=2, sort_keys=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
