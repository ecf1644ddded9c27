"""Quantization-aware training (issue #21), on both stacks: where the rewrite puts fake quantization, that the
folded batch norm computes what batch norm computes, range variables trained, saved and resumed, and the
fake-quant graph against the int8 TFLite model made from its learned ranges (with the Edge TPU report)."""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from pipelines.cli import main as cli
from pipelines.cli import predict
from pipelines.export import edgetpu
from pipelines.export import freeze as freeze_lib
from pipelines.export import tflite_export as te
from pipelines.export import tflite_model
from pipelines.export import tflite_task
from pipelines.tasks import registry
from pipelines.training import quantization
from pipelines.training import runner
from tests.conftest import config_from_text
from tests.conftest import tiny_shapes_records
from tests.pipelines.export.test_tflite_task import _iou  # the same box IoU the float TFLite tests use

COMMON = """
model: {depth_multiplier: 0.35}
train: {batch_size: 4, steps: %(steps)d, optimizer: adam, learning_rate: {schedule: constant, base: %(lr)s},
        quantization: {delay: 0}}
eval: {batch_size: 2}
runtime: {save_checkpoints_steps: %(save)d, keep_checkpoint_max: 10, log_every_n_steps: 10, seed: 1}
"""
CONFIGS = {
    'classification': """
task: classification
classification: {image_size: 32, num_classes: 5, dropout_keep_prob: 1.0}
data: {train_files: '%(r)s/classification/train-*', eval_files: '%(r)s/classification/train-*',
       labels_file: '%(r)s/classification/labels.txt', shuffle_buffer: 8, num_parallel_reads: 1}
""",
    'detection': """
task: detection
detection: {image_size: 64, num_classes: 7, max_detections: 20}
data: {train_files: '%(r)s/detection/train-*', eval_files: '%(r)s/detection/val-*',
       labels_file: '%(r)s/detection/label_map.pbtxt', shuffle_buffer: 8, num_parallel_reads: 1}
""",
    'segmentation': """
task: segmentation
segmentation: {num_classes: 5, crop_size: 49, eval_crop_size: 64, output_stride: 16}
data: {train_files: '%(r)s/segmentation/train-*', eval_files: '%(r)s/segmentation/val-*',
       labels_file: '%(r)s/segmentation/labels.txt', shuffle_buffer: 8, num_parallel_reads: 1}
""",
}


def _config(tmp_path, records_dir, task, steps=2, lr=0.001, save=None, overrides=()):
  text = (COMMON % {'steps': steps, 'lr': lr, 'save': save or steps}) + CONFIGS[task] % {'r': records_dir}
  return config_from_text(tmp_path, text, overrides, name=task + '.yaml')


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  out, raw = tiny_shapes_records(tmp_path_factory.mktemp('quantization'))
  return out, raw


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize('key,value', [('delay', -1), ('delay', 1.5), ('weight_bits', 1), ('activation_bits', 17),
                                       ('freeze_bn_delay', -3), ('ema_decay', 1.0)])
def test_bad_values_name_their_key(tmp_path, records, key, value):
  with pytest.raises(Exception, match=r'train\.quantization\.%s' % key):
    _config(tmp_path, records[0], 'classification', overrides=['train.quantization.%s=%s' % (key, value)])


@pytest.mark.parametrize('other', ['runtime.mixed_precision=float16', 'train.sync_batch_norm=true'])
def test_settings_it_cannot_combine_with_are_refused(tmp_path, records, other):
  with pytest.raises(Exception, match=r'train\.quantization\.delay'):
    _config(tmp_path, records[0], 'classification', overrides=[other])


# ------------------------------------------------------------------------------------------ the rewrite


def _producer(tensor, skip=('Identity',)):
  op = tensor.op
  while op.type in skip:
    op = op.inputs[0].op
  return op


def _inference_graph(config):
  """The task's eval graph as exported: (graph, outputs), the graph holding only what the outputs need."""
  graph = tf.Graph()
  with graph.as_default():
    task = registry.make_task(config)
    size = task.serving_size()
    images = tf.placeholder(tf.float32, [1, size, size, 3], name='images')
    outputs = task.tflite_outputs(task.model({'image': images}, False))
  return graph, outputs


def _reachable_ops(outputs):
  seen, stack = set(), [t.op for t in outputs.values()]
  while stack:
    op = stack.pop()
    if op in seen:
      continue
    seen.add(op)
    stack.extend(t.op for t in op.inputs)
  return seen


@pytest.mark.parametrize('task', ['classification', 'detection', 'segmentation'])
def test_fake_quantization_where_tflite_quantizes(tmp_path, records, task):
  graph, outputs = _inference_graph(_config(tmp_path, records[0], task))
  ops = _reachable_ops(outputs)
  types = [op.type for op in ops]
  # Batch norm is folded: none is left on the inference path.
  assert not [t for t in types if t.startswith('FusedBatchNorm')]
  convs = [op for op in ops if op.type in ('Conv2D', 'DepthwiseConv2dNative')]
  assert len(convs) > 20
  for conv in convs:  # every conv's (folded) weights are fake-quantized
    assert _producer(conv.inputs[1]).type == 'FakeQuantWithMinMaxVars', conv.name
  for op in ops:
    if op.type == 'Relu6' or (op.type in ('Add', 'AddV2') and op.inputs[0].get_shape().ndims == 4 and
                              'add_fold' not in op.name):
      consumers = [c for c in op.outputs[0].consumers() if c in ops]
      assert consumers and all(c.type == 'FakeQuantWithMinMaxVars' for c in consumers), (op.name, consumers)
  # The model input is quantized as the integer model's input, and the heads' outputs are fake-quantized.
  assert [op for op in ops if op.type == 'FakeQuantWithMinMaxArgs' and op.name.endswith(quantization.INPUT_QUANT)]
  names = set(v.op.name for v in quantization.range_variables(graph))
  scope = {'classification': 'MobilenetV2', 'detection': 'FeatureExtractor/MobilenetV2',
           'segmentation': 'MobilenetV2'}[task]
  # tf.contrib.quantize's names, so a contrib-trained checkpoint's ranges warm-start.
  for name in ('Conv/weights_quant/min', 'Conv/act_quant/max', 'expanded_conv/depthwise/weights_quant/max',
               'expanded_conv/project/act_quant/min', 'expanded_conv_2/add_quant/min'):
    assert '%s/%s' % (scope, name) in names, sorted(names)[:10]
  head = {'classification': 'MobilenetV2/Logits/Conv2d_1c_1x1', 'detection': 'BoxPredictor_0/ClassPredictor',
          'segmentation': 'logits/semantic'}[task]
  assert head + '/weights_quant/min' in names and head + '/act_quant/max' in names, sorted(names)[-10:]


MULTITASK = """
task: multitask
model: {depth_multiplier: 0.35}
train: {batch_size: 2, steps: 1, learning_rate: {schedule: constant}, quantization: {delay: 0}}
classification: {image_size: 32, num_classes: 5}
detection: {image_size: 64, num_classes: 7}
segmentation: {num_classes: 5, crop_size: 49, eval_crop_size: 64}
multitask:
  classification: {data: {train_files: '%(r)s/classification/train-*', eval_files: '%(r)s/classification/val-*'}}
  detection: {data: {train_files: '%(r)s/detection/train-*', eval_files: '%(r)s/detection/val-*'}}
  segmentation: {data: {train_files: '%(r)s/segmentation/train-*', eval_files: '%(r)s/segmentation/val-*'}}
"""


@pytest.mark.parametrize('is_training', [False, True])
def test_multitask_model_is_rewritten_once_per_layer(tmp_path, records, is_training):
  """The multi-task model: one backbone pass for inference, one per member's batch (re-used variables) when
  training; either way every conv is fake-quantized and each layer has one set of ranges."""
  config = config_from_text(tmp_path, MULTITASK % {'r': records[0]})
  with tf.Graph().as_default() as graph:
    task = registry.make_task(config)
    if is_training:
      tf.train.get_or_create_global_step()
      features = dict((name, {'image': tf.zeros([2, size, size, 3])})
                      for name, size in (('classification', 32), ('detection', 64), ('segmentation', 49)))
    else:
      features = {'image': tf.zeros([1, 64, 64, 3])}
    outputs = task.model(features, is_training)
    flat = dict(('%s/%s' % (m, k), v) for m, out in outputs.items() for k, v in out.items() if isinstance(v, tf.Tensor))
    ops = _reachable_ops(flat)
    convs = [op for op in ops if op.type in ('Conv2D', 'DepthwiseConv2dNative')]
    assert len(convs) > 60
    for conv in convs:
      if is_training and any(_producer(t).type.startswith('FusedBatchNorm') for t in conv.outputs[0].consumers()
                             for t in t.outputs):
        continue  # the float conv whose batch statistics the folded layer reads
      assert _producer(conv.inputs[1]).type == 'FakeQuantWithMinMaxVars', conv.name
    names = [v.op.name for v in quantization.range_variables(graph)]
    assert len(names) == len(set(names)) and not [n for n in names if 'MobilenetV2_1' in n], names[:5]
    for head in ('MobilenetV2/Logits/Conv2d_1c_1x1', 'BoxPredictor_0/ClassPredictor', 'logits/semantic'):
      assert head + '/act_quant/min' in names, head


def _initialized_copy(config, build_quantized, is_training, images_value, seed=3):
  """Outputs of the float model and of the rewritten model (`build_quantized`), same random weights and
  non-trivial batch-norm statistics."""
  values = {}
  results = []
  for quantized in (False, True):
    with tf.Graph().as_default():
      task = registry.make_task(config)
      images = tf.constant(images_value)
      if quantized:
        outputs = build_quantized(task, images)
      else:
        outputs = task.build_outputs({'image': images}, is_training)
      with tf.Session() as session:
        session.run(tf.global_variables_initializer())
        if not values:
          rng = np.random.RandomState(seed)
          for v in tf.global_variables():
            shape = v.shape.as_list()
            if v.op.name.endswith('moving_mean'):
              values[v.op.name] = rng.normal(0, 0.5, shape).astype(np.float32)
            elif v.op.name.endswith('moving_variance'):
              values[v.op.name] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
            elif v.op.name.endswith(('gamma', 'beta')):
              values[v.op.name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
            else:
              values[v.op.name] = session.run(v)
        for v in tf.global_variables():
          if v.op.name in values:
            v.load(values[v.op.name], session)
        key = sorted(k for k in outputs if 'logits' in k.lower() or 'class' in k.lower())[0]
        results.append(session.run(outputs[key]))
  return results


@pytest.mark.parametrize('freeze_bn_delay', [None, 0])
def test_folded_batch_norm_computes_batch_norm(tmp_path, records, freeze_bn_delay):
  """Quantization delayed (bypassed), training graph: the folded layers give batch norm's output -- with batch
  statistics before freeze_bn_delay, with the moving ones after it (the eval-mode float model)."""
  overrides = ['train.quantization.delay=1000000']
  if freeze_bn_delay is not None:
    overrides.append('train.quantization.freeze_bn_delay=%d' % freeze_bn_delay)
  config = _config(tmp_path, records[0], 'classification', overrides=overrides)
  images = np.random.RandomState(0).uniform(-1, 1, [4, 32, 32, 3]).astype(np.float32)

  def build(task, images):
    tf.train.get_or_create_global_step()
    return task.model({'image': images}, True)

  float_is_training = freeze_bn_delay is None
  reference, folded = _initialized_copy(config, build, float_is_training, images)
  assert np.abs(reference).max() > 0.1
  np.testing.assert_allclose(folded, reference, rtol=1e-3, atol=2e-3 * np.abs(reference).max())


# ------------------------------------------------------------------------------------------ end to end


def _ranges(checkpoint):
  return dict((name, tf.train.load_variable(checkpoint, name)) for name, _ in tf.train.list_variables(checkpoint)
              if name.endswith(('_quant/min', '_quant/max')))


# Enough steps on the tiny training split for confident outputs (a near-random model's outputs are near-ties,
# which any rounding reorders); the time is graph building, not steps.
STEPS = {'classification': 40, 'detection': 80, 'segmentation': 20}
LEARNING_RATES = {'classification': 0.005, 'detection': 0.005, 'segmentation': 0.003}


def test_ranges_train_save_and_resume(tmp_path, records):
  records_dir = records[0]
  config = _config(tmp_path, records_dir, 'classification', 6, save=3)
  model_dir = str(tmp_path / 'model')
  runner.train(config, model_dir)
  first = _ranges(tf.train.latest_checkpoint(model_dir))
  middle = _ranges(os.path.join(model_dir, 'model.ckpt-3'))
  assert first and all(np.all(np.isfinite(v)) for v in first.values())
  # Ranges are trained: the weights' follow their updates, the activations' left their initial zeros.
  weights = [n for n in first if 'weights_quant' in n]
  assert sum(not np.allclose(first[n], middle[n]) for n in weights) > len(weights) // 2
  assert all(first[n] > 0 for n in first if n.endswith('act_quant/max'))
  # Resumed from its own checkpoint: one more step moves the activation ranges by at most (1 - ema_decay) of
  # the way to the batch's, instead of restarting them at the first batch.
  runner.train(_config(tmp_path, records_dir, 'classification', 7, save=3), model_dir)
  resumed = _ranges(tf.train.latest_checkpoint(model_dir))
  assert sorted(resumed) == sorted(first)
  for name in first:
    if 'act_quant' in name or 'add_quant' in name:
      assert abs(resumed[name] - first[name]) <= 0.01 * max(abs(first[name]), 1.0) + 1e-6, name
  # Eval reads the ranges as trained (the simulated-quantized metric).
  assert runner.evaluate(config, model_dir)['global_step'] == 7


def _same_top_class(fake_quant, lite, context=None):
  """The int8 model's top class is the fake-quant graph's, up to ties within two steps of the uint8 output.

  The fake-quant graph's logits are quantized too, so two classes can tie exactly there (a CI run saw
  0.2444 / 0.2444); TFLite's output scale of 1/256 then breaks the tie either way.
  """
  probabilities = np.asarray(fake_quant['probabilities'])
  chosen = lite['top_k_classes'][0]
  assert probabilities[chosen] >= probabilities.max() - 2.0 / 256, (context, probabilities, lite['probabilities'])


@pytest.mark.parametrize('task', ['classification', 'detection', 'segmentation'])
def test_int8_export_agrees_with_the_fake_quant_graph(tmp_path, records, task, capsys):
  records_dir, raw = records
  # The classifier trains symmetric weight ranges (what int8 ends need), the others contrib's asymmetric ones.
  symmetric = ['train.quantization.symmetric=true'] if task == 'classification' else []
  config = _config(tmp_path, records_dir, task, STEPS[task], LEARNING_RATES[task], overrides=symmetric)
  model_dir = str(tmp_path / 'model')
  runner.train(config, model_dir)
  export_dir = str(tmp_path / 'int8')
  path = os.path.join(str(tmp_path), task + '.yaml')
  assert cli.main(['export', '--config', path, '--model-dir', model_dir, '--format', 'tflite', '--quantize', 'int8',
                   '--export-dir', export_dir]) == 0
  model_path = os.path.join(export_dir, 'model.tflite')
  with open(os.path.join(export_dir, 'model.json')) as f:
    meta = json.load(f)
  assert meta['quantization_aware'] and meta['input']['dtype'] == 'uint8'
  assert meta['edgetpu']['problems'] == [], meta['edgetpu']
  with open(model_path, 'rb') as f:
    model = tflite_model.read(f.read())
  assert model.tensor(model.inputs[0]).dtype == 'uint8'
  for op in model.operators:  # full-integer: only the post-processing op (and what feeds it) reads floats
    if op.name in edgetpu.CPU_TAIL_OPS - {'ARG_MAX'}:
      continue
    floats = [model.tensor(i).name for i in op.inputs if i >= 0 and model.tensor(i).dtype == 'float32']
    assert not floats, (op.name, floats)

  # The fake-quant graph (what `mnv2 eval` and predict from the checkpoint run) and the int8 model agree.
  images = _images(raw, task)
  fake_quant = predict.predict_checkpoint(config, model_dir, images)
  lite = tflite_task.predict(model_path, images)
  if task == 'classification':
    for s, t in zip(fake_quant, lite):
      _same_top_class(s, t)
    # Symmetric weight ranges: TF 2.15 also makes int8 ends (TFLite's int8 kernels: weight zero points 0) and
    # float32 ends; TF 1.15 refuses int8 ends in one line.
    io_dir = tmp_path / 'int8_io'
    args = ['export', '--config', path, '--model-dir', model_dir, '--format', 'tflite', '--quantize', 'int8',
            '--export-dir', str(io_dir), '--input-type']
    if te.is_tf1():
      assert cli.main(args + ['int8']) == 2
    for ends in ([] if te.is_tf1() else [('int8', 'int8'), ('float32', 'float32')]):
      assert cli.main(args + [ends[0]]) == 0
      with open(str(io_dir / 'model.tflite'), 'rb') as f:
        converted = tflite_model.read(f.read())
      assert [converted.tensor(i).dtype for i in converted.inputs + converted.outputs] == list(ends)
      weights = [converted.tensor(op.inputs[1]) for op in converted.operators if op.name.endswith('CONV_2D')]
      assert weights and all(w.dtype == ends[0] or ends[0] == 'float32' for w in weights), ends
      if ends[0] == 'int8':
        assert not any(z for w in weights for z in w.quantization['zero_point'])
        with open(str(io_dir / 'model.json')) as f:
          assert json.load(f)['edgetpu']['problems'] == []
      for s, t in zip(fake_quant, tflite_task.predict(str(io_dir / 'model.tflite'), images)):
        _same_top_class(s, t, ends)
  elif task == 'segmentation':
    agreement = np.mean([(s['mask'] == t['mask']).mean() for s, t in zip(fake_quant, lite)])
    assert agreement >= 0.99, agreement
    # Asymmetric weight ranges (contrib's, the default): int8 ends are refused in one line naming the key.
    capsys.readouterr()
    assert cli.main(['export', '--config', path, '--model-dir', model_dir, '--format', 'tflite', '--quantize',
                     'int8', '--export-dir', str(tmp_path / 'int8_io'), '--input-type', 'int8']) == 2
    assert ('TensorFlow 2.15' if te.is_tf1() else 'symmetric: true') in capsys.readouterr().err
  else:
    _raw_detection_outputs_agree(config, model_dir, raw)
    # End to end, as a sanity check: the agreement itself is the exact comparison above. After NMS this tiny
    # over-confident model fills all 20 rows with clustered boxes whose uint8 scores tie at 1/256, so the two
    # NMS runs keep different boxes of a cluster (48-73 of 80 matched at IoU 0.9 in different runs): each image
    # must have confident int8 detections, and some of them found by the fake-quant graph (same class, IoU 0.9).
    matched = total = 0
    for s, t in zip(fake_quant, lite):
      found = 0
      confident = [i for i in range(int(t['num_detections'])) if t['detection_scores'][i] >= 0.3]
      assert confident, t['detection_scores']
      for i in confident:
        found += any(s['detection_classes'][j] == t['detection_classes'][i] and
                     _iou(s['detection_boxes'][j], t['detection_boxes'][i]) >= 0.9
                     for j in range(int(s['num_detections'])))
      assert found, (s['detection_boxes'][:3], t['detection_boxes'][:3])
      matched, total = matched + found, total + len(confident)
    print('detection: %d of %d confident int8 detections matched' % (matched, total))


def _raw_detection_outputs_agree(config, model_dir, raw):
  """Before NMS, exactly comparable: the fake-quant graph's box encodings and class scores per anchor and the
  int8 model's (the same network converted without the post-processing op), on the same quantized input."""
  task = registry.make_task(config)
  size = task.serving_size()
  frozen = freeze_lib.freeze(lambda images: task.tflite_outputs(task.model({'image': images}, False)),
                             tf.train.latest_checkpoint(model_dir), [1, size, size, 3])
  interpreter = tf.lite.Interpreter(model_content=te.convert(frozen, 'int8'))
  interpreter.allocate_tensors()
  (inp,) = interpreter.get_input_details()
  scale, zero_point = inp['quantization']
  outputs = dict((d['name'], d) for d in interpreter.get_output_details())
  for path in _images(raw, 'detection')[:2]:
    with tf.Graph().as_default(), tf.Session() as session:
      image = session.run(task.features_from_bytes(tf.constant([open(path, 'rb').read()]))['image'])
    reference = freeze_lib.run(frozen, image)
    interpreter.set_tensor(inp['index'], np.clip(np.round(image / scale + zero_point), 0, 255).astype(np.uint8))
    interpreter.invoke()
    for key, tensor_name in frozen.outputs.items():
      detail = outputs[te._array_name(tensor_name)]  # pylint: disable=protected-access
      out_scale, out_zero = detail['quantization']
      got = (interpreter.get_tensor(detail['index']).astype(np.float32) - out_zero) * out_scale
      # Within a few output steps (the integer kernels round inside, e.g. the logistic's table): 95% within 2.
      error = np.abs(got - reference[key]) / out_scale
      assert (error <= 2.01).mean() >= 0.95 and error.max() <= 4.01, (key, (error <= 2.01).mean(), error.max())


def _images(raw, task):
  if task == 'classification':
    return sorted(glob.glob(os.path.join(raw['imagenet']['train_dir'], '*', '*')))[:6]
  if task == 'detection':  # the training images: the 80-step model is confident there
    return sorted(glob.glob(os.path.join(raw['coco']['train_images'], '*')))[:4]
  return sorted(glob.glob(os.path.join(raw['voc']['devkit_dir'], '*', 'JPEGImages', '*')))[:3]


def test_per_channel_ranges_are_refused_by_the_uint8_export():
  with tf.Graph().as_default() as graph:
    x = tf.placeholder(tf.float32, [1, 4, 4, 3], name='input')
    y = tf.quantization.fake_quant_with_min_max_vars_per_channel(x, tf.constant([-1.0] * 3), tf.constant([1.0] * 3))
    tf.identity(y, name='probabilities')
  frozen = freeze_lib.FrozenGraph(graph.as_graph_def(), 'input', [1, 4, 4, 3], tf.float32,
                                  {'probabilities': 'probabilities:0'}, 0)
  with pytest.raises(ValueError, match=r'train\.quantization\.per_channel'):
    te.convert(frozen, 'int8')
