"""Latency of the one-pass multi-task model against the three single-task models run one after another.

Builds, with random weights and in inference mode, the multitask model of `pipelines.multitask` (one
MobileNetV2 backbone, the classifier, SSDLite and DeepLab heads: `build_outputs` on one image batch) and
the three single-task models each task's own config builds, all at the same square input (default 320,
the SSDLite size), in separate graphs and sessions of this process, taking turns run by run. It times batch-1 inference of the
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


class _Model(object):
  """`config`'s model in its own graph and session, random weights, fed one fixed image."""

  def __init__(self, config, size):
    self.graph = tf.Graph()
    with self.graph.as_default():
      images = tf.placeholder(tf.float32, [1, size, size, 3])
      self.fetches = tf.nest.flatten(runner.make_task(config).build_outputs({'image': images}, False))
      self.session = tf.Session(graph=self.graph)
      self.session.run(tf.global_variables_initializer())
    self.feed = {images: np.random.RandomState(0).uniform(-1, 1, [1, size, size, 3])}

  def run_ms(self):
    start = time.perf_counter()
    self.session.run(self.fetches, self.feed)
    return (time.perf_counter() - start) * 1000.0


def _latencies_ms(models, runs, warmup):
  """Median ms per model; the models take turns run by run, so a change of machine load hits all alike."""
  for _ in range(warmup):
    for model in models.values():
      model.run_ms()
  times = dict((name, []) for name in models)
  for _ in range(runs):
    for name, model in models.items():
      times[name].append(model.run_ms())
  return dict((name, statistics.median(values)) for name, values in times.items())


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--image-size', type=int, default=320)
  parser.add_argument('--depth-multiplier', type=float, default=1.0)
  parser.add_argument('--quick', action='store_true', help='fewer runs (a smoke test, not a figure)')
  parser.add_argument('--json', help='also write the results here')
  args = parser.parse_args(argv)
  runs, warmup = (5, 2) if args.quick else (30, 5)
  config = profile_models.multitask_config(args.depth_multiplier, args.image_size)
  models = dict((name, _Model(config_schema.member_config(config, name), args.image_size))
                for name in config.multitask.members())
  models['multitask'] = _Model(config, args.image_size)
  latencies = _latencies_ms(models, runs, warmup)
  results = {'multitask_ms': latencies.pop('multitask'), 'separate_ms': latencies}
  total = sum(results['separate_ms'].values())
  results['ratio'] = results['multitask_ms'] / total
  print("TensorFlow %s, %dx%d, depth multiplier %.2f, batch 1, median of %d runs (models taking turns), load %s" % (
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
