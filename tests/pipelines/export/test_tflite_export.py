"""pipelines.export.tflite_export: TFLite models of tiny MobileNetV2s against their frozen TF graphs, per quantize mode.

Thresholds: float32 must match TF to float rounding (probabilities 1e-4, the same detections with IoU >= 0.99
and scores within 1e-3, >= 99.9% of pixels); float16 weights move outputs by ~1e-3 relative; int8 is
checked for agreement with the float TF model (top-1, matched detections, pixels) at levels a correct
full-integer model of random weights reaches with margin (measured ~0.9-1.0 on both stacks).
"""
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from heads.core import anchors as anchors_lib
from heads.core import box_coder
from heads.core import post_processing
from pipelines.export import freeze
from pipelines.export import tflite_export as te
from pipelines.export import tflite_runtime
from tests.pipelines.export import tflite_graphs
from tests.pipelines import tiny_models

CLS_SIZE, DET_SIZE, SEG_SIZE = 64, 128, 65
NUM_CLASSES = 5
LOGIT_BIASES = 'MobilenetV2/Logits/Conv2d_1c_1x1/biases'
LOGIT_WEIGHTS = 'MobilenetV2/Logits/Conv2d_1c_1x1/weights'
DET_CLASSES = 3
SEG_CLASSES = 4
SCORE_THRESHOLD = 0.3
IOU_THRESHOLD = 0.6
MAX_DETECTIONS = 40
RESIDUAL_GAIN = 0.5  # see tiny_models.save_random_checkpoint: less chaotic, still input-dependent


def _images(size, seeds):
  return [tiny_models.random_images([size, size, 3], seed=s) for s in seeds]


def _run_tflite(content, image, num_threads=None):
  """Runs a flatbuffer on one float [S, S, 3] image in [-1, 1] (quantized as the input says)."""
  interpreter = tflite_runtime.make_interpreter(model_content=content, num_threads=num_threads)
  detail = interpreter.get_input_details()[0]
  x = image[None]
  if detail['dtype'] != np.float32:
    scale, zero_point = detail['quantization']
    info = np.iinfo(detail['dtype'])
    x = np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(detail['dtype'])
  interpreter.set_tensor(detail['index'], x)
  interpreter.invoke()
  results = []
  for out in interpreter.get_output_details():
    value = interpreter.get_tensor(out['index'])
    scale, zero_point = out['quantization']
    if scale and out['dtype'] != np.float32:
      value = (value.astype(np.float32) - zero_point) * scale
    results.append(value)
  return results


# ------------------------------------------------------------------------------------------ classification


@pytest.fixture(scope='module')
def classifier(tmp_path_factory):
  build = tiny_models.classification_build(num_classes=NUM_CLASSES)
  checkpoint = tiny_models.save_random_checkpoint(build, [1, CLS_SIZE, CLS_SIZE, 3], tmp_path_factory.mktemp('cls'),
                                                  with_ema=True, residual_gain=RESIDUAL_GAIN)
  frozen = tflite_graphs.classification_graph(build, checkpoint, CLS_SIZE)
  # A random classifier answers one class for every image (class offsets dwarf the input's effect), with
  # near-uniform probabilities that uint8 outputs (steps of 1/256) cannot rank: remove the offsets (mean
  # log-probabilities over a few images) and scale the logits so they vary by ~3 between images.
  log_p = np.log(np.concatenate([freeze.run(frozen, image[None])['probabilities']
                                 for image in _images(CLS_SIZE, range(200, 208))]))
  offsets = log_p.mean(0) - log_p.mean()
  gain = 3.0 / max((log_p - log_p.mean(1, keepdims=True)).std(0).mean(), 1e-3)
  biases = tiny_models.constant_value(frozen, LOGIT_BIASES)
  frozen = tiny_models.replace_constant(frozen, LOGIT_BIASES, (biases - offsets) * gain)
  return tiny_models.replace_constant(frozen, LOGIT_WEIGHTS, tiny_models.constant_value(frozen, LOGIT_WEIGHTS) * gain)


def test_classification_float32_export_matches_tf(classifier, tmp_path):
  model_path, meta_path = te.export(classifier, str(tmp_path / 'out'), tflite_graphs.CLASSIFICATION, 'none',
                                    extra_metadata={'num_classes': NUM_CLASSES})
  assert sorted(os.listdir(str(tmp_path / 'out'))) == [te.METADATA_NAME, te.MODEL_NAME]  # no temp files left
  with open(meta_path) as f:
    meta = json.load(f)
  assert meta['task'] == 'classification' and meta['quantize'] == 'none' and meta['num_classes'] == NUM_CLASSES
  assert meta['input']['dtype'] == 'float32' and meta['input']['shape'] == [1, CLS_SIZE, CLS_SIZE, 3]
  assert meta['input']['value_range'] == [-1.0, 1.0] and meta['input']['quantization'] is None
  (output,) = meta['outputs']
  assert (output['key'], output['dtype'], output['shape']) == ('probabilities', 'float32', [1, NUM_CLASSES])
  with open(model_path, 'rb') as f:
    content = f.read()
  for image in _images(CLS_SIZE, range(3)):
    want = freeze.run(classifier, image[None])['probabilities']
    (got,) = _run_tflite(content, image)
    assert np.abs(want - got).max() < 1e-4
  # The runner: uint8 image of another size -> resized, normalized, same numbers as TF on that input.
  pixels = np.random.RandomState(5).randint(0, 256, [80, 96, 3]).astype(np.uint8)
  model = tflite_runtime.TFLiteModel(model_path, num_threads=2)
  x = tflite_runtime.preprocess(pixels, meta['input'])
  assert x.dtype == np.float32 and x.shape == (1, CLS_SIZE, CLS_SIZE, 3) and -1 <= x.min() and x.max() <= 1
  got = model(pixels)['probabilities']
  assert np.abs(got - freeze.run(classifier, x)['probabilities']).max() < 1e-4


def test_classification_float16_and_int8(classifier, tmp_path):
  images = _images(CLS_SIZE, range(32))
  want = np.concatenate([freeze.run(classifier, image[None])['probabilities'] for image in images])
  assert len(set(want.argmax(1))) >= 2  # the random model does not answer one class for everything
  float32 = te.convert(classifier, 'none')
  float16 = te.convert(classifier, 'float16')
  assert len(float16) < 0.6 * len(float32)
  got16 = np.concatenate([_run_tflite(float16, image)[0] for image in images[:4]])
  print('classification float16 max |dp|', np.abs(got16 - want[:4]).max())
  assert np.abs(got16 - want[:4]).max() < 2e-2
  assert (got16.argmax(1) == want[:4].argmax(1)).all()

  calibration = _images(CLS_SIZE, range(100, 116))
  model_path, meta_path = te.export(classifier, str(tmp_path), tflite_graphs.CLASSIFICATION, 'int8', calibration)
  with open(meta_path) as f:
    meta = json.load(f)
  assert meta['input']['dtype'] == 'uint8' and meta['outputs'][0]['dtype'] == 'uint8'
  quant = meta['input']['quantization']
  assert abs(quant['scale'] - 2.0 / 255) < 1e-4 and abs(quant['zero_point'] - 127.5) <= 1
  model = tflite_runtime.TFLiteModel(model_path)
  got8 = np.concatenate([model.run(tflite_runtime.preprocess(((image + 1) * 127.5).round().astype(np.uint8), meta['input']))
                         ['probabilities'] for image in images])
  agreement = np.mean(got8.argmax(1) == want.argmax(1))
  print('classification int8 top-1 agreement', agreement, 'mean |dp|', np.abs(got8 - want).mean(),
        'classes', np.bincount(want.argmax(1), minlength=NUM_CLASSES))
  assert agreement >= 0.6, agreement
  assert np.abs(got8 - want).mean() < 0.15


def test_convert_rejects_bad_modes(classifier):
  with pytest.raises(ValueError, match='quantize must be one of'):
    te.convert(classifier, 'int4')
  with pytest.raises(ValueError, match='representative_images'):
    te.convert(classifier, 'int8')


def test_num_threads_where_supported():
  assert tflite_runtime.interpreter_supports_num_threads() == (not tf.__version__.startswith('1.'))


# ------------------------------------------------------------------------------------------ detection


def _logit(p):
  return np.log(p / (1 - p))


@pytest.fixture(scope='module')
def detector(tmp_path_factory):
  build = tiny_models.detection_build(num_classes=DET_CLASSES)
  checkpoint = tiny_models.save_random_checkpoint(build, [1, DET_SIZE, DET_SIZE, 3], tmp_path_factory.mktemp('det'),
                                                  residual_gain=RESIDUAL_GAIN)
  anchors = anchors_lib.generate_anchors(anchors_lib.feature_map_shapes(DET_SIZE, (16, 32, 64, 128, 256, 512)))
  assert len(anchors) == 330  # 8x8x3 + 4x4x6 + 2x2x6 + 3 x 1x1x6 at 128
  raw = tflite_graphs.detection_raw_graph(build, checkpoint, DET_SIZE)
  # Shift the object logits (not the background column, which the op skips) so that ~2% of the
  # anchor x class scores exceed the 0.3 threshold: 10-20 distinct detections per image after NMS.
  scores = np.concatenate([freeze.run(raw, image[None])[te.CLASS_SCORES][0, :, 1:]
                           for image in _images(DET_SIZE, range(200, 204))])
  shift = _logit(SCORE_THRESHOLD) - np.percentile(_logit(scores), 98)
  for i in range(6):
    name = 'BoxPredictor_%d/ClassPredictor/biases' % i
    biases = tiny_models.constant_value(raw, name)
    biases[np.arange(len(biases)) % (DET_CLASSES + 1) != 0] += shift
    raw = tiny_models.replace_constant(raw, name, biases)
  return raw, anchors


def _postprocess(detector, **kwargs):
  raw, anchors = detector
  args = dict(max_detections=MAX_DETECTIONS, score_threshold=SCORE_THRESHOLD, iou_threshold=IOU_THRESHOLD)
  args.update(kwargs)
  return te.add_detection_postprocess(raw, anchors, DET_CLASSES, **args)


def _tf_detections(raw_outputs, anchors, regular):
  """TF reference: decode with the box coder, then class-agnostic NMS on the best class (TFLite's fast NMS)
  or per-class NMS (`post_processing.batch_multiclass_nms`, TFLite's regular NMS). No clipping."""
  with tf.Graph().as_default():
    boxes = box_coder.decode(tf.constant(raw_outputs[te.BOX_ENCODINGS][0]), tf.constant(anchors))
    scores = tf.constant(raw_outputs[te.CLASS_SCORES][0][:, 1:])
    if regular:
      nms = post_processing.batch_multiclass_nms(
          boxes[None], scores[None], SCORE_THRESHOLD, IOU_THRESHOLD, max_detections_per_class=MAX_DETECTIONS,
          max_total_detections=MAX_DETECTIONS)
      fetch = [nms['detection_boxes'][0], nms['detection_classes'][0], nms['detection_scores'][0],
               nms['num_detections'][0]]
    else:
      best, classes = tf.reduce_max(scores, 1), tf.argmax(scores, 1)
      keep = tf.image.non_max_suppression(boxes, best, MAX_DETECTIONS, IOU_THRESHOLD, SCORE_THRESHOLD)
      fetch = [tf.gather(boxes, keep), tf.gather(classes, keep), tf.gather(best, keep), tf.size(keep)]
    with tf.Session() as session:
      boxes, classes, scores, num = session.run(fetch)
  return boxes[:num], classes[:num].astype(np.int64), scores[:num]


def _tflite_detections(outputs):
  boxes, classes, scores, num = outputs
  num = int(num[0])
  return boxes[0, :num], classes[0, :num].astype(np.int64), scores[0, :num]


def _iou(a, b):
  ymin, xmin = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
  ymax, xmax = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
  inter = np.maximum(0, ymax - ymin) * np.maximum(0, xmax - xmin)
  area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
  return inter / (area(a) + area(b) - inter)


def _matched(reference, candidate, min_iou, score_tolerance, min_score=SCORE_THRESHOLD + 1e-3):
  """(matched, total): reference detections scoring > min_score with a candidate of the same class,
  IoU >= min_iou and score within score_tolerance."""
  ref_boxes, ref_classes, ref_scores = reference
  boxes, classes, scores = candidate
  total = matched = 0
  for box, cls, score in zip(ref_boxes, ref_classes, ref_scores):
    if score <= min_score:
      continue
    total += 1
    if len(boxes):
      ok = (classes == cls) & (_iou(box, boxes) >= min_iou) & (np.abs(scores - score) <= score_tolerance)
      matched += int(ok.any())
  return matched, total


@pytest.mark.parametrize('regular_nms', [False, True])
def test_detection_float32_matches_tf(detector, regular_nms, tmp_path):
  raw, anchors = detector
  frozen = _postprocess(detector, use_regular_nms=regular_nms)
  ops = [n.op for n in frozen.graph_def.node]
  assert ops[-1] == te.DETECTION_POSTPROCESS_OP and ops.count(te.DETECTION_POSTPROCESS_OP) == 1
  model_path, meta_path = te.export(frozen, str(tmp_path), tflite_graphs.DETECTION, 'none')
  with open(meta_path) as f:
    meta = json.load(f)
  layout = [(o['key'], o['dtype'], o['shape']) for o in meta['outputs']]
  assert layout == [('detection_boxes', 'float32', [1, MAX_DETECTIONS, 4]),
                    ('detection_classes', 'float32', [1, MAX_DETECTIONS]),
                    ('detection_scores', 'float32', [1, MAX_DETECTIONS]), ('num_detections', 'float32', [1])]
  with open(model_path, 'rb') as f:
    content = f.read()
  for seed in range(3):
    image = tiny_models.random_images([DET_SIZE, DET_SIZE, 3], seed=seed)
    reference = _tf_detections(freeze.run(raw, image[None]), anchors, regular_nms)
    got = _tflite_detections(_run_tflite(content, image))
    matched, total = _matched(reference, got, 0.99, 1e-3)
    print('detection float32 regular_nms=%s: %d / %d matched' % (regular_nms, matched, total))
    assert 3 <= total < MAX_DETECTIONS, total  # a meaningful number of detections, none cut by max_detections
    assert matched == total, (matched, total)
    back, total_back = _matched(got, reference, 0.99, 1e-3)  # and no extra TFLite detections
    assert back == total_back == total
  # The runner gives the same outputs from a uint8 image.
  pixels = ((image + 1) * 127.5).round().astype(np.uint8)
  outputs = tflite_runtime.TFLiteModel(model_path)(pixels)
  assert sorted(outputs) == ['detection_boxes', 'detection_classes', 'detection_scores', 'num_detections']
  assert outputs['detection_boxes'].shape == (1, MAX_DETECTIONS, 4)
  model_input = tflite_runtime.preprocess(pixels, meta['input'])
  reference = _tf_detections(freeze.run(raw, model_input), anchors, regular_nms)
  matched, total = _matched(reference, _tflite_detections([outputs[k] for k in sorted(outputs)[:1] + [
      'detection_classes', 'detection_scores', 'num_detections']]), 0.99, 1e-3)
  assert matched == total


def test_detection_float16_and_int8(detector):
  raw, anchors = detector
  frozen = _postprocess(detector)
  images = _images(DET_SIZE, range(4))
  references = [_tf_detections(freeze.run(raw, image[None]), anchors, False) for image in images]
  float16 = te.convert(frozen, 'float16')
  matched = total = 0
  for image, reference in zip(images[:2], references):
    m, t = _matched(reference, _tflite_detections(_run_tflite(float16, image)), 0.9, 2e-2,
                    min_score=SCORE_THRESHOLD + 2e-2)
    matched, total = matched + m, total + t
  print('detection float16 matched', matched, total)
  assert matched >= 0.85 * total, (matched, total)

  calibration = _images(DET_SIZE, range(100, 116))
  if tf.__version__.startswith('1.'):
    with pytest.raises(ValueError, match='not supported on TensorFlow 1.15'):
      te.convert(frozen, 'int8', calibration)
    return
  int8 = te.convert(frozen, 'int8', calibration)
  interpreter = tflite_runtime.make_interpreter(model_content=int8)
  assert interpreter.get_input_details()[0]['dtype'] == np.uint8
  assert [o['dtype'] for o in interpreter.get_output_details()] == [np.float32] * 4
  # Full integer up to the post-processing: float tensors are only the op's inputs (dequantized), its
  # anchors and outputs.
  # (Unnamed float tensors are XNNPACK's scratch buffers on TF 2.15.)
  floats = [t['name'] for t in interpreter.get_tensor_details() if t['dtype'] == np.float32 and t['name']]
  assert len(floats) <= 7, floats
  matched = total = 0
  for image, reference in zip(images, references):
    m, t = _matched(reference, _tflite_detections(_run_tflite(int8, image)), 0.5, 0.1,
                    min_score=SCORE_THRESHOLD + 0.05)
    matched, total = matched + m, total + t
  print('detection int8 matched', matched, total)
  assert total >= 8 and matched >= 0.6 * total, (matched, total)


# ------------------------------------------------------------------------------------------ segmentation


@pytest.fixture(scope='module')
def segmenter(tmp_path_factory):
  build = tiny_models.segmentation_build(num_classes=SEG_CLASSES, output_stride=16, center_logits=True)
  checkpoint = tiny_models.save_random_checkpoint(build, [1, SEG_SIZE, SEG_SIZE, 3], tmp_path_factory.mktemp('seg'),
                                                  residual_gain=RESIDUAL_GAIN)
  return tflite_graphs.segmentation_graph(build, checkpoint, SEG_SIZE)


def test_segmentation_all_modes(segmenter, tmp_path):
  images = _images(SEG_SIZE, range(3))
  want = np.concatenate([freeze.run(segmenter, image[None])[te.CLASS_MAP] for image in images])
  assert want.dtype == np.int32 and want.shape == (3, SEG_SIZE, SEG_SIZE)
  shares = np.bincount(want.ravel(), minlength=SEG_CLASSES) / float(want.size)
  assert (shares > 0.05).sum() >= 2, shares  # not one class everywhere

  model_path, meta_path = te.export(segmenter, str(tmp_path), tflite_graphs.SEGMENTATION, 'none')
  with open(meta_path) as f:
    (output,) = json.load(f)['outputs']
  assert (output['key'], output['dtype'], output['shape']) == ('class_map', 'int32', [1, SEG_SIZE, SEG_SIZE])
  with open(model_path, 'rb') as f:
    float32 = f.read()
  calibration = _images(SEG_SIZE, range(100, 116))
  minimum = {'none': 0.999, 'float16': 0.98, 'int8': 0.85}
  for mode in ('none', 'float16', 'int8'):
    content = float32 if mode == 'none' else te.convert(segmenter, mode, calibration)
    got = np.concatenate([_run_tflite(content, image)[0] for image in images])
    assert got.shape == want.shape
    agreement = np.mean(got == want)
    print('segmentation', mode, 'pixel agreement', agreement)
    assert agreement >= minimum[mode], (mode, agreement)
