"""MobileNetV2's ImageNet preprocessing of one decoded image (TF-Slim's inception_preprocessing recipe).

Training, as TF-Slim's `inception_preprocessing.preprocess_for_train` (its defaults): a distorted
bounding-box crop (min_object_covered 0.1 of the whole image, aspect ratio 3/4..4/3, area 5%..100%, 100
attempts), bilinear resize to a square, random left-right flip, colour distortion (`fast`: brightness
32/255 then saturation 0.5..1.5, slim's fast mode; `full`: one of slim's four orderings of brightness,
saturation, hue 0.2 and contrast 0.5..1.5; `none`), clipped. Evaluation: central crop of 87.5% of each
side and bilinear resize. Both resize without corner alignment, as TF-Slim's
`resize_images`, and return float32 in [-1, 1] (MobileNet's input range).

Not here: record decoding (`datasets.decoders.decode_classification`), batching and the input pipeline
(`pipelines.inputs.classification_input`), bounding-box-guided crops (the records carry no boxes).
"""
import tensorflow.compat.v1 as tf


def _resize_to_unit_range(image, image_size):
  """Bilinear resize (TF-Slim's `resize_images`: no corner alignment) then 0..255 -> [-1, 1]."""
  resized = tf.image.resize_bilinear(tf.expand_dims(image, 0), [image_size, image_size], align_corners=False)
  resized = tf.squeeze(resized, [0])
  resized.set_shape([image_size, image_size, 3])
  return resized * (2.0 / 255.0) - 1.0


COLOR_DISTORTIONS = ('fast', 'full', 'none')


def _seed(seed, offset):
  return None if seed is None else seed + offset


def _color_ops(seed):
  """TF-Slim's colour ops on [0, 1] floats, each with its own op seed."""
  return {'brightness': lambda x: tf.image.random_brightness(x, max_delta=32.0 / 255.0, seed=_seed(seed, 11)),
          'saturation': lambda x: tf.image.random_saturation(x, lower=0.5, upper=1.5, seed=_seed(seed, 12)),
          'hue': lambda x: tf.image.random_hue(x, max_delta=0.2, seed=_seed(seed, 13)),
          'contrast': lambda x: tf.image.random_contrast(x, lower=0.5, upper=1.5, seed=_seed(seed, 14))}


# slim's distort_color orderings: fast mode uses ordering 0 (of its two ops) only.
_FULL_ORDERINGS = (('brightness', 'saturation', 'hue', 'contrast'), ('saturation', 'brightness', 'contrast', 'hue'),
                   ('contrast', 'hue', 'brightness', 'saturation'), ('hue', 'saturation', 'contrast', 'brightness'))


def distort_color(image, mode='fast', seed=None):
  """TF-Slim's `distort_color` on float32 [H, W, 3] in [0, 1], clipped to [0, 1] (see the module docstring)."""
  if mode not in COLOR_DISTORTIONS:
    raise ValueError('color distortion must be one of %s, got %r' % (', '.join(COLOR_DISTORTIONS), mode))
  if mode == 'none':
    return image
  ops = _color_ops(seed)
  orderings = [('brightness', 'saturation')] if mode == 'fast' else _FULL_ORDERINGS

  def apply(ordering):
    def fn():
      out = image
      for name in ordering:
        out = ops[name](out)
      return out
    return fn
  if len(orderings) == 1:
    return tf.clip_by_value(apply(orderings[0])(), 0.0, 1.0)
  index = tf.random_uniform([], maxval=len(orderings), dtype=tf.int32, seed=_seed(seed, 15))
  result = apply(orderings[-1])()
  for i in reversed(range(len(orderings) - 1)):
    result = tf.cond(tf.equal(index, i), apply(orderings[i]), lambda result=result: result)
  return tf.clip_by_value(result, 0.0, 1.0)


def preprocess_for_train(image, image_size, area_range=(0.05, 1.0), aspect_ratio_range=(0.75, 1.33),
                         seed=None, color_distortion='fast', min_object_covered=0.1, max_attempts=100,
                         random_flip=True):
  """TF-Slim's Inception training preprocessing (its defaults; see the module docstring).

  Args:
    image: uint8 [H, W, 3] tensor, 0..255.
    image_size: int, output side S.
    area_range: (min, max) fraction of the image area the crop covers.
    aspect_ratio_range: (min, max) width / height of the crop.
    seed: int or None, op seed of the crop, flip and colour draws.
    color_distortion: 'fast', 'full' or 'none'.
    min_object_covered: fraction of the whole image the crop must cover.
    max_attempts: tries of the crop sampler (the whole image when none fits).
    random_flip: bool, flip left-right with probability 0.5.

  Returns:
    float32 [S, S, 3] tensor in [-1, 1].
  """
  whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4])
  begin, size, _ = tf.image.sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=whole_image, seed=seed, min_object_covered=min_object_covered,
      aspect_ratio_range=aspect_ratio_range, area_range=area_range, max_attempts=max_attempts,
      use_image_if_no_bounding_boxes=True)
  # Crop the uint8 image before any float work: the crop is usually much smaller than the image.
  image = _resize_to_unit_range(tf.slice(image, begin, size), image_size)
  if random_flip:
    image = tf.image.random_flip_left_right(image, seed=seed)
  if color_distortion != 'none':
    image = distort_color((image + 1.0) * 0.5, color_distortion, seed) * 2.0 - 1.0
  return image


def preprocess_for_eval(image, image_size, central_fraction=0.875):
  """Central crop (87.5% of each side, as TF-Slim evaluates) then bilinear resize.

  Args:
    image: uint8 [H, W, 3] tensor, 0..255.
    image_size: int, output side S.
    central_fraction: float in (0, 1], kept fraction of each side; 1 keeps the whole image.

  Returns:
    float32 [S, S, 3] tensor in [-1, 1].
  """
  if central_fraction < 1.0:
    image = tf.image.central_crop(image, central_fraction)
  return _resize_to_unit_range(image, image_size)
