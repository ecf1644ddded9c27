"""Latency of the one-pass multi-task model against the three single-task models run one after another.

Builds, with random weights and in inference mode, the multitask model of `pipelines.tasks.multitask` (one
MobileNetV2 backbone, the classifier, SSDLite and DeepLab heads: `build_outputs` on one image batch) and
the three single-task models each task's own config builds, all at the same square input (default 320,
the SSDLite size), in separate graphs and sessions of this process, taking turns run by run. It times batch-1 inference of the
network outputs (no decoding, NMS or mask resizing, which are the same in both setups) and prints the
median milliseconds per image and the ratio combined / (sum of the three). Target: <= 0.5.

With --tflite it times the float32 TFLite models instead, as `mnv2 export --format tflite` makes them from a
random-weight checkpoint of each graph (batch norm folded, detection ending in TFLite_Detection_PostProcess,
which both setups run), 2 interpreter threads where the stack allows it. The models take turns in blocks
of calls (each interpreter owns a thread pool, and switching interpreters on every call times the pools'
hand-over). With random weights every SSDLite anchor passes `score_threshold` 1e-8, so the post-processing
op's per-class NMS is heavier than with trained weights, in both setups; --fast-nms exports the OD API
exporter's default class-agnostic NMS instead (`detection.tflite_use_regular_nms: false`).

Not here: accuracy, training cost.
Run: `python bench/multitask_bench.py [--quick] [--tflite [--fast-nms]] [--image-size 320]
[--depth-multiplier 1.0] [--json out.json]`.
"""
import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
from pipelines.cli import environment  # noqa: E402  pylint: disable=g-import-not-at-top

environment.configure()  # oneDNN and TensorFlow's log level, as the `mnv2` command (before TensorFlow)

from pipelines import config as config_schema  # noqa: E402  pylint: disable=g-import-not-at-top (after sys.path)
from pipelines.cli import profile_models  # noqa: E402
from pipelines.training import runner  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

from pipelines.export import tflite_export as te  # noqa: E402
from pipelines.export import tflite_runtime
from pipelines.export import tflite_task  # noqa: E402
import tflite_tasks  # noqa: E402  (bench/, this script's directory)

TFLITE_THREADS = 2


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


class _TFLiteModel(object):
  """`config`'s float32 TFLite export, random weights, fed one fixed image."""

  def __init__(self, config, size, directory):
    assert tflite_task.input_size(config) == size, (config.task, tflite_task.input_size(config))
    checkpoint = tflite_tasks.random_checkpoint(config, directory)
    frozen = tflite_task.frozen_graph(config, checkpoint, use_moving_averages=False)
    self.interpreter = tflite_runtime.make_interpreter(model_content=te.convert(frozen, 'none'), num_threads=TFLITE_THREADS)
    self.index = self.interpreter.get_input_details()[0]['index']
    self.image = np.random.RandomState(0).uniform(-1, 1, [1, size, size, 3]).astype(np.float32)

  def run_ms(self):
    start = time.perf_counter()
    self.interpreter.set_tensor(self.index, self.image)
    self.interpreter.invoke()
    return (time.perf_counter() - start) * 1000.0


def _latencies_ms(models, runs, warmup, block=1):
  """Median ms per model; the models take turns in blocks of `block` runs (after one untimed run when a block
  is longer than one), so a change of machine load hits all alike."""
  for _ in range(warmup):
    for model in models.values():
      model.run_ms()
  times = dict((name, []) for name in models)
  for _ in range(max(1, runs // block)):
    for name, model in models.items():
      if block > 1:
        model.run_ms()
      times[name].extend(model.run_ms() for _ in range(block))
  return dict((name, statistics.median(values)) for name, values in times.items())


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--image-size', type=int, default=320)
  parser.add_argument('--depth-multiplier', type=float, default=1.0)
  parser.add_argument('--quick', action='store_true', help='fewer runs (a smoke test, not a figure)')
  parser.add_argument('--tflite', action='store_true', help='time the float32 TFLite exports instead of TF graphs')
  parser.add_argument('--fast-nms', action='store_true',
                      help='with --tflite: detection.tflite_use_regular_nms=false (the OD API exporter\'s default)')
  parser.add_argument('--json', help='also write the results here')
  args = parser.parse_args(argv)
  runs, warmup = (5, 2) if args.quick else (30, 5)
  config = profile_models.multitask_config(args.depth_multiplier, args.image_size)
  # Every model at the one size (a TFLite segmentation model's input is its eval_crop_size).
  config = dataclasses.replace(config, segmentation=dataclasses.replace(
      config.segmentation, crop_size=args.image_size, eval_crop_size=args.image_size),
      detection=dataclasses.replace(config.detection, tflite_use_regular_nms=not args.fast_nms))
  configs = dict((name, config_schema.member_config(config, name)) for name in config.multitask.members())
  configs['multitask'] = config
  with tempfile.TemporaryDirectory() as directory:
    if args.tflite:
      models = dict((name, _TFLiteModel(c, args.image_size, directory)) for name, c in configs.items())
    else:
      models = dict((name, _Model(c, args.image_size)) for name, c in configs.items())
  latencies = _latencies_ms(models, runs, warmup, block=5 if args.tflite else 1)
  runtime = 'TF'
  if args.tflite:
    runtime = 'TFLite float32, %s NMS' % ('fast' if args.fast_nms else 'regular')
  results = {'runtime': runtime, 'multitask_ms': latencies.pop('multitask'),
             'separate_ms': latencies}
  total = sum(results['separate_ms'].values())
  results['ratio'] = results['multitask_ms'] / total
  print("TensorFlow %s, %s, %dx%d, depth multiplier %.2f, batch 1, median of %d runs (models taking turns), "
        "load %s" % (tf.__version__, results['runtime'], args.image_size, args.image_size, args.depth_multiplier,
                     runs, os.getloadavg()))
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
