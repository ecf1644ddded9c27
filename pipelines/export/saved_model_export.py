"""SavedModel export with batch norm folded, and the signatures existing clients call.

The network is frozen with the moving-average weights and its batch norms folded into the convs
(`pipelines.export.freeze`, as for TFLite), then imported ONCE into a serving graph written with
`tf.saved_model.builder` and explicit signatures. Every signature feeds that one copy of the model through
`placeholder_with_default` links, so the weights are stored once:

  uint8 images --encode_png--+
                             +--> encoded bytes --task.features_from_bytes--> float images --> model
  tf.Example --parse--------+        (image/encoded)

  encoded_image              encoded_image string [B] -> the task's predictions (what `mnv2 predict
                             --saved-model` and `pipelines.cli.render` read)
  serving_default            the task's choice (`Task.serving_signature`, `mnv2 export --input-type`):
                             classification and segmentation: encoded_image; detection: one of the OD API's
                             input types below, image_tensor by default
  classification
    float_images:serving_default   images float32 [B, S, S, 3] in [-1, 1] -> the same predictions
    image_tensor                   inputs uint8 [B, H, W, 3] -> the same predictions (TF-Slim clients)
  detection (the Object Detection API exporter's signatures, input key `inputs`; `DetectionTask.od_api_outputs`)
    image_tensor                   inputs uint8 [B, H, W, 3]
    encoded_image_string_tensor    inputs string [B], JPEG / PNG bytes
    tf_example                     inputs string [B], serialized tf.Example with image/encoded
                             -> detection_boxes float32 [B, D, 4] normalized ymin, xmin, ymax, xmax;
                             detection_scores [B, D]; detection_classes float32 [B, D] (label-map ids);
                             num_detections float32 [B]; detection_multiclass_scores [B, D, K + 1];
                             raw_detection_boxes [B, A, 4] and raw_detection_scores [B, A, K + 1] (before
                             NMS). Tensor names as the OD API's frozen graph: image_tensor:0, detection_boxes:0, ...
  segmentation
    ImageTensor              ImageTensor uint8 [1, H, W, 3] -> SemanticPredictions int32 [1, H, W] (DeepLab's
                             exporter; tensor names ImageTensor:0 and SemanticPredictions:0)

Beside saved_model.pb, `frozen_inference_graph.pb` holds the same model as one GraphDef in the tensor names of
the anchor's published frozen graph (`Task.frozen_graph`): classification `input:0` (float, preprocessed) ->
`MobilenetV2/Predictions/Reshape_1:0`; detection `image_tensor:0` -> `detection_boxes:0`, `detection_scores:0`,
`detection_classes:0`, `num_detections:0`; segmentation `ImageTensor:0` -> `SemanticPredictions:0`.

A uint8 image goes through PNG encoding (lossless) so it is preprocessed by exactly the serving code the
encoded-bytes signature uses. Each task names its own signatures (`Task.client_signatures`) and its uint8
input (`Task.UINT8_INPUT_NAME`). Not here: TFLite (`pipelines.export.tflite_task`).
"""
import logging
import os
import time

import tensorflow.compat.v1 as tf

from datasets import tfrecord
from pipelines import config as config_schema
from pipelines.export import freeze as freeze_lib

LOG = logging.getLogger('mnv2')
SEP = '/'
FROZEN_GRAPH = 'frozen_inference_graph.pb'  # beside saved_model.pb, as the OD API's and DeepLab's exporters
DEFAULT = tf.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY
ENCODED_SIGNATURE = 'encoded_image'  # encoded image bytes -> this project's predictions (input key and tensor name)
TF_EXAMPLE = 'tf_example'  # serialized tf.Example [B] placeholder (the OD API's `tf_example` input)
IMAGE_ENCODED = 'image/encoded'  # the tf.Example feature it reads


def _escape(key):
  # Output keys of a member may contain '/'; flattening joins levels with SEP, so keep levels distinct.
  return key.replace(SEP, '|')


def _flat_outputs(outputs):
  def walk(value, path):
    if isinstance(value, dict):
      result = {}
      for key, item in value.items():
        result.update(walk(item, path + [_escape(str(key))]))
      return result
    return {SEP.join(path): value}
  return walk(outputs, [])


def _nested_outputs(flat):
  nested = {}
  for key, value in flat.items():
    parts = key.split(SEP)
    node = nested
    for part in parts[:-1]:
      node = node.setdefault(part.replace('|', SEP), {})
    node[parts[-1].replace('|', SEP)] = value
  return nested


def _tensor_info(tensor):
  return tf.saved_model.utils.build_tensor_info(tensor)


def _signature(inputs, outputs):
  return tf.saved_model.signature_def_utils.build_signature_def(
      dict((k, _tensor_info(v)) for k, v in inputs.items()), dict((k, _tensor_info(v)) for k, v in outputs.items()),
      tf.saved_model.signature_constants.PREDICT_METHOD_NAME)


def _encode_png(images):
  return tf.map_fn(tf.image.encode_png, images, dtype=tf.string, back_prop=False)


def build_and_save(task, checkpoint_path, export_dir, input_type=None):
  """Writes the folded SavedModel of `task` (see the module docstring) to `export_dir`; `serving_default` is
  the client signature `input_type` names (`Task.serving_signature`)."""
  serving = task.serving_signature(input_type)
  with tf.Graph().as_default():
    # The float image size the model takes: what the task's serving preprocessing produces.
    probe = task.features_from_bytes(tf.placeholder(tf.string, [None]))['image']
    size = probe.get_shape().as_list()[1:3]

  def build(images):
    return _flat_outputs(task.model({'image': images}, False))

  frozen = freeze_lib.freeze(build, checkpoint_path, [None] + size + [3])
  LOG.info('saved model: %d batch norms folded', frozen.folded)
  graph = tf.Graph()
  with graph.as_default():
    uint8 = tf.placeholder_with_default(tf.zeros([0, 1, 1, 3], tf.uint8), [None, None, None, 3],
                                        name=task.UINT8_INPUT_NAME)
    examples = tf.placeholder_with_default(tf.zeros([0], tf.string), [None], name=TF_EXAMPLE)
    # Whichever of the two a client feeds gives the batch; the other's default is empty.
    from_examples = tf.parse_example(examples, {IMAGE_ENCODED: tf.FixedLenFeature((), tf.string)})[IMAGE_ENCODED]
    encoded = tf.placeholder_with_default(tf.concat([from_examples, _encode_png(uint8)], 0), [None],
                                          name=ENCODED_SIGNATURE)
    features = task.features_from_bytes(encoded)
    images = tf.placeholder_with_default(features['image'], [None] + size + [3], name='images')
    names = list(frozen.outputs)
    tensors = tf.import_graph_def(frozen.graph_def, input_map={frozen.input_name + ':0': images},
                                  return_elements=[frozen.outputs[k] for k in names], name='model')
    outputs = _nested_outputs(dict(zip(names, tensors)))
    features = dict(features, image=images)
    predictions = task.build_predictions(outputs, features)
    signatures = {ENCODED_SIGNATURE: _signature({'encoded_image': encoded}, predictions)}
    clients = task.client_signatures(uint8, images, outputs, dict(features, **{ENCODED_SIGNATURE: encoded,
                                                                               TF_EXAMPLE: examples}), predictions)
    for name, (inputs, tensors) in clients.items():
      signatures[name] = _signature(inputs, tensors)
    signatures[DEFAULT] = signatures[serving or ENCODED_SIGNATURE]
    frozen_spec = task.frozen_graph(clients, images, predictions)
    frozen_outputs = _named_outputs(frozen_spec['outputs']) if frozen_spec else None
    with tf.Session(graph=graph) as session:
      builder = tf.saved_model.builder.SavedModelBuilder(export_dir)
      builder.add_meta_graph_and_variables(session, [tf.saved_model.tag_constants.SERVING],
                                           signature_def_map=signatures, strip_default_attrs=True,
                                           main_op=tf.tables_initializer())
      builder.save()
  # The training config, where the OD API's exporter writes pipeline.config.
  config_schema.save(task.config, os.path.join(export_dir, config_schema.FILE_NAME))
  if frozen_spec:
    graph_def = frozen_inference_graph(graph.as_graph_def(), frozen_spec['inputs'], frozen_outputs)
    tfrecord.atomic_write(os.path.join(export_dir, FROZEN_GRAPH), graph_def.SerializeToString())
  return export_dir


def _named_outputs(outputs):
  """The frozen graph's outputs: each tensor aliased (tf.identity) to its client name where its op differs."""
  named = {}
  for name, tensor in outputs.items():
    if tensor.op.name != name or tensor.value_index != 0:
      tensor = tf.identity(tensor, name=name)
      if tensor.op.name != name:
        raise ValueError('frozen graph: the tensor name %s:0 is taken in the serving graph' % name)
    named[name] = tensor
  return named


def frozen_inference_graph(graph_def, inputs, outputs):
  """The serving GraphDef cut to `outputs` (name -> tensor named so), its `inputs` nodes renamed to their keys.

  The weights are constants already (the network was frozen before it was imported), so this is the whole
  model: a client imports it with `name=''` and feeds `<input>:0`, as the anchors' demos do.
  """
  graph_def = tf.graph_util.extract_sub_graph(graph_def, sorted(outputs))
  for name, tensor in inputs.items():
    if tensor.op.name != name:
      freeze_lib.rename_node(graph_def, tensor.op.name, name)
  return graph_def


def export(task, base_dir, checkpoint_path, input_type=None):
  """Folded SavedModel under `base_dir/<timestamp>` (as the Estimator's export); returns its path."""
  path = os.path.join(base_dir, str(int(time.time())))
  while tf.gfile.Exists(path):
    time.sleep(1)
    path = os.path.join(base_dir, str(int(time.time())))
  tmp = os.path.join(base_dir, 'temp-' + os.path.basename(path))
  build_and_save(task, checkpoint_path, tmp, input_type)
  tf.gfile.Rename(tmp, path)
  return path
