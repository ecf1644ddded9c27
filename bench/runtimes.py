"""Batch-1 latency of each task's exported model on every runtime we export to, in one run, as ratios to TF.

For each task at its paper size (classification 224, SSDLite 320, DeepLabv3 OS16 513; width 1.0, random
weights; detection's class bias at -4.6, the demo's, so random scores sit near 0.01 as a trained model's do on
most anchors), the network exactly as `mnv2 export` freezes it (batch norm folded) is timed as:

  TF graph     the frozen network with the task's post-processing in TensorFlow ops (what the SavedModel runs
               after decoding the image; `pipelines.export.onnx_export.frozen_graph`) in a tf.Session
  TFLite       float32 and int8 (post-training, calibrated on random images), `--threads` threads (XNNPACK on
               TF 2.x); detection with TFLite_Detection_PostProcess, regular (per-class) and fast NMS
  ONNX Runtime float32 (tf2onnx of the same frozen graph, NMS inside), `--threads` intra-op threads

Detection runs at the eval threshold (the config's score_threshold, 1e-8) and at a deployment threshold
(`--score-threshold`, default 0.3). Each figure is the median of `--runs` runs after warm-up; the ratio is TF
graph time / runtime time (above 1: faster than TF). Prints the load average (other work skews every figure).
Not a test. ONNX rows need the `onnx` extra (TF 2.15 stack).

Run: `python bench/runtimes.py [--quick] [--tasks classification,detection,segmentation] [--threads 2]
[--score-threshold 0.3] [--json out.json]`.
"""
import argparse
import dataclasses
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
from pipelines.cli import environment  # noqa: E402  pylint: disable=g-import-not-at-top

environment.configure()  # oneDNN and TensorFlow's log level, as the `mnv2` command (before TensorFlow)

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

from bench.tflite_tasks import CONFIGS, random_checkpoint  # noqa: E402
from bench.tflite_tasks import _median_ms  # noqa: E402  pylint: disable=protected-access
from pipelines import config as config_schema  # noqa: E402
from pipelines.export import onnx_export  # noqa: E402
from pipelines.export import tflite_export as te  # noqa: E402
from pipelines.export import tflite_runtime  # noqa: E402
from pipelines.export import tflite_task  # noqa: E402

DETECTION_BIAS = 'detection: {image_size: 320, num_classes: 90, class_prediction_bias_init: -4.6}\n'


def _config(task, directory):
  path = os.path.join(directory, task + '.yaml')
  text = CONFIGS[task]
  if task == 'detection':
    text = text.replace('detection: {image_size: 320, num_classes: 90}\n', DETECTION_BIAS)
  with open(path, 'w') as f:
    f.write(text)
  return config_schema.load(path)


def _tf_ms(frozen, image, runs):
  with tf.Graph().as_default() as graph:
    tf.import_graph_def(frozen.graph_def, name='')
    fetches = [graph.get_tensor_by_name(n) for n in frozen.outputs.values()]
    with tf.Session(graph=graph) as session:
      return _median_ms(lambda: session.run(fetches, {frozen.input_name + ':0': image}), runs)


def _tflite_ms(content, image, runs, threads):
  interpreter = tflite_runtime.make_interpreter(model_content=content, num_threads=threads)
  detail = interpreter.get_input_details()[0]
  x = image if detail['dtype'] == np.float32 else np.full(detail['shape'], 128, detail['dtype'])

  def run():
    interpreter.set_tensor(detail['index'], x)
    interpreter.invoke()
  return _median_ms(run, runs)


def _onnx_ms(frozen, image, runs, threads):
  """(median ms, the op types taking most of a profiled run's time as [(op type, share)])."""
  runtime = onnx_export.onnx_runtime()
  model = onnx_export.convert(frozen).SerializeToString()
  names = list(frozen.outputs.values())
  feed = {frozen.input_name + ':0': image}
  options = runtime.SessionOptions()
  options.intra_op_num_threads = threads
  session = runtime.InferenceSession(model, options, providers=['CPUExecutionProvider'])
  ms = _median_ms(lambda: session.run(names, feed), runs)
  # ONNX Runtime's own profiler over a few runs: time per operator type.
  options.enable_profiling = True
  with tempfile.TemporaryDirectory() as directory:  # the profile's JSON goes there, not into the cwd
    options.profile_file_prefix = os.path.join(directory, 'onnxruntime_profile')
    profiled = runtime.InferenceSession(model, options, providers=['CPUExecutionProvider'])
    for _ in range(5):
      profiled.run(names, feed)
    with open(profiled.end_profiling()) as f:
      events = json.load(f)
  by_op = {}
  for event in events:
    op = event.get('args', {}).get('op_name')
    if event.get('cat') == 'Node' and op and event['name'].endswith('_kernel_time'):
      by_op[op] = by_op.get(op, 0) + event['dur']
  total = float(sum(by_op.values())) or 1.0
  return ms, sorted(((op, t / total) for op, t in by_op.items()), key=lambda x: -x[1])[:3]


def _variants(config, score_threshold):
  """(label, config) of the settings timed: detection at the eval and the deployment threshold."""
  if config.task != 'detection':
    return [('', config)]
  det = config.detection
  deploy = dataclasses.replace(config, detection=dataclasses.replace(det, score_threshold=score_threshold))
  return [('@%g' % det.score_threshold, config), ('@%g' % score_threshold, deploy)]


def bench_task(name, args, directory):
  base = _config(name, directory)
  size = tflite_task.input_size(base)
  checkpoint = random_checkpoint(base, directory)
  image = np.random.RandomState(0).uniform(-1, 1, [1, size, size, 3]).astype(np.float32)
  calibration = [np.random.RandomState(s).uniform(-1, 1, [size, size, 3]).astype(np.float32)
                 for s in range(2 if args.quick else 16)]
  rows = []

  def report(label, runtime, ms, reference):
    rows.append({'task': name, 'setting': label, 'runtime': runtime, 'ms': ms, 'tf_over_runtime': reference / ms})
    print('%-14s %3d %-8s %-34s %8.2f ms  TF / runtime = %5.2f' % (name, size, label, runtime, ms, reference / ms),
          flush=True)

  for label, config in _variants(base, args.score_threshold):
    frozen = onnx_export.frozen_graph(config, checkpoint)
    reference = _tf_ms(frozen, image, args.runs)
    report(label, 'TF graph (tf.Session)', reference, reference)
    nms_settings = [('', config)]
    if name == 'detection':
      fast = dataclasses.replace(config, detection=dataclasses.replace(config.detection, tflite_use_regular_nms=False))
      nms_settings = [(' regular NMS', config), (' fast NMS', fast)]
    for nms_label, nms_config in nms_settings:
      lite = tflite_task.frozen_graph(nms_config, checkpoint, use_moving_averages=False)
      for mode in ('none', 'int8'):
        if mode == 'int8' and te.is_tf1() and name == 'detection':
          continue
        content = te.convert(lite, mode, calibration if mode == 'int8' else None)
        report(label, 'TFLite %s%s' % ('float32' if mode == 'none' else mode, nms_label),
               _tflite_ms(content, image, args.runs, args.threads), reference)
    try:
      ms, top = _onnx_ms(frozen, image, args.runs, args.threads)
      report(label, 'ONNX Runtime float32', ms, reference)
      rows[-1]['top_ops'] = top
      print('%-14s %3d %-8s   ONNX Runtime profile: %s' % (name, size, label, ', '.join(
          '%s %.0f%%' % (op, 100 * share) for op, share in top)), flush=True)
    except ValueError as e:  # no onnx extra / TF 1.15
      print('%-14s %3d %-8s ONNX Runtime: %s' % (name, size, label, e), flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='5 timed runs, 2 calibration images (noisy)')
  parser.add_argument('--runs', type=int, default=30)
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--score-threshold', type=float, default=0.3, help='detection: the deployment threshold')
  parser.add_argument('--tasks', default='classification,detection,segmentation')
  parser.add_argument('--json', help='write the raw results here')
  args = parser.parse_args()
  if args.quick:
    args.runs = 5
  print('TensorFlow %s, %d CPUs, %d threads per runtime, load average at start %s' % (
      tf.__version__, os.cpu_count(), args.threads, os.getloadavg()))
  rows = []
  with tempfile.TemporaryDirectory() as directory:
    for name in args.tasks.split(','):
      rows.extend(bench_task(name, args, directory))
  print('fastest runtime per task and setting (target: >= 3x the TF graph):')
  for key in sorted(set((r['task'], r['setting']) for r in rows)):
    best = max((r for r in rows if (r['task'], r['setting']) == key and not r['runtime'].startswith('TF graph')),
               key=lambda r: r['tf_over_runtime'])
    print('  %-14s %-8s %-34s %5.2fx  %s' % (key[0], key[1], best['runtime'], best['tf_over_runtime'],
                                            'met' if best['tf_over_runtime'] >= 3 else 'missed'))
  print('load average at end %s' % (os.getloadavg(),))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'tensorflow': tf.__version__, 'load_average': os.getloadavg(), 'rows': rows}, f, indent=2)


if __name__ == '__main__':
  main()
