"""A tiny `mnv2 demo` run passes through every phase and reports what the evaluation files say."""
import json
import os

from pipelines import cli
from pipelines import demo


def test_tiny_demo_runs_every_phase(tmp_path, capsys):
  out = str(tmp_path / 'demo')
  argv = ['demo', '--output-dir', out, '--steps', '2', '--scale', '0.02', '--image-size', '64',
          '--set', 'classification:classification.image_size=32', '--set', 'classification:train.batch_size=4',
          '--set', 'detection:detection.image_size=64', '--set', 'detection:train.batch_size=2',
          '--set', 'segmentation:segmentation.crop_size=64', '--set', 'segmentation:segmentation.eval_crop_size=64',
          '--set', 'segmentation:train.batch_size=2']
  assert cli.main(argv) == 0
  printed = capsys.readouterr().out
  with open(os.path.join(out, 'report.md')) as f:
    report = f.read()
  for task in demo.TASKS:
    model_dir = os.path.join(out, 'models', task)
    with open(os.path.join(model_dir, 'eval', 'metrics.json')) as f:
      metrics = json.load(f)
    assert metrics['global_step'] == 2
    key = demo.TARGETS[task][0]
    # The report's numbers are the evaluation files' numbers, not constants.
    assert '| %s | %.4g |' % (key, metrics[key]) in report
    assert '| %s | %s | %.3f |' % (task, demo.TARGETS[task][2], metrics[key]) in report
    assert '| %s | %s | %.3f |' % (task, demo.TARGETS[task][2], metrics[key]) in printed
    pictures = os.listdir(os.path.join(out, 'pictures', task))
    assert pictures and all(os.path.getsize(os.path.join(out, 'pictures', task, p)) > 0 for p in pictures)
    assert 'pictures/%s/' % task in report
    assert os.listdir(os.path.join(model_dir, 'export'))
  # Detection and segmentation warm-started from the demo's classifier.
  for task in ('detection', 'segmentation'):
    with open(os.path.join(out, 'models', task, 'warm_start.txt')) as f:
      assert 'restored' in f.read()
  assert os.path.isfile(os.path.join(out, 'models', 'detection', 'eval', 'detections.json'))


def test_bad_task_and_set_are_rejected(tmp_path, capsys):
  assert cli.main(['demo', '--output-dir', str(tmp_path), '--tasks', 'segmentaton']) == 2
  assert 'segmentaton' in capsys.readouterr().err
  assert cli.main(['demo', '--output-dir', str(tmp_path), '--set', 'train.steps=3']) == 2
  assert 'TASK:KEY=VALUE' in capsys.readouterr().err
