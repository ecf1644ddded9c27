"""The folded SavedModel (`runner.export`): each signature called by name against the checkpoint's predictions
(`predict.predict_checkpoint`, the training graph in inference mode with the moving averages), and
frozen_inference_graph.pb beside it run as the anchors' demos run theirs."""
import os

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image

from pipelines.cli import predict
from pipelines.training import runner
from tests.pipelines.export.test_tflite_task import _trained
from tests.pipelines.export.test_tflite_task import records  # noqa: F401  (fixture)


def _signature(export_dir, name, feed):
  with tf.Graph().as_default(), tf.Session() as session:
    meta = tf.saved_model.loader.load(session, ['serve'], export_dir)
    sig = meta.signature_def[name]
    return session.run(dict((k, v.name) for k, v in sig.outputs.items()),
                       dict((sig.inputs[k].name, v) for k, v in feed.items()))


def _frozen(export_dir, fetches, feed):
  """Runs frozen_inference_graph.pb as the OD API's and DeepLab's demos do: parse the GraphDef, import it with
  name='', run tensors by name (no variables, no initializer)."""
  graph_def = tf.GraphDef()
  with tf.io.gfile.GFile(os.path.join(export_dir, 'frozen_inference_graph.pb'), 'rb') as f:
    graph_def.ParseFromString(f.read())
  assert not [n.name for n in graph_def.node if n.op in ('VariableV2', 'VarHandleOp', 'Variable')]
  with tf.Graph().as_default() as graph:
    tf.import_graph_def(graph_def, name='')
    with tf.Session(graph=graph) as session:
      return session.run(fetches, feed)


def _pixels(path):
  return np.asarray(Image.open(path).convert('RGB'))


def test_classification_signatures(tmp_path, records):  # noqa: F811
  records_dir, images = records
  _, config, model_dir = _trained(tmp_path, records_dir, 'classification')
  export_dir = runner.export(config, model_dir)
  want = predict.predict_checkpoint(config, model_dir, images)
  for path, ckpt in zip(images, want):
    with open(path, 'rb') as f:
      default = _signature(export_dir, 'serving_default', {'encoded_image': [f.read()]})
    uint8 = _signature(export_dir, 'image_tensor', {'inputs': _pixels(path)[None]})
    for got in (default, uint8):
      np.testing.assert_allclose(got['probabilities'][0], ckpt['probabilities'], rtol=1e-4, atol=1e-5)
  with tf.Graph().as_default(), tf.Session() as session:
    meta = tf.saved_model.loader.load(session, ['serve'], export_dir)
    assert 'float_images:serving_default' in meta.signature_def
    # Batch norm is folded: no FusedBatchNorm left in the served graph.
    assert not [n for n in meta.graph_def.node if n.op.startswith('FusedBatchNorm')]
  # TF-Slim's frozen graphs: preprocessed floats at `input:0`, softmax at `MobilenetV2/Predictions/Reshape_1:0`.
  size = config.classification.image_size
  floats = np.random.RandomState(0).uniform(-1, 1, [2, size, size, 3]).astype(np.float32)
  frozen = _frozen(export_dir, 'MobilenetV2/Predictions/Reshape_1:0', {'input:0': floats})
  served = _signature(export_dir, 'float_images:serving_default', {'images': floats})['probabilities']
  np.testing.assert_allclose(frozen, served, rtol=1e-5, atol=1e-6)
  assert frozen.shape == (2, config.classification.num_classes)
  assert runner.load_config(os.path.join(export_dir, 'config.yaml'), []) == config


def test_detection_od_api_signature(tmp_path, records):  # noqa: F811
  records_dir, images = records
  _, config, model_dir = _trained(tmp_path, records_dir, 'detection')
  export_dir = runner.export(config, model_dir)
  want = predict.predict_checkpoint(config, model_dir, images)
  for path, ckpt in zip(images, want):
    pixels = _pixels(path)
    height, width = pixels.shape[:2]
    got = _signature(export_dir, 'image_tensor', {'inputs': pixels[None]})
    assert got['detection_classes'].dtype == np.float32 and got['num_detections'].dtype == np.float32
    num = int(ckpt['num_detections'])
    assert int(got['num_detections'][0]) == num
    scale = np.array([height, width, height, width], np.float32)
    np.testing.assert_allclose(got['detection_boxes'][0][:num] * scale, ckpt['detection_boxes'][:num], atol=1e-3)
    np.testing.assert_allclose(got['detection_scores'][0][:num], ckpt['detection_scores'][:num], atol=1e-5)
    np.testing.assert_array_equal(got['detection_classes'][0][:num], ckpt['detection_classes'][:num])
    names = ['detection_boxes', 'detection_scores', 'detection_classes', 'num_detections']
    frozen = _frozen(export_dir, [n + ':0' for n in names], {'image_tensor:0': pixels[None]})
    for name, value in zip(names, frozen):
      np.testing.assert_allclose(value, got[name], atol=1e-6, err_msg=name)
    with open(path, 'rb') as f:
      default = _signature(export_dir, 'serving_default', {'encoded_image': [f.read()]})
    np.testing.assert_allclose(default['detection_boxes'][0][:num], ckpt['detection_boxes'][:num], atol=1e-3)


def test_segmentation_deeplab_signature(tmp_path, records):  # noqa: F811
  records_dir, images = records
  _, config, model_dir = _trained(tmp_path, records_dir, 'segmentation')
  export_dir = runner.export(config, model_dir)
  want = predict.predict_checkpoint(config, model_dir, images)
  for path, ckpt in zip(images, want):
    got = _signature(export_dir, 'ImageTensor', {'ImageTensor': _pixels(path)[None]})['SemanticPredictions'][0]
    assert got.shape == ckpt['mask'].shape
    assert (got == ckpt['mask']).mean() >= 0.999
    frozen = _frozen(export_dir, 'SemanticPredictions:0', {'ImageTensor:0': _pixels(path)[None]})
    np.testing.assert_array_equal(frozen[0], got)
  with tf.Graph().as_default(), tf.Session() as session:  # DeepLab clients run tensors by name
    tf.saved_model.loader.load(session, ['serve'], export_dir)
    mask = session.run('SemanticPredictions:0', {'ImageTensor:0': _pixels(images[0])[None]})
  assert mask.shape[1:] == want[0]['mask'].shape
