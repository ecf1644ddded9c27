"""The PASCAL VOC colour map, without TensorFlow: VOC label PNGs, the converter and the prediction pictures use it
(`datasets.voc` re-exports it; `pipelines.cli.render` draws masks with it in a TF-free install too)."""
import numpy as np


def voc_colormap():
  """The PASCAL VOC colour map: bits of the index interleaved into R, G, B from the top bit down.

  Returns:
    np.uint8 array [256, 3]; row i is the RGB colour of class i (0 black, 1 (128, 0, 0), ...,
    255 (224, 224, 192), the boundary/ignore colour).
  """
  cmap = np.zeros((256, 3), np.uint8)
  for index in range(256):
    code, rgb = index, [0, 0, 0]
    for shift in range(7, -1, -1):
      for channel in range(3):
        rgb[channel] |= ((code >> channel) & 1) << shift
      code >>= 3
    cmap[index] = rgb
  return cmap
