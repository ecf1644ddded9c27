"""The `mnv2` command line: one sub-command per job, each a thin wrapper over a library function.

Sub-commands are registered in `_COMMANDS` (name -> (help, add_arguments, run)). User errors (bad config,
missing files, bad arguments) print one `error: ...` line naming the culprit and exit with status 2;
nothing here holds logic that the Python API does not also expose.
"""
import argparse
import json
import logging
import os
import sys
import warnings

from pipelines import tf_optional
from pipelines.cli import environment

# tf-slim calls the deprecated `Layer.apply` on TF 2.15; the warning is noise for users.
warnings.filterwarnings('ignore', message='`layer.apply` is deprecated')


def _add_run_args(parser, model_dir=True):
  parser.add_argument('--config', required=True, help='YAML config (see configs/)')
  if model_dir:
    parser.add_argument('--model-dir', required=True, help='checkpoints, events, config.yaml, eval/, export/')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='override a config value, e.g. --set train.steps=100 (repeatable)')


def _quiet_tf(verbose=False):
  """Our progress lines always print; TensorFlow's own log (INFO, deprecation warnings) only with `mnv2 -v`."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  tf.logging.set_verbosity(tf.logging.INFO if verbose or _VERBOSE[0] else tf.logging.ERROR)


def _add_train(parser):
  _add_run_args(parser)
  parser.add_argument('--eval', action='store_true', help='evaluate every new checkpoint while training')
  parser.add_argument('--allow-config-change', action='store_true',
                      help='train on in a model dir whose config.yaml differs in keys that change the model')


def _run_train(args):
  from pipelines.training import runner  # pylint: disable=g-import-not-at-top
  config = runner.load_config(args.config, args.set, 'train_and_eval' if args.eval else 'train')
  _quiet_tf()
  metrics = runner.train(config, args.model_dir, evaluate=args.eval,
                         allow_config_change=getattr(args, 'allow_config_change', False))
  if metrics:
    print(json.dumps(_printable(metrics), indent=2, sort_keys=True))
  return 0


def _add_eval(parser):
  _add_run_args(parser)
  parser.add_argument('--checkpoint', help='checkpoint to evaluate (default: latest in --model-dir)')
  parser.add_argument('--continuous', action='store_true', help='follow a training run, evaluating new checkpoints')


def _run_eval(args):
  from pipelines.training import runner  # pylint: disable=g-import-not-at-top
  config = runner.load_config(args.config, args.set, 'eval')
  _quiet_tf()
  metrics = runner.evaluate(config, args.model_dir, args.checkpoint, args.continuous)
  print(json.dumps(_printable(metrics or {}), indent=2, sort_keys=True))
  return 0


def _printable(metrics):
  return {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}


def _add_export(parser):
  _add_run_args(parser)
  parser.add_argument('--export-dir', help='base directory (default: MODEL_DIR/export); a timestamped dir is made')
  parser.add_argument('--checkpoint', help='checkpoint to export (default: latest in --model-dir)')
  parser.add_argument('--format', choices=('saved_model', 'tflite', 'onnx'), default='saved_model',
                      help='saved_model (default), tflite (model.tflite + model.json + labels) or onnx '
                           '(model.onnx + model.json + labels; the `onnx` extra, TF 2.15)')
  parser.add_argument('--opset', type=int, default=13, metavar='N', help='onnx: the ONNX opset (default 13)')
  parser.add_argument('--quantize', choices=('none', 'float16', 'int8'), default='none',
                      help='tflite: none (float32), float16 weights, or int8 full-integer (calibrated; a '
                           'quantization-aware checkpoint uses its learned ranges)')
  parser.add_argument('--calibration-images', type=int, default=100, metavar='N',
                      help='tflite int8 from a float checkpoint: eval images to calibrate on (default 100)')
  parser.add_argument('--input-type', choices=TFLITE_INPUT_TYPES + SAVED_MODEL_INPUT_TYPES,
                      help='tflite int8: the model input\'s dtype, uint8 (default), int8 or float32 (a '
                           'quantization-aware checkpoint: uint8, float32, or int8 on TF 2.15 from symmetric '
                           'weight ranges); saved_model, detection: the OD API input type serving_default takes, '
                           'image_tensor (default), encoded_image_string_tensor or tf_example')
  parser.add_argument('--output-type', choices=('uint8', 'int8', 'float32'),
                      help='tflite int8: the outputs\' dtype (default uint8 probabilities, float32 otherwise)')


# --input-type values: a TFLite int8 model's input dtype; a detection SavedModel's OD API input type.
TFLITE_INPUT_TYPES = ('uint8', 'int8', 'float32')
SAVED_MODEL_INPUT_TYPES = ('image_tensor', 'encoded_image_string_tensor', 'tf_example')


def _run_export(args):
  from pipelines.training import runner  # pylint: disable=g-import-not-at-top
  config = runner.load_config(args.config, args.set)
  _quiet_tf()
  if args.format == 'onnx':
    if args.input_type or args.output_type or args.quantize != 'none':
      raise ValueError('--input-type / --output-type / --quantize do not apply to --format onnx (float32)')
    from pipelines.export import onnx_export  # pylint: disable=g-import-not-at-top
    print(onnx_export.export(config, args.model_dir, args.export_dir, args.checkpoint, args.opset))
    return 0
  if args.format == 'tflite':
    if args.input_type in SAVED_MODEL_INPUT_TYPES:
      raise ValueError('--input-type %s applies to --format saved_model (detection)' % args.input_type)
    from pipelines.export import tflite_task  # pylint: disable=g-import-not-at-top
    print(tflite_task.export(config, args.model_dir, args.export_dir, args.checkpoint, args.quantize,
                             args.calibration_images, input_type=args.input_type, output_type=args.output_type))
    return 0
  if args.output_type or args.input_type in TFLITE_INPUT_TYPES:
    raise ValueError('--input-type %s / --output-type apply to --format tflite --quantize int8' % (
        args.input_type or ''))
  print(runner.export(config, args.model_dir, args.export_dir, args.checkpoint, input_type=args.input_type))
  return 0


def _add_predict(parser):
  parser.add_argument('images', nargs='+', help='image files (JPEG/PNG)')
  parser.add_argument('--saved-model', help='exported SavedModel directory')
  parser.add_argument('--tflite', help='exported model.tflite (model.json and config.yaml beside it)')
  parser.add_argument('--onnx', help='exported model.onnx (model.json and config.yaml beside it; ONNX Runtime)')
  parser.add_argument('--config', help='YAML config (with --model-dir: predict from a checkpoint)')
  parser.add_argument('--model-dir', help='model directory holding checkpoints')
  parser.add_argument('--checkpoint', help='checkpoint (default: latest in --model-dir)')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='config override')
  parser.add_argument('--output', help='detection/segmentation: image to write (one input image), or a directory')
  parser.add_argument('--json', help='also write the predictions to this JSON file')
  parser.add_argument('--min-score', type=float, default=0.3,
                      help='detection: list and draw only boxes scoring at least this (default 0.3)')


def _run_predict(args):
  from pipelines.cli import render  # pylint: disable=g-import-not-at-top
  from pipelines.export import runtime_predict  # pylint: disable=g-import-not-at-top  (no TensorFlow)
  runtime_predict.check_images(args.images)
  if args.tflite or args.onnx:  # TensorFlow where installed (its preprocessing), else the TF-free runtimes
    if tf_optional.tensorflow_available():
      _quiet_tf()
    results = (runtime_predict.predict(args.tflite, args.images) if args.tflite else
               runtime_predict.predict_onnx(args.onnx, args.images))
  elif args.saved_model or (args.config and args.model_dir):
    tf_optional.require_tensorflow('predict --saved-model / --config with --model-dir')
    from pipelines.cli import predict  # pylint: disable=g-import-not-at-top
    _quiet_tf()
    if args.saved_model:
      results = predict.predict_saved_model(args.saved_model, args.images)
    else:
      from pipelines.training import runner  # pylint: disable=g-import-not-at-top
      config = runner.load_config(args.config, args.set)
      results = predict.predict_checkpoint(config, args.model_dir, args.images, args.checkpoint)
  else:
    raise ValueError('predict needs --saved-model DIR, --tflite FILE, --onnx FILE, or --config FILE and '
                     '--model-dir DIR')
  described = [render.describe(path, result, render.output_path(args.output, path, len(args.images)),
                               args.min_score)
               for path, result in zip(args.images, results)]
  for item in described:
    print(render.summary_line(item))
  if args.json:
    with tf_optional.files(args.json).GFile(args.json, 'w') as f:
      f.write(json.dumps(described, indent=2))
  return 0


def _add_profile(parser):
  parser.add_argument('--model', default='mobilenet', choices=('mobilenet', 'ssdlite', 'deeplab', 'multitask'))
  parser.add_argument('--depth-multiplier', type=float, default=1.0, help='width multiplier (default 1.0)')
  parser.add_argument('--image-size', type=int, help='square input size (default 224 / 320 / 513 by model)')
  parser.add_argument('--num-classes', type=int, help='outputs (default 1001 / 90 / 21 by model)')
  parser.add_argument('--finegrain', action='store_true', help='mobilenet: keep the last layer at 1280 channels')
  parser.add_argument('--output-stride', type=int, default=16, help='deeplab: 8 or 16')


def _profile_mobilenet(args):
  from nets import profile  # pylint: disable=g-import-not-at-top
  size, classes = args.image_size or 224, args.num_classes or 1001
  return profile.profile_mobilenet(args.depth_multiplier, size, classes, args.finegrain), size, classes, (
      ' (finegrain)' if args.finegrain else '')


def _profile_ssdlite(args):
  from pipelines.cli import profile_models  # pylint: disable=g-import-not-at-top
  size, classes = args.image_size or 320, args.num_classes or 90
  return profile_models.profile_ssdlite(size, classes, args.depth_multiplier), size, classes, ''


def _profile_deeplab(args):
  from pipelines.cli import profile_models  # pylint: disable=g-import-not-at-top
  size, classes = args.image_size or 513, args.num_classes or 21
  result = profile_models.profile_deeplab(size, args.output_stride, classes, depth_multiplier=args.depth_multiplier)
  return result, size, classes, ', output stride %d' % args.output_stride


def _run_profile(args):
  from nets import profile  # pylint: disable=g-import-not-at-top
  models = {'mobilenet': _profile_mobilenet, 'ssdlite': _profile_ssdlite, 'deeplab': _profile_deeplab}
  if args.model not in models:  # the one-backbone model: a table of its own
    return _profile_multitask(args)
  result, size, classes, extra = models[args.model](args)
  title = '%s %.2f at %dx%d, %d classes%s' % (args.model, args.depth_multiplier, size, size, classes, extra)
  print(profile.format_profile(result, title))
  return 0


def _profile_multitask(args):
  from pipelines.cli import profile_models  # pylint: disable=g-import-not-at-top
  size = args.image_size or 320
  combined, separate = profile_models.profile_multitask(size, args.depth_multiplier)
  print('multitask %.2f at %dx%d (one backbone: classification 1001 + SSDLite 90 + DeepLabv3 21 classes) vs the '
        'three single-task models at the same size' % (args.depth_multiplier, size, size))
  print('%-22s %12s %16s' % ('model', 'parameters', 'multiply-adds'))
  for name, result in list(separate.items()) + [('sum of the three', None), ('multitask (one pass)', combined)]:
    if result is None:
      result = type(combined)(sum(p.params for p in separate.values()), sum(p.madds for p in separate.values()),
                              None, None)
    print('%-22s %12s %16s' % (name, '{:,}'.format(result.params), '{:,}'.format(result.madds)))
  total = sum(p.madds for p in separate.values())
  print('multitask / separate: parameters %.2f, multiply-adds %.2f' % (
      combined.params / float(sum(p.params for p in separate.values())), combined.madds / float(total)))
  return 0


def _add_convert(parser):
  sub = parser.add_subparsers(dest='dataset', metavar='DATASET')
  sub.required = True
  for name, help_text in (('imagenet', 'ImageNet-style class folders -> TF-Slim TFRecords'),
                          ('coco', 'COCO instances JSON + images -> Object Detection API TFRecords'),
                          ('voc', 'PASCAL VOC devkit -> DeepLab TFRecords')):
    module = _dataset_module(name)
    module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))


def _dataset_module(name):
  import importlib  # pylint: disable=g-import-not-at-top
  return importlib.import_module('datasets.%s' % name)


def _run_convert(args):
  _quiet_tf()
  return _dataset_module(args.dataset).run(args)


def _add_check_records(parser):
  parser.add_argument('patterns', nargs='+', metavar='PATTERN', help='TFRecord files or globs (quote globs)')


def _run_check_records(args):
  """Reads every record of the matched files (CRCs, tf.train.Example parse); names each damaged file."""
  from datasets import shard_writer  # pylint: disable=g-import-not-at-top
  from datasets import tfrecord  # pylint: disable=g-import-not-at-top
  _quiet_tf()
  files = tfrecord.list_files(args.patterns)
  progress = shard_writer.Progress(len(files), 'checking records (files)')
  damaged, records = [], 0
  for path in files:
    count, why = tfrecord.check_records(path)
    records += count
    if why:
      damaged.append(path)
      sys.stderr.write('%sdamaged: %s: %s (re-create this shard)\n' % ('\r\033[K' if progress.tty else '', path,
                                                                       why))
    progress.handle(('done', 1))
  progress.draw(force=True, end='\n')
  print('%d files, %d records read, %d damaged%s' % (len(files), records, len(damaged),
                                                     ': ' + ' '.join(damaged) if damaged else ''))
  return 1 if damaged else 0


def _add_demo_data(parser):
  from datasets import shapes  # pylint: disable=g-import-not-at-top
  shapes.add_arguments(parser)


def _run_demo_data(args):
  from datasets import shapes  # pylint: disable=g-import-not-at-top
  return shapes.run(args)


def _add_demo(parser):
  from pipelines.cli import demo  # pylint: disable=g-import-not-at-top
  demo.add_arguments(parser)


def _run_demo(args):
  from pipelines.cli import demo  # pylint: disable=g-import-not-at-top
  _quiet_tf()
  return demo.run(args)


_COMMANDS = {
    'train': ('train a model (resumes from the last checkpoint in --model-dir)', _add_train, _run_train),
    'eval': ('evaluate checkpoints; writes MODEL_DIR/eval/metrics.json', _add_eval, _run_eval),
    'export': ('export a SavedModel, a TFLite model (--format tflite) or an ONNX model (--format onnx)', _add_export,
               _run_export),
    'predict': ('predict on image files from a SavedModel, a TFLite or ONNX model (no TensorFlow needed) or a '
                'checkpoint', _add_predict, _run_predict),
    'profile': ('parameters and multiply-adds per layer type', _add_profile, _run_profile),
    'convert': ('convert a raw dataset to sharded TFRecords', _add_convert, _run_convert),
    'check-records': ('read every record of TFRecord files (CRCs, Example parse) and name the damaged ones',
                      _add_check_records, _run_check_records),
    'demo-data': ('write the embedded "shapes" dataset in ImageNet, COCO and VOC formats', _add_demo_data,
                  _run_demo_data),
    'demo': ('generate, convert, train, evaluate, export and predict all three tasks', _add_demo, _run_demo),
}


_VERBOSE = [False]
# What runs in a `lite` install (no TensorFlow): predict --tflite / --onnx. The others need the `cpu` extra.
TF_FREE_COMMANDS = ('predict',)


def build_parser():
  parser = argparse.ArgumentParser(prog='mnv2', description=__doc__.split('\n')[0])
  parser.add_argument('-v', '--verbose', action='store_true', help="also show TensorFlow's INFO logs")
  sub = parser.add_subparsers(dest='command', metavar='COMMAND')
  sub.required = True
  for name in _COMMANDS:
    help_text, add_arguments, _ = _COMMANDS[name]
    command = sub.add_parser(name, help=help_text, description=help_text)
    try:
      add_arguments(command)
    except ImportError as e:  # a task module not installed/available must not break the other commands
      if tf_optional.tensorflow_available():
        sys.stderr.write('warning: command %r unavailable: %s\n' % (name, e))
      else:  # a TensorFlow-free install: listed, and refused in one line when run (`main`)
        command.add_argument('arguments', nargs=argparse.REMAINDER)
  return parser


class _StderrHandler(logging.StreamHandler):
  """Writes to whatever sys.stderr is at each record (not the one at start-up), so a redirected or
  captured stderr gets the progress lines too."""

  def __init__(self):
    super(_StderrHandler, self).__init__(sys.stderr)

  @property
  def stream(self):
    return sys.stderr

  @stream.setter
  def stream(self, value):  # StreamHandler sets it in __init__; the property always reads sys.stderr
    pass


def main(argv=None):
  environment.configure()  # before any command imports TensorFlow
  args = build_parser().parse_args(argv)
  _VERBOSE[0] = args.verbose
  logger = logging.getLogger('mnv2')
  if not logger.handlers:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%H:%M:%S'))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
  from pipelines import errors  # pylint: disable=g-import-not-at-top
  try:
    if args.command not in TF_FREE_COMMANDS:
      tf_optional.require_tensorflow('mnv2 %s' % args.command)
    return _COMMANDS[args.command][2](args)
  except errors.user_errors() as e:
    if os.environ.get('MNV2_DEBUG'):  # developers: MNV2_DEBUG=1 shows the traceback
      raise
    sys.stderr.write('error: %s\n' % errors.one_line(e))
    return 2


def run(argv=None):
  """The `mnv2` entry point: `main`, then exit with its status. After an error the process ends at once
  (`os._exit`, output flushed): tearing down a failed TensorFlow 1.15 session at interpreter exit can
  crash (SIGSEGV) after the error line, which must not turn status 2 into a signal."""
  status = main(argv)
  if status:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # pylint: disable=protected-access
  return status


if __name__ == '__main__':
  sys.exit(run())
