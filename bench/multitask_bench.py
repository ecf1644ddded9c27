"""Latency of the one-pass multi-task model against the three single-task models run one after another.

Builds, with random weights and in inference mode, the multitask model of `pipelines.multitask` (one
MobileNetV2 backbone, the classifier, SSDLite and DeepLab heads: `build_outputs` on one image batch) and
the three single-task models each task's own config builds, all at the same square input (default 320,
the SSDLite size), in separate graphs and sessions of this process. It times batch-1 inference of the
network outputs (no decoding, NMS or mask resizing, which are the same in both setups) and prints the
median milliseconds per image and the ratio combined / (sum of the three). Target: <= 0.5.

Not here: TFLite latency (`mnv2 export --format tflite`), accuracy, training cost.
Run: `python bench/multitask_bench.py [--quick] [--image-size 320] [--depth-multiplier 1.0] [--json out.json]`.
"""
import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from pipelines import config as config_schema  # noqa: E402  pylint: disable=g-import-not-at-top (after sys.path)
from pipelines import profile_models  # noqa: E402
from pipelines import runner  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402


def _latency_ms(config, size, runs, warmup):
  """Median ms of one batch-1 forward pass of `config`'s model (its outputs, flattened)."""
  with tf.Graph().as_default() as graph:
    images = tf.placeholder(tf.float32, [1, size, size, 3])
    outputs = runner.make_task(config).build_outputs({'image': images}, False)
    fetches = tf.nest.flatten(outputs)
    with tf.Session(graph=graph) as sess:
      sess.run(tf.global_variables_initializer())
      feed = {images: np.random.RandomState(0).uniform(-1, 1, [1, size, size, 3])}
      for _ in range(warmup):
        sess.run(fetches, feed)
      times = []
      for _ in range(runs):
        start = time.perf_counter()
        sess.run(fetches, feed)
        times.append((time.perf_counter() - start) * 1000.0)
  return statistics.median(times)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--image-size', type=int, default=320)
  parser.add_argument('--depth-multiplier', type=float, default=1.0)
  parser.add_argument('--quick', action='store_true', help='fewer runs (a smoke test, not a figure)')
  parser.add_argument('--json', help='also write the results here')
  args = parser.parse_args(argv)
  runs, warmup = (5, 2) if args.quick else (30, 5)
  config = profile_models.multitask_config(args.depth_multiplier, args.image_size)
  results = {'separate_ms': {}}
  for name in config.multitask.members():
    results['separate_ms'][name] = _latency_ms(config_schema.member_config(config, name), args.image_size, runs,
                                               warmup)
  results['multitask_ms'] = _latency_ms(config, args.image_size, runs, warmup)
  total = sum(results['separate_ms'].values())
  results['ratio'] = results['multitask_ms'] / total
  print('TensorFlow %s, %dx%d, depth multiplier %.2f, batch 1, median of %d runs, load %s' % (
      tf.__version__, args.image_size, args.image_size, args.depth_multiplier, runs, os.getloadavg()))
  for name, ms in results['separate_ms'].items():
    print('  %-16s %8.1f ms' % (name, ms))
  print('  %-16s %8.1f ms' % ('three, in turn', total))
  print('  %-16s %8.1f ms' % ('multitask', results['multitask_ms']))
  print('multitask / three separate models: %.2fx (target <= 0.5)' % results['ratio'])
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
