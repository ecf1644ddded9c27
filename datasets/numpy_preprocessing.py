"""The eval / serving preprocessing of the three tasks in numpy and Pillow, for predicting without TensorFlow.

Each function computes what its TensorFlow twin computes, in the same float32 arithmetic, so a PNG gives the
same model input to within float rounding (tests/datasets/test_numpy_preprocessing.py compares them):

- `resize_bilinear`: `tf.image.resize_bilinear` / `tf.compat.v1.image.resize_images` (half-pixel centres off,
  corners aligned or not);
- `classification_eval`: `classification_preprocessing.preprocess_for_eval` (central crop, resize, [-1, 1]);
- `detection_eval`: `detection_preprocessing.preprocess_for_eval`'s image (resize to a square, [-1, 1]);
- `segmentation_fit_and_pad`: the segmentation serving input (shrink to fit, pad bottom / right with 0).

One difference is not arithmetic: `decode` uses Pillow, whose libjpeg decodes JPEGs with the accurate integer
DCT. TensorFlow's serving path decodes classification and detection JPEGs with libjpeg's fast DCT (as TF-Slim
and the Object Detection API do), which differs by a few levels per pixel; segmentation and the multi-task
model decode with the accurate DCT on both paths. PNG, GIF and BMP decode identically.
"""
import io

import numpy as np

MEAN_PIXEL = 127.5


def decode(encoded, name='image'):
  """JPEG / PNG / GIF / BMP bytes -> uint8 [H, W, 3] RGB (a GIF's first frame; alpha dropped, as TF does)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    image = Image.open(io.BytesIO(encoded))
    image.seek(0)
    return np.asarray(image.convert('RGB'), np.uint8)
  except (IOError, OSError, SyntaxError, ValueError) as e:
    raise ValueError('%s: not a decodable image (%s)' % (name, e))


def _weights(in_size, out_size, align_corners):
  """Source rows (lower, upper) and the float32 lerp of each output row, as TensorFlow's legacy resize."""
  if align_corners and out_size > 1:
    scale = np.float32(in_size - 1) / np.float32(out_size - 1)
  else:
    scale = np.float32(in_size) / np.float32(out_size)
  position = np.arange(out_size, dtype=np.float32) * scale
  floor = np.floor(position)
  lower = np.maximum(floor.astype(np.int64), 0)
  upper = np.minimum(np.ceil(position).astype(np.int64), in_size - 1)
  return lower, upper, (position - floor).astype(np.float32)


def resize_bilinear(image, height, width, align_corners=False):
  """[H, W, C] (any dtype) -> float32 [height, width, C], TensorFlow's `resize_bilinear` without half-pixel
  centres (what TF 1.x and `tf.compat.v1.image.resize_images` do)."""
  image = np.asarray(image, np.float32)
  top_rows, bottom_rows, y_lerp = _weights(image.shape[0], height, align_corners)
  left, right, x_lerp = _weights(image.shape[1], width, align_corners)
  x_lerp = x_lerp[None, :, None]
  top = image[top_rows]
  bottom = image[bottom_rows]
  top = top[:, left] + (top[:, right] - top[:, left]) * x_lerp
  bottom = bottom[:, left] + (bottom[:, right] - bottom[:, left]) * x_lerp
  return top + (bottom - top) * y_lerp[:, None, None]


def central_crop(image, fraction):
  """`tf.image.central_crop`: the centred `fraction` of each side (start rounded down, as TF computes it)."""
  if fraction >= 1.0:
    return image
  height, width = image.shape[:2]
  top = int((height - height * fraction) / 2)
  left = int((width - width * fraction) / 2)
  return image[top:height - top, left:width - left]


def classification_eval(image, size, central_fraction=0.875):
  """uint8 [H, W, 3] -> float32 [size, size, 3] in [-1, 1]: central crop, bilinear resize, TF-Slim scaling."""
  resized = resize_bilinear(central_crop(image, central_fraction), size, size)
  return resized * np.float32(2.0 / 255.0) - np.float32(1.0)


def detection_eval(image, size):
  """uint8 [H, W, 3] -> float32 [size, size, 3] in [-1, 1]: the whole image resized to a square."""
  return resize_bilinear(image, size, size) / np.float32(MEAN_PIXEL) - np.float32(1.0)


def segmentation_fit_and_pad(image, crop_size):
  """uint8 [H, W, 3] -> (float32 [crop, crop, 3] in [-1, 1], valid height, valid width).

  An image larger than `crop_size` is first shrunk to fit (corners aligned, DeepLab's resize), then padded
  bottom / right with 0, the mean pixel.
  """
  size = np.array(image.shape[:2], np.float32)
  scale = min(np.float32(1.0), np.float32(crop_size) / size.max())
  fitted = np.clip(np.round(size * scale).astype(np.int32), 1, crop_size)
  if scale < 1.0:
    pixels = resize_bilinear(image, int(fitted[0]), int(fitted[1]), align_corners=True)
  else:
    pixels = np.asarray(image, np.float32)
  pixels = pixels / np.float32(MEAN_PIXEL) - np.float32(1.0)
  padded = np.zeros((crop_size, crop_size, 3), np.float32)
  padded[:pixels.shape[0], :pixels.shape[1]] = pixels
  return padded, int(fitted[0]), int(fitted[1])
