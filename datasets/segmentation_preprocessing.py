"""DeepLab-style preprocessing of (image, label) pairs for semantic segmentation.

Training: random scale (bilinear image, nearest label), pad bottom/right to the crop size with the mean
pixel (image) and the ignore label, random crop at the same offsets for both, random left-right flip.
Evaluation: pad the whole image bottom/right to the crop size (it must already fit, as DeepLab requires
`eval_crop_size` >= image size). Images come out scaled to [-1, 1] (MobileNet's input range), where the
mean pixel 127.5 is 0.

Not here: decoding records (`datasets.decoders.decode_segmentation`), batching and the input pipeline
(`pipelines.inputs.segmentation_input`), resizing to a min/max side (not used for VOC), colour jitter or any
augmentation DeepLab does not do.
"""
import tensorflow.compat.v1 as tf

# DeepLab pads with the MobileNet mean pixel 127.5, which is 0 once the image is scaled to [-1, 1].
MEAN_PIXEL = 127.5
_PADDED_IMAGE_VALUE = 0.0


def _op_seed(seed, offset):
  """Distinct op-level seeds, so the scale, crop and flip draws are not the same random stream."""
  return None if seed is None else seed + offset


def scale_to_unit_range(image):
  """Maps pixel values to MobileNet's input range.

  Args:
    image: uint8 or float32 tensor [..., 3], values in [0, 255].

  Returns:
    float32 tensor of the same shape, values in [-1, 1] (127.5 -> 0).
  """
  return tf.cast(image, tf.float32) / MEAN_PIXEL - 1.0


def random_scale_factor(min_scale, max_scale, scale_step, seed=None):
  """One random scale factor, drawn as DeepLab's `get_random_scale`.

  Args:
    min_scale: float, smallest factor.
    max_scale: float, largest factor (>= min_scale).
    scale_step: float, spacing of the discrete factors min, min+step, ..., max; 0 draws uniformly.
    seed: optional int op seed.

  Returns:
    float32 scalar tensor in [min_scale, max_scale].
  """
  if min_scale > max_scale or min_scale <= 0:
    raise ValueError('need 0 < min_scale <= max_scale, got min_scale=%r max_scale=%r' % (
        min_scale, max_scale))
  if min_scale == max_scale:
    return tf.constant(min_scale, tf.float32)
  if scale_step == 0:
    return tf.random_uniform([], min_scale, max_scale, seed=seed)
  num_steps = int(round((max_scale - min_scale) / scale_step)) + 1
  factors = tf.lin_space(float(min_scale), float(max_scale), num_steps)
  index = tf.random_uniform([], maxval=num_steps, dtype=tf.int32, seed=seed)
  return factors[index]


def _rescale(image, label, scale):
  """Resizes image (bilinear) and label (nearest) by `scale`, corners aligned as in DeepLab."""
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  new_size = tf.cast(shape * scale, tf.int32)
  image = tf.image.resize_bilinear(image[tf.newaxis], new_size, align_corners=True)[0]
  label = tf.image.resize_nearest_neighbor(label[tf.newaxis], new_size, align_corners=True)[0]
  return image, label


def _pad_bottom_right(image, label, height, width, ignore_label):
  """Pads image [-1, 1] with the mean (0) and label with `ignore_label` up to height x width."""
  shape = tf.shape(image)
  pad_h = tf.maximum(height - shape[0], 0)
  pad_w = tf.maximum(width - shape[1], 0)
  paddings = [[0, pad_h], [0, pad_w], [0, 0]]
  image = tf.pad(image, paddings, constant_values=_PADDED_IMAGE_VALUE)
  label = tf.pad(label, paddings, constant_values=ignore_label)
  return image, label


def preprocess_for_train(image, label, crop_size=513, min_scale=0.5, max_scale=2.0, scale_step=0.25,
                         ignore_label=255, seed=None):
  """Random scale, pad, crop and flip of an image and its label map, as DeepLab's training input.

  Args:
    image: uint8 (or float32) tensor [H, W, 3], values in [0, 255].
    label: integer tensor [H, W, 1], class indices with `ignore_label` for unlabelled pixels.
    crop_size: int, side of the square output crop.
    min_scale: float, smallest random scale factor.
    max_scale: float, largest random scale factor.
    scale_step: float, spacing of the scale factors (DeepLab uses 0.25); 0 draws them uniformly.
    ignore_label: int, label written into padded areas.
    seed: optional int; makes the scale, crop and flip draws repeatable.

  Returns:
    image: float32 tensor [crop_size, crop_size, 3], values in [-1, 1]; padding is 0 (the mean pixel).
    label: int32 tensor [crop_size, crop_size, 1], input values and `ignore_label`.
  """
  image = scale_to_unit_range(image)
  label = tf.cast(label, tf.int32)
  # Scaling after the [-1, 1] mapping is the same as before it (bilinear is affine-equivariant).
  if not min_scale == max_scale == 1.0:
    scale = random_scale_factor(min_scale, max_scale, scale_step, seed=_op_seed(seed, 0))
    image, label = _rescale(image, label, scale)
  image, label = _pad_bottom_right(image, label, crop_size, crop_size, ignore_label)
  # Crop and flip image and label as one tensor, so both get the same offsets and the same flip.
  # float32 holds every label value (< 2**24) exactly.
  stacked = tf.concat([image, tf.cast(label, tf.float32)], axis=2)
  stacked = tf.random_crop(stacked, [crop_size, crop_size, 4], seed=_op_seed(seed, 1))
  flip = tf.random_uniform([], seed=_op_seed(seed, 2)) < 0.5
  stacked = tf.cond(flip, lambda: tf.reverse(stacked, axis=[1]), lambda: stacked)
  stacked.set_shape([crop_size, crop_size, 4])
  return stacked[:, :, :3], tf.cast(stacked[:, :, 3:], tf.int32)


def preprocess_for_eval(image, label, crop_size=513, ignore_label=255):
  """Pads a whole image and its label bottom/right to crop_size x crop_size, as DeepLab's eval input.

  Args:
    image: uint8 (or float32) tensor [H, W, 3], values in [0, 255], with H, W <= crop_size.
    label: integer tensor [H, W, 1] or None.
    crop_size: int, side of the square output; must be >= the image's height and width.
    ignore_label: int, label written into padded areas.

  Returns:
    image: float32 tensor [crop_size, crop_size, 3], values in [-1, 1]; padding is 0 (the mean pixel).
    label: int32 tensor [crop_size, crop_size, 1] (padding `ignore_label`), or None if label is None.

  Raises:
    ValueError: the image's static size is larger than crop_size.
    tf.errors.InvalidArgumentError at run time if the image is larger than crop_size.
  """
  message = ('image is larger than the eval crop_size=%d; raise crop_size to at least the largest image '
             'side (DeepLab needs eval_crop_size >= image size); height, width:' % crop_size)
  static = [d for d in image.get_shape().as_list()[:2] if d is not None]
  if static and max(static) > crop_size:
    raise ValueError('%s %s' % (message, image.get_shape().as_list()[:2]))
  shape = tf.shape(image)
  check = tf.debugging.assert_less_equal(tf.reduce_max(shape[:2]), crop_size, message=message,
                                         data=[shape[0], shape[1]])
  with tf.control_dependencies([check]):
    image = scale_to_unit_range(image)
  label_in = tf.zeros_like(image[:, :, :1], tf.int32) if label is None else tf.cast(label, tf.int32)
  image, label_out = _pad_bottom_right(image, label_in, crop_size, crop_size, ignore_label)
  image.set_shape([crop_size, crop_size, 3])
  label_out.set_shape([crop_size, crop_size, 1])
  return image, (None if label is None else label_out)
