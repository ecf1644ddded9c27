"""COCO evaluation: golden AP values computed by hand, crowd/empty handling, results file, metric ops."""
import json

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from pipelines.evaluation import coco_metrics

CATS = {1: 'circle', 3: 'square'}


def _perfect(evaluator, image_id, boxes, classes, crowd=None):
  """Adds an image whose detections are its non-crowd ground truth with score 1."""
  boxes = np.asarray(boxes, np.float64).reshape([-1, 4])
  crowd = np.zeros(len(boxes), bool) if crowd is None else np.asarray(crowd, bool)
  keep = ~crowd
  evaluator.add_image(image_id, 100, 120, boxes, classes, crowd, None,
                      boxes[keep], np.ones(keep.sum()), np.asarray(classes)[keep])


def test_perfect_detections_give_ap_one_with_empty_images_and_crowds(tmp_path):
  path = str(tmp_path / 'eval' / 'detections.json')
  ev = coco_metrics.CocoEvaluator(CATS, results_path=path)
  _perfect(ev, 1000, [[10, 10, 50, 60], [20, 70, 90, 110]], [1, 3])
  _perfect(ev, 1003, [], [])  # no objects, no detections
  _perfect(ev, 1006, [[5, 5, 40, 40], [0, 50, 30, 100]], [3, 3], crowd=[False, True])
  metrics = ev.evaluate()
  for name in ('AP', 'AP50', 'AP75', 'AR1', 'AR10', 'AR100', 'AP/circle', 'AP/square'):
    assert metrics[name] == pytest.approx(1.0), name
  with open(path) as f:
    results = json.load(f)
  assert len(results) == 3
  assert sorted(r['image_id'] for r in results) == [1000, 1000, 1006]
  first = [r for r in results if r['image_id'] == 1000 and r['category_id'] == 1][0]
  assert first['bbox'] == [10.0, 10.0, 50.0, 40.0] and first['score'] == 1.0  # [x, y, w, h]


def test_half_recall_gives_51_of_101_recall_points():
  ev = coco_metrics.CocoEvaluator({1: 'a'})
  ev.add_image(7, 100, 100, [[0, 0, 40, 40], [50, 50, 90, 90]], [1, 1], None, None,
               [[0, 0, 40, 40]], [0.8], [1])
  metrics = ev.evaluate()
  # precision 1 at the 51 recall thresholds 0.00 .. 0.50, 0 at the other 50.
  assert metrics['AP'] == pytest.approx(51.0 / 101.0)
  assert metrics['AR100'] == pytest.approx(0.5) and metrics['AR1'] == pytest.approx(0.5)


def test_detection_on_crowd_region_is_not_a_false_positive():
  boxes = [[0, 0, 40, 40], [50, 50, 90, 90]]
  dets = ([[0, 0, 40, 40], [52, 52, 88, 88]], [0.5, 0.9], [1, 1])
  with_crowd = coco_metrics.CocoEvaluator({1: 'a'})
  with_crowd.add_image(1, 100, 100, boxes, [1, 1], [False, True], None, *dets)
  without = coco_metrics.CocoEvaluator({1: 'a'})
  without.add_image(1, 100, 100, boxes[:1], [1], None, None, *dets)
  assert with_crowd.evaluate()['AP'] == pytest.approx(1.0)
  # The unmatched 0.9 detection ranks first: precision 0.5 at every recall threshold.
  assert without.evaluate()['AP'] == pytest.approx(0.5)


def test_area_ranges_use_the_given_segment_area():
  ev = coco_metrics.CocoEvaluator({1: 'a'})
  ev.add_image(1, 200, 200, [[0, 0, 100, 100]], [1], None, [500.0], [[0, 0, 100, 100]], [1.0], [1])
  metrics = ev.evaluate()
  assert metrics['APs'] == pytest.approx(1.0)  # area 500 < 32^2 although the box is 100x100
  assert metrics['APm'] == coco_metrics.UNDEFINED and metrics['APl'] == coco_metrics.UNDEFINED


def test_per_category_ap_and_categories_without_ground_truth():
  ev = coco_metrics.CocoEvaluator({1: 'a', 2: 'b', 5: 'c'})
  ev.add_image(1, 100, 100, [[0, 0, 40, 40], [50, 50, 90, 90]], [1, 2], None, None,
               [[0, 0, 40, 40], [0, 50, 30, 100]], [0.9, 0.9], [1, 2])
  metrics = ev.evaluate()
  assert metrics['AP/a'] == pytest.approx(1.0) and metrics['AP/b'] == pytest.approx(0.0)
  assert metrics['AP/c'] == coco_metrics.UNDEFINED
  assert metrics['AP'] == pytest.approx(0.5)


def test_no_detections_at_all_gives_zero():
  ev = coco_metrics.CocoEvaluator({1: 'a'})
  ev.add_image(1, 100, 100, [[0, 0, 40, 40]], [1])
  assert ev.evaluate()['AP'] == pytest.approx(0.0)


def test_add_batch_scales_normalized_ground_truth_and_parses_ids():
  ev = coco_metrics.CocoEvaluator({1: 'a'})
  gt = (np.array([[[0.1, 0.2, 0.5, 0.6], [0, 0, 0, 0]]], np.float32), np.array([[1, 0]]),
        np.array([[False, False]]), np.array([[0.0, 0.0]], np.float32), np.array([1]))
  dets = (np.array([[[20, 60, 100, 180], [0, 0, 0, 0]]], np.float32), np.array([[0.7, 0]]),
          np.array([[1, 0]]), np.array([1]))
  ev.add_batch([b'42'], np.array([200]), np.array([300]), gt, dets)
  ev.add_batch([b'42'], np.array([200]), np.array([300]), gt, dets)  # duplicate image: ignored
  assert ev.num_images == 1 and len(ev.detections()) == 1
  assert ev.detections()[0]['image_id'] == 42
  assert ev.evaluate()['AP'] == pytest.approx(1.0)
  assert coco_metrics.image_id_from_source_id(b'abc.jpg', -3) == -3
  assert coco_metrics.image_id_from_source_id(b' 17 ', -3) == 17


def test_category_metric_names_are_unique():
  names = coco_metrics.category_metric_names({1: 'x', 2: 'x', 3: 'y'})
  assert names == {1: 'AP/x', 2: 'AP/x_2', 3: 'AP/y'}


def test_metric_ops_evaluate_once(graph, monkeypatch):
  ev = coco_metrics.CocoEvaluator({1: 'a'})
  calls = []
  original = ev._run_cocoeval
  monkeypatch.setattr(ev, '_run_cocoeval', lambda: calls.append(1) or original())
  ids = tf.placeholder(tf.string, [None])
  sizes = (tf.constant([100]), tf.constant([100]))
  gt = (tf.constant([[[0.0, 0.0, 0.4, 0.4]]]), tf.constant([[1]]), tf.constant([[False]]),
        tf.constant([[0.0]]), tf.constant([1]))
  dets = (tf.constant([[[0.0, 0.0, 40.0, 40.0]]]), tf.constant([[0.9]]), tf.constant([[1]]), tf.constant([1]))
  ops = coco_metrics.metric_ops(ev, ids, sizes, gt, dets)
  assert set(ops) == set(coco_metrics.METRIC_NAMES) | {'AP/a'}
  with tf.Session() as sess:
    assert sess.run(ops['AP'][1], {ids: [b'1']}) == 1
    values = sess.run({k: v[0] for k, v in ops.items()})
  assert values['AP'] == pytest.approx(1.0) and values['AP/a'] == pytest.approx(1.0)
  assert len(calls) == 1
