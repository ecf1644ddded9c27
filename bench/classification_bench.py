"""Throughput and memory of our slim MobileNetV2 against tf.keras.applications.MobileNetV2, in one run.

Measures on the same machine and inputs: training images/s (RMSProp, batch norm in training mode, train op
depending on the batch-norm updates, like our model_fn), inference images/s per batch size, the training
input pipeline (`pipelines.inputs.classification_input.dataset` with the paper config) on a converted shapes dataset,
and the peak RSS of each model.
Every measurement runs in its own child process (this script re-invoked with `--_child`), so graphs never
share a process and peaks do not mix. Both models are built the same way: tf.compat.v1 graph + Session,
same fixed random inputs, same loss and the same `tf.train.RMSPropOptimizer`; TF thread settings are left at
their defaults. `--onednn` sets TF_ENABLE_ONEDNN_OPTS in the children; by default the batch-32 inference is
also timed with oneDNN off and on (TF 2.x only: TF 1.15 wheels do not read the variable).

Not here: accuracy, GPUs, tuning of either model. Run: `python bench/classification_bench.py [--quick]`.
"""
import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

NUM_CLASSES = 1001
IMAGE_SIZE = 224
CONFIG = os.path.join(ROOT, 'configs', 'mobilenet_v2_imagenet.yaml')  # the input pipeline's settings
RESULT_TAG = 'BENCH_RESULT '
ONEDNN_ENV = 'TF_ENABLE_ONEDNN_OPTS'
ONEDNN_VALUES = {'on': '1', 'off': '0'}
TARGET_MODEL_RATIO = 2.0  # slim / keras, training and batch inference (the target)
TARGET_PIPELINE_RATIO = 3.0  # pipeline images/s over what a slim training step consumes
CPU_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'avx_vnni', 'amx_tile', 'amx_bf16')


# ----------------------------------------------------------------------------------------------- child side
def _tf():
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  return tf


def _onednn_enabled():
  """True/False as TF itself decided (env var + CPU), None if this build cannot tell."""
  try:
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
    return bool(_pywrap_util_port.IsMklEnabled())
  except ImportError:
    pass
  try:
    from tensorflow.python import pywrap_tensorflow  # pylint: disable=g-import-not-at-top
    return bool(pywrap_tensorflow.IsMklEnabled())
  except (ImportError, AttributeError):
    return None


def _fixed_batch(tf, batch, seed):
  """Same random images/labels for every model: float32 [B, 224, 224, 3] in [-1, 1], int32 [B] in 1..1000.

  The images live in a local variable filled once, so a timed step neither feeds nor generates data.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(seed + batch)
  data = rng.uniform(-1.0, 1.0, (batch, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
  source = tf.placeholder(tf.float32, data.shape)
  images = tf.Variable(source, trainable=False, collections=[tf.GraphKeys.LOCAL_VARIABLES], name='images_%d' % batch)
  labels = tf.constant(rng.randint(1, NUM_CLASSES, batch).astype(np.int32))
  return images.read_value(), labels, (images.initializer, {source: data})


def _slim_logits(images, is_training, reuse=None):
  """Ours as the classification model_fn builds it: paper training scope, classifier with dropout."""
  import tf_slim as slim  # pylint: disable=g-import-not-at-top
  from nets import mobilenet_v2  # pylint: disable=g-import-not-at-top
  with slim.arg_scope(mobilenet_v2.training_scope(is_training=is_training)):
    logits, end_points = mobilenet_v2.mobilenet(images, num_classes=NUM_CLASSES, reuse=reuse)
  return logits, end_points['Predictions']


def _keras_model(tf, logits):
  """Keras' MobileNetV2 (random weights); logits output where the Keras version allows it (TF >= 2.3)."""
  kwargs = dict(weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), classes=NUM_CLASSES)
  if logits:
    try:
      return tf.keras.applications.MobileNetV2(classifier_activation=None, **kwargs), True
    except TypeError:
      pass
  return tf.keras.applications.MobileNetV2(**kwargs), False


def _train_op(tf, model, images, labels):
  """Loss + RMSProp (paper / TF-Slim settings) with the batch-norm updates as control dependencies."""
  if model == 'slim':
    logits, _ = _slim_logits(images, is_training=True)
    tf.losses.softmax_cross_entropy(tf.one_hot(labels, NUM_CLASSES), logits)
    loss, update_ops = tf.losses.get_total_loss(), tf.get_collection(tf.GraphKeys.UPDATE_OPS)
  else:
    net, gives_logits = _keras_model(tf, logits=True)
    outputs = net(images, training=True)
    if gives_logits:
      loss = tf.losses.softmax_cross_entropy(tf.one_hot(labels, NUM_CLASSES), outputs)
    else:  # TF 1.15's Keras ends in a softmax: the loss Keras itself would use on probabilities
      loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, outputs))
    loss = tf.add_n([loss] + list(net.losses))
    # Keras keeps its batch-norm updates on the model, not in UPDATE_OPS; only those of this call.
    update_ops = net.get_updates_for(images)
  if not update_ops:
    raise RuntimeError('%s: no batch-norm update ops found; the comparison would be unfair' % model)
  opt = tf.train.RMSPropOptimizer(1e-4, decay=0.9, momentum=0.9, epsilon=1.0)
  with tf.control_dependencies(update_ops):
    return opt.minimize(loss, global_step=tf.train.get_or_create_global_step())


def _time_steps(run, opts):
  """Seconds of each timed call of `run` after `warmup` untimed ones (>= iterations and >= min_seconds)."""
  for _ in range(opts.warmup):
    run()
  times, start = [], time.time()
  while len(times) < opts.iterations or time.time() - start < opts.min_seconds:
    begin = time.perf_counter()
    run()
    times.append(time.perf_counter() - begin)
  return times


def _rates(batch, times):
  ordered = sorted(times)
  return {'batch': batch, 'steps': len(times), 'img_s': batch / statistics.median(times), 'img_s_mean': batch * len(times) / sum(times),
          'img_s_slowest': batch / ordered[-1], 'img_s_fastest': batch / ordered[0]}


def _session(tf, graph, feeds):
  sess = tf.Session(graph=graph)
  sess.run([tf.global_variables_initializer(), tf.tables_initializer()])
  for init_op, feed in feeds:
    sess.run(init_op, feed_dict=feed)
  return sess


def _job_train(tf, opts):
  graph = tf.Graph()
  with graph.as_default():
    images, labels, feed = _fixed_batch(tf, opts.train_batch_size, opts.seed)
    train_op = _train_op(tf, opts.model, images, labels)
    sess = _session(tf, graph, [feed])
  with sess:
    return {'train': _rates(opts.train_batch_size, _time_steps(lambda: sess.run(train_op), opts))}


def _job_infer(tf, opts):
  graph, outputs, feeds = tf.Graph(), {}, []
  with graph.as_default():
    net = None if opts.model == 'slim' else _keras_model(tf, logits=False)[0]
    for batch in opts.batch_sizes:  # one set of weights, one input variable per batch size
      images, _, feed = _fixed_batch(tf, batch, opts.seed)
      feeds.append(feed)
      if net is None:
        outputs[batch] = _slim_logits(images, is_training=False, reuse=True if outputs else None)[1]
      else:
        outputs[batch] = net(images, training=False)
    sess = _session(tf, graph, feeds)
  with sess:
    return {'infer': {str(b): _rates(b, _time_steps(lambda o=o: sess.run(o), opts)) for b, o in outputs.items()}}


def _convert_shapes(opts):
  """ImageNet-style shapes JPEGs -> TF-Slim TFRecords under opts.data_dir; returns the file pattern."""
  from datasets import imagenet  # pylint: disable=g-import-not-at-top
  from datasets import shapes  # pylint: disable=g-import-not-at-top
  raw = shapes.generate(os.path.join(opts.data_dir, 'raw'), formats=('imagenet',),
                        counts={'imagenet': {'train': opts.pipeline_images, 'val': 1}},
                        image_size=opts.pipeline_image_size)['imagenet']
  records = os.path.join(opts.data_dir, 'records')
  imagenet.convert(raw['train_dir'], records, 'train', labels_file=raw['labels_file'], num_shards=4, num_workers=1,
                   on_error='fail')
  return os.path.join(records, 'train-*')


def _job_pipeline(tf, opts):
  # The training pipeline exactly as `mnv2 train` builds it from the paper config, on the shapes records.
  from pipelines.inputs import classification_input  # pylint: disable=g-import-not-at-top
  from pipelines import config as config_schema  # pylint: disable=g-import-not-at-top
  pattern = _convert_shapes(opts)
  config = config_schema.load(CONFIG, ['data.train_files=%s' % pattern, 'data.labels_file=null',
                                       'train.batch_size=%d' % opts.train_batch_size, 'runtime.seed=%d' % opts.seed,
                                       'classification.image_size=%d' % IMAGE_SIZE])
  graph = tf.Graph()
  with graph.as_default():
    data = classification_input.dataset(config, tf.estimator.ModeKeys.TRAIN)
    # Fetching a group runs the iterator without copying each 19 MB batch into Python.
    step = tf.group(*tf.nest.flatten(tf.data.make_one_shot_iterator(data).get_next()))
    sess = tf.Session(graph=graph)
  with sess:
    times = _time_steps(lambda: sess.run(step), opts)
  # The pipeline prefetches, so single batches say little: the rate is the total over the timed batches.
  rates = _rates(opts.train_batch_size, times)
  rates['img_s'] = rates['img_s_mean']
  return {'pipeline': rates}


def _child_main(opts):
  tf = _tf()
  import_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  jobs = {'train': _job_train, 'infer': _job_infer, 'pipeline': _job_pipeline}
  result = jobs[opts.job](tf, opts)
  result.update(tf_version=tf.__version__, python=platform.python_version(), onednn_enabled=_onednn_enabled(),
                import_rss_mb=import_peak / 1024.0,
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
  print(RESULT_TAG + json.dumps(result))


# ---------------------------------------------------------------------------------------------- parent side
def _child_args(opts, job, model, batch_sizes):
  args = [sys.executable, os.path.abspath(__file__), '--_child', job, '--_model', model,
          '--iterations', str(opts.iterations), '--warmup', str(opts.warmup), '--min-seconds', str(opts.min_seconds),
          '--batch-sizes', ','.join(str(b) for b in batch_sizes), '--train-batch-size', str(opts.train_batch_size),
          '--pipeline-images', str(opts.pipeline_images), '--pipeline-image-size', str(opts.pipeline_image_size),
          '--seed', str(opts.seed)]
  return args + (['--_data-dir', opts.data_dir] if opts.data_dir else [])


def _child_env(onednn):
  env = dict(os.environ)
  env.pop(ONEDNN_ENV, None)
  if onednn in ONEDNN_VALUES:
    env[ONEDNN_ENV] = ONEDNN_VALUES[onednn]
  env['TF_CPP_MIN_LOG_LEVEL'] = '0'  # keep TF's startup lines (oneDNN on/off) for the report
  env['PYTHONPATH'] = os.pathsep.join([ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
  return env


def _spawn(opts, job, model, onednn, batch_sizes=None):
  """Runs one measurement in a fresh interpreter; its result dict, or {'error': ...}."""
  label = '%s %s (oneDNN %s)' % (job, model, onednn)
  sys.stderr.write('[bench] %s ...\n' % label)
  begin = time.time()
  proc = subprocess.run(_child_args(opts, job, model, batch_sizes or opts.batch_sizes), env=_child_env(onednn),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
  lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_TAG)]
  if proc.returncode or not lines:
    tail = '\n'.join(proc.stderr.strip().splitlines()[-15:])
    sys.stderr.write('[bench] %s FAILED (exit %s):\n%s\n' % (label, proc.returncode, tail))
    return {'error': 'exit %s' % proc.returncode}
  result = json.loads(lines[-1][len(RESULT_TAG):])
  logs = [l.split('] ', 1)[-1] for l in proc.stderr.splitlines() if 'oneDNN' in l and 'port.cc' in l]
  result['onednn_log'] = logs[0].split('. ')[0] if logs else None
  sys.stderr.write('[bench] %s done in %.0f s\n' % (label, time.time() - begin))
  return result


def _machine():
  flags, name = set(), platform.processor() or '?'
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'flags':
          flags = set(value.split())
        elif key.strip() == 'model name':
          name = value.strip()
  except IOError:
    pass
  present = [f for f in CPU_FLAGS if f in flags]
  return '%s, %d CPUs, flags: %s' % (name, os.cpu_count(), ' '.join(present) or 'none of ' + ' '.join(CPU_FLAGS))


def _num(value, fmt='%.1f'):
  return '-' if value is None else fmt % value


def _ratio(num, den):
  return num / den if num and den else None


def _verdict(ratio, target):
  return '' if ratio is None else ('OK' if ratio >= target else 'MISS')


def _get(result, *keys):
  for key in keys:
    if not isinstance(result, dict) or key not in result:
      return None
    result = result[key]
  return result


def _model_rows(runs, opts):
  """Table rows slim vs keras; `runs` is {model: {'train': result, 'infer': result}}."""
  rows = [('train b%d img/s' % opts.train_batch_size, ('train', 'train'), TARGET_MODEL_RATIO)]
  rows += [('infer b%d img/s' % b, ('infer', 'infer', str(b)), TARGET_MODEL_RATIO if b > 1 else None)
           for b in opts.batch_sizes]
  out = ['%-21s %12s %12s %11s   %-16s %s' % ('', 'slim (ours)', 'keras', 'slim/keras', 'target', 'step range img/s')]
  for title, path, target in rows:
    slim, keras = _get(runs['slim'], *path), _get(runs['keras'], *path)
    ratio = _ratio(_get(slim, 'img_s'), _get(keras, 'img_s'))
    note = '>= %.1fx %s' % (target, _verdict(ratio, target)) if target else ''
    spread = ' | '.join('%s-%s' % (_num(_get(r, 'img_s_slowest')), _num(_get(r, 'img_s_fastest')))
                        for r in (slim, keras))
    out.append('%-21s %12s %12s %11s   %-16s %s' % (title, _num(_get(slim, 'img_s')), _num(_get(keras, 'img_s')),
                                                    _num(ratio, '%.2fx'), note, spread))
  for title, path in (('peak RSS train MB', ('train', 'peak_rss_mb')), ('peak RSS infer MB', ('infer', 'peak_rss_mb')),
                      ('RSS after import MB', ('infer', 'import_rss_mb'))):
    slim, keras = _get(runs['slim'], *path), _get(runs['keras'], *path)
    out.append('%-21s %12s %12s %11s   %s' % (title, _num(slim, '%.0f'), _num(keras, '%.0f'),
                                             _num(_ratio(slim, keras), '%.2fx'), '(lower is better)'))
  return out


def _pipeline_rows(pipeline, slim_train, opts):
  rate, train = _get(pipeline, 'pipeline', 'img_s'), _get(slim_train, 'train', 'img_s')
  ratio = _ratio(rate, train)
  return ['input pipeline: pipelines.inputs.classification_input.dataset, training mode (Inception crop + flip), %d px, b%d, '
          '%d shapes JPEGs of %d px' % (IMAGE_SIZE, opts.train_batch_size, opts.pipeline_images,
                                        opts.pipeline_image_size),
          '  %s img/s = %s x the slim training step (%s img/s)   target >= %.1fx %s   peak RSS %s MB' % (
              _num(rate), _num(ratio, '%.2f'), _num(train), TARGET_PIPELINE_RATIO,
              _verdict(ratio, TARGET_PIPELINE_RATIO), _num(_get(pipeline, 'peak_rss_mb'), '%.0f'))]


def _onednn_rows(compare, batch):
  out = ['oneDNN effect, infer b%d img/s (%s=0 vs =1):' % (batch, ONEDNN_ENV),
         '%-21s %12s %12s %11s' % ('', 'off', 'on', 'on/off')]
  for model in ('slim', 'keras'):
    if model not in compare:
      continue
    runs = compare[model]
    off, on = (_get(runs[k], 'infer', str(batch), 'img_s') for k in ('off', 'on'))
    out.append('%-21s %12s %12s %11s' % (model, _num(off), _num(on), _num(_ratio(on, off), '%.2fx')))
  return out


def _header(opts, first, loads):
  log = first.get('onednn_log') or 'no oneDNN line in the TF startup log'
  return ['== MobileNetV2 classification bench: slim (ours) vs tf.keras.applications, %dx%d, %d classes ==' % (
              IMAGE_SIZE, IMAGE_SIZE, NUM_CLASSES),
          'TF %s, Python %s; %s' % (first.get('tf_version'), first.get('python'), _machine()),
          'load average (1 min) at start %.2f, at end %.2f (cores may be shared with other work)' % loads,
          'oneDNN: --onednn %s -> enabled=%s; TF log: "%s"' % (opts.onednn, first.get('onednn_enabled'), log),
          'timing: median step over >= %d steps and >= %.0f s after %d warm-up steps; graph mode, one process per '
          'measurement, TF thread settings default' % (opts.iterations, opts.min_seconds, opts.warmup)]


def _measure(opts):
  """All child runs; returns (runs, pipeline, compare)."""
  models = ('slim',) if opts.skip_keras else ('slim', 'keras')
  runs = {'slim': {}, 'keras': {}}
  for job in ('train', 'infer'):  # slim and keras alternate so a change of machine load hits both
    for model in models:
      runs[model][job] = _spawn(opts, job, model, opts.onednn)
  pipeline = _spawn(opts, 'pipeline', 'input', opts.onednn)
  compare = {}
  major = int(str(_get(runs['slim'], 'infer', 'tf_version') or '0').split('.')[0])
  if not opts.skip_onednn_compare and major >= 2:
    batch = _compare_batch(opts)
    for model in models:
      compare[model] = {k: _spawn(opts, 'infer', model, k, [batch]) for k in ('off', 'on')}
  return runs, pipeline, compare


def _compare_batch(opts):
  return 32 if 32 in opts.batch_sizes else max(opts.batch_sizes)


def _report(opts, runs, pipeline, compare, loads):
  first = runs['slim'].get('infer') or runs['slim'].get('train') or {}
  lines = _header(opts, first, loads) + [''] + _model_rows(runs, opts) + [''] + _pipeline_rows(
      pipeline, runs['slim'].get('train'), opts)
  if compare:
    lines += [''] + _onednn_rows(compare, _compare_batch(opts))
  elif not opts.skip_onednn_compare:
    lines += ['', 'oneDNN effect: not measured (TF %s does not read %s)' % (first.get('tf_version'), ONEDNN_ENV)]
  return '\n'.join(lines)


def _batch_sizes(text):
  try:
    sizes = [int(t) for t in text.split(',') if t.strip()]
  except ValueError:
    sizes = []
  if not sizes or min(sizes) < 1:
    raise argparse.ArgumentTypeError('--batch-sizes: comma-separated positive ints, got %r' % text)
  return sizes


def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', action='store_true', help='few iterations (3 timed, 1 warm-up, no minimum time)')
  p.add_argument('--iterations', type=int, help='minimum timed steps per measurement (default 10)')
  p.add_argument('--warmup', type=int, help='untimed steps before timing (default 3)')
  p.add_argument('--min-seconds', type=float, help='minimum timed seconds per measurement (default 5)')
  p.add_argument('--batch-sizes', type=_batch_sizes, default=[1, 32], help='inference batch sizes (default 1,32)')
  p.add_argument('--train-batch-size', type=int, default=32, help='training and input pipeline batch (default 32)')
  p.add_argument('--skip-keras', action='store_true', help='measure only our slim model')
  p.add_argument('--onednn', choices=('default', 'on', 'off'), default='default',
                 help='%s in the child processes: unset (TF decides), 1 or 0' % ONEDNN_ENV)
  p.add_argument('--skip-onednn-compare', action='store_true', help='do not time batch-32 inference with oneDNN '
                 'off and on (done by default on TF 2.x)')
  p.add_argument('--pipeline-images', type=int, default=200, help='shapes images converted for the pipeline')
  p.add_argument('--pipeline-image-size', type=int, default=384, help='their side in px (ImageNet averages ~400)')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--json', help='also write every raw result to this file')
  for hidden in ('--_child', '--_model', '--_data-dir'):
    p.add_argument(hidden, help=argparse.SUPPRESS)
  opts = p.parse_args(argv)
  quick = opts.quick
  for name, normal, fast in (('iterations', 10, 3), ('warmup', 3, 1), ('min_seconds', 5.0, 0.0)):
    if getattr(opts, name) is None:
      setattr(opts, name, fast if quick else normal)
  if opts.iterations < 1 or opts.warmup < 0 or opts.train_batch_size < 1 or opts.pipeline_images < 1:
    p.error('--iterations and --train-batch-size and --pipeline-images must be >= 1, --warmup >= 0')
  opts.job, opts.model, opts.data_dir = opts._child, opts._model, opts._data_dir  # pylint: disable=protected-access
  return opts


def main(argv=None):
  opts = _parse(sys.argv[1:] if argv is None else argv)
  if opts.job:
    _child_main(opts)
    return 0
  start_load = os.getloadavg()[0]
  opts.data_dir = tempfile.mkdtemp(prefix='mnv2_bench_')
  try:
    runs, pipeline, compare = _measure(opts)
  finally:
    shutil.rmtree(opts.data_dir, ignore_errors=True)
  print(_report(opts, runs, pipeline, compare, (start_load, os.getloadavg()[0])))
  if opts.json:
    with open(opts.json, 'w') as f:
      json.dump({'runs': runs, 'pipeline': pipeline, 'onednn_compare': compare}, f, indent=1, sort_keys=True)
  failed = [r for r in [pipeline] + [r for m in runs.values() for r in m.values()] if 'error' in r]
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
