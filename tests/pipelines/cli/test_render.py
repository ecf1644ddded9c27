"""Pictures for a person (`pipelines.cli.render`): small images drawn on an upscaled copy with readable labels,
the segmentation input beside its mask, the class-id mask kept at the image's size, relative paths."""
import os

import numpy as np
import pytest
from PIL import Image

from pipelines.cli import render


@pytest.fixture
def image(tmp_path):
  path = str(tmp_path / 'in.jpg')
  Image.fromarray((np.random.RandomState(0).rand(60, 80, 3) * 255).astype(np.uint8)).save(path)
  return path


def test_upscale_factor():
  assert render.upscale_factor((80, 60)) == 5  # 400 >= 384
  assert render.upscale_factor((384, 10)) == 1 and render.upscale_factor((1000, 700)) == 1
  assert render.upscale_factor((383, 383)) == 2


def test_classification_and_detection_are_drawn_large(tmp_path, image):
  item = render.describe(image, {'top_k_classes': [2, 1], 'top_k_class_names': [b'square', b'circle'],
                                 'top_k_probabilities': [0.7, 0.2]}, str(tmp_path / 'c.png'))
  width, height = Image.open(item['output']).size
  assert width == 400 and height > 300  # the caption band under the 400x300 picture
  dets = {'num_detections': 2, 'detection_boxes': np.array([[5, 5, 30, 40], [10, 50, 59, 79]], np.float32),
          'detection_classes': [1, 2], 'detection_class_names': [b'circle', b'square'],
          'detection_scores': np.array([0.9, 0.2], np.float32)}
  item = render.describe(image, dets, str(tmp_path / 'd.png'), min_score=0.3)
  assert [d['name'] for d in item['detections']] == ['circle']
  drawn = np.asarray(Image.open(item['output']))
  assert drawn.shape == (300, 400, 3)
  # The box is drawn at 5x: its left edge (x = 25) is box red along the box's height.
  column = drawn[60:140, 25]
  assert (np.abs(column.astype(int) - render.BOX_COLOUR).sum(axis=1) < 60).mean() > 0.9


def test_segmentation_mask_and_input_beside_it(tmp_path, image):
  mask = np.zeros([60, 80], np.int32)
  mask[10:30, 20:60] = 3
  item = render.describe(image, {'mask': mask}, str(tmp_path / 's.png'), class_names=['bg', 'a', 'b', 'c'])
  saved = Image.open(item['output'])
  assert saved.size == (80, 60) and saved.mode == 'P'
  np.testing.assert_array_equal(np.asarray(saved), mask)  # class ids, not colours
  composite = Image.open(item['overlay'])
  assert composite.size[0] == 3 * 400 + 2 * 8 and composite.size[1] > 300
  assert item['pixels_per_class'] == {0: 60 * 80 - 20 * 40, 3: 20 * 40}


def test_summary_line_paths_relative_to_a_report(tmp_path, image):
  item = render.describe(image, {'mask': np.zeros([60, 80], np.int32)}, str(tmp_path / 'pictures' / 's.png')
                         if os.makedirs(str(tmp_path / 'pictures')) is None else None)
  line = render.summary_line(item, str(tmp_path))
  assert line == 'in.jpg: classes [0] -> pictures/s.png'
  assert render.summary_line(item).startswith(image)
