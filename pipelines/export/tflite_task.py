"""TFLite export and prediction of a task from its config: the product's model, not a copy.

`export` builds the task's own inference graph (`task.build_outputs({'image': images}, False)`: the
`pipelines.tasks.model_builder` backbone + the task's head, then `task.tflite_outputs`), restores the moving
averages (raw weights with a warning when the checkpoint has none), freezes it and folds batch norm
(`pipelines.export.freeze`), appends what only TFLite runs (`task.tflite_postprocess`), then converts it
with `pipelines.export.tflite_export` and writes, in one directory:

  model.tflite   the flatbuffer
  model.json     input (dtype, shape, [-1, 1] range or uint8 quantization), outputs, task, class names,
                 the preprocessing of the task's serving path, the NMS settings (detection)
  config.yaml    the training config (predict rebuilds the task's serving preprocessing from it)
  labels.txt / label_map.pbtxt   the class names file (copied from data.labels_file, else written)

Per task (each task class decides its outputs, metadata and decoding): classification probabilities [1, C]; detection the OD API TFLite layout (boxes [1, N, 4]
normalized ymin, xmin, ymax, xmax, classes [1, N] zero-based, scores [1, N], num_detections [1]) from
`TFLite_Detection_PostProcess` with the config's NMS settings (per-class regular NMS, like the SavedModel);
segmentation the class map [1, S, S] at the input (eval crop) size; multitask one model, keys
`<member>/<key>`, the backbone run once. int8: full-integer post-training quantization calibrated on
`--calibration-images` images of the config's own eval input pipeline.

`predict` (`pipelines.export.runtime_predict`, which imports no TensorFlow) runs a model.tflite on image files
and returns the same prediction dicts as the SavedModel (`pipelines.cli.predict`), decoded by the task
(`task.decode_tflite`), so `pipelines.cli.render` draws them the same way.
"""
import logging
import os

import numpy as np
import tensorflow.compat.v1 as tf

from pipelines import config as config_schema
from pipelines.export import freeze as freeze_lib
from pipelines.export import tflite_export as te
from pipelines.export import runtime_predict
from pipelines.tasks import registry
from pipelines.training import checkpoints

LOG = logging.getLogger('mnv2')
CONFIG_NAME = config_schema.FILE_NAME
DEFAULT_CALIBRATION_IMAGES = 100


# ------------------------------------------------------------------------------------------ graphs


def input_size(config):
  """Side of the TFLite model's square input for this config (the serving size of the task)."""
  return registry.make_task(config).serving_size()


def frozen_graph(config, checkpoint_path, use_moving_averages=True):
  """FrozenGraph of the task's inference model: its `tflite_outputs`, then its `tflite_postprocess` (detection:
  ending in TFLite_Detection_PostProcess)."""
  task = registry.make_task(config)
  size = task.serving_size()

  def build(images):
    return task.tflite_outputs(task.model({'image': images}, False))

  frozen = freeze_lib.freeze(build, checkpoint_path, [1, size, size, 3], use_moving_averages=use_moving_averages)
  return task.tflite_postprocess(frozen)


# ------------------------------------------------------------------------------------------ calibration


def calibration_images(config, count):
  """`count` float32 [S, S, 3] images in [-1, 1] from the config's eval input pipeline (`<task>_input`)."""
  task = registry.make_task(config)
  size = task.serving_size()
  input_fns = [fn for _, fn in task.eval_input_fns()]
  images = []
  with tf.Graph().as_default():
    # A multitask model: the members' eval splits in turn; every image resized to the one-pass size.
    per_member = int(np.ceil(count / float(len(input_fns))))
    for fn in input_fns:
      dataset = fn()
      features = tf.data.make_one_shot_iterator(dataset).get_next()[0]
      image = features['image'] if 'image' in features else list(features.values())[0]['image']
      if image.get_shape().as_list()[1:3] != [size, size]:
        image = tf.image.resize_bilinear(image, [size, size], align_corners=False)
      taken = 0
      with tf.Session() as session:
        while taken < per_member and len(images) < count:
          try:
            batch = session.run(image)
          except tf.errors.OutOfRangeError:
            break
          for one in batch[:min(per_member - taken, count - len(images))]:
            images.append(one.astype(np.float32))
          taken += len(batch)
  if not images:
    raise ValueError('no calibration images: the eval input pipeline (data.eval_files) yielded nothing')
  return images


# ------------------------------------------------------------------------------------------ export


def unsupported(config, quantize):
  """Why `quantize` cannot export this config's task on this TensorFlow, or None when it can."""
  return registry.make_task(config).tflite_unsupported(quantize)


def task_metadata(task, output_dir):
  """The task's model.json entries, each with the labels file written for it (members: one each)."""
  meta, labels = task.export_metadata(), task.write_labels(output_dir)
  if isinstance(labels, dict):  # a multi-task model: {member: labels file}
    for name, value in labels.items():
      meta['members'][name]['labels_file'] = value
    return meta
  return dict(meta, labels_file=labels)


def export(config, model_dir, export_dir=None, checkpoint_path=None, quantize='none',
           num_calibration_images=DEFAULT_CALIBRATION_IMAGES, calibration_config=None, input_type=None,
           output_type=None):
  """Writes model.tflite, model.json, config.yaml and the class names file; returns the model path.

  Default directory: `<model_dir>/export/tflite_<quantize>`. int8 calibrates on the eval input pipeline of
  `calibration_config` (default `config`; the demo passes one reading training records, so its held-out
  split stays unseen by the export).
  """
  if quantize not in te.QUANTIZE_MODES:
    raise ValueError('--quantize must be one of %s, got %r' % (', '.join(te.QUANTIZE_MODES), quantize))
  reason = unsupported(config, quantize)
  if reason:
    raise ValueError(reason)
  output_dir = export_dir or os.path.join(model_dir, 'export', 'tflite_' + quantize)
  with checkpoints.held(model_dir, checkpoint_path, what='export') as held_path:
    frozen = frozen_graph(config, held_path)
    checkpoint_path = held_path
  LOG.info('tflite export: %s, %d batch norms folded, quantize=%s', checkpoint_path, frozen.folded, quantize)
  representative = None
  aware = te.is_quantization_aware(frozen)
  if quantize == 'int8' and aware:
    LOG.info('tflite export: quantization-aware checkpoint: the learned ranges quantize the model (no calibration)')
  elif quantize == 'int8':
    representative = calibration_images(calibration_config or config, num_calibration_images)
    LOG.info('tflite export: calibrating on %d eval images', len(representative))
  if not tf.gfile.IsDirectory(output_dir):
    tf.gfile.MakeDirs(output_dir)
  extra = {'checkpoint': os.path.basename(checkpoint_path), 'config': CONFIG_NAME,
           'batch_norms_folded': frozen.folded, 'quantization_aware': aware}
  extra.update(task_metadata(registry.make_task(config), output_dir))
  config_schema.save(config, os.path.join(output_dir, CONFIG_NAME))
  model_path, _ = te.export(frozen, output_dir, config.task, quantize, representative, extra, input_type, output_type)
  return model_path


# ------------------------------------------------------------------------------------------ predict

# Prediction from model.tflite lives where it imports no TensorFlow (a `lite` install runs it); these names
# stay here for the callers that import them from this module.
TFLitePredictor = runtime_predict.TFLitePredictor
predict = runtime_predict.predict
