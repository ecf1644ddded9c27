"""Single-image latency of a MobileNetV2 classifier: TFLite (float32 / float16 / int8) vs its frozen TF graph.

Builds `nets.mobilenet_v2.mobilenet` (random weights, 1001 classes), freezes it with `pipelines.freeze`
(batch norm folded), times `session.run` of the frozen graph (batch 1, default TF threading) and the
`tf.lite.Interpreter` of each converted model at 1 and 2 threads (TF 1.15's Python interpreter has no
`num_threads`: its default is used). Median of the timed runs after warm-up; prints the load average
because other processes on the machine skew every figure. Not a test.

Run: `python bench/tflite_latency.py [--depth 1.0] [--size 224] [--runs 50] [--modes none,float16,int8]`.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
import tf_slim as slim  # noqa: E402

from nets import mobilenet_v2  # noqa: E402
from pipelines import freeze  # noqa: E402
from pipelines import tflite_export as te  # noqa: E402


def _build(depth):
  def build(images):
    with slim.arg_scope(mobilenet_v2.training_scope(is_training=False)):
      _, end_points = mobilenet_v2.mobilenet(images, num_classes=1001, depth_multiplier=depth)
    return {'probabilities': end_points['Predictions']}
  return build


def _checkpoint(build, size, directory):
  with tf.Graph().as_default():
    build(tf.placeholder(tf.float32, [1, size, size, 3]))
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      return tf.train.Saver().save(session, os.path.join(directory, 'model.ckpt'), write_meta_graph=False)


def _median_ms(fn, runs, warmup=5):
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--depth', type=float, default=1.0)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--runs', type=int, default=50)
  parser.add_argument('--modes', default='none,float16,int8')
  args = parser.parse_args()
  print('TensorFlow %s, load average at start %s' % (tf.__version__, os.getloadavg()))
  build = _build(args.depth)
  image = np.random.RandomState(0).uniform(-1, 1, [1, args.size, args.size, 3]).astype(np.float32)
  with tempfile.TemporaryDirectory() as directory:
    frozen = te.classification_graph(build, _checkpoint(build, args.size, directory), args.size)
  with tf.Graph().as_default() as graph:
    tf.import_graph_def(frozen.graph_def, name='')
    output = graph.get_tensor_by_name(frozen.outputs['probabilities'])
    feed = {frozen.input_name + ':0': image}
    with tf.Session(graph=graph) as session:
      tf_ms = _median_ms(lambda: session.run(output, feed), args.runs)
  print('frozen TF graph, tf.Session           %7.2f ms' % tf_ms)
  calibration = [np.random.RandomState(s).uniform(-1, 1, [args.size, args.size, 3]).astype(np.float32)
                 for s in range(8)]
  threads = (1, 2) if te.interpreter_supports_num_threads() else (None,)
  for mode in args.modes.split(','):
    content = te.convert(frozen, mode, calibration if mode == 'int8' else None)
    for num_threads in threads:
      interpreter = te.make_interpreter(model_content=content, num_threads=num_threads)
      detail = interpreter.get_input_details()[0]
      x = image if detail['dtype'] == np.float32 else np.full(detail['shape'], 128, detail['dtype'])

      def run(interpreter=interpreter, index=detail['index'], x=x):
        interpreter.set_tensor(index, x)
        interpreter.invoke()
      ms = _median_ms(lambda: run(), args.runs)
      print('TFLite %-7s threads=%-7s %7.2f ms   TF / TFLite = %.2f  (%d KB)' % (
          mode, num_threads or 'default', ms, tf_ms / ms, len(content) // 1024))
  print('load average at end %s' % (os.getloadavg(),))


if __name__ == '__main__':
  main()
