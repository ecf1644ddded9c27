"""TFLite export through the CLI on tiny models trained 2 steps: `mnv2 export --format tflite` then
`mnv2 predict --tflite`, against the SavedModel (`mnv2 export`) on the same image files.

Thresholds: float32 as the issue asks (probabilities 1e-4; every SavedModel detection among its top 10 has a
TFLite detection of the same class with IoU >= 0.99 and score within 1e-3; >= 99.9% of pixels). int8 of a
2-step model: its outputs are nearly constant, so only what a broken quantization would miss is checked
(probabilities within 0.05 -- a few uint8 steps of 1/256 plus input rounding --, >= 90% of pixels).
"""
import glob
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow.compat.v1 as tf
import pytest

from datasets import shapes
from pipelines.cli import main as cli
from pipelines.cli import predict
from pipelines.training import runner
from pipelines.export import onnx_export
from pipelines.export import tflite_export as te
from pipelines.export import tflite_task
from PIL import Image
from tests.conftest import tiny_shapes_records

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

COMMON = """
model: {depth_multiplier: 0.35}
train: {batch_size: 2, steps: 2, optimizer: adam, learning_rate: {schedule: constant, base: 0.001}}
eval: {batch_size: 2}
runtime: {save_checkpoints_steps: 2, log_every_n_steps: 1, seed: 1}
"""
CONFIGS = {
    'classification': """
task: classification
classification: {image_size: 48, num_classes: 5}
data: {train_files: '%(r)s/classification/train-*', eval_files: '%(r)s/classification/val-*',
       labels_file: '%(r)s/classification/labels.txt', shuffle_buffer: 8, num_parallel_reads: 1}
""",
    'detection': """
task: detection
detection: {image_size: 64, num_classes: 7, max_detections: 20}
data: {train_files: '%(r)s/detection/train-*', eval_files: '%(r)s/detection/val-*',
       labels_file: '%(r)s/detection/label_map.pbtxt', shuffle_buffer: 8, num_parallel_reads: 1}
""",
    'segmentation': """
task: segmentation
segmentation: {num_classes: 5, crop_size: 49, eval_crop_size: 64}
data: {train_files: '%(r)s/segmentation/train-*', eval_files: '%(r)s/segmentation/val-*',
       labels_file: '%(r)s/segmentation/labels.txt', shuffle_buffer: 8, num_parallel_reads: 1}
""",
}


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  out, raw = tiny_shapes_records(tmp_path_factory.mktemp('tflite_task'))
  return out, sorted(glob.glob(os.path.join(raw['coco']['val_images'], '*')))[:3]


def _trained(tmp_path, records_dir, task):
  path = str(tmp_path / (task + '.yaml'))
  with open(path, 'w') as f:
    f.write((COMMON + CONFIGS[task]) % {'r': records_dir})
  config = runner.load_config(path, (), 'train')
  model_dir = str(tmp_path / 'model')
  runner.train(config, model_dir)
  return path, config, model_dir


def _export(path, model_dir, export_dir, quantize='none', extra=()):
  args = ['export', '--config', path, '--model-dir', model_dir, '--format', 'tflite', '--quantize', quantize,
          '--export-dir', export_dir] + list(extra)
  assert cli.main(args) == 0
  return os.path.join(export_dir, te.MODEL_NAME)


def _cli_predict(tmp_path, images, flag, value, name):
  out_json = str(tmp_path / (name + '.json'))
  assert cli.main(['predict'] + images + [flag, value, '--json', out_json, '--output', str(tmp_path / name),
                   '--min-score', '0']) == 0
  with open(out_json) as f:
    return json.load(f)


def test_classification(tmp_path, records):
  records_dir, images = records
  path, config, model_dir = _trained(tmp_path, records_dir, 'classification')
  saved = predict.predict_saved_model(runner.export(config, model_dir), images)
  model_path = _export(path, model_dir, str(tmp_path / 'f32'))
  files = sorted(os.listdir(str(tmp_path / 'f32')))
  assert files == ['config.yaml', 'labels.txt', 'model.json', 'model.tflite'], files
  with open(str(tmp_path / 'f32' / 'model.json')) as f:
    meta = json.load(f)
  assert meta['input']['shape'] == [1, 48, 48, 3] and meta['input']['dtype'] == 'float32'
  assert meta['class_names'][1] == shapes.CLASSES[0] and meta['batch_norms_folded'] > 10
  lite = tflite_task.predict(model_path, images)
  for s, t in zip(saved, lite):
    assert np.abs(s['probabilities'] - t['probabilities']).max() < 1e-4
    assert list(s['top_k_classes']) == list(t['top_k_classes'])
    assert [n.decode() for n in s['top_k_class_names']] == t['top_k_class_names']
  # The CLI draws and prints what the SavedModel path does.
  want = _cli_predict(tmp_path, images, '--saved-model', runner.export(config, model_dir), 'saved')
  got = _cli_predict(tmp_path, images, '--tflite', model_path, 'lite')
  assert [[c['name'] for c in w['top_k']] for w in want] == [[c['name'] for c in g['top_k']] for g in got]
  assert all(os.path.isfile(g['output']) for g in got)

  # Issue #22 item 1: ONNX Runtime agrees with the SavedModel; the CLI predicts with it as with TFLite.
  onnx = _onnx(tmp_path, path, model_dir, images)
  if onnx:
    assert sorted(os.listdir(str(tmp_path / 'onnx'))) == ['config.yaml', 'labels.txt', 'model.json', 'model.onnx']
    for s, o in zip(saved, onnx[1]):
      assert np.abs(s['probabilities'] - o['probabilities']).max() < 1e-4
      assert s['top_k_classes'][0] == o['top_k_classes'][0]
    by_cli = _cli_predict(tmp_path, images, '--onnx', onnx[0], 'onnx')
    assert [[c['name'] for c in w['top_k']] for w in want] == [[c['name'] for c in g['top_k']] for g in by_cli]

  checked = _agrees_without_tensorflow(tmp_path, images, model_path, onnx, lambda w, i, _: _same_classes(w, i))
  assert checked in (0, 2 * len(images)) and (checked or te.is_tf1())

  int8 = _export(path, model_dir, str(tmp_path / 'int8'), 'int8', ['--calibration-images', '8'])
  with open(str(tmp_path / 'int8' / 'model.json')) as f:
    assert json.load(f)['input']['dtype'] == 'uint8'
  for s, t in zip(saved, tflite_task.predict(int8, images)):
    assert np.abs(s['probabilities'] - t['probabilities']).max() < 0.05

  # Issue #22 item 4: export to and predict from a remote file system (TensorFlow's in-memory ram://,
  # TF >= 2.x), every file through tf.io.gfile, the interpreter fed the model's content.
  if tf.__version__.startswith('1.'):
    return
  remote = _export(path, model_dir, 'ram://mnv2_%d/f32' % os.getpid())
  assert sorted(tf.io.gfile.listdir(os.path.dirname(remote))) == files
  for s, t in zip(lite, tflite_task.predict(remote, images)):
    np.testing.assert_array_equal(s['probabilities'], t['probabilities'])


def _onnx(tmp_path, path, model_dir, images, name='onnx'):
  """Exports model.onnx through the CLI and predicts with ONNX Runtime (None on TF 1.15, after checking its
  one-line refusal)."""
  args = ['export', '--config', path, '--model-dir', model_dir, '--format', 'onnx',
          '--export-dir', str(tmp_path / name)]
  if te.is_tf1():
    assert cli.main(args) == 2
    return None
  assert cli.main(args) == 0
  model_path = str(tmp_path / name / onnx_export.MODEL_NAME)
  return model_path, onnx_export.predict(model_path, images)


# Issue #22 item 2: `mnv2 predict --tflite / --onnx` in a process where TensorFlow, tf-slim and Keras cannot be
# imported (what a `lite` install is): the CLI must start, predict on ai-edge-litert / onnxruntime with the
# numpy preprocessing, and never import them.
_NO_TENSORFLOW = textwrap.dedent("""
    import sys
    BLOCKED = ('tensorflow', 'tf_slim', 'tf_keras', 'keras', 'tensorboard')
    class Blocker(object):
      def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
          raise ModuleNotFoundError('No module named %r (made unimportable by the test)' % name)
    sys.meta_path.insert(0, Blocker())
    from pipelines.cli import main
    status = main.main(sys.argv[1:])
    imported = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)
    assert not imported, imported
    sys.exit(status)
    """)


def _lite_runtimes():
  """The runtimes a `lite` install has, found in this environment (`make test` installs them on TF 2.15)."""
  found = lambda name: importlib.util.find_spec(name) is not None
  runtimes = {'--tflite': found('ai_edge_litert') or found('tflite_runtime'), '--onnx': found('onnxruntime')}
  if not te.is_tf1():  # the suite's TF 2.15 environment has both: never skip there
    assert all(runtimes.values()), runtimes
  return runtimes


def _pngs(tmp_path, images):
  """PNG copies of the test images: decoded identically by Pillow and TensorFlow, so both paths feed the model
  the same input (tests/pipelines/tasks/test_portable.py covers JPEG's DCT difference)."""
  paths = []
  for path in images:
    out = str(tmp_path / (os.path.splitext(os.path.basename(path))[0] + '.png'))
    Image.open(path).convert('RGB').save(out)
    paths.append(out)
  return paths


def _without_tensorflow(tmp_path, flag, model_path, images, name):
  """(JSON items, picture dir) of `mnv2 predict IMAGES <flag> MODEL` run with TensorFlow unimportable; None when
  this environment has no TF-free runtime for `flag` (TF 1.15's Python 3.7)."""
  if not _lite_runtimes()[flag]:
    return None
  script = tmp_path / 'no_tensorflow.py'
  script.write_text(_NO_TENSORFLOW)
  out_json, out_dir = str(tmp_path / (name + '.json')), str(tmp_path / name)
  env = dict(os.environ, PYTHONPATH=ROOT)
  done = subprocess.run([sys.executable, str(script), 'predict'] + images + [
      flag, model_path, '--json', out_json, '--output', out_dir, '--min-score', '0'],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
  assert done.returncode == 0, done.stderr
  with open(out_json) as f:
    return json.load(f), out_dir


def _described_detections(item):
  """A prediction-like dict of the JSON's detections (absolute pixel boxes) for `_matched`."""
  return {'num_detections': len(item['detections']), 'detection_boxes': [d['box'] for d in item['detections']],
          'detection_classes': [d['class'] for d in item['detections']],
          'detection_scores': [d['score'] for d in item['detections']]}


def _agrees_without_tensorflow(tmp_path, images, model_path, onnx, check):
  """Predicts on PNG copies of `images` with TensorFlow unimportable, from model.tflite and model.onnx (`onnx`:
  `_onnx`'s result), and `check(reference, item, picture)` each JSON item against this process's prediction
  (TensorFlow's interpreter / preprocessing); `picture` is the written mask PNG (a class id per pixel)."""
  pngs = _pngs(tmp_path, images)
  runs = [('--tflite', model_path, tflite_task.predict)] + ([('--onnx', onnx[0], onnx_export.predict)] if onnx else [])
  checked = 0
  for flag, path, reference in runs:
    got = _without_tensorflow(tmp_path, flag, path, pngs, 'no_tf_' + flag[2:])
    if got is None:
      continue
    items, out_dir = got
    for want, item, png in zip(reference(path, pngs), items, pngs):
      picture = os.path.join(out_dir, os.path.basename(png))
      check(want, item, np.asarray(Image.open(picture)) if os.path.isfile(picture) else None)
      checked += 1
  return checked


def _same_classes(want, item):
  """The JSON's top-k probabilities are the reference's, class by class (the order of near-ties may differ)."""
  for entry in item['top_k']:
    assert abs(entry['probability'] - float(want['probabilities'][entry['class']])) < 1e-4, (entry, want)
  assert item['top_k'][0]['probability'] >= float(np.max(want['probabilities'])) - 1e-4


def _same_detections(want, item):
  described = _described_detections(item)
  assert described['num_detections'] == int(want['num_detections'])
  assert not _matched(want, described, 10, 0.99, 1e-3)


def _iou(a, b):
  ymin, xmin = max(a[0], b[0]), max(a[1], b[1])
  ymax, xmax = min(a[2], b[2]), min(a[3], b[3])
  inter = max(0.0, ymax - ymin) * max(0.0, xmax - xmin)
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def _matched(reference, candidate, count, min_iou, score_tolerance):
  unmatched = []
  for i in range(min(count, int(reference['num_detections']))):
    box, cls, score = reference['detection_boxes'][i], reference['detection_classes'][i], reference['detection_scores'][i]
    ok = any(candidate['detection_classes'][j] == cls and _iou(box, candidate['detection_boxes'][j]) >= min_iou and
             abs(candidate['detection_scores'][j] - score) <= score_tolerance
             for j in range(int(candidate['num_detections'])))
    if not ok:
      unmatched.append((i, cls, score, box))
  return unmatched


def test_detection(tmp_path, records):
  records_dir, images = records
  path, config, model_dir = _trained(tmp_path, records_dir, 'detection')
  saved = predict.predict_saved_model(runner.export(config, model_dir), images)
  model_path = _export(path, model_dir, str(tmp_path / 'f32'))
  assert os.path.isfile(str(tmp_path / 'f32' / 'label_map.pbtxt'))
  with open(str(tmp_path / 'f32' / 'model.json')) as f:
    meta = json.load(f)
  assert [o['key'] for o in meta['outputs']] == [te.DETECTION_BOXES, te.DETECTION_CLASSES, te.DETECTION_SCORES,
                                                 te.NUM_DETECTIONS]
  assert meta['outputs'][0]['shape'] == [1, 20, 4] and meta['nms']['use_regular_nms']
  lite = tflite_task.predict(model_path, images)
  for s, t in zip(saved, lite):
    assert int(s['num_detections']) > 0 and int(t['num_detections']) > 0
    assert not _matched(s, t, 10, 0.99, 1e-3)
    assert t['detection_class_names'][0] == s['detection_class_names'][0].decode()
  got = _cli_predict(tmp_path, images, '--tflite', model_path, 'lite')
  assert got[0]['detections'] and os.path.isfile(got[0]['output'])
  onnx = _onnx(tmp_path, path, model_dir, images)
  if onnx:  # the post-processing is inside the ONNX graph
    import onnx as onnx_lib  # pylint: disable=g-import-not-at-top
    assert 'NonMaxSuppression' in set(n.op_type for n in onnx_lib.load(onnx[0]).graph.node)
  for s, o in zip(saved, onnx[1] if onnx else []):  # the same NMS: every detection, one to one
    assert int(o['num_detections']) == int(s['num_detections']) > 0
    assert not _matched(s, o, int(s['num_detections']), 0.99, 1e-4)
  checked = _agrees_without_tensorflow(tmp_path, images, model_path, onnx, lambda w, i, _: _same_detections(w, i))
  assert checked in (0, 2 * len(images)) and (checked or te.is_tf1())
  # The OD API exporter's fast NMS (one class-agnostic NMS over each box's best class): its best detection
  # is regular NMS's best.
  fast = _export(path, model_dir, str(tmp_path / 'fast'), extra=['--set', 'detection.tflite_use_regular_nms=false'])
  with open(str(tmp_path / 'fast' / 'model.json')) as f:
    assert json.load(f)['nms']['use_regular_nms'] is False
  for regular, t in zip(lite, tflite_task.predict(fast, images)):
    assert int(t['num_detections']) > 0 and not _matched(regular, t, 1, 0.99, 1e-5)
  if te.is_tf1():  # pylint: disable=protected-access
    args = ['export', '--config', path, '--model-dir', model_dir, '--format', 'tflite', '--quantize', 'int8']
    assert cli.main(args) == 2  # one error line
    return
  int8 = _export(path, model_dir, str(tmp_path / 'int8'), 'int8', ['--calibration-images', '6'])
  for t in tflite_task.predict(int8, images):
    assert int(t['num_detections']) > 0


def test_segmentation(tmp_path, records):
  records_dir, images = records
  path, config, model_dir = _trained(tmp_path, records_dir, 'segmentation')
  saved = predict.predict_saved_model(runner.export(config, model_dir), images)
  model_path = _export(path, model_dir, str(tmp_path / 'f32'))
  lite = tflite_task.predict(model_path, images)
  for s, t in zip(saved, lite):
    assert s['mask'].shape == t['mask'].shape
    assert (s['mask'] == t['mask']).mean() >= 0.999
  got = _cli_predict(tmp_path, images, '--tflite', model_path, 'lite')
  assert os.path.isfile(got[0]['overlay'])
  onnx = _onnx(tmp_path, path, model_dir, images)
  for s, o in zip(saved, onnx[1] if onnx else []):
    assert s['mask'].shape == o['mask'].shape and (s['mask'] == o['mask']).mean() >= 0.999

  def same_mask(want, item, picture):
    assert picture.shape == want['mask'].shape and (picture == want['mask']).mean() >= 0.999
    assert sum(item['pixels_per_class'].values()) == picture.size
  checked = _agrees_without_tensorflow(tmp_path, images, model_path, onnx, same_mask)
  assert checked in (0, 2 * len(images)) and (checked or te.is_tf1())
  int8 = _export(path, model_dir, str(tmp_path / 'int8'), 'int8', ['--calibration-images', '4'])
  agreement = np.mean([(s['mask'] == t['mask']).mean() for s, t in zip(saved, tflite_task.predict(int8, images))])
  print('segmentation int8 pixel agreement', agreement)
  assert agreement >= 0.9


MULTITASK = """
task: multitask
classification: {image_size: 48, num_classes: 5}
detection: {image_size: 64, num_classes: 7, max_objects: 10, max_detections: 20}
segmentation: {num_classes: 5, crop_size: 49, eval_crop_size: 64}
multitask:
  classification:
    data: {train_files: '%(r)s/classification/train-*', eval_files: '%(r)s/classification/val-*',
           labels_file: '%(r)s/classification/labels.txt', shuffle_buffer: 8, num_parallel_reads: 1}
    batch_size: 2
  detection:
    data: {train_files: '%(r)s/detection/train-*', eval_files: '%(r)s/detection/val-*',
           labels_file: '%(r)s/detection/label_map.pbtxt', shuffle_buffer: 8, num_parallel_reads: 1}
    batch_size: 2
  segmentation:
    data: {train_files: '%(r)s/segmentation/train-*', eval_files: '%(r)s/segmentation/val-*',
           labels_file: '%(r)s/segmentation/labels.txt', shuffle_buffer: 8, num_parallel_reads: 1}
    batch_size: 2
"""


def test_multitask_one_model(tmp_path, records):
  records_dir, images = records
  CONFIGS['multitask'] = MULTITASK
  path, config, model_dir = _trained(tmp_path, records_dir, 'multitask')
  saved = predict.predict_saved_model(runner.export(config, model_dir), images)
  model_path = _export(path, model_dir, str(tmp_path / 'f32'))
  with open(str(tmp_path / 'f32' / 'model.json')) as f:
    meta = json.load(f)
  assert sorted(meta['members']) == ['classification', 'detection', 'segmentation']
  keys = [o['key'] for o in meta['outputs']]
  assert 'detection/num_detections' in keys and 'classification/probabilities' in keys, keys
  lite = tflite_task.predict(model_path, images)
  for s, t in zip(saved, lite):
    assert np.abs(s['classification/probabilities'] - t['classification/probabilities']).max() < 1e-4
    assert (s['segmentation/mask'] == t['segmentation/mask']).mean() >= 0.999
    member = lambda p: dict((k.split('/', 1)[1], v) for k, v in p.items() if k.startswith('detection/'))
    assert not _matched(member(s), member(t), 10, 0.99, 1e-3)
  got = _cli_predict(tmp_path, images, '--tflite', model_path, 'lite')
  assert sorted(k for k in got[0] if k in ('classification', 'detection', 'segmentation')) == [
      'classification', 'detection', 'segmentation'] and os.path.isfile(got[0]['output'])
  onnx = _onnx(tmp_path, path, model_dir, images)
  for s, o in zip(saved, onnx[1] if onnx else []):
    assert np.abs(s['classification/probabilities'] - o['classification/probabilities']).max() < 1e-4
    assert (s['segmentation/mask'] == o['segmentation/mask']).mean() >= 0.999
    member = lambda p: dict((k.split('/', 1)[1], v) for k, v in p.items() if k.startswith('detection/'))
    assert not _matched(member(s), member(o), int(s['detection/num_detections']), 0.99, 1e-4)

  def same_members(want, item, _):
    member = lambda p, name: dict((k.split('/', 1)[1], v) for k, v in p.items() if k.startswith(name + '/'))
    _same_classes(member(want, 'classification'), item['classification'])
    _same_detections(member(want, 'detection'), item['detection'])
    mask = member(want, 'segmentation')['mask']
    got = dict((int(c), n) for c, n in item['segmentation']['pixels_per_class'].items())  # JSON keys are strings
    want_counts = dict(enumerate(np.bincount(mask.ravel())))
    moved = sum(abs(want_counts.get(c, 0) - got.get(c, 0)) for c in set(got) | set(want_counts))
    assert sum(got.values()) == mask.size and moved <= 2 * 0.001 * mask.size, (got, want_counts)
  checked = _agrees_without_tensorflow(tmp_path, images, model_path, onnx, same_members)
  assert checked in (0, 2 * len(images)) and (checked or te.is_tf1())
