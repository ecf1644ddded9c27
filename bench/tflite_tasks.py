"""Single-image latency of the exported model of each task at its paper size: TFLite vs TF, in one run.

For each task (classification 224, SSDLite 320, DeepLabv3 OS16 513; width 1.0, random weights from a
checkpoint of the task's own graph), the exported model as `mnv2 export` builds it
(`pipelines.export.tflite_task.frozen_graph`: EMA-less random weights, batch norm folded) is timed as:

  TF        the folded network in tf.Session (what the SavedModel runs, without its image decoding);
            detection: followed by the task's own box decoding and per-class NMS (`DetectionTask.detections`,
            what the SavedModel runs where TFLite runs its post-processing op), same thresholds
  keras     classification only: tf.keras.applications.MobileNetV2(weights=None) in tf.Session
  TFLite    float32, float16 and int8 (XNNPACK where the stack uses it), 1 and 2 threads (TF 1.15: default
            threads); detection ends in TFLite_Detection_PostProcess (regular NMS)

Ratios are TF time / TFLite time (above 1: TFLite is faster). Median of the timed runs after warm-up;
prints the load average (other processes skew every figure). Not a test.

Run: `python bench/tflite_tasks.py [--quick] [--tasks classification,detection,segmentation] [--json out.json]`.
"""
import argparse
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

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

from pipelines import config as config_schema  # noqa: E402
from pipelines.training import runner  # noqa: E402
from pipelines.export import tflite_export as te  # noqa: E402
from pipelines.export import tflite_runtime
from pipelines.export import tflite_task  # noqa: E402

CONFIGS = {
    'classification': 'task: classification\ntrain: {steps: 1, learning_rate: {schedule: constant}}\nclassification: {image_size: 224, num_classes: 1001}\n',
    'detection': 'task: detection\ntrain: {steps: 1, learning_rate: {schedule: constant}}\ndetection: {image_size: 320, num_classes: 90}\n',
    'segmentation': ('task: segmentation\ntrain: {steps: 1, learning_rate: {schedule: constant}}\nsegmentation: {num_classes: 21, output_stride: 16, crop_size: 513, '
                     'eval_crop_size: 513}\n'),
}


def _config(task, directory):
  path = os.path.join(directory, task + '.yaml')
  with open(path, 'w') as f:
    f.write(CONFIGS[task])
  return config_schema.load(path)


def random_checkpoint(config, directory):
  """A random-weight checkpoint of `config`'s inference graph at its TFLite input size."""
  task = runner.make_task(config)
  size = tflite_task.input_size(config)
  with tf.Graph().as_default():
    task.build_outputs({'image': tf.placeholder(tf.float32, [1, size, size, 3])}, False)
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      return tf.train.Saver().save(session, os.path.join(directory, config.task + '.ckpt'), write_meta_graph=False)


def _median_ms(fn, runs, warmup=3):
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


def _tf_ms(graph_def, input_name, outputs, image, runs, finish=None):
  # Only the subgraph TF can run (detection: without the TFLite-only post-processing op; `finish` adds what
  # TF runs in its place, the product's own box decoding and NMS).
  graph_def = tf.graph_util.extract_sub_graph(graph_def, [o.split(':')[0] for o in outputs])
  with tf.Graph().as_default() as graph:
    tf.import_graph_def(graph_def, name='')
    tensors = [graph.get_tensor_by_name(n) for n in outputs]
    if finish is not None:
      tensors = finish(tensors)
    with tf.Session(graph=graph) as session:
      return _median_ms(lambda: session.run(tensors, {input_name + ':0': image}), runs)


def _keras_ms(image, runs):
  with tf.Graph().as_default():
    model = tf.keras.applications.MobileNetV2(weights=None, classes=1001, input_shape=image.shape[1:])
    output = model.outputs[0]
    session = tf.keras.backend.get_session() if hasattr(tf.keras.backend, 'get_session') else tf.Session()
    session.run(tf.global_variables_initializer())
    return _median_ms(lambda: session.run(output, {model.inputs[0]: image}), runs)


def bench_task(name, runs, directory, calibration_count):
  config = _config(name, directory)
  size = tflite_task.input_size(config)
  checkpoint = random_checkpoint(config, directory)
  frozen = tflite_task.frozen_graph(config, checkpoint, use_moving_averages=False)
  image = np.random.RandomState(0).uniform(-1, 1, [1, size, size, 3]).astype(np.float32)
  result = {'task': name, 'size': size}
  # TF reference: the same network; for detection the TFLite-only post-processing op is replaced by what the
  # SavedModel runs (the task's box decoding + per-class NMS, same thresholds).
  finish = None
  if te._has_postprocess(frozen):  # pylint: disable=protected-access
    post = [n.name for n in frozen.graph_def.node if n.op == te.DETECTION_POSTPROCESS_OP][0]
    raw_inputs = [n for n in frozen.graph_def.node if n.name == post][0].input[:2]  # box codes, class scores
    outputs = [i + ':0' for i in raw_inputs]
    task = runner.make_task(config)

    def finish(tensors):
      ones = tf.ones([1], tf.int32)
      return list(task.detections(tensors[0], tensors[1], ones, ones).values())
  else:
    outputs = list(frozen.outputs.values())
  result['tf_ms'] = _tf_ms(frozen.graph_def, frozen.input_name, outputs, image, runs, finish)
  print('%-14s %3d  TF (folded graph, tf.Session%s) %8.2f ms' % (
      name, size, ' + NMS' if finish else '', result['tf_ms']), flush=True)
  if name == 'classification':
    result['keras_ms'] = _keras_ms(image, runs)
    print('%-14s %3d  tf.keras MobileNetV2                %8.2f ms  keras / TF = %.2f' % (
        name, size, result['keras_ms'], result['keras_ms'] / result['tf_ms']), flush=True)
  modes = ['none', 'float16'] + (['int8'] if not (name == 'detection' and te.is_tf1()) else [])  # pylint: disable=protected-access
  calibration = [np.random.RandomState(s).uniform(-1, 1, [size, size, 3]).astype(np.float32)
                 for s in range(calibration_count)]
  threads = (1, 2) if tflite_runtime.interpreter_supports_num_threads() else (None,)
  result['tflite'] = []
  for mode in modes:
    content = te.convert(frozen, mode, calibration if mode == 'int8' else None)
    for num_threads in threads:
      interpreter = tflite_runtime.make_interpreter(model_content=content, num_threads=num_threads)
      detail = interpreter.get_input_details()[0]
      x = image if detail['dtype'] == np.float32 else np.full(detail['shape'], 128, detail['dtype'])

      def run(interpreter=interpreter, index=detail['index'], x=x):
        interpreter.set_tensor(index, x)
        interpreter.invoke()
      ms = _median_ms(run, runs)
      row = {'quantize': mode, 'threads': num_threads, 'ms': ms, 'kb': len(content) // 1024,
             'tf_over_tflite': result['tf_ms'] / ms}
      result['tflite'].append(row)
      print('%-14s %3d  TFLite %-7s threads=%-7s  %8.2f ms  TF / TFLite = %5.2f  (%d KB)' % (
          name, size, 'float32' if mode == 'none' else mode, num_threads or 'default', ms,
          row['tf_over_tflite'], row['kb']), flush=True)
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='5 timed runs, 2 calibration images (noisy)')
  parser.add_argument('--runs', type=int, default=30)
  parser.add_argument('--tasks', default='classification,detection,segmentation')
  parser.add_argument('--json', help='write the raw results here')
  args = parser.parse_args()
  runs = 5 if args.quick else args.runs
  print('TensorFlow %s, %d CPUs, load average at start %s' % (tf.__version__, os.cpu_count(), os.getloadavg()))
  results = []
  with tempfile.TemporaryDirectory() as directory:
    for name in args.tasks.split(','):
      results.append(bench_task(name, runs, directory, 2 if args.quick else 16))
  print('load average at end %s' % (os.getloadavg(),))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'tensorflow': tf.__version__, 'load_average': os.getloadavg(), 'results': results}, f, indent=2)


if __name__ == '__main__':
  main()
