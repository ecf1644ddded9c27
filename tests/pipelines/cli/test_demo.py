"""A tiny `mnv2 demo` run passes through every phase and reports what the evaluation files say."""
import json
import os

from pipelines.cli import main as cli
from pipelines.cli import demo
from pipelines.export import tflite_export as te
from pipelines.tasks import registry

SINGLE_TASKS = ('classification', 'detection', 'segmentation')


def test_tiny_demo_runs_every_phase(tmp_path, capsys):
  out = str(tmp_path / 'demo')
  argv = ['demo', '--output-dir', out, '--steps', '2', '--scale', '0.02', '--image-size', '64',
          '--set', 'classification:classification.image_size=32', '--set', 'classification:train.batch_size=4',
          '--set', 'detection:detection.image_size=64', '--set', 'detection:train.batch_size=2',
          '--set', 'segmentation:segmentation.crop_size=64', '--set', 'segmentation:segmentation.eval_crop_size=64',
          '--set', 'segmentation:train.batch_size=2', '--tasks', 'classification,detection,segmentation,multitask',
          # One quantization-aware fine-tune keeps the suite short; test_quantization.py covers all three tasks.
          '--quantization-aware', 'classification']
  for key, value in (('classification.image_size', 32), ('detection.image_size', 64), ('segmentation.crop_size', 64),
                     ('segmentation.eval_crop_size', 64), ('multitask.classification.batch_size', 4),
                     ('multitask.detection.batch_size', 2), ('multitask.segmentation.batch_size', 2)):
    argv += ['--set', 'multitask:%s=%s' % (key, value)]
  assert cli.main(argv) == 0
  printed = capsys.readouterr().out
  with open(os.path.join(out, 'report.md')) as f:
    report = f.read()
  for task in SINGLE_TASKS:
    model_dir = os.path.join(out, 'models', task)
    with open(os.path.join(model_dir, 'eval', 'metrics.json')) as f:
      metrics = json.load(f)
    assert metrics['global_step'] == 2
    key = registry.task_class(task).DEMO.key
    # The report's numbers are the evaluation files' numbers, not constants.
    assert '| %s | %.4g |' % (key, metrics[key]) in report
    assert '| %s | %s | %.3f |' % (task, registry.task_class(task).DEMO.display, metrics[key]) in report
    assert '| %s | %s | %.3f |' % (task, registry.task_class(task).DEMO.display, metrics[key]) in printed
    pictures = os.listdir(os.path.join(out, 'pictures', task))
    assert pictures and all(os.path.getsize(os.path.join(out, 'pictures', task, p)) > 0 for p in pictures)
    assert 'pictures/%s/' % task in report
    assert os.listdir(os.path.join(model_dir, 'export'))
  # Detection and segmentation warm-started from the demo's classifier.
  for task in ('detection', 'segmentation'):
    with open(os.path.join(out, 'models', task, 'warm_start.txt')) as f:
      assert 'restored' in f.read()
  assert os.path.isfile(os.path.join(out, 'models', 'detection', 'eval', 'detections.json'))
  # Paths are relative to the report (the folder can be moved); COCO's -1 is shown as n/a.
  assert out not in report and 'data/' in report
  assert '| -1 |' not in report

  # Every export, scored on the held-out split: the SavedModel scores what the checkpoint scored (same
  # serving preprocessing as evaluation, folded batch norm), TFLite float32 what the SavedModel scored.
  rows = {}
  for line in report.splitlines():
    cells = [c.strip() for c in line.strip('|').split('|')]
    if len(cells) == 8 and cells[0] in SINGLE_TASKS and cells[1] in [e[0] for e in demo.EXPORTS] + [demo.QAT_NAME]:
      rows[cells[0], cells[1]] = cells
  for task in SINGLE_TASKS:
    with open(os.path.join(out, 'models', task, 'eval', 'metrics.json')) as f:
      checkpoint = json.load(f)[registry.task_class(task).DEMO.key]
    saved = float(rows[task, 'SavedModel'][3])
    tolerance = 0.25 if task == 'detection' else 0.02  # AP over 2 images of a 2-step model: NMS near-ties
    assert abs(saved - checkpoint) <= tolerance, (task, saved, checkpoint)
    assert abs(float(rows[task, 'TFLite float32'][3]) - saved) <= tolerance, task
    assert rows[task, 'TFLite float32'][5].endswith('MB') and rows[task, 'TFLite float32'][7].endswith('ms')
    int8 = rows[task, 'TFLite int8']
    if int8[3].startswith('not made'):
      assert task == 'detection' and te.is_tf1()
    else:
      assert float(int8[5].split()[0]) < float(rows[task, 'TFLite float32'][5].split()[0])  # smaller on disk
    assert os.path.isfile(os.path.join(out, 'models', task, 'export', 'tflite_none', 'model.tflite'))
    # The quantization-aware fine-tune (issue #21): an int8 model from its learned ranges, scored like the others.
    if task != 'classification':  # not asked for (--quantization-aware)
      assert (task, demo.QAT_NAME) not in rows and not os.path.isdir(os.path.join(out, 'models', task + '_qat'))
      continue
    qat = rows[task, demo.QAT_NAME]
    assert float(qat[5].split()[0]) < float(rows[task, 'TFLite float32'][5].split()[0]), qat
    with open(os.path.join(out, 'models', task + '_qat', 'export', 'tflite_int8', 'model.json')) as f:
      meta = json.load(f)
    assert meta['quantization_aware'] and meta['edgetpu']['problems'] == [], meta['edgetpu']

  # The multitask model: one row per member with its difference to the single-task model of this run,
  # and the combined TFLite model's latency against the single-task TFLite models one after another.
  with open(os.path.join(out, 'models', 'multitask', 'eval', 'metrics.json')) as f:
    combined = json.load(f)
  for task in SINGLE_TASKS:
    with open(os.path.join(out, 'models', task, 'eval', 'metrics.json')) as f:
      single = json.load(f)[registry.task_class(task).DEMO.key]
    value = combined['%s/%s' % (task, registry.task_class(task).DEMO.key)]
    assert '| multitask (%s) | %s | %.3f | >= %.2f | %s | %+.3f |' % (
        task, registry.task_class(task).DEMO.display, value, registry.task_class(task).DEMO.target, 'PASS' if value >= registry.task_class(task).DEMO.target else 'FAIL',
        value - single) in report
  assert os.path.isfile(os.path.join(out, 'models', 'multitask', 'export', 'tflite_none', 'model.tflite'))
  latency = [[c.strip() for c in line.strip('|').split('|')] for line in report.splitlines()
             if line.startswith('| TFLite float32 |') and line.count('|') == 5]
  assert len(latency) == 1, report
  one, three, ratio = (float(c.rstrip('msx ')) for c in latency[0][1:])
  # The ratio is the two times' (each printed to 0.005 ms, the ratio to 0.005).
  assert 0 < three - 0.005 and (one - 0.005) / (three + 0.005) - 0.005 <= ratio <= (one + 0.005) / (three - 0.005) \
      + 0.005, latency


def test_report_shows_undefined_coco_metrics_as_na(tmp_path):
  result = demo.Result('detection', 'detection', 'detection', 'AP50', 'COCO AP50', 0.5, 0.5, 1.0,
                       {'AP50': 0.5, 'APl': -1.0, 'AP/star': -1.0}, [], [])
  path = demo.write_report(str(tmp_path), [result], 1.0)
  with open(path) as f:
    report = f.read()
  assert '| APl | n/a (no such objects in the split) |' in report and '| AP50 | 0.5 |' in report


def test_bad_task_and_set_are_rejected(tmp_path, capsys):
  assert cli.main(['demo', '--output-dir', str(tmp_path), '--tasks', 'segmentaton']) == 2
  assert 'segmentaton' in capsys.readouterr().err
  assert cli.main(['demo', '--output-dir', str(tmp_path), '--set', 'train.steps=3']) == 2
  assert 'TASK:KEY=VALUE' in capsys.readouterr().err
  assert cli.main(['demo', '--output-dir', str(tmp_path), '--quantization-aware', 'multitask']) == 2
  assert '--quantization-aware: multitask is not a single task' in capsys.readouterr().err
