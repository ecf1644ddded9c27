"""MobileNetV2's ImageNet preprocessing of one decoded image (TF-Slim's inception_preprocessing recipe).

Training: Inception-style random crop (area fraction and aspect ratio ranges), bilinear resize to a square,
random left-right flip, optional TF-Slim colour distortion (off in the MobileNet recipe). Evaluation:
central crop of 87.5% of each side and bilinear resize. Both resize without corner alignment, as TF-Slim's
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


def _distort_color(image):
  """TF-Slim's fast colour distortion on [0, 1] floats: brightness, saturation, hue, contrast."""
  image = tf.image.random_brightness(image, max_delta=32.0 / 255.0)
  image = tf.image.random_saturation(image, lower=0.5, upper=1.5)
  image = tf.image.random_hue(image, max_delta=0.2)
  image = tf.image.random_contrast(image, lower=0.5, upper=1.5)
  return tf.clip_by_value(image, 0.0, 1.0)


def preprocess_for_train(image, image_size, area_range=(0.08, 1.0), aspect_ratio_range=(0.75, 1.33),
                         seed=None, distort_color=False):
  """Inception-style random crop, resize and flip (the MobileNetV2 ImageNet recipe).

  Args:
    image: uint8 [H, W, 3] tensor, 0..255.
    image_size: int, output side S.
    area_range: (min, max) fraction of the image area the crop covers.
    aspect_ratio_range: (min, max) width / height of the crop.
    seed: int or None, op seed of the crop and flip.
    distort_color: bool, add TF-Slim's colour distortion (off in the MobileNet recipe).

  Returns:
    float32 [S, S, 3] tensor in [-1, 1].
  """
  whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4])
  begin, size, _ = tf.image.sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=whole_image, seed=seed, min_object_covered=0.1,
      aspect_ratio_range=aspect_ratio_range, area_range=area_range, max_attempts=100,
      use_image_if_no_bounding_boxes=True)
  # Crop the uint8 image before any float work: the crop is usually much smaller than the image.
  image = _resize_to_unit_range(tf.slice(image, begin, size), image_size)
  image = tf.image.random_flip_left_right(image, seed=seed)
  if distort_color:
    image = _distort_color((image + 1.0) * 0.5) * 2.0 - 1.0
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
