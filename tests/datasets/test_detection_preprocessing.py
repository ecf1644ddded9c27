"""Tests for datasets.detection_preprocessing: SSD patch sampler, flip, padding, class mapping, resizing."""
import numpy as np
import tensorflow.compat.v1 as tf

from datasets import detection_preprocessing


def test_ssd_random_crop_keeps_boxes_and_flags_consistent(graph):
  image = tf.placeholder(tf.uint8, [None, None, 3])
  boxes = tf.placeholder(tf.float32, [None, 4])
  crowd = tf.placeholder(tf.bool, [None])
  labels = tf.placeholder(tf.int32, [None])
  out = detection_preprocessing.ssd_random_crop(image, boxes, labels, crowd)
  # Label i is odd exactly for the crowd boxes, so the flags must follow their boxes.
  feed_boxes = np.array([[0.1, 0.1, 0.4, 0.5], [0.3, 0.2, 0.9, 0.7], [0.5, 0.5, 1.0, 1.0],
                         [0.0, 0.6, 0.3, 0.9]], np.float32)
  feed = {image: np.zeros([50, 70, 3], np.uint8), boxes: feed_boxes, labels: [0, 1, 2, 3],
          crowd: [False, True, False, True]}
  sizes = set()
  with tf.Session() as sess:
    for _ in range(25):
      img, b, l, c = sess.run(out, feed)
      sizes.add(img.shape[:2])
      assert b.shape == (len(l), 4) and c.shape == (len(l),)
      assert np.all(b >= 0.0) and np.all(b <= 1.0) and np.all(b[:, 2:] >= b[:, :2])
      assert c.tolist() == [bool(i % 2) for i in l]
      if img.shape[:2] == (50, 70):
        np.testing.assert_allclose(b, feed_boxes[l], rtol=1e-6)
  assert len(sizes) > 1, 'over 25 samples every crop was the whole image'


def test_iou_random_crop_golden_window(graph):
  # A single choice with IoU >= 0.9 against a box covering the whole image forces the patch to be (almost)
  # the whole image; area_range (1, 1) makes it exact, so box values can be checked by hand.
  image = tf.zeros([40, 40, 3], tf.uint8)
  boxes = tf.constant([[0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.6]])
  out = detection_preprocessing.iou_random_crop(image, boxes, tf.constant([5, 7]), tf.constant([False, False]),
                                                min_iou_choices=(0.9,), area_range=(1.0, 1.0),
                                                aspect_ratio_range=(1.0, 1.0))
  with tf.Session() as sess:
    img, b, l, c = sess.run(out)
  assert img.shape == (40, 40, 3) and l.tolist() == [5, 7] and c.tolist() == [False, False]
  np.testing.assert_allclose(b, [[0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.6]], atol=1e-6)


def test_sampled_patches_meet_the_iou_threshold(graph):
  ref = np.array([[0.1, 0.1, 0.6, 0.5], [0.5, 0.4, 1.0, 1.0]], np.float32)
  begin, size = detection_preprocessing._sample_patch(tf.constant([50, 70, 3]), tf.constant(ref),
                                                      tf.constant(0.7), ((0.5, 2.0), (0.1, 1.0), 100), None)
  # About 4 in 5 draws fall back to the whole image at this threshold, so 100 draws (not 20: 0.81^20 = 1.5%
  # flaked) make "some patch is not the whole image" certain in practice (0.81^100 < 1e-9).
  whole = 0
  with tf.Session() as sess:
    for _ in range(100):
      b, s = sess.run([begin, size])
      if s[0] == 50 and s[1] == 70:
        whole += 1
        continue
      y0, x0, y1, x1 = b[0] / 50.0, b[1] / 70.0, (b[0] + s[0]) / 50.0, (b[1] + s[1]) / 70.0
      inter = (np.clip(np.minimum(y1, ref[:, 2]) - np.maximum(y0, ref[:, 0]), 0, None) *
               np.clip(np.minimum(x1, ref[:, 3]) - np.maximum(x0, ref[:, 1]), 0, None))
      union = (y1 - y0) * (x1 - x0) + (ref[:, 2] - ref[:, 0]) * (ref[:, 3] - ref[:, 1]) - inter
      assert np.max(inter / union) >= 0.7 - 1e-6
  assert whole < 100


def _crop_statistics(size_tensor, full, draws=300):
  """(whole-image rate, mean area fraction) of `draws` runs of a crop's output size [h, w, ...]."""
  whole, areas = 0, []
  with tf.Session() as sess:
    for _ in range(draws):
      size = sess.run(size_tensor)
      whole += int(size[0] == full[0] and size[1] == full[1])
      areas.append(size[0] * size[1] / float(full[0] * full[1]))
  return whole / float(draws), float(np.mean(areas))


def test_od_api_crop_matches_a_reference_sampler(graph):
  """Issue #20 item 3: the OD API's defaults -- 7 operations drawn uniformly, min_object_covered in
  (0, .1, .3, .5, .7, .9, 1), aspect (0.5, 2), area (0.1, 1), 100 attempts, the image as is 15% of the
  time -- against the same recipe written here directly on tf.image.sample_distorted_bounding_box."""
  full = (60, 80)
  boxes = tf.constant([[0.1, 0.1, 0.6, 0.5], [0.5, 0.4, 1.0, 1.0], [0.2, 0.6, 0.4, 0.9]])
  image = tf.zeros(full + (3,), tf.uint8)
  ours = tf.shape(detection_preprocessing.ssd_random_crop(image, boxes, tf.constant([1, 2, 3]),
                                                          tf.constant([False, False, False]))[0])
  covered = tf.gather(tf.constant([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]), tf.random_uniform([], maxval=7, dtype=tf.int32))
  _, size, _ = tf.image.sample_distorted_bounding_box(
      tf.shape(image), boxes[None], min_object_covered=covered, aspect_ratio_range=(0.5, 2.0), area_range=(0.1, 1.0),
      max_attempts=100, use_image_if_no_bounding_boxes=True)
  reference = tf.where_v2(tf.random_uniform([]) < 0.15, tf.shape(image), size)
  whole, area = _crop_statistics(ours, full)
  ref_whole, ref_area = _crop_statistics(reference, full)
  assert abs(whole - ref_whole) < 0.12 and abs(area - ref_area) < 0.08, (whole, ref_whole, area, ref_area)
  # Not the former sampler's "whole image most of the time" (84% at IoU 0.7).
  assert whole < 0.6, whole


def test_od_api_crop_keeps_boxes_by_the_fraction_inside(graph):
  window = tf.constant([0.0, 0.0, 0.5, 0.5])
  boxes = tf.constant([[0.0, 0.0, 0.4, 0.4],    # inside: 1.0
                       [0.25, 0.25, 0.75, 0.75],  # a quarter inside
                       [0.5, 0.0, 1.0, 0.5],    # touching the window's edge only: outside
                       [0.2, 0.2, 0.2, 0.3]])   # no area
  ioa = detection_preprocessing._box_ioa(window, boxes)  # pylint: disable=protected-access
  outside = detection_preprocessing._outside(window, boxes)  # pylint: disable=protected-access
  with tf.Session() as sess:
    ioa, outside = sess.run([ioa, outside])
  np.testing.assert_allclose(ioa, [1.0, 0.25, 0.0, 0.0], atol=1e-6)
  assert outside.tolist() == [False, False, True, False]
  # Kept at overlap_thresh 0.3 from a patch forced to the image's top-left quarter, clipped and renormalized.
  image = tf.zeros([40, 40, 3], tf.uint8)
  out = detection_preprocessing.ssd_random_crop(
      image, tf.constant([[0.05, 0.05, 0.2, 0.2], [0.4, 0.4, 0.6, 0.6], [0.45, 0.45, 0.9, 0.9]]),
      tf.constant([1, 2, 3]), tf.constant([False, False, False]), min_object_covered=(0.0,), overlap_thresh=(0.3,),
      area_range=(0.25, 0.25), aspect_ratio_range=(1.0, 1.0), random_coef=0.0)
  with tf.Session() as sess:
    for _ in range(20):
      img, b, labels, _ = sess.run(out)
      assert img.shape == (20, 20, 3)
      assert np.all(b >= 0.0) and np.all(b <= 1.0)


def test_boxes_in_window_golden(graph):
  boxes = tf.constant([[0.1, 0.1, 0.3, 0.3], [0.4, 0.4, 0.8, 0.9], [0.0, 0.0, 1.0, 1.0]])
  keep, local = detection_preprocessing._boxes_in_window(boxes, tf.constant([0.2, 0.4, 0.7, 0.9]))
  with tf.Session() as sess:
    keep, local = sess.run([keep, local])
  # Centres: (0.2, 0.2) outside; (0.6, 0.65) inside; (0.5, 0.5) inside.
  assert keep.tolist() == [False, True, True]
  np.testing.assert_allclose(local[1], [0.4, 0.0, 1.0, 1.0], atol=1e-6)  # ((0.4-0.2)/0.5, 0, clip, 1)
  np.testing.assert_allclose(local[2], [0.0, 0.0, 1.0, 1.0], atol=1e-6)


def test_ssd_random_crop_without_boxes(graph):
  empty = tf.zeros([0, 4])
  out = detection_preprocessing.ssd_random_crop(tf.zeros([30, 20, 3], tf.uint8), empty, tf.zeros([0], tf.int32),
                                                tf.zeros([0], tf.bool))
  with tf.Session() as sess:
    for _ in range(10):
      img, b, l, c = sess.run(out)
      assert img.ndim == 3 and img.shape[0] <= 30 and img.shape[1] <= 20
      assert b.shape == (0, 4) and l.shape == (0,) and c.shape == (0,)


def test_flip_golden_values(graph):
  boxes = np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 0.25]], np.float32)
  image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
  flipped = detection_preprocessing.flip_boxes_left_right(tf.constant(boxes))
  random_out = detection_preprocessing.random_horizontal_flip(tf.constant(image), tf.constant(boxes))
  with tf.Session() as sess:
    np.testing.assert_allclose(sess.run(flipped), [[0.1, 0.4, 0.5, 0.8], [0.0, 0.75, 1.0, 1.0]], atol=1e-6)
    seen = set()
    for _ in range(30):
      img, b = sess.run(random_out)
      is_flipped = not np.array_equal(img, image)
      if is_flipped:
        np.testing.assert_array_equal(img, image[:, ::-1])
        np.testing.assert_allclose(b, [[0.1, 0.4, 0.5, 0.8], [0.0, 0.75, 1.0, 1.0]], atol=1e-6)
      else:
        np.testing.assert_allclose(b, boxes)
      seen.add(is_flipped)
  assert seen == {True, False}


def test_pad_objects_shapes_and_values(graph):
  boxes = tf.placeholder(tf.float32, [None, 4])
  classes = tf.placeholder(tf.int32, [None])
  crowd = tf.placeholder(tf.bool, [None])
  out = detection_preprocessing.pad_objects(boxes, classes, crowd, 3)
  assert [t.get_shape().as_list() for t in out[:3]] == [[3, 4], [3], [3]]
  with tf.Session() as sess:
    b, c, k, n = sess.run(out, {boxes: [[0.1, 0.2, 0.3, 0.4]], classes: [7], crowd: [True]})
    np.testing.assert_allclose(b, [[0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert c.tolist() == [7, 0, 0] and k.tolist() == [True, False, False] and n == 1
    b, c, k, n = sess.run(out, {boxes: np.ones([5, 4]), classes: [1, 2, 3, 4, 5], crowd: [False] * 5})
    assert b.shape == (3, 4) and c.tolist() == [1, 2, 3] and n == 3


def test_class_mapping(graph):
  lookup = detection_preprocessing.make_class_mapping([90, 1, 3])
  with tf.Session() as sess:
    assert sess.run(lookup(tf.constant([1, 3, 90, 2, 0, 91, -1]))).tolist() == [1, 2, 3, 0, 0, 0, 0]


def test_preprocess_shapes_and_range(graph):
  decoded = {'image': tf.fill([20, 40, 3], tf.constant(255, tf.uint8)),
             'boxes': tf.constant([[0.1, 0.1, 0.6, 0.6]]), 'classes': tf.constant([90]),
             'is_crowd': tf.constant([False]), 'source_id': tf.constant('1'),
             'height': tf.constant(20), 'width': tf.constant(40)}
  train = detection_preprocessing.preprocess_for_train(decoded, 32, seed=3)
  evaluation = detection_preprocessing.preprocess_for_eval(decoded, 32)
  assert train['image'].get_shape().as_list() == [32, 32, 3]
  with tf.Session() as sess:
    t, e = sess.run([train, evaluation])
  np.testing.assert_allclose(t['image'], 1.0)
  np.testing.assert_allclose(e['image'], 1.0)
  assert t['boxes'].shape[1] == 4 and t['classes'].dtype == np.int32 and t['is_crowd'].dtype == bool
  np.testing.assert_allclose(e['boxes'], [[0.1, 0.1, 0.6, 0.6]])
  assert (e['original_height'], e['original_width'], e['source_id']) == (20, 40, b'1')


def test_window_iou_is_box_ops_iou(graph):
  # The sampler's local IoU (datasets/ may not import heads/) must give exactly heads' values.
  from heads.core import box_ops  # pylint: disable=g-import-not-at-top  (tests may import heads)
  rng = np.random.RandomState(0)
  corners = np.sort(rng.uniform(0.0, 1.0, [64, 2, 2]), axis=1)
  boxes = np.concatenate([corners[:, 0], corners[:, 1]], axis=1).astype(np.float32)
  boxes[:3] = [[0.2, 0.2, 0.2, 0.2], [0.0, 0.0, 1.0, 1.0], [0.5, 0.1, 0.5, 0.9]]  # empty, whole, flat
  windows = [[0.1, 0.2, 0.6, 0.7], [0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.2, 0.2], [0.3, 0.0, 0.31, 0.02]]
  with tf.Session() as sess:
    for window in windows:
      window = tf.constant(window, tf.float32)
      ours, heads_iou = sess.run([detection_preprocessing._window_iou(window, tf.constant(boxes)),
                                  box_ops.iou(window[None], tf.constant(boxes))[0]])
      np.testing.assert_array_equal(ours, heads_iou)
      assert not np.isnan(ours).any()
