"""Detection preprocessing: SSD's patch samplers and flip, resizing, class-id mapping, static padding.

`ssd_random_crop` is the Object Detection API's (its defaults); `iou_random_crop` the SSD paper's sampler with
an IoU test, which this project used before (`detection.crop_sampler: iou`).

Boxes are float32 [N, 4], normalized [ymin, xmin, ymax, xmax] in [0, 1], as the Object Detection API
stores them. Per-box tensors (class labels, crowd flags) are filtered together with their boxes.
`preprocess_for_train` / `preprocess_for_eval` turn a decoded record
(`datasets.decoders.decode_detection`) into a square image in [-1, 1]; `make_class_mapping` maps sparse
dataset ids to contiguous indices; `pad_objects` gives the per-image object lists a static size so
images batch.

Not here: photometric distortions, the "zoom out" expansion of the SSD paper (SSDLite's pipeline does
not use it), anchor matching (`heads.core.target_assigner`, applied by `pipelines.inputs.detection_input`),
record decoding (`datasets.decoders`). This module does not import `heads`: data flows
datasets -> heads, never back, so the one IoU the crop sampler needs is computed here (`_window_iou`).
"""
import numpy as np
import tensorflow.compat.v1 as tf

# The SSD paper's sampler: None keeps the whole image, the rest are minimum IoU thresholds.
SSD_MIN_IOU_CHOICES = (None, 0.1, 0.3, 0.5, 0.7, 0.9)
# Rounds of tf.image.sample_distorted_bounding_box per image before giving up and keeping the whole
# image: each round already makes up to `max_attempts` tries at the (weaker) coverage criterion.
_IOU_ROUNDS = 10
_WHOLE_IMAGE = -1.0


def _op_seed(seed, offset):
  """Distinct op-level seeds, so the threshold, crop and flip draws are not the same random stream."""
  return None if seed is None else seed + offset


def _select(values, keep):
  """Rows of `values` [N, ...] where `keep` bool [N] is True (tf.boolean_mask warns on TF 1.15)."""
  return tf.gather(values, tf.reshape(tf.where_v2(keep), [-1]))


def _window_iou(window, boxes):
  """IoU of one box `window` float32 [4] with each of `boxes` float32 [N, 4] -> float32 [N] in [0, 1].

  The arithmetic of `heads.core.box_ops.iou(window[None], boxes)[0]`, op for op (so the sampler's
  accept/reject decisions are the same), written here because datasets/ must not import heads/.
  0 where the union is 0 (empty window and box), instead of NaN.
  """
  ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=-1)
  heights = tf.maximum(0.0, tf.minimum(window[2], ymax) - tf.maximum(window[0], ymin))
  widths = tf.maximum(0.0, tf.minimum(window[3], xmax) - tf.maximum(window[1], xmin))
  inter = heights * widths
  union = (window[2] - window[0]) * (window[3] - window[1]) + (ymax - ymin) * (xmax - xmin) - inter
  safe_union = tf.where(union > 0.0, union, tf.ones_like(union))
  return tf.where(union > 0.0, inter / safe_union, tf.zeros_like(union))


def _window(begin, size, image_hw):
  """Normalized [ymin, xmin, ymax, xmax] float32 [4] of a crop given as pixel begin/size int32 [3]."""
  hw = tf.cast(image_hw, tf.float32)
  start = tf.cast(begin[:2], tf.float32) / hw
  end = tf.cast(begin[:2] + size[:2], tf.float32) / hw
  return tf.stack([start[0], start[1], end[0], end[1]])


def _reference_boxes(boxes, is_crowd):
  """Non-crowd boxes the sampler must overlap; the whole image when there are none.

  With the whole image as reference, IoU (and sample_distorted_bounding_box's coverage) become the crop's
  area fraction, so images without objects still get patches of the same size distribution.
  """
  ref = _select(boxes, tf.logical_not(is_crowd))
  whole = tf.constant([[0.0, 0.0, 1.0, 1.0]])
  return tf.cond(tf.size(ref) > 0, lambda: ref, lambda: whole)


def _choose_threshold(min_iou_choices, seed):
  """One threshold drawn uniformly from the choices: float32 scalar, -1 for "whole image"."""
  values = [_WHOLE_IMAGE if t is None or t >= 1.0 else float(t) for t in min_iou_choices]
  index = tf.random_uniform([], maxval=len(values), dtype=tf.int32, seed=_op_seed(seed, 1))
  return tf.gather(tf.constant(values, tf.float32), index)


def _sample_patch(image_shape, ref_boxes, threshold, sampler_args, seed):
  """Pixel begin/size int32 [3] of a patch with IoU >= threshold with some reference box.

  Falls back to the whole image when the threshold means "whole image" or no round succeeds.
  """
  aspect_ratio_range, area_range, max_attempts = sampler_args
  whole_begin = tf.zeros([3], tf.int32)
  whole_size = tf.concat([image_shape[:2], [-1]], 0)
  rounds = tf.cast(threshold >= 0.0, tf.int32) * _IOU_ROUNDS
  seed1, seed2 = [s or 0 for s in tf.random.get_seed(_op_seed(seed, 2))]

  def body(i, unused_done, begin, size):
    # The raw op is what tf.image.sample_distorted_bounding_box runs, minus its deprecation warning.
    new_begin, new_size, _ = tf.raw_ops.SampleDistortedBoundingBoxV2(
        image_size=image_shape, bounding_boxes=ref_boxes[tf.newaxis], seed=seed1, seed2=seed2,
        min_object_covered=tf.maximum(threshold, 0.0), aspect_ratio_range=list(aspect_ratio_range),
        area_range=list(area_range), max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
    window = _window(new_begin, new_size, image_shape[:2])
    ok = tf.reduce_max(_window_iou(window, ref_boxes)) >= threshold
    return i + 1, ok, tf.where_v2(ok, new_begin, begin), tf.where_v2(ok, new_size, size)

  def cond(i, done, unused_begin, unused_size):
    return tf.logical_and(i < rounds, tf.logical_not(done))

  _, _, begin, size = tf.while_loop(
      cond, body, [tf.constant(0), tf.constant(False), whole_begin, whole_size], back_prop=False)
  return begin, size


def _boxes_in_window(boxes, window):
  """Mask bool [N] of boxes whose centre lies inside `window`, and the boxes re-expressed in it.

  Returns the boxes clipped to the window and normalized to its extent, float32 [N, 4] in [0, 1].
  """
  center_y = (boxes[:, 0] + boxes[:, 2]) / 2.0
  center_x = (boxes[:, 1] + boxes[:, 3]) / 2.0
  keep = tf.logical_and(
      tf.logical_and(center_y > window[0], center_y < window[2]),
      tf.logical_and(center_x > window[1], center_x < window[3]))
  offset = tf.stack([window[0], window[1], window[0], window[1]])
  extent = tf.stack([window[2] - window[0], window[3] - window[1]] * 2)
  local = (boxes - offset) / tf.maximum(extent, 1e-12)
  return keep, tf.clip_by_value(local, 0.0, 1.0)


def iou_random_crop(image, boxes, labels, is_crowd, min_iou_choices=SSD_MIN_IOU_CHOICES,
                    aspect_ratio_range=(0.5, 2.0), area_range=(0.1, 1.0), max_attempts=100, seed=None):
  """The SSD paper's random patch sampler with an IoU test (this project's sampler before the OD API's).

  One choice is drawn uniformly from `min_iou_choices`: None (or a value >= 1.0) keeps the whole image;
  a threshold t samples a patch (area fraction in `area_range`, aspect ratio in `aspect_ratio_range`)
  whose IoU with at least one non-crowd object is >= t. As the Object Detection API's ssd_random_crop,
  candidates come from `tf.image.sample_distorted_bounding_box` with min_object_covered=t; the IoU test
  is applied on top, with up to 10 rounds before falling back to the whole image. Without non-crowd
  objects the reference is the whole image (t is then the patch's minimum area fraction).
  Objects whose centre falls inside the patch are kept, clipped to it and renormalized.

  Args:
    image: uint8 or float32 tensor [H, W, C].
    boxes: float32 [N, 4], normalized [ymin, xmin, ymax, xmax] in [0, 1]; N may be 0.
    labels: tensor [N] of any dtype (e.g. int32 class ids), filtered like the boxes.
    is_crowd: bool [N]; crowd boxes do not drive the sampler but are kept/dropped like the others.
    min_iou_choices: sequence of None or floats in (0, 1].
    aspect_ratio_range: (min, max) width/height ratio of the patch (in pixels).
    area_range: (min, max) fraction of the image area covered by the patch.
    max_attempts: tries per sample_distorted_bounding_box call.
    seed: optional int op seed.

  Returns:
    (image [h, w, C] same dtype, boxes float32 [M, 4] in [0, 1], labels [M], is_crowd bool [M]), M <= N.
  """
  with tf.name_scope('iou_random_crop'):
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    is_crowd = tf.cast(is_crowd, tf.bool)
    image_shape = tf.shape(image)
    threshold = _choose_threshold(min_iou_choices, seed)
    begin, size = _sample_patch(image_shape, _reference_boxes(boxes, is_crowd), threshold,
                                (aspect_ratio_range, area_range, max_attempts), seed)
    cropped = tf.slice(image, begin, size)
    actual_size = tf.shape(cropped)
    keep, local = _boxes_in_window(boxes, _window(begin, actual_size, image_shape[:2]))
    return cropped, _select(local, keep), _select(labels, keep), _select(is_crowd, keep)


# The Object Detection API's `ssd_random_crop` defaults (object_detection/core/preprocessor.py): seven
# operations drawn uniformly, each a min_object_covered / overlap_thresh pair.
OD_API_MIN_OBJECT_COVERED = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
OD_API_RANDOM_COEF = 0.15
CROP_SAMPLERS = ('od_api', 'iou')


def _box_ioa(window, boxes):
  """Intersection of each box with `window` over the box's own area: float32 [N] in [0, 1] (0 for a box
  without area)."""
  ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=-1)
  heights = tf.maximum(0.0, tf.minimum(window[2], ymax) - tf.maximum(window[0], ymin))
  widths = tf.maximum(0.0, tf.minimum(window[3], xmax) - tf.maximum(window[1], xmin))
  areas = (ymax - ymin) * (xmax - xmin)
  return tf.where(areas > 0.0, heights * widths / tf.where(areas > 0.0, areas, tf.ones_like(areas)),
                  tf.zeros_like(areas))


def _outside(window, boxes):
  """bool [N]: the box lies completely outside `window` (touching counts as outside, as the OD API's)."""
  ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=-1)
  return tf.logical_or(tf.logical_or(ymin >= window[2], ymax <= window[0]),
                       tf.logical_or(xmin >= window[3], xmax <= window[1]))


def ssd_random_crop(image, boxes, labels, is_crowd, min_object_covered=OD_API_MIN_OBJECT_COVERED,
                    aspect_ratio_range=(0.5, 2.0), area_range=(0.1, 1.0), overlap_thresh=None,
                    random_coef=OD_API_RANDOM_COEF, max_attempts=100, seed=None):
  """The Object Detection API's `ssd_random_crop`, with its defaults.

  One of len(min_object_covered) operations is drawn uniformly. With probability `random_coef` the image
  is kept as it is; otherwise `tf.image.sample_distorted_bounding_box` draws a patch (aspect ratio in
  `aspect_ratio_range`, area fraction in `area_range`, `max_attempts` tries, the whole image when none
  fits) covering at least the operation's `min_object_covered` of some box (of any box, crowd ones
  included, as the OD API's; the whole image when there are none). Boxes completely outside the patch are
  dropped, and so are those of which less than the operation's `overlap_thresh` (default: its
  min_object_covered) lies inside the patch (intersection over the box's own area); the rest are clipped to
  the patch and renormalized.

  Args:
    image: uint8 or float32 tensor [H, W, C].
    boxes: float32 [N, 4], normalized [ymin, xmin, ymax, xmax] in [0, 1]; N may be 0.
    labels: tensor [N] of any dtype (e.g. int32 class ids), filtered like the boxes.
    is_crowd: bool [N], filtered like the boxes.
    min_object_covered: sequence of floats in [0, 1], one per operation.
    aspect_ratio_range, area_range: (min, max) of the patch, shared by the operations.
    overlap_thresh: sequence like min_object_covered, or None (= min_object_covered).
    random_coef: float in [0, 1], probability of keeping the image as it is.
    max_attempts: tries of the patch sampler.
    seed: optional int op seed.

  Returns:
    (image [h, w, C] same dtype, boxes float32 [M, 4] in [0, 1], labels [M], is_crowd bool [M]), M <= N.
  """
  overlap_thresh = min_object_covered if overlap_thresh is None else overlap_thresh
  if len(overlap_thresh) != len(min_object_covered):
    raise ValueError('ssd_random_crop: %d overlap thresholds for %d operations' % (len(overlap_thresh),
                                                                                   len(min_object_covered)))
  with tf.name_scope('ssd_random_crop'):
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    is_crowd = tf.cast(is_crowd, tf.bool)
    image_shape = tf.shape(image)
    index = tf.random_uniform([], maxval=len(min_object_covered), dtype=tf.int32, seed=_op_seed(seed, 1))
    covered = tf.gather(tf.constant(min_object_covered, tf.float32), index)
    thresh = tf.gather(tf.constant(overlap_thresh, tf.float32), index)
    seed1, seed2 = [s or 0 for s in tf.random.get_seed(_op_seed(seed, 2))]
    begin, size, _ = tf.raw_ops.SampleDistortedBoundingBoxV2(
        image_size=image_shape, bounding_boxes=tf.clip_by_value(boxes, 0.0, 1.0)[tf.newaxis], seed=seed1,
        seed2=seed2, min_object_covered=covered, aspect_ratio_range=list(aspect_ratio_range),
        area_range=list(area_range), max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
    crop = tf.random_uniform([], seed=_op_seed(seed, 4)) >= random_coef
    begin = tf.where_v2(crop, begin, tf.zeros_like(begin))
    size = tf.where_v2(crop, size, tf.concat([image_shape[:2], [-1]], 0))
    cropped = tf.slice(image, begin, size)
    window = _window(begin, tf.shape(cropped), image_shape[:2])
    keep = tf.logical_and(tf.logical_not(_outside(window, boxes)), _box_ioa(window, boxes) >= thresh)
    keep = tf.logical_or(keep, tf.logical_not(crop))  # the image as it is keeps every box
    _, local = _boxes_in_window(boxes, window)
    return cropped, _select(local, keep), _select(labels, keep), _select(is_crowd, keep)


def flip_boxes_left_right(boxes):
  """Mirrors normalized boxes float32 [N, 4] [ymin, xmin, ymax, xmax]: x -> 1 - x, xmin/xmax swapped."""
  ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
  return tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=1)


def random_horizontal_flip(image, boxes, seed=None):
  """Flips image and boxes left-right together with probability 0.5.

  Args:
    image: tensor [H, W, C], any dtype.
    boxes: float32 [N, 4], normalized [ymin, xmin, ymax, xmax] in [0, 1].
    seed: optional int op seed.

  Returns:
    (image [H, W, C], boxes float32 [N, 4] in [0, 1]).
  """
  with tf.name_scope('random_horizontal_flip'):
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    flip = tf.random_uniform([], seed=_op_seed(seed, 3)) < 0.5
    image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
    boxes = tf.cond(flip, lambda: flip_boxes_left_right(boxes), lambda: boxes)
    return image, boxes


def pad_objects(boxes, classes, is_crowd, max_objects):
  """Zero-pads or truncates per-image object lists to a static length, so images batch.

  Args:
    boxes: float32 [N, 4].
    classes: int tensor [N].
    is_crowd: bool [N].
    max_objects: int, the static length M.

  Returns:
    (boxes float32 [M, 4], classes [M] same dtype, is_crowd bool [M], num_objects int32 scalar = min(N, M)).
    Padding rows are zero boxes, class 0, not crowd.
  """
  with tf.name_scope('pad_objects'):
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])[:max_objects]
    classes = classes[:max_objects]
    is_crowd = tf.cast(is_crowd, tf.bool)[:max_objects]
    num_objects = tf.shape(boxes)[0]
    pad = max_objects - num_objects
    boxes = tf.pad(boxes, [[0, pad], [0, 0]])
    classes = tf.pad(classes, [[0, pad]])
    is_crowd = tf.cast(tf.pad(tf.cast(is_crowd, tf.int32), [[0, pad]]), tf.bool)
    boxes.set_shape([max_objects, 4])
    classes.set_shape([max_objects])
    is_crowd.set_shape([max_objects])
    return boxes, classes, is_crowd, num_objects


def make_class_mapping(category_ids):
  """A lookup from sparse dataset class ids (e.g. COCO's 1..90) to contiguous training indices 1..K.

  Args:
    category_ids: iterable of non-negative ints, the K ids to keep; index k+1 goes to the k-th smallest.

  Returns:
    function(classes int tensor [...]) -> int32 tensor [...] of indices in 1..K, 0 for ids not listed.
    The table is built in the graph where the function is called (a dense int32 [max_id + 1] gather).
  """
  ids = sorted(set(int(i) for i in category_ids))
  if not ids or ids[0] < 0:
    raise ValueError('category_ids must be non-empty and non-negative, got %r' % (category_ids,))
  table = np.zeros([ids[-1] + 1], np.int32)
  table[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)

  def lookup(classes):
    classes = tf.cast(classes, tf.int32)
    known = tf.logical_and(classes >= 0, classes < len(table))
    mapped = tf.gather(tf.constant(table), tf.clip_by_value(classes, 0, len(table) - 1))
    return tf.where_v2(known, mapped, tf.zeros_like(mapped))

  return lookup


def _resize_and_scale(image, image_size):
  """uint8 [H, W, 3] -> float32 [S, S, 3] in [-1, 1] (bilinear, corners not aligned)."""
  image = tf.image.resize_images(tf.cast(image, tf.float32), [image_size, image_size],
                                 method=tf.image.ResizeMethod.BILINEAR)
  image.set_shape([image_size, image_size, 3])
  return image / 127.5 - 1.0


def preprocess_for_train(decoded, image_size, seed=None, sampler='od_api'):
  """SSD training preprocessing: random patch, random flip, resize to a square, scale to [-1, 1].

  Args:
    decoded: dict from `datasets.decoders.decode_detection` (image uint8 [H, W, 3], boxes, classes,
      is_crowd).
    image_size: int S, output side in pixels (the aspect ratio is not kept, as in SSD).
    seed: optional int op seed.
    sampler: 'od_api' (`ssd_random_crop`) or 'iou' (`iou_random_crop`).

  Returns:
    dict: image float32 [S, S, 3] in [-1, 1]; boxes float32 [N', 4] normalized [ymin, xmin, ymax, xmax];
    classes int32 [N'] (unchanged ids); is_crowd bool [N'].
  """
  if sampler not in CROP_SAMPLERS:
    raise ValueError('sampler must be one of %s, got %r' % (', '.join(CROP_SAMPLERS), sampler))
  crop = ssd_random_crop if sampler == 'od_api' else iou_random_crop
  image, boxes, classes, is_crowd = crop(
      decoded['image'], decoded['boxes'], tf.cast(decoded['classes'], tf.int32), decoded['is_crowd'], seed=seed)
  image, boxes = random_horizontal_flip(image, boxes, seed=seed)
  return {'image': _resize_and_scale(image, image_size), 'boxes': boxes, 'classes': classes,
          'is_crowd': is_crowd}


def preprocess_for_eval(decoded, image_size):
  """Evaluation preprocessing: resize to a square and scale to [-1, 1]; boxes are unchanged.

  Args:
    decoded: dict from `datasets.decoders.decode_detection`.
    image_size: int S, output side in pixels.

  Returns:
    dict: image float32 [S, S, 3] in [-1, 1]; boxes float32 [N, 4] normalized; classes int32 [N];
    is_crowd bool [N]; source_id string []; original_height, original_width int32 [] (of the decoded image).
  """
  return {'image': _resize_and_scale(decoded['image'], image_size),
          'boxes': tf.reshape(tf.cast(decoded['boxes'], tf.float32), [-1, 4]),
          'classes': tf.cast(decoded['classes'], tf.int32),
          'is_crowd': tf.cast(decoded['is_crowd'], tf.bool),
          'source_id': decoded['source_id'],
          'original_height': tf.cast(decoded['height'], tf.int32),
          'original_width': tf.cast(decoded['width'], tf.int32)}
