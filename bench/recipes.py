"""What the anchors' training recipes are worth on the demo data: old behaviour against new, in one run.

Trains, on the embedded "shapes" data of `mnv2 demo` (generated and converted by the demo's own code, in
`--output-dir`), with the demo configs and the same steps and seeds:

- detection with each pair of crop sampler (`detection.crop_sampler: iou`, the SSD paper's sampler with an
  IoU test, this project's before; `od_api`, the Object Detection API's `ssd_random_crop` with its
  defaults) and negative mining (top-k by loss, this project's before: `hard_example_miner:
  {num_hard_examples: null, iou_threshold: 1.0}`; the OD API's NMS-based `HardExampleMiner`), all
  warm-started from the same demo classifier;
- detection with the demo config's anchors (six boxes per cell on the 8x8 map from scale 0.25) against the
  OD API's (`detection.anchors: {min_scale: 0.2, reduce_boxes_in_lowest_layer: true}`), both with the IoU
  sampler and the miner;
- classification without colour distortion (`classification.preprocessing.color_distortion: none`)
  against TF-Slim's fast distortion (`fast`).

Prints a markdown table (AP50 and AP, top-1) of each pair, read back from each run's `eval/metrics.json`.
The numbers compare recipes on this tiny world; they are not the paper's figures.

Not here: speed (`bench/*_bench.py`), the paper-size runs (README "Running the paper settings").
Run: `python bench/recipes.py [--output-dir DIR] [--tasks classification,detection] [--steps N] [--scale F]
[--json out.json]`.
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
from pipelines.cli import environment  # noqa: E402  pylint: disable=g-import-not-at-top

environment.configure()  # oneDNN and TensorFlow's log level, as the `mnv2` command (before TensorFlow)

from datasets import shapes  # noqa: E402
from pipelines.cli import demo  # noqa: E402
from pipelines.training import runner  # noqa: E402

TOP_K = ['detection.hard_example_miner.num_hard_examples=null', 'detection.hard_example_miner.iou_threshold=1.0']
OD_API_ANCHORS = ['detection.anchors.min_scale=0.2', 'detection.anchors.reduce_boxes_in_lowest_layer=true']
# (task, model dir suffix, row name, overrides): the first of each task is the old behaviour. Detection runs
# every pair of crop sampler and miner (the demo config uses the IoU sampler with the OD API's miner), with the
# demo config's anchors, then the demo config with the OD API's anchors.
RUNS = (
    ('classification', 'before', 'no colour distortion (before)',
     ['classification.preprocessing.color_distortion=none']),
    ('classification', 'now', "TF-Slim's fast colour distortion",
     ['classification.preprocessing.color_distortion=fast']),
    ('detection', 'before', 'IoU crop + top-k mining (before)', ['detection.crop_sampler=iou'] + TOP_K),
    ('detection', 'iou-miner', 'IoU crop + `HardExampleMiner` (demo config)', ['detection.crop_sampler=iou']),
    ('detection', 'odapi-topk', "OD API's `ssd_random_crop` + top-k mining",
     ['detection.crop_sampler=od_api'] + TOP_K),
    ('detection', 'now', "OD API's `ssd_random_crop` + `HardExampleMiner` (paper config)",
     ['detection.crop_sampler=od_api']),
    ('detection', 'odapi-anchors', "IoU crop + `HardExampleMiner` with the OD API's anchors (demo config before)",
     ['detection.crop_sampler=iou'] + OD_API_ANCHORS),
)
METRICS = {'classification': ('top1_accuracy',), 'detection': ('AP50', 'AP')}


def _train_and_evaluate(task, suffix, name, overrides, raw, out, steps):
  base = demo._data_overrides(task, raw, out)  # pylint: disable=protected-access  (the demo's own conversion)
  if task != 'classification':  # the demo's recipe: the backbone from the demo classifier of this run
    base.append('train.warm_start.checkpoint=%s' % os.path.join(out, 'models', 'classification-before'))
  if steps:
    base.append('train.steps=%d' % steps)
  config = runner.load_config(os.path.join(demo.CONFIG_DIR, 'demo_%s.yaml' % task), base + overrides, 'train')
  model_dir = os.path.join(out, 'models', '%s-%s' % (task, suffix))
  start = time.time()
  runner.train(config, model_dir)
  metrics = runner.evaluate(config, model_dir)
  return {'task': task, 'recipe': name, 'seconds': time.time() - start,
          'metrics': dict((key, float(metrics[key])) for key in METRICS[task])}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--output-dir', default='/tmp/mnv2_recipes', help='data and models (default /tmp/mnv2_recipes)')
  parser.add_argument('--steps', type=int, help='training steps of every run (default: the demo configs)')
  parser.add_argument('--scale', type=float, default=1.0, help='multiplies the number of generated images')
  parser.add_argument('--tasks', default='classification,detection',
                      help='comma-separated tasks to compare (default classification,detection)')
  parser.add_argument('--json', help='also write the results here')
  args = parser.parse_args(argv)
  import logging  # pylint: disable=g-import-not-at-top
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s', datefmt='%H:%M:%S')
  tasks = [task for task in args.tasks.split(',') if task]
  unknown = sorted(set(tasks) - set(METRICS))
  if unknown or not tasks:
    parser.error('--tasks: choose from %s, got %r' % (', '.join(sorted(METRICS)), args.tasks))
  out = os.path.abspath(args.output_dir)
  raw = demo.generate_data(out, ['classification', 'detection'], args.scale, shapes.DEFAULT_IMAGE_SIZE, 0)
  if 'detection' in tasks and 'classification' not in tasks:
    # The detection runs' warm start is the first classification run's model (reused when it is there).
    _train_and_evaluate(*(RUNS[0] + (raw, out, args.steps)))
  results = [_train_and_evaluate(task, suffix, name, overrides, raw, out, args.steps)
             for task, suffix, name, overrides in RUNS if task in tasks]
  lines = ['| task | recipe | metrics | training + eval |', '|---|---|---|---|']
  for r in results:
    lines.append('| %s | %s | %s | %.0f s |' % (r['task'], r['recipe'], ', '.join(
        '%s %.3f' % (k, v) for k, v in sorted(r['metrics'].items(), reverse=True)), r['seconds']))
  print('\n' + '\n'.join(lines))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
