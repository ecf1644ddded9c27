"""`mnv2 demo`: the whole system on embedded data, on CPU, with nothing downloaded.

Phases, each timed and reported: generate the "shapes" world in the three public raw formats
(`datasets.shapes`) -> convert with the real converters -> for each task train a small model from scratch
with the real config system (`configs/demo_*.yaml`) -> evaluate on the held-out split with the real
metrics -> export a SavedModel -> reload it and predict on held-out images -> `report.md` with the metrics
(read back from each `eval/metrics.json`) and pictures. Nothing here has its own training or metric code.
"""
import collections
import glob
import json
import logging
import os
import statistics
import time

from datasets import shapes
from datasets import tfrecord
from pipelines.cli import predict
from pipelines.cli.demo_exports import CALIBRATION_IMAGES, EXPORTS, LATENCY_RUNS, QAT_NAME  # noqa: F401  (public)
from pipelines.cli.demo_exports import Export, measure_exports, measure_quantization_aware  # noqa: F401
from pipelines.cli.demo_exports import _headline_keys, _headlines, _megabytes, _tflite_threads, _value
from pipelines.cli import render
from pipelines.evaluation import exported_eval
from pipelines.tasks import registry
from pipelines.training import runner

LOG = logging.getLogger('mnv2')
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'configs')
NUM_PICTURES = 6
# One model's headline metric: `task` the row's name, `base` the single task it measures (a multitask
# model's member), `model` the config's task, `metric` its metrics.json key, `display` its name for a person.
Result = collections.namedtuple('Result', ['task', 'base', 'model', 'metric', 'display', 'value', 'target',
                                           'seconds', 'metrics', 'pictures', 'exports'])


def demo_tasks():
  """The registered tasks the demo can run (those with a demo metric), in registration order."""
  return [cls.name for cls in registry.task_classes() if cls.DEMO is not None or cls.demo_members()]


def default_tasks():
  """What `mnv2 demo` runs by default: the single tasks (a task that combines others is opt-in)."""
  return [cls.name for cls in registry.task_classes() if cls.DEMO is not None and not cls.demo_members()]


def add_arguments(parser):
  parser.add_argument('--output-dir', default='demo_output', help='where everything goes (default demo_output)')
  parser.add_argument('--tasks', default=','.join(default_tasks()),
                      help='comma-separated subset of %s (default: the three single-task models; multitask trains '
                      'the one-backbone model and compares it with the single-task models of the same run)'
                      % ', '.join(demo_tasks()))
  parser.add_argument('--steps', type=int, help='training steps for every task (default: the demo configs)')
  parser.add_argument('--scale', type=float, default=1.0, help='multiplies the number of generated images')
  parser.add_argument('--image-size', type=int, default=shapes.DEFAULT_IMAGE_SIZE, help='generated image size')
  parser.add_argument('--seed', type=int, default=0, help='data generator seed')
  parser.add_argument('--set', action='append', default=[], metavar='TASK:KEY=VALUE',
                      help='override a demo config value, e.g. detection:train.batch_size=8 (repeatable)')
  parser.add_argument('--quantization-aware', default='all', metavar='TASKS',
                      help='comma-separated single tasks whose model is also fine-tuned quantization-aware and '
                      'exported int8 (default all; none skips the phase)')
  parser.add_argument('--strict', action='store_true', help='exit 1 when a target is missed')


class Timer(object):
  """Context manager that logs a phase's start and duration."""

  def __init__(self, name):
    self.name, self.seconds = name, 0.0

  def __enter__(self):
    LOG.info('== %s', self.name)
    self._start = time.time()
    return self

  def __exit__(self, *exc):
    self.seconds = time.time() - self._start
    LOG.info('== %s done in %.1fs', self.name, self.seconds)


def _parse_tasks(text):
  tasks = [t.strip() for t in text.split(',') if t.strip()]
  unknown = [t for t in tasks if t not in demo_tasks()]
  if unknown or not tasks:
    raise ValueError('--tasks: unknown %s (valid: %s)' % (', '.join(unknown) or '(none)', ', '.join(demo_tasks())))
  return tasks


def _parse_quantization_aware(text, tasks):
  """The tasks of `tasks` that `--quantization-aware` names (all / none / a comma-separated list)."""
  singles = [t for t in tasks if not registry.task_class(t).demo_members()]
  if text.strip() in ('all', 'none'):
    return singles if text.strip() == 'all' else []
  named = [t.strip() for t in text.split(',') if t.strip()]
  wrong = [t for t in named if t not in demo_tasks() or registry.task_class(t).demo_members()]
  if wrong or not named:
    raise ValueError('--quantization-aware: %s is not a single task (valid: all, none, or some of %s)' % (
        ', '.join(wrong) or '(none)', ', '.join(t for t in demo_tasks() if not registry.task_class(t).demo_members())))
  return [t for t in singles if t in named]


def _single_tasks(tasks):
  """The single tasks `tasks` need data for: themselves, and the members of those that combine others."""
  needed = set()
  for name in tasks:
    needed.update(registry.task_class(name).demo_members() or [name])
  return [name for name in registry.names() if name in needed]


def generate_data(out, tasks, scale, image_size, seed):
  formats = [registry.task_class(name).DEMO_FORMAT for name in _single_tasks(tasks)]
  counts = shapes.scaled_counts(scale)
  with Timer('generating the shapes data (%s)' % ', '.join(formats)):
    return shapes.generate(os.path.join(out, 'data'), seed=seed, image_size=image_size, counts=counts,
                           formats=tuple(formats))


def convert(task, raw, records):
  """Runs the task's real converter on both splits; returns data overrides for the config."""
  with Timer('converting %s data' % task):
    labels = registry.task_class(task).demo_convert(raw, records)
  return ['data.train_files=%s' % os.path.join(records, 'train-*'),
          'data.eval_files=%s' % os.path.join(records, 'val-*'),
          'data.labels_file=%s' % labels]


def held_out_images(task, raw):
  return registry.task_class(task).demo_images(raw, NUM_PICTURES)


def _train_examples(records_dir):
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  return sum(1 for path in glob.glob(os.path.join(records_dir, 'train-*'))
             for _ in tf.python_io.tf_record_iterator(path))


def _data_overrides(task, raw, out):
  """Converts the task's data (once per output directory) and returns its data.* overrides."""
  records = os.path.join(out, 'records', task)
  if glob.glob(os.path.join(records, 'val-*')):
    LOG.info('== %s records already in %s', task, records)
    labels = registry.task_class(task).demo_labels_file(records)
    overrides = ['data.train_files=%s' % os.path.join(records, 'train-*'),
                 'data.eval_files=%s' % os.path.join(records, 'val-*'), 'data.labels_file=%s' % labels]
  else:
    overrides = convert(task, raw, records)
  return overrides + ['data.num_train_examples=%d' % _train_examples(records)]


def run_task(task, raw, out, steps, extra_sets, quantization_aware=True):
  """Convert -> train -> eval -> export -> predict for one task; returns a list of Results (one per
  member for the multitask model)."""
  start = time.time()
  cls = registry.task_class(task)
  members = cls.demo_members()
  if members:
    overrides = ['%s.%s.%s' % (task, name, o) for name in members for o in _data_overrides(name, raw, out)]
  else:
    overrides = _data_overrides(task, raw, out)
  if steps:
    overrides.append('train.steps=%d' % steps)
  if cls.DEMO_BACKBONE_FROM:
    # The paper's recipe: detection and segmentation start from a classifier's backbone.
    source = os.path.join(out, 'models', cls.DEMO_BACKBONE_FROM)
    if glob.glob(os.path.join(source, 'model.ckpt-*.index')):
      overrides.append('train.warm_start.checkpoint=%s' % source)
    else:
      LOG.info('no demo %s model in %s: %s trains from scratch (run the %s task first for the warm start)',
               cls.DEMO_BACKBONE_FROM, source, task, cls.DEMO_BACKBONE_FROM)
  overrides += extra_sets
  config_path = os.path.join(CONFIG_DIR, 'demo_%s.yaml' % task)
  config = runner.load_config(config_path, overrides, 'train')
  model_dir = os.path.join(out, 'models', task)
  with Timer('training %s (%d steps)' % (task, config.train.steps)):
    runner.train(config, model_dir)
  with Timer('evaluating %s' % task):
    runner.evaluate(config, model_dir)
  with open(os.path.join(model_dir, 'eval', 'metrics.json')) as f:
    metrics = json.load(f)
  with Timer('exporting %s and predicting from the SavedModel' % task):
    export_dir = runner.export(config, model_dir)
    images = held_out_images(task, raw)
    picture_dir = os.path.join(out, 'pictures', task)
    if not os.path.isdir(picture_dir):
      os.makedirs(picture_dir)
    pictures = []
    names = runner.make_task(config).legend_names()
    for path, pred in zip(images, predict.predict_saved_model(export_dir, images)):  # one backbone pass each
      item = render.describe(path, pred, os.path.join(picture_dir, os.path.splitext(os.path.basename(path))[0] + '.png'),
                             class_names=names)
      LOG.info('  %s', render.summary_line(item))
      pictures.append(item)
  with Timer('exporting %s to TFLite and measuring every export on the held-out split' % task):
    exports = measure_exports(config, model_dir, export_dir, images[0])
  if cls.demo_members() is None and quantization_aware:
    with Timer('fine-tuning %s quantization-aware, exporting it to TFLite int8 and measuring it' % task):
      exports.append(measure_quantization_aware(config, model_dir, os.path.join(out, 'models', task + '_qat'),
                                                images[0]))
  seconds = time.time() - start
  return [Result(row, base, config.task, key, demo.display, metrics.get(key), demo.target, seconds, metrics,
                 pictures, exports)
          for row, base, key, demo in _headlines(config)]



def summary_table(results):
  """Markdown table; a multitask row also shows its difference to the single-task model of this run."""
  single = dict((r.task, r.value) for r in results if r.task == r.base)
  lines = ['| task | metric | value | target | pass | vs single-task | time |', '|---|---|---|---|---|---|---|']
  for r in results:
    ok = r.value is not None and r.value >= r.target
    delta = ''
    if r.task != r.base and r.value is not None and single.get(r.base) is not None:
      delta = '%+.3f' % (r.value - single[r.base])
    lines.append('| %s | %s | %s | >= %.2f | %s | %s | %.0fs |' % (
        r.task, r.display, 'n/a' if r.value is None else '%.3f' % r.value, r.target, 'PASS' if ok else 'FAIL',
        delta, r.seconds))
  return '\n'.join(lines)


def exports_table(results):
  """Markdown: every export of every model on the held-out split, next to its SavedModel."""
  lines = ['| model | export | metric | value | vs SavedModel | size | JPEG -> result | model only |',
           '|---|---|---|---|---|---|---|---|']
  for r in results:
    saved = [e for e in r.exports if e.error is None and e.name == EXPORTS[0][0]]
    reference = saved[0].metrics.get(r.metric) if saved else None
    for e in r.exports:
      if e.error is not None:
        lines.append('| %s | %s | %s | not made: %s | | | | |' % (r.task, e.name, r.display, e.error))
        continue
      value = e.metrics.get(r.metric)
      delta = '' if e.name == EXPORTS[0][0] or value is None or reference is None else '%+.3f' % (value - reference)
      lines.append('| %s | %s | %s | %s | %s | %s | %.1f ms | %s |' % (
          r.task, e.name, r.display, _value(value), delta, _megabytes(e.size_bytes), e.latency_ms,
          '' if e.model_ms is None else '%.2f ms' % e.model_ms))
  return '\n'.join(lines)


LATENCY_ROUNDS = 5


def multitask_latency(results, runs=LATENCY_RUNS, rounds=LATENCY_ROUNDS):
  """The combined TFLite model against the single-task TFLite models of this run on one held-out image
  (model only): the combined model's median time against the sum of the single-task models' medians, i.e.
  the three run one after another. Returns markdown lines ([] without them).

  The models take turns in `rounds` blocks of runs / rounds calls each (after one untimed call; a model's
  time is the median of its blocks' medians), so every model sees the same machine load. Turns are blocks,
  not single calls: each interpreter owns a thread pool, and switching interpreters on every call timed the
  pools' hand-over (TF 2.15, 2 threads: the combined model 5.2 ms per call interleaved against 1.1 ms in a
  block), not the models."""
  from pipelines.export import tflite_task  # pylint: disable=g-import-not-at-top
  combined = [r for r in results if r.task != r.base]
  singles = dict((r.task, r) for r in results if r.task == r.base)
  if not combined:
    return []
  members = [r.base for r in combined]
  if any(name not in singles for name in members):
    return ['The single-task models did not run in this demo, so the combined model\'s latency has nothing to be '
            'compared with: run `mnv2 demo --tasks %s,multitask`.' % ','.join(members)]
  lines = ['| TFLite | multitask model (one backbone pass) | %s one after another | ratio |' % ' + '.join(members),
           '|---|---|---|---|']
  image = combined[0].pictures[0]['image'] if combined[0].pictures else None
  with open(image, 'rb') as f:
    encoded = f.read()
  for name, _, _ in EXPORTS[1:]:
    paths = [dict((e.name, e.path) for e in r.exports if e.error is None).get(name)
             for r in [combined[0]] + [singles[m] for m in members]]
    if not all(paths):
      lines.append('| %s | not made on this stack | | |' % name)
      continue
    predictors = [tflite_task.TFLitePredictor(p, num_threads=_tflite_threads()) for p in paths]
    try:
      calls = [predictor.interpreter_call(encoded) for predictor in predictors]
      times = [[] for _ in calls]
      for _ in range(rounds):
        for call, timed in zip(calls, times):
          timed.append(exported_eval.latency_ms(call, runs=max(1, runs // rounds), warmup=1))
      medians = [statistics.median(t) for t in times]
      one, three = medians[0], sum(medians[1:])
    finally:
      for predictor in predictors:
        predictor.close()
    lines.append('| %s | %.2f ms | %.2f ms | %.2fx |' % (name, one, three, one / three))
  return lines


def write_report(out, results, total_seconds):
  """`report.md`: summary, exported models, every metric from each eval/metrics.json, and the pictures.

  Paths are relative to the report, so the output directory can be moved or shared as it is.
  """
  lines = ['# mnv2 demo report', '', 'Metrics of each trained model (its checkpoint, evaluated by the Estimator on '
           'the held-out split):', '', summary_table(results), '',
           'Total time: %.0fs. Metrics are read from each `models/<task>/eval/metrics.json`; TensorBoard logs: '
           '`tensorboard --logdir models` (from this directory).' % total_seconds, '']
  if any(r.exports for r in results):
    lines += ['## Exported models', '',
              'Every export scored on the held-out split with the evaluation\'s metric code, from the encoded '
              'image through the export\'s own serving path (`pipelines/evaluation/exported_eval.py`). Size on '
              'disk; latency is the median of %d single-image runs on one held-out image on this machine: '
              '"JPEG -> result" includes decoding, preprocessing and post-processing, "model only" is the TFLite interpreter (%s '
              'threads). int8 is calibrated on %d training images.' % (
                  LATENCY_RUNS, _tflite_threads() or 'default', CALIBRATION_IMAGES), '', exports_table(results), '']
    comparison = multitask_latency(results)
    if comparison:
      lines += ['### One multitask model against three single-task models', '',
                'Model only, on the same held-out image; the models take turns in blocks of %d calls, each '
                'model\'s time is the median of its blocks\' medians (a ratio below 1: the combined model is '
                'cheaper).' % (LATENCY_RUNS // LATENCY_ROUNDS), ''] + comparison + ['']
  shown = set()
  for r in results:
    if id(r.metrics) in shown:  # the multitask model's members share one metrics.json
      continue
    shown.add(id(r.metrics))
    lines += ['## %s' % r.model, '', '| metric | value |',
              '|---|---|']
    for key, value in sorted(r.metrics.items()):
      if isinstance(value, (int, float)):
        shown_value = 'n/a (no such objects in the split)' if value == -1 else (
            'n/a' if value != value else '%.4g' % value)
        lines.append('| %s | %s |' % (key, shown_value))
    lines.append('')
    for item in r.pictures:
      picture = os.path.relpath(item.get('overlay', item['output']), out)
      lines.append('![%s](%s)  ' % (os.path.basename(item['image']), picture))
      lines.append('%s  ' % render.summary_line(item, out))
    lines.append('')
  path = os.path.join(out, 'report.md')
  tfrecord.atomic_write(path, '\n'.join(lines))
  return path


def _task_sets(sets, task):
  picked = []
  for text in sets:
    name, sep, rest = text.partition(':')
    if not sep or name not in demo_tasks():
      raise ValueError('--set %r: expected TASK:KEY=VALUE with TASK in %s' % (text, ', '.join(demo_tasks())))
    if name == task:
      picked.append(rest)
  return picked


def run(args):
  tasks = _parse_tasks(args.tasks)
  quantization_aware = _parse_quantization_aware(args.quantization_aware, tasks)
  for task in tasks:
    _task_sets(args.set, task)  # validate before any work
  start = time.time()
  out = os.path.abspath(args.output_dir)
  raw = generate_data(out, tasks, args.scale, args.image_size, args.seed)
  results = [r for task in tasks for r in run_task(task, raw, out, args.steps, _task_sets(args.set, task),
                                                   task in quantization_aware)]
  total = time.time() - start
  report = write_report(out, results, total)
  print('\n' + summary_table(results))
  print('\nall phases done in %.0fs; report: %s' % (total, report))
  missed = [r.task for r in results if r.value is None or r.value < r.target]
  if missed:
    print('targets missed: %s (see README.md "Demo results" for what this hardware reaches)' % ', '.join(missed))
  return 1 if missed and args.strict else 0
