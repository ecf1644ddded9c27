"""Issue #22 item 1, what needs no trained model: the `onnx` extra leaves TensorFlow importable with the numpy /
protobuf it needs, and bad files get one line naming them. ONNX Runtime against the SavedModel, per task:
tests/pipelines/export/test_tflite_task.py (it trains each tiny model once for every export format)."""
import json
import os
import subprocess
import sys

import pytest

from pipelines.cli import main as cli
from pipelines.export import onnx_export
from pipelines.export import tflite_export as te

pytestmark = pytest.mark.skipif(te.is_tf1(), reason='the onnx extra is for the TF 2.15 stack (TF 1.15: '
                                                     'test_tflite_task checks the one-line refusal)')


def test_the_extra_keeps_tensorflow_importable():
  """tf2onnx pulls protobuf ~3.20 and onnxruntime numpy >= 1.21.6: TensorFlow 2.15 must still import after them
  (numpy < 2, protobuf < 5), in a fresh interpreter that imports the converters first."""
  code = ('import tf2onnx, onnxruntime, onnx, numpy, google.protobuf as pb, tensorflow as tf;'
          'print(tf.__version__, numpy.__version__, pb.__version__, onnxruntime.__version__)')
  out = subprocess.check_output([sys.executable, '-c', code], stderr=subprocess.DEVNULL).decode().split()
  tf_version, numpy_version, protobuf_version = out[:3]
  assert tf_version.startswith('2.15') and int(numpy_version.split('.')[0]) < 2
  assert int(protobuf_version.split('.')[0]) < 5 or protobuf_version.startswith('3.')


def _image(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'probe.png')
  Image.new('RGB', (8, 8)).save(path)
  return path


def test_bad_files_are_named_in_one_line(tmp_path, capsys):
  directory = tmp_path / 'export'
  directory.mkdir()
  model = directory / onnx_export.MODEL_NAME
  model.write_bytes(b'not an onnx model')
  image = _image(tmp_path)
  # No model.json beside it.
  assert cli.main(['predict', image, '--onnx', str(model)]) == 2
  assert str(model) in capsys.readouterr().err
  # A TFLite model's model.json.
  (directory / 'model.json').write_text(json.dumps({'task': 'classification', 'input': {}, 'outputs': []}))
  assert cli.main(['predict', image, '--onnx', str(model)]) == 2
  err = capsys.readouterr().err
  assert 'model.json' in err and 'tflite' in err and len(err.strip().splitlines()) == 1
  # model.json of an ONNX model, but the file is not one.
  (directory / 'model.json').write_text(json.dumps({'format': 'onnx', 'task': 'classification', 'input': {},
                                                    'outputs': []}))
  assert cli.main(['predict', image, '--onnx', str(model)]) == 2
  err = capsys.readouterr().err
  assert str(model) in err and 'not a loadable ONNX model' in err and len(err.strip().splitlines()) == 1


def test_onnx_export_refuses_tflite_flags(tmp_path, capsys):
  config = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'configs', 'demo_classification.yaml')
  assert cli.main(['export', '--config', config, '--model-dir', str(tmp_path), '--format', 'onnx',
                   '--quantize', 'int8']) == 2
  assert '--format onnx' in capsys.readouterr().err
  assert not os.listdir(str(tmp_path))
