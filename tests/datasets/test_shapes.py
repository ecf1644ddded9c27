"""Tests of the shapes demo-data generator: determinism, the three raw layouts and label/pixel agreement."""
import argparse
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from datasets import shapes
from datasets import shapes_render
from datasets import voc

SIZE = 64
COUNTS = {'imagenet': {'train': 8, 'val': 4}, 'coco': {'train': 8, 'val': 6}, 'voc': {'train': 4, 'val': 3}}


def _tree_hashes(root):
  hashes = {}
  for dirpath, _, filenames in os.walk(root):
    for name in filenames:
      path = os.path.join(dirpath, name)
      with open(path, 'rb') as f:
        hashes[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return hashes


@pytest.fixture(scope='module')
def trees(tmp_path_factory):
  """Three generated trees: seed 0 twice (separate folders) and seed 1."""
  out = {}
  for key, seed in (('a', 0), ('b', 0), ('c', 1)):
    root = str(tmp_path_factory.mktemp('shapes_' + key))
    out[key] = (root, shapes.generate(root, seed=seed, image_size=SIZE, counts=COUNTS))
  return out


def _saturation(rgb):
  rgb = rgb.astype(np.int32)
  return rgb.max(axis=-1) - rgb.min(axis=-1)


def test_voc_colormap_golden():
  cmap = voc.voc_colormap()
  assert cmap.shape == (256, 3) and cmap.dtype == np.uint8
  expected = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
              15: (192, 128, 128), 20: (0, 64, 128), 255: (224, 224, 192)}
  for index, rgb in expected.items():
    assert tuple(cmap[index]) == rgb, index
  assert len(set(map(tuple, cmap))) == 256


def test_same_seed_gives_identical_bytes(trees):
  hashes_a = _tree_hashes(trees['a'][0])
  assert hashes_a == _tree_hashes(trees['b'][0])
  assert not [p for p in hashes_a if '.tmp' in p]
  # 12 imagenet + 1 labels, 14 coco + 2 json, 7 voc jpg + 7 png + 3 lists
  assert len(hashes_a) == 13 + 16 + 17


def test_different_seed_changes_every_image(trees):
  hashes_a, hashes_c = _tree_hashes(trees['a'][0]), _tree_hashes(trees['c'][0])
  images = [p for p in hashes_a if p.endswith(('.jpg', '.JPEG', '.png'))]  # 12 + 14 + 7 * 2
  shared = [p for p in images if p in hashes_c]
  assert len(images) == len(shared) == 40  # class folders come from the index, not the seed
  assert all(hashes_a[p] != hashes_c[p] for p in shared)


def test_rerun_in_place_prunes_and_reproduces(tmp_path):
  root = str(tmp_path)
  small = {'imagenet': {'train': 4, 'val': 1}, 'voc': {'train': 2, 'val': 1}}
  shapes.generate(root, seed=3, image_size=32, counts=small, formats=('imagenet', 'voc'))
  first = _tree_hashes(root)
  smaller = {'imagenet': {'train': 2, 'val': 1}, 'voc': {'train': 1, 'val': 1}}
  shapes.generate(root, seed=3, image_size=32, counts=smaller, formats=('imagenet', 'voc'))
  shrunk = _tree_hashes(root)
  assert len([p for p in shrunk if p.endswith('.JPEG')]) == 3
  assert len([p for p in shrunk if p.endswith('.png')]) == 2
  shapes.generate(root, seed=3, image_size=32, counts=small, formats=('imagenet', 'voc'))
  assert _tree_hashes(root) == first


def test_render_is_reproducible_and_consistent():
  a = shapes_render.render('coco', 7, 'val', 11, (48, 80))
  b = shapes_render.render('coco', 7, 'val', 11, (48, 80))
  assert a.image.shape == (48, 80, 3) and a.image.dtype == np.uint8
  np.testing.assert_array_equal(a.image, b.image)
  np.testing.assert_array_equal(a.instances, b.instances)
  assert a.objects == b.objects
  assert sorted(np.unique(a.instances)) == list(range(len(a.objects) + 1))
  for k, obj in enumerate(a.objects, start=1):
    full = shapes_render._rasterize(obj.polygons, 48, 80)
    visible = a.instances == k
    assert obj.area == visible.sum() >= shapes_render.MIN_VISIBLE * full.sum()
    assert not (visible & ~full).any()  # visible pixels are a subset of the drawn shape
    x, y, w, h = obj.box
    ys, xs = np.nonzero(full)
    assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())


def test_imagenet_layout(trees):
  paths = trees['a'][1]['imagenet']
  with open(paths['labels_file']) as f:
    assert f.read() == 'n00000001 circle\nn00000002 square\nn00000003 triangle\nn00000004 star\n'
  for split, per_class in (('train', 2), ('val', 1)):
    split_dir = paths[split + '_dir']
    assert sorted(os.listdir(split_dir)) == list(shapes.SYNSETS)
    for synset in shapes.SYNSETS:
      names = os.listdir(os.path.join(split_dir, synset))
      assert len(names) == per_class and all(n.endswith('.JPEG') for n in names)
      with Image.open(os.path.join(split_dir, synset, names[0])) as im:
        assert im.format == 'JPEG' and im.mode == 'RGB' and im.size == (SIZE, SIZE)
  scene = shapes_render.render('imagenet', 0, 'train', 5, SIZE)
  assert len(scene.objects) == 1 and scene.objects[0].class_index == 2  # index 5 -> class 5 % 4 + 1
  assert 0.2 * SIZE <= max(scene.objects[0].box[2:]) <= 0.85 * SIZE


def test_coco_annotations(trees):
  paths = trees['a'][1]['coco']
  coco = COCO(paths['train_annotations'])
  cats = coco.loadCats(coco.getCatIds())
  assert [(c['id'], c['name'], c['supercategory']) for c in cats] == [
      (1, 'circle', 'shape'), (2, 'square', 'shape'), (4, 'triangle', 'shape'), (7, 'star', 'shape')]
  assert sorted(coco.getImgIds()) == [1000 + 3 * i for i in range(8)]
  assert coco.getAnnIds(imgIds=[1009]) == []  # index 3 is an empty image
  crowd = coco.loadAnns(coco.getAnnIds(imgIds=[1015], iscrowd=True))  # index 5 holds a crowd
  assert len(crowd) == 1 and len(crowd[0]['segmentation']) >= 3
  anns = coco.loadAnns(coco.getAnnIds())
  assert len(set(a['id'] for a in anns)) == len(anns)
  for ann in anns:
    img = coco.imgs[ann['image_id']]
    x, y, w, h = ann['bbox']
    assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= img['width'] and y + h <= img['height']
    assert 0 < ann['area'] <= w * h and ann['category_id'] in (1, 2, 4, 7)
    mask = coco.annToMask(ann)
    ys, xs = np.nonzero(mask)
    # The polygon traces the drawn pixels, so its mask has exactly the annotated full-extent box.
    assert [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()] == [x, y, w, h]
    assert abs(mask.sum() - w * h) < w * h  # sanity: non-degenerate
  for img in coco.imgs.values():
    with Image.open(os.path.join(paths['train_images'], img['file_name'])) as im:
      assert im.size == (img['width'], img['height'])
  with open(paths['val_annotations']) as f:
    val = json.load(f)
  assert [i['id'] for i in val['images']] == [1000000 + 3 * i for i in range(6)]
  assert not set(a['id'] for a in anns) & set(a['id'] for a in val['annotations'])


def test_voc_devkit(trees):
  base = trees['a'][1]['voc']['root']
  assert trees['a'][1]['voc']['devkit_dir'] == os.path.dirname(base)
  lists = {}
  for name in ('train', 'val', 'trainval'):
    with open(os.path.join(base, 'ImageSets', 'Segmentation', name + '.txt')) as f:
      lists[name] = f.read().split('\n')[:-1]
  assert lists['train'] == ['shapes_%06d' % i for i in range(1, 5)]
  assert lists['val'] == ['shapes_%06d' % i for i in range(500001, 500004)]
  assert lists['trainval'] == lists['train'] + lists['val']
  cmap = voc.voc_colormap()
  seen = set()
  for image_id in lists['trainval']:
    with Image.open(os.path.join(base, 'SegmentationClass', image_id + '.png')) as png:
      assert png.mode == 'P' and png.size == (SIZE, SIZE)
      palette = np.array(png.getpalette()[:768], dtype=np.uint8).reshape(-1, 3)
      label = np.asarray(png)
    np.testing.assert_array_equal(palette, cmap[:len(palette)])
    assert len(palette) == 256
    values = set(np.unique(label).tolist())
    assert values <= {0, 1, 2, 3, 4, 255} and 255 in values and values & {1, 2, 3, 4}
    seen |= values
    with Image.open(os.path.join(base, 'JPEGImages', image_id + '.jpg')) as jpg:
      assert jpg.size == (SIZE, SIZE)
      saturation = _saturation(np.asarray(jpg.convert('RGB')))
    # Objects are saturated and the background is not: a misplaced mask would mix the two.
    fg, bg = (label >= 1) & (label <= 4), label == 0
    assert np.mean(saturation[fg] > 40) > 0.95 and np.mean(saturation[bg] < 40) > 0.95


def test_voc_label_band():
  scene = shapes_render.render('voc', 0, 'train', 0, SIZE)
  label = shapes_render.voc_label(scene)
  classes = np.array([0] + [o.class_index for o in scene.objects])[scene.instances]
  # Outside the void band the label is the drawn class; the band covers every instance edge.
  keep = label != 255
  np.testing.assert_array_equal(label[keep], classes[keep])
  edges = scene.instances[:, 1:] != scene.instances[:, :-1]
  assert (label[:, 1:][edges] == 255).all() and (label[:, :-1][edges] == 255).all()
  wide = shapes_render.voc_label(scene, band_half_width=3)
  assert (wide == 255).sum() > (label == 255).sum()


@pytest.mark.parametrize('kwargs, message', [
    ({'formats': ('kitti',)}, 'format'),
    ({'image_size': 16}, 'image_size'),
    ({'image_size': (64,)}, 'image_size'),
    ({'seed': -1}, 'seed'),
    ({'counts': {'coco': {'test': 3}}}, 'split'),
    ({'counts': {'voc': {'train': -2}}}, "counts['voc']['train']"),
])
def test_bad_arguments(tmp_path, kwargs, message):
  with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(']', r'\]')):
    shapes.generate(str(tmp_path), **kwargs)


def test_cli(tmp_path, capsys):
  parser = argparse.ArgumentParser()
  shapes.add_arguments(parser)
  args = parser.parse_args(['--output-dir', str(tmp_path), '--image-size', '32', '--scale', '0.005',
                            '--formats', 'coco,voc'])
  assert shapes.run(args) == 0
  assert 'coco' in capsys.readouterr().out
  assert sorted(os.listdir(str(tmp_path))) == ['coco', 'voc']
  assert len(os.listdir(os.path.join(str(tmp_path), 'coco', 'train2017'))) == 2  # round(400 * 0.005)
  bad = parser.parse_args(['--output-dir', str(tmp_path), '--scale', '0'])
  assert shapes.run(bad) == 2 and 'scale' in capsys.readouterr().err
