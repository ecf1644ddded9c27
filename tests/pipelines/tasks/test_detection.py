"""Detection task: losses and post-processing against hand-computed values; input checks; and end to end
shapes COCO json -> convert -> train 2 steps -> COCO eval -> export -> predict (SavedModel and checkpoint)."""
import dataclasses
import json
import math
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from datasets import coco
from datasets import shapes
from heads import ssdlite
from heads.core import box_ops
from heads.core import fields
from pipelines.cli import main as cli
from pipelines.evaluation import coco_metrics
from pipelines.tasks import detection
from pipelines.tasks import sections
from pipelines.inputs import detection_input
from pipelines.cli import predict
from pipelines.training import runner
from tests.conftest import ROOT

CONFIG = """
task: detection
model: {depth_multiplier: 0.35}
detection: {image_size: 64, num_classes: 7}
data: {train_files: '%(data)s/train-*', eval_files: '%(data)s/val-*', labels_file: '%(data)s/label_map.pbtxt',
       num_train_examples: 6, shuffle_buffer: 8, num_parallel_reads: 1}
train: {batch_size: 2, steps: 2, learning_rate: {schedule: constant, base: 0.004}}
eval: {batch_size: 2}
runtime: {save_checkpoints_steps: 2, log_every_n_steps: 1, seed: 1}
"""
VAL_IDS = [1000000 + 3 * i for i in range(6)]  # datasets.shapes' val image ids; 3 is empty, 5 has a crowd


@pytest.fixture(scope='module')
def dataset_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('shapes'))
  paths = shapes.generate(root, seed=0, image_size=64, counts={'coco': {'train': 6, 'val': 6}},
                          formats=('coco',))['coco']
  out = os.path.join(root, 'records')
  for split in ('train', 'val'):
    coco.convert(paths[split + '_images'], paths[split + '_annotations'], out, split, num_shards=1, num_workers=1)
  return out


def _config(tmp_path, dataset_dir, overrides=()):
  path = str(tmp_path / 'config.yaml')
  with open(path, 'w') as f:
    f.write(CONFIG % {'data': dataset_dir})
  return runner.load_config(path, overrides, 'train')


def _task(tmp_path, dataset_dir, **detection_fields):
  config = _config(tmp_path, dataset_dir)
  config = dataclasses.replace(config, detection=dataclasses.replace(config.detection, **detection_fields))
  return detection.DetectionTask(config)


def test_anchors_match_the_network(graph, tmp_path, dataset_dir):
  config = _config(tmp_path, dataset_dir)
  assert detection.ssd_anchors(dataclasses.replace(config, detection=dataclasses.replace(
      config.detection, image_size=320))).shape == (2034, 4)
  assert detection.ssd_anchors(config).shape == (48 + 24 + 4 * 6, 4)  # 64: grids 4x4 (3/cell), 2x2, then 1x1
  strides = [info.stride for info in detection.feature_map_info(config)]
  assert strides == [16, 32, 64, 128, 256, 512]


def test_losses_hard_negatives_and_normalization(graph, tmp_path, dataset_dir):
  # 1 image, 5 anchors, K = 2: anchor 0 positive, 3 ignored (crowd), 1/2/4 negatives with rising logits.
  logits = np.zeros([1, 5, 3], np.float32)
  logits[0, 1], logits[0, 2], logits[0, 4] = 1.0, 2.0, 3.0
  outputs = {ssdlite.BOX_ENCODINGS: tf.zeros([1, 5, 4]),
             ssdlite.CLASS_PREDICTIONS_WITH_BACKGROUND: tf.constant(logits)}
  targets = np.zeros([1, 5, 3], np.float32)
  targets[0, 0, 2] = targets[0, 1, 0] = targets[0, 2, 0] = targets[0, 4, 0] = 1.0
  reg_targets = np.zeros([1, 5, 4], np.float32)
  reg_targets[0, 0] = [1.0, 0.5, 0.0, -3.0]
  labels = {fields.CLS_TARGETS: tf.constant(targets), fields.CLS_WEIGHTS: tf.constant([[1.0, 1, 1, 0, 1]]),
            fields.REG_TARGETS: tf.constant(reg_targets), fields.REG_WEIGHTS: tf.constant([[1.0, 0, 0, 0, 0]]),
            fields.MATCHES: tf.constant([[0, -1, -1, -2, -1]])}

  def sigmoid_ce(x, z):
    return max(x, 0) - x * z + math.log1p(math.exp(-abs(x)))

  # Top-k mining through the OD API's miner: NMS over 5 disjoint anchors suppresses nothing.
  top_k = sections.HardExampleMinerConfig(num_hard_examples=None, iou_threshold=1.0, max_negatives_per_positive=1.0,
                                          min_negatives_per_image=0)
  anchors = np.array([[i / 5.0, 0.0, (i + 0.9) / 5.0, 1.0] for i in range(5)], np.float32)
  task = _task(tmp_path, dataset_dir, hard_example_miner=top_k, localization_weight=2.0)
  task.anchors = anchors
  with tf.Session() as sess:
    got = sess.run(task.build_losses(outputs, labels, {}))
  # Positive: 3 columns at logit 0. Kept negative: the hardest one (anchor 4, logit 3 everywhere, bg target).
  expected_cls = 3 * math.log(2.0) + sigmoid_ce(3.0, 1.0) + 2 * sigmoid_ce(3.0, 0.0)
  assert got['classification'] == pytest.approx(expected_cls, rel=1e-5)
  # Smooth L1 of (1, 0.5, 0, -3): 0.5 + 0.125 + 0 + 2.5 = 3.125, times the weight 2, over 1 positive.
  assert got['localization'] == pytest.approx(6.25, rel=1e-5)

  softmax_task = _task(tmp_path, dataset_dir, classification_loss='softmax',
                       hard_example_miner=dataclasses.replace(top_k, max_negatives_per_positive=3.0))
  softmax_task.anchors = anchors
  with tf.Session() as sess:
    got = sess.run(softmax_task.build_losses(outputs, labels, {}))
  # All 3 negatives kept (ratio 3); softmax CE with equal logits in a row is log(3).
  assert got['classification'] == pytest.approx(4 * math.log(3.0), rel=1e-5)


def test_postprocess_decodes_clips_and_scales_to_original_pixels(graph, tmp_path, dataset_dir):
  task = _task(tmp_path, dataset_dir, max_detections=5)
  num_anchors = len(task.anchors)
  logits = np.full([1, num_anchors, 8], -10.0, np.float32)
  logits[0, 0, 4] = 2.0  # anchor 0, label id 4 ('triangle' in the shapes label map)
  outputs = {ssdlite.BOX_ENCODINGS: tf.zeros([1, num_anchors, 4]),
             ssdlite.CLASS_PREDICTIONS_WITH_BACKGROUND: tf.constant(logits)}
  with tf.Session() as sess:
    got = sess.run(task.postprocess(outputs, tf.constant([50]), tf.constant([80])))
  # Zero codes decode to the anchor; the first anchor (0.1 square centred at 1/8) is inside [0, 1].
  anchor = np.clip(task.anchors[0], 0.0, 1.0)
  np.testing.assert_allclose(got['detection_boxes'][0, 0], anchor * [50, 80, 50, 80], rtol=1e-5)
  assert got['detection_classes'][0, 0] == 4 and got['detection_class_names'][0, 0] == b'triangle'
  assert got['detection_scores'][0, 0] == pytest.approx(1.0 / (1.0 + math.exp(-2.0)), rel=1e-5)
  n = got['num_detections'][0]
  assert n == 5  # score threshold 1e-8 lets the 1/(1+e^10) scores through
  assert (got['detection_boxes'][0, :n, 2] <= 50 + 1e-3).all() and (got['detection_boxes'][0, :n, 3] <= 80 + 1e-3).all()


def test_input_pipeline_targets_and_groundtruth(graph, tmp_path, dataset_dir):
  task = detection.DetectionTask(_config(tmp_path, dataset_dir))
  features, labels = tf.data.make_one_shot_iterator(detection_input.dataset(task.config, tf.estimator.ModeKeys.EVAL, task.anchors, 6, False)).get_next()
  with tf.Session() as sess:
    f, l = sess.run([features, labels])
  assert f['image'].shape == (6, 64, 64, 3) and -1.0 <= f['image'].min() and f['image'].max() <= 1.0
  assert l[fields.CLS_TARGETS].shape == (6, 96, 8) and l[detection.GT_BOXES].shape == (6, 100, 4)
  ids = [int(s) for s in l[detection.SOURCE_ID]]
  assert sorted(ids) == VAL_IDS
  empty = ids.index(1000009)
  assert l[detection.NUM_OBJECTS][empty] == 0 and (l[fields.MATCHES][empty] == -1).all()
  crowd = ids.index(1000015)
  assert l[detection.GT_IS_CROWD][crowd].any()
  for b in range(6):
    n = l[detection.NUM_OBJECTS][b]
    assert set(l[detection.GT_CLASSES][b, :n]) <= {1, 2, 4, 7} and (l[detection.GT_CLASSES][b, n:] == 0).all()
    assert l[fields.NUM_POSITIVES][b] == (l[fields.MATCHES][b] >= 0).sum()
  assert (l[detection.ORIGINAL_HEIGHT] == 64).all() and (l[detection.GT_AREA][crowd][:1] > 0).all()


_LATE_SESSIONS = []


@pytest.fixture(scope='module', autouse=True)
def _close_sessions_late():
  """Closes `_LATE_SESSIONS` after this module's tests: TF 1.15 can crash (SIGSEGV) in Session.close while a
  training pipeline's other map calls are still running, e.g. right after one of them failed (seen in CI-like
  runs); later, its threads are idle."""
  yield
  while _LATE_SESSIONS:
    _LATE_SESSIONS.pop().close()


def test_class_ids_above_num_classes_fail_at_input_time(graph, tmp_path, dataset_dir):
  task = detection.DetectionTask(_config(tmp_path, dataset_dir, ['detection.num_classes=4', 'data.labels_file=null']))
  _, labels = tf.data.make_one_shot_iterator(detection_input.dataset(task.config, tf.estimator.ModeKeys.TRAIN, task.anchors, 6)).get_next()
  sess = tf.Session()
  _LATE_SESSIONS.append(sess)
  with pytest.raises(tf.errors.InvalidArgumentError, match='detection.num_classes=4'):
    sess.run(labels)


def test_train_eval_export_predict(tmp_path, dataset_dir):
  config = _config(tmp_path, dataset_dir)
  model_dir = str(tmp_path / 'model')
  runner.train(config, model_dir)
  assert tf.train.latest_checkpoint(model_dir).endswith('-2')
  metrics = runner.evaluate(config, model_dir)
  with open(os.path.join(model_dir, 'eval', 'metrics.json')) as f:
    saved = json.load(f)
  assert saved['global_step'] == 2 and np.isfinite(saved['loss'])
  for name in coco_metrics.METRIC_NAMES + ('AP/circle', 'AP/square', 'AP/triangle', 'AP/star'):
    assert -1.0 <= saved[name] <= 1.0, name
  assert metrics['AP'] == saved['AP']
  with open(os.path.join(model_dir, 'eval', 'detections.json')) as f:
    results = json.load(f)
  assert results and set(r['image_id'] for r in results) <= set(VAL_IDS)
  assert all(1 <= r['category_id'] <= 7 and len(r['bbox']) == 4 for r in results)

  export_dir = runner.export(config, model_dir)
  image = str(tmp_path / 'probe.png')
  Image.fromarray(np.random.RandomState(0).randint(0, 255, [50, 80, 3]).astype(np.uint8)).save(image)
  from_saved = predict.predict_saved_model(export_dir, [image])[0]
  n = int(from_saved['num_detections'])
  boxes = from_saved['detection_boxes'][:n]
  assert n > 0 and boxes.shape == (n, 4)
  assert (boxes >= 0).all() and (boxes[:, 2] <= 50 + 1e-3).all() and (boxes[:, 3] <= 80 + 1e-3).all()
  assert (boxes[:, 2] >= boxes[:, 0]).all() and boxes[:, 3].max() > 50  # scaled by width 80, not 50 or 64
  names = {0: b'', 1: b'circle', 2: b'square', 4: b'triangle', 7: b'star'}
  for c, name in zip(from_saved['detection_classes'][:n], from_saved['detection_class_names'][:n]):
    assert name == names.get(int(c), str(int(c)).encode())
  from_ckpt = predict.predict_checkpoint(config, model_dir, [image])[0]
  np.testing.assert_allclose(from_saved['detection_scores'], from_ckpt['detection_scores'], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(from_saved['detection_boxes'], from_ckpt['detection_boxes'], rtol=1e-4, atol=1e-3)

  out = str(tmp_path / 'out.png')
  assert cli.main(['predict', image, '--saved-model', export_dir, '--output', out]) == 0
  assert Image.open(out).size == (400, 250)  # drawn on a 5x copy: the long side reaches 384 px


def test_paper_config_warm_start_maps_every_backbone_variable(graph):
  import tf_slim as slim
  from nets import mobilenet_v2
  from pipelines import config as schema
  from pipelines.training import warm_start
  config = schema.load(os.path.join(os.path.dirname(__file__), '..', '..', '..', 'configs', 'ssdlite_mobilenet_v2_coco.yaml'),
                       ['detection.image_size=64'])  # variable shapes do not depend on the input size
  with tf.Graph().as_default():
    with slim.arg_scope(mobilenet_v2.training_scope(is_training=False)):
      mobilenet_v2.mobilenet(tf.zeros([1, 64, 64, 3]), num_classes=1001)
    classifier = dict((v.op.name, v.get_shape().as_list()) for v in tf.global_variables())
  task = detection.DetectionTask(config)
  outputs = task.build_outputs({'image': tf.zeros([1, 64, 64, 3])}, is_training=True)
  assert outputs[ssdlite.CLASS_PREDICTIONS_WITH_BACKGROUND].get_shape().as_list() == [1, 96, 91]
  names = [v.op.name for v in tf.global_variables()]
  assert 'FeatureExtractor/MobilenetV2/Conv/weights' in names
  assert 'BoxPredictor_0/ClassPredictor/biases' in names
  ws = config.train.warm_start
  assignment, skipped = warm_start.plan(tf.global_variables(), classifier, ws.include, ws.exclude, ws.scope_map)
  assert skipped == []
  backbone = [n for n in names if n.startswith('FeatureExtractor/MobilenetV2/') and 'layer_19_' not in n]
  assert sorted(v.op.name for v in assignment.values()) == sorted(backbone)
  assert len(backbone) == 260  # 52 convolutions x (weights + 4 batch-norm variables)


def test_anchors_section_sets_the_anchor_generator(tmp_path):
  """Issue #20 item 6: `detection.anchors` holds the OD API's ssd_anchor_generator fields; the defaults
  give today's 2034 anchors at 320, other values other anchors (and the predictor follows), bad ones fail."""
  from tests.conftest import config_from_text  # pylint: disable=g-import-not-at-top
  base = 'task: detection\ntrain: {steps: 1, learning_rate: {schedule: constant}}\n'
  config = config_from_text(tmp_path, base)
  assert len(detection.ssd_anchors(config)) == 2034
  fewer = config_from_text(tmp_path, base + 'detection: {anchors: {aspect_ratios: [1.0, 2.0, 0.5], '
                           'interpolated_scale_aspect_ratio: 0.0}}\n', name='fewer.yaml')
  # 3 boxes per cell in every layer: 20x20 + 10x10 + 5x5 + 3x3 + 2x2 + 1x1 cells.
  assert len(detection.ssd_anchors(fewer)) == 3 * (400 + 100 + 25 + 9 + 4 + 1)
  for text, key in (('{num_layers: 5}', 'detection.anchors.num_layers'),
                    ('{min_scale: 0.9, max_scale: 0.5}', 'detection.anchors.min_scale'),
                    ('{aspect_ratios: []}', 'detection.anchors.aspect_ratios'),
                    ('{interpolated_scale_aspect_ratio: -1}', 'detection.anchors.interpolated_scale_aspect_ratio')):
    with pytest.raises(ValueError, match=key.replace('.', r'\.')):
      config_from_text(tmp_path, base + 'detection: {anchors: %s}\n' % text, name='bad.yaml')


def test_predictor_follows_the_anchors_section(tmp_path, graph):
  from tests.conftest import config_from_text  # pylint: disable=g-import-not-at-top
  config = config_from_text(tmp_path, 'task: detection\nmodel: {depth_multiplier: 0.35}\ndetection: {image_size: 64, '
                            'anchors: {aspect_ratios: [1.0, 2.0, 0.5], interpolated_scale_aspect_ratio: 0.0}}\n'
                            'train: {steps: 1, learning_rate: {schedule: constant}}\n')
  task = detection.DetectionTask(config)
  outputs = task.build_outputs({'image': tf.zeros([1, 64, 64, 3])}, False)
  assert outputs[ssdlite.BOX_ENCODINGS].get_shape().as_list()[1] == len(task.anchors) == 3 * (16 + 4 + 1 + 1 + 1 + 1)


def _best_anchor_iou(boxes, anchors):
  """For each [ymin, xmin, ymax, xmax] box, its highest IoU with any anchor: the matcher's `box_ops.iou`."""
  with tf.Graph().as_default(), tf.Session() as session:
    return session.run(tf.reduce_max(box_ops.iou(tf.constant(boxes, tf.float32), tf.constant(anchors)), axis=1))


def test_demo_anchors_cover_the_demo_objects(tmp_path):
  """configs/demo_detection.yaml's anchors give most demo objects an anchor at the matcher's IoU 0.5, where
  the OD API's (the paper config's) leave a third of them to a single force-matched anchor at 128 px."""
  paths = shapes.generate(str(tmp_path), seed=0, counts={'coco': {'train': 120, 'val': 0}}, formats=('coco',))
  with open(paths['coco']['train_annotations']) as f:
    instances = json.load(f)
  sizes = dict((image['id'], (image['height'], image['width'])) for image in instances['images'])
  boxes = []
  for ann in instances['annotations']:
    if not ann['iscrowd']:
      (height, width), (x, y, w, h) = sizes[ann['image_id']], ann['bbox']
      boxes.append([y / height, x / width, (y + h) / height, (x + w) / width])
  boxes = np.array(boxes)
  assert len(boxes) > 200
  demo = runner.load_config(os.path.join(ROOT, 'configs', 'demo_detection.yaml'))
  paper_anchors = dataclasses.replace(demo, detection=dataclasses.replace(demo.detection,
                                                                           anchors=sections.AnchorsConfig()))
  threshold = demo.detection.matched_threshold  # 0.5
  covered = np.mean(_best_anchor_iou(boxes, detection.ssd_anchors(demo)) >= threshold)
  before = np.mean(_best_anchor_iou(boxes, detection.ssd_anchors(paper_anchors)) >= threshold)
  assert covered >= 0.78 and before <= 0.7, (covered, before)
