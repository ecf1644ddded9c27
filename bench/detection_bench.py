"""Throughput of the SSDLite-MobileNetV2 detector at 320x320, next to our classifier at the same resolution.

Prints, from one run on this machine: detector inference images/s per batch size (network alone, and network +
box decoding + NMS as exported), NMS (decode + per-class NMS) milliseconds per image, the training input
pipeline (`pipelines.inputs.detection_input.dataset`: decode, SSD random crop, flip, resize, target assignment) images/s on a
converted shapes dataset, and our MobileNetV2 classifier's inference images/s at 320x320 with the ratio
detector / classifier. The detector is built by `pipelines.tasks.detection.DetectionTask` from
`configs/ssdlite_mobilenet_v2_coco.yaml` (90 classes), with random weights and fixed random inputs held in a
local variable (no feeding in the timed steps). Figures are from the median step.

Not here: accuracy, GPUs, memory, the Keras comparison (see classification_bench.py).
Run: `python bench/detection_bench.py [--quick]`.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
from pipelines.cli import environment  # noqa: E402  pylint: disable=g-import-not-at-top

environment.configure()  # oneDNN and TensorFlow's log level, as the `mnv2` command (before TensorFlow)

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
import tf_slim as slim  # noqa: E402

from pipelines.tasks import detection  # noqa: E402
from datasets import coco  # noqa: E402
from datasets import shapes  # noqa: E402
from heads import ssdlite  # noqa: E402
from nets import mobilenet_v2  # noqa: E402
from pipelines import config as schema  # noqa: E402
from pipelines.inputs import detection_input  # noqa: E402

CONFIG = os.path.join(ROOT, 'configs', 'ssdlite_mobilenet_v2_coco.yaml')


def _fixed(shape, seed, mean=0.0, scale=1.0):
  """A local variable holding fixed random data; returns (tensor, init op, feed dict)."""
  data = (np.random.RandomState(seed).standard_normal(shape) * scale + mean).astype(np.float32)
  source = tf.placeholder(tf.float32, data.shape)
  var = tf.Variable(source, trainable=False, collections=[tf.GraphKeys.LOCAL_VARIABLES])
  return var.read_value(), (var.initializer, {source: data})


def _time(sess, fetch, iterations, warmup):
  """Median seconds of one `sess.run(fetch)` over `iterations` timed runs after `warmup` untimed ones."""
  for _ in range(warmup):
    sess.run(fetch)
  times = []
  for _ in range(iterations):
    start = time.time()
    sess.run(fetch)
    times.append(time.time() - start)
  return statistics.median(times)


def _numeric(tensors):
  """The numeric tensors of a dict, fetched as values: Grappler prunes ops only reached through a tf.group."""
  return [t for _, t in sorted(tensors.items()) if t.dtype != tf.string]


def _session(init):
  sess = tf.Session()
  sess.run(tf.global_variables_initializer())
  sess.run(init[0], init[1])
  return sess


def detector_inference(config, batch, args):
  """(network img/s, network+NMS img/s) of the detector on a fixed random batch."""
  size = config.detection.image_size
  with tf.Graph().as_default():
    task = detection.DetectionTask(config)
    images, init = _fixed([batch, size, size, 3], batch)
    outputs = task.build_outputs({'image': tf.clip_by_value(images * 0.5, -1.0, 1.0)}, is_training=False)
    heights = tf.fill([batch], size)
    predictions = task.postprocess(outputs, heights, heights)
    with _session(init) as sess:
      net = _time(sess, _numeric(outputs), args.iterations, args.warmup)
      full = _time(sess, _numeric(predictions), args.iterations, args.warmup)
  return batch / net, batch / full


def nms_ms_per_image(config, batch, args):
  """Milliseconds per image of box decoding + score conversion + batched per-class NMS alone."""
  num_anchors = len(detection.ssd_anchors(config))
  with tf.Graph().as_default():
    task = detection.DetectionTask(config)
    # Background-dominated logits (sigmoid ~0.02), as a trained model gives: all pass the 1e-8 threshold.
    codes, init_codes = _fixed([batch, num_anchors, 4], 1, scale=0.5)
    logits, init_logits = _fixed([batch, num_anchors, config.detection.num_classes + 1], 2, mean=-4.0)
    outputs = {ssdlite.BOX_ENCODINGS: codes, ssdlite.CLASS_PREDICTIONS_WITH_BACKGROUND: logits}
    size = tf.fill([batch], config.detection.image_size)
    predictions = task.postprocess(outputs, size, size)
    with tf.Session() as sess:
      sess.run(init_codes[0], init_codes[1])
      sess.run(init_logits[0], init_logits[1])
      seconds = _time(sess, _numeric(predictions), args.iterations, args.warmup)
  return 1000.0 * seconds / batch


def classifier_inference(image_size, batch, args):
  """img/s of MobileNetV2 1.0 (1001 classes) inference at image_size."""
  with tf.Graph().as_default():
    images, init = _fixed([batch, image_size, image_size, 3], batch)
    with slim.arg_scope(mobilenet_v2.training_scope(is_training=False)):
      logits, _ = mobilenet_v2.mobilenet(tf.clip_by_value(images * 0.5, -1.0, 1.0), num_classes=1001)
    with _session(init) as sess:
      return batch / _time(sess, logits, args.iterations, args.warmup)


def input_pipeline(config, workdir, args):
  """Training input pipeline images/s (SSD augmentation + target assignment) on converted shapes data."""
  paths = shapes.generate(os.path.join(workdir, 'raw'), seed=0, image_size=args.pipeline_image_size,
                          counts={'coco': {'train': args.pipeline_images, 'val': 0}}, formats=('coco',))['coco']
  records = os.path.join(workdir, 'records')
  coco.convert(paths['train_images'], paths['train_annotations'], records, 'train', num_shards=2, num_workers=1)
  config = schema.load(CONFIG, ['data.train_files=%s/train-*' % records, 'detection.num_classes=%d' % max(
      shapes.COCO_CATEGORY_IDS), 'detection.image_size=%d' % config.detection.image_size, 'data.labels_file=null'])
  with tf.Graph().as_default():
    anchors = detection.ssd_anchors(config)
    data = detection_input.dataset(config, tf.estimator.ModeKeys.TRAIN, anchors, args.pipeline_batch)
    batch = tf.data.make_one_shot_iterator(data).get_next()
    fetch = _numeric(dict(enumerate(tf.nest.flatten(batch))))
    with tf.Session() as sess:
      # More warm-up than the models: the prefetched batches would otherwise be counted as free.
      for _ in range(args.warmup + config.data.prefetch + 1):
        sess.run(fetch)
      start = time.time()
      for _ in range(args.pipeline_steps):
        sess.run(fetch)
      seconds = time.time() - start
  return args.pipeline_steps * args.pipeline_batch / seconds


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='few iterations and a small dataset (a smoke run)')
  parser.add_argument('--iterations', type=int, default=20, help='timed steps per figure (default 20)')
  parser.add_argument('--warmup', type=int, default=3, help='untimed steps first (default 3)')
  parser.add_argument('--batch-sizes', default='1,8', help='inference batch sizes (default 1,8)')
  parser.add_argument('--image-size', type=int, default=320, help='detector and classifier input (default 320)')
  parser.add_argument('--pipeline-images', type=int, default=200, help='shapes images converted (default 200)')
  parser.add_argument('--pipeline-image-size', type=int, default=256, help='their size (default 256)')
  parser.add_argument('--pipeline-batch', type=int, default=24, help='pipeline batch size (default 24)')
  parser.add_argument('--pipeline-steps', type=int, default=20, help='timed pipeline batches (default 20)')
  parser.add_argument('--json', help='also write the results to this JSON file')
  args = parser.parse_args(argv)
  if args.quick:
    args.iterations, args.warmup = min(args.iterations, 3), min(args.warmup, 1)
    args.pipeline_images, args.pipeline_batch, args.pipeline_steps = 32, 8, 10
  return args


def main(argv=None):
  args = parse_args(argv)
  config = schema.load(CONFIG, ['detection.image_size=%d' % args.image_size, 'data.labels_file=null'])
  batches = [int(b) for b in args.batch_sizes.split(',') if b.strip()]
  print('SSDLite-MobileNetV2 %dx%d, %d classes; TF %s; load average %s' % (
      args.image_size, args.image_size, config.detection.num_classes, tf.__version__, os.getloadavg()))
  results = {'image_size': args.image_size, 'tf': tf.__version__}
  for batch in batches:
    net, full = detector_inference(config, batch, args)
    classifier = classifier_inference(args.image_size, batch, args)
    results['batch_%d' % batch] = {'detector_net': net, 'detector_with_nms': full, 'classifier': classifier}
    print('batch %-3d detector %7.1f img/s (network %7.1f) | classifier %7.1f img/s | detector/classifier %.2f'
          % (batch, full, net, classifier, full / classifier))
  results['nms_ms_per_image'] = nms_ms_per_image(config, max(batches), args)
  print('NMS (decode + sigmoid + per-class NMS, %d anchors x %d classes): %.1f ms/image' % (
      len(detection.ssd_anchors(config)), config.detection.num_classes, results['nms_ms_per_image']))
  workdir = tempfile.mkdtemp(prefix='detection_bench_')
  try:
    results['pipeline_img_s'] = input_pipeline(config, workdir, args)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  print('input pipeline (SSD crop + flip + resize + targets, batch %d, %d shapes images of %dpx): %.1f img/s'
        % (args.pipeline_batch, args.pipeline_images, args.pipeline_image_size, results['pipeline_img_s']))
  print('load average at end %s' % (os.getloadavg(),))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=2, sort_keys=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
