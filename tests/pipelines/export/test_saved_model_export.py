"""The folded SavedModel (`runner.export`): each signature called by name against the checkpoint's predictions
(`predict.predict_checkpoint`, the training graph in inference mode with the moving averages), and
frozen_inference_graph.pb beside it run as the anchors' demos run theirs."""
import os

import numpy as np
import pytest
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


def _example(encoded):
  return tf.train.Example(features=tf.train.Features(feature={
      'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))})).SerializeToString()


OD_OUTPUTS = ['detection_boxes', 'detection_scores', 'detection_classes', 'num_detections',
              'detection_multiclass_scores', 'raw_detection_boxes', 'raw_detection_scores']


def test_detection_od_api_signatures(tmp_path, records):  # noqa: F811
  """The OD API exporter's contract: one signature per input type (input key `inputs`), serving_default the
  chosen one (default image_tensor), its outputs with the OD API's shapes and label-map ids."""
  records_dir, images = records
  path, config, model_dir = _trained(tmp_path, records_dir, 'detection')
  export_dir = runner.export(config, model_dir)
  want = predict.predict_checkpoint(config, model_dir, images)
  num_classes, max_detections = config.detection.num_classes, config.detection.max_detections
  for path_, ckpt in zip(images, want):
    pixels = _pixels(path_)
    height, width = pixels.shape[:2]
    with open(path_, 'rb') as f:
      encoded = f.read()
    got = _signature(export_dir, 'image_tensor', {'inputs': pixels[None]})
    assert sorted(got) == sorted(OD_OUTPUTS)
    assert got['detection_classes'].dtype == np.float32 and got['num_detections'].dtype == np.float32
    num = int(ckpt['num_detections'])
    assert int(got['num_detections'][0]) == num
    scale = np.array([height, width, height, width], np.float32)
    np.testing.assert_allclose(got['detection_boxes'][0][:num] * scale, ckpt['detection_boxes'][:num], atol=1e-3)
    np.testing.assert_allclose(got['detection_scores'][0][:num], ckpt['detection_scores'][:num], atol=1e-5)
    np.testing.assert_array_equal(got['detection_classes'][0][:num], ckpt['detection_classes'][:num])
    # Before NMS, every anchor's box and scores; each detection's multiclass scores are its anchor's row.
    anchors = got['raw_detection_boxes'].shape[1]
    assert got['raw_detection_scores'].shape == (1, anchors, num_classes + 1)
    assert got['detection_multiclass_scores'].shape == (1, max_detections, num_classes + 1)
    for i in range(num):
      row = got['detection_multiclass_scores'][0, i]
      label = int(got['detection_classes'][0, i])
      assert abs(row[label] - got['detection_scores'][0, i]) <= 1e-6
      assert np.abs(got['raw_detection_scores'][0] - row).sum(axis=1).min() <= 1e-6
    assert not got['detection_multiclass_scores'][0, num:].any()
    # The other input types (same outputs), serving_default = image_tensor, and this project's signature.
    by_encoded = _signature(export_dir, 'encoded_image_string_tensor', {'inputs': [encoded]})
    by_example = _signature(export_dir, 'tf_example', {'inputs': [_example(encoded)]})
    default = _signature(export_dir, 'serving_default', {'inputs': pixels[None]})
    for other in (by_encoded, by_example, default):
      for name in OD_OUTPUTS:
        np.testing.assert_allclose(other[name], by_encoded[name], atol=1e-6, err_msg=name)
    np.testing.assert_allclose(by_encoded['detection_boxes'], got['detection_boxes'], atol=2e-3)  # JPEG vs pixels
    ours = _signature(export_dir, 'encoded_image', {'encoded_image': [encoded]})
    np.testing.assert_allclose(ours['detection_boxes'][0][:num], ckpt['detection_boxes'][:num], atol=1e-3)
    frozen = _frozen(export_dir, [n + ':0' for n in OD_OUTPUTS], {'image_tensor:0': pixels[None]})
    for name, value in zip(OD_OUTPUTS, frozen):
      np.testing.assert_allclose(value, got[name], atol=1e-6, err_msg=name)
  # --input-type picks serving_default; predict --saved-model reads every such export; bad values: one line.
  for input_type, feed in (('tf_example', [_example(encoded)]), ('encoded_image_string_tensor', [encoded])):
    chosen = runner.export(config, model_dir, str(tmp_path / input_type), input_type=input_type)
    np.testing.assert_allclose(_signature(chosen, 'serving_default', {'inputs': feed})['detection_boxes'],
                               by_encoded['detection_boxes'], atol=1e-6)
    again = predict.predict_saved_model(chosen, images[-1:])[0]
    np.testing.assert_allclose(again['detection_boxes'], want[-1]['detection_boxes'], atol=1e-3)
  with pytest.raises(ValueError, match='--input-type'):
    runner.export(config, model_dir, str(tmp_path / 'bad'), input_type='uint8')


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
