"""Training images/s of the runtime settings, in one run: float32 vs bfloat16 vs XLA, 1 vs 2 logical CPU devices.

Every figure is one training step of the classification model as the pipeline builds it
(`pipelines.tasks.model_builder` backbone + classifier head, softmax cross-entropy, RMSProp, train op after the
batch-norm updates) on the same fixed random batch, in its own child process (this script re-invoked with
`--_child`): XLA's CPU flag and the logical device count are fixed at a process's first session.

  fp32         one device, no rewrite: the baseline
  bfloat16     `runtime.mixed_precision: bfloat16` (oneDNN rewrite; TF 2.x on AVX512_BF16/AMX CPUs, else it
               falls back to float32 and the row says so)
  xla          `runtime.xla: true` (global JIT, --tf_xla_cpu_global_jit)
  2 cpu devs   `mirrored` over `cpu_devices: 2` (MirroredStrategy, same global batch, sync batch norm): on a
               2-core host the two devices share the cores, so this cannot be faster; the ratio is the
               overhead of the multi-device path (target: under 15%, i.e. ratio >= 0.85)

Run: `python bench/runtime_bench.py [--quick] [--json out.json]`.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

RESULT_TAG = 'BENCH_RESULT '
SETTINGS = ('fp32', 'bfloat16', 'xla', '2cpu')
MAX_OVERHEAD = 0.15


def _config(args, setting):
  from pipelines import config as config_schema  # pylint: disable=g-import-not-at-top
  from pipelines import config_lib  # pylint: disable=g-import-not-at-top
  data = {'task': 'classification',
          'model': {'depth_multiplier': args.depth_multiplier},
          'classification': {'image_size': args.image_size, 'num_classes': 1001},
          'train': {'batch_size': args.batch_size, 'steps': 1, 'sync_batch_norm': setting == '2cpu',
                    'learning_rate': {'schedule': 'constant'}},
          'runtime': {'mixed_precision': 'bfloat16' if setting == 'bfloat16' else None, 'xla': setting == 'xla'}}
  return config_lib.from_dict(config_schema.Config, data)


def child(args):
  """Times `args.setting`; prints one RESULT_TAG JSON line."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from pipelines.training import precision as precision_lib  # pylint: disable=g-import-not-at-top
  from pipelines.training import runner  # pylint: disable=g-import-not-at-top
  setting = args.setting
  config = _config(args, setting)
  task = runner.make_task(config)
  replicas = 2 if setting == '2cpu' else 1
  session = precision_lib.xla_session_config(config.runtime.xla, precision_lib.mixed_precision_session_config(
      config.runtime.mixed_precision, tf.ConfigProto(allow_soft_placement=True)))
  effective = precision_lib.effective_precision(config.runtime.mixed_precision) if setting == 'bfloat16' else None
  if replicas > 1:
    session.device_count['CPU'] = replicas
  graph = tf.Graph()
  with graph.as_default():
    rng = np.random.RandomState(0)
    per_replica = args.batch_size // replicas
    images = tf.constant(rng.uniform(-1, 1, [args.batch_size, args.image_size, args.image_size, 3]).astype(np.float32))
    labels = tf.constant(rng.randint(1, 1001, [args.batch_size]).astype(np.int64))
    strategy = tf.distribute.MirroredStrategy(['/cpu:%d' % i for i in range(replicas)]) if replicas > 1 else None

    def step():
      replica = tf.distribute.get_replica_context().replica_id_in_sync_group if strategy else 0
      start = tf.convert_to_tensor(replica) * per_replica
      x = tf.slice(images, tf.stack([start, 0, 0, 0]), [per_replica, args.image_size, args.image_size, 3])
      y = tf.slice(labels, tf.stack([start]), [per_replica])
      outputs = task.build_outputs({'image': x}, True)
      loss = task.build_losses(outputs, y, None)['classification'] / replicas
      opt = tf.train.RMSPropOptimizer(1e-4, decay=0.9, momentum=0.9, epsilon=1.0)
      with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
        return opt.minimize(loss)

    step = tf.autograph.experimental.do_not_convert(step)  # TF 2.x: call_for_each_replica would convert it
    if strategy:
      with strategy.scope():
        train_op = tf.group(strategy.experimental_local_results(strategy.extended.call_for_each_replica(step)))
    else:
      train_op = step()
    with tf.Session(config=session) as sess:
      sess.run(tf.global_variables_initializer())
      for _ in range(args.warmup):
        sess.run(train_op)
      times = []
      begin = time.time()
      while len(times) < args.iterations or time.time() - begin < args.min_seconds:
        t0 = time.time()
        sess.run(train_op)
        times.append(time.time() - t0)
  median = statistics.median(times)
  print(RESULT_TAG + json.dumps({'setting': setting, 'images_per_s': args.batch_size / median,
                                 'steps': len(times), 'min_s': min(times), 'max_s': max(times),
                                 'effective': effective, 'tf': tf.__version__}))


def _run(args, setting):
  argv = [sys.executable, os.path.abspath(__file__), '--_child', '--setting', setting,
          '--batch-size', str(args.batch_size), '--image-size', str(args.image_size),
          '--depth-multiplier', str(args.depth_multiplier), '--iterations', str(args.iterations),
          '--warmup', str(args.warmup), '--min-seconds', str(args.min_seconds)]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  env.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')  # as `mnv2` runs (pipelines.cli.environment)
  result = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
  for line in result.stdout.splitlines():
    if line.startswith(RESULT_TAG):
      return json.loads(line[len(RESULT_TAG):])
  sys.stderr.write(result.stdout[-3000:])
  return {'setting': setting, 'error': 'child failed (exit %d)' % result.returncode}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='small model and few steps (noisy)')
  parser.add_argument('--batch-size', type=int, default=32, help='global batch (default 32)')
  parser.add_argument('--image-size', type=int, default=224)
  parser.add_argument('--depth-multiplier', type=float, default=1.0)
  parser.add_argument('--iterations', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--min-seconds', type=float, default=5.0)
  parser.add_argument('--settings', default=','.join(SETTINGS))
  parser.add_argument('--json', help='write the raw results here')
  parser.add_argument('--_child', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--setting', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args._child:  # pylint: disable=protected-access
    return child(args)
  if args.quick:
    args.batch_size, args.image_size, args.depth_multiplier = 16, 128, 0.5
    args.iterations, args.warmup, args.min_seconds = 5, 2, 2.0
  print('load average at start: %.2f %.2f %.2f' % os.getloadavg())
  print('model: MobileNetV2 %.2f, %d px, global batch %d' % (args.depth_multiplier, args.image_size,
                                                            args.batch_size))
  results = {}
  for setting in args.settings.split(','):
    results[setting] = _run(args, setting)
    r = results[setting]
    print('%-9s %s' % (setting, ('%.1f img/s (step %.3f-%.3f s, %d steps)%s' % (
        r['images_per_s'], r['min_s'], r['max_s'], r['steps'],
        '' if setting != 'bfloat16' or r.get('effective') == 'bfloat16' else '  [fell back to float32]'))
                                if 'images_per_s' in r else r['error']))
  base = results.get('fp32', {}).get('images_per_s')
  if base:
    print('ratios vs fp32 (above 1 = faster):')
    for setting in args.settings.split(','):
      rate = results[setting].get('images_per_s')
      if setting != 'fp32' and rate:
        line = '  %-9s %.2fx' % (setting, rate / base)
        if setting == '2cpu':
          overhead = 1 - rate / base
          line += '  (multi-device overhead %.0f%%: %s, target < %.0f%%)' % (
              overhead * 100, 'OK' if overhead < MAX_OVERHEAD else 'MISS', MAX_OVERHEAD * 100)
        print(line)
  print('load average at end: %.2f %.2f %.2f' % os.getloadavg())
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
