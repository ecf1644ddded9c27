"""Tests of datasets.label_maps: the OD API label map text we write, and reading its variants back."""
import io
import os

import pytest

from datasets import label_maps


def test_format_label_map_golden():
  text = label_maps.format_label_map({90: 'tooth "brush"', 1: 'a\\b'})
  assert text == ('item {\n  id: 1\n  name: "a\\\\b"\n  display_name: "a\\\\b"\n}\n'
                  'item {\n  id: 90\n  name: "tooth \\"brush\\""\n  display_name: "tooth \\"brush\\""\n}\n')


def test_write_then_read_round_trip(tmp_path):
  path = str(tmp_path / 'label_map.pbtxt')
  categories = {1: 'person', 7: u'caf\u00e9 "x"', 3: 'back\\slash'}
  label_maps.write_label_map(categories, path)
  assert os.listdir(str(tmp_path)) == ['label_map.pbtxt']  # the temporary name was renamed
  with io.open(path, encoding='utf-8') as f:
    assert f.read() == label_maps.format_label_map(categories)
  assert label_maps.read_label_map(path) == categories


def test_read_label_map_od_api_variants(tmp_path):
  path = tmp_path / 'map.pbtxt'
  path.write_text('# a comment\nitem {\n  name: "/m/01g317"\n  id: 1\n  display_name: "person"\n}\n'
                  "item { id: 3 name: 'car' keypoints { id: 0 label: \"x\" } }\n")
  assert label_maps.read_label_map(str(path)) == {1: 'person', 3: 'car'}
  path.write_text('nothing here')
  with pytest.raises(ValueError, match='map.pbtxt'):
    label_maps.read_label_map(str(path))


@pytest.mark.parametrize('text,message', [
    ('item { id: 1 name: "a" }\nitem { id: 1 name: "b" }\n', 'duplicate id 1'),
    ('item { name: "a" }\n', 'without an integer id'),
    ('item { id: 2 name: "a"\n', 'unbalanced braces'),
])
def test_read_label_map_errors_name_the_file(tmp_path, text, message):
  path = tmp_path / 'bad.pbtxt'
  path.write_text(text)
  with pytest.raises(ValueError, match=r'bad\.pbtxt.*' + message):
    label_maps.read_label_map(str(path))
