"""User errors -> one `error: ...` line: which exceptions the CLI reports, and how TensorFlow's are worded.

TensorFlow runtime errors (`tf.errors.OpError`: a failed `tf.Assert` in an input pipeline, a corrupt
TFRecord, a record of another format, a checkpoint that does not match the graph) carry a multi-line
message with graph node names and stack traces. `one_line` keeps what the user must fix, in one line,
and rewords the messages whose TensorFlow wording does not say it.

Not here: raising the errors (the checks live next to the data they check: `pipelines.config`,
`datasets.decoders`, the `pipelines.inputs.*_input` modules); printing them (`pipelines.cli.main`).
"""
import re
import sys

_CUT = ('\n\t [[', '\n\n\t [[', '\n [[', '\n\nOriginal stack trace', '\nOriginal stack trace',
        '\n\nErrors may have originated', '\n\n\n', '\n\t\n')
_FUNCTION_NODE = re.compile(r'\{\{function_node [^}]*\}\}\s*')
_OP_SUFFIX = re.compile(r'\s*\[Op:[^\]]*\]')
_MISSING_FEATURE = re.compile(r'Feature: (\S+) \(data type: (\w+)\) is required but could not be found')
_MISSING_KEY = re.compile(r'Key (\S+) not found in checkpoint')
_SHAPE = re.compile(r'(Assign requires shapes of both tensors to match[^\n]*|tensor_name = [^\n]*does not match '
                    r'the shape stored in checkpoint[^\n]*)')


def user_errors():
  """The exception classes the CLI reports as one line (exit 2): config, value, I/O and TensorFlow errors."""
  from pipelines import config_lib  # pylint: disable=g-import-not-at-top
  classes = [config_lib.ConfigError, ValueError, IOError, OSError]
  if 'tensorflow' in sys.modules:  # a TensorFlow error can only come from a command that imported it
    import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
    classes.append(tf.errors.OpError)
    from datasets import tfrecord  # pylint: disable=g-import-not-at-top
    classes.append(tfrecord.ConversionError)
  return tuple(classes)


def _squash(text):
  return re.sub(r'\s+', ' ', text).strip()


def _op_message(error):
  text = getattr(error, 'message', None) or str(error)
  text = _FUNCTION_NODE.sub('', text)
  for marker in _CUT:
    if marker in text:
      text = text.split(marker)[0]
  return _OP_SUFFIX.sub('', text)


def _assertion(text):
  """`assertion failed: [a] [b'x'] [[1 2]]` (tf.Assert's format) -> `a x [1 2]`."""
  body = text.split('assertion failed:', 1)[1].strip()
  parts = re.findall(r"\[((?:[^\[\]]|\[[^\[\]]*\])*)\]", body)
  cleaned = []
  for part in parts:
    part = re.sub(r"^b'(.*)'$", r'\1', part.strip())
    cleaned.append(part)
  return ' '.join(cleaned) if cleaned else body


def describe_op_error(error):
  """One line for a `tf.errors.OpError` naming what to fix."""
  text = _op_message(error)
  found = _MISSING_FEATURE.search(text)
  if found:
    return ('a record has no feature %r (%s), which this task\'s record format requires: data.train_files / '
            'data.eval_files must hold records of the task\'s format (README: TFRecord formats)'
            % (found.group(1), found.group(2)))
  if 'not found in checkpoint' in text or 'Restoring from checkpoint failed' in text or _SHAPE.search(text):
    key, shape = _MISSING_KEY.search(text), _SHAPE.search(text)
    detail = ('variable %s is not in it' % key.group(1) if key else
              _squash(shape.group(1)) if shape else _squash(text.splitlines()[0]))
    return ('the checkpoint does not match the model this config builds (%s): use the config it was '
            'trained with (model.*, the task section: num_classes, image_size, ...) or another --model-dir / '
            '--checkpoint' % detail)
  if 'assertion failed:' in text:
    return _squash(_assertion(text))
  if 'corrupted record' in text or type(error).__name__ == 'DataLossError':
    return ('corrupt TFRecord data (%s): a file matched by data.train_files / data.eval_files is truncated or '
            'damaged; re-create it' % _squash(text))
  if 'Unknown image file format' in text or 'Invalid JPEG data' in text or 'Invalid PNG data' in text:
    return ('an image could not be decoded (%s): records must hold JPEG/PNG/GIF/BMP images in image/encoded, '
            'image files passed to predict must be images' % _squash(text))
  return '%s: %s' % (type(error).__name__, _squash(text))


def one_line(error):
  """The `error: ...` text of any exception in `user_errors()`."""
  if 'tensorflow' in sys.modules:
    import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
    if isinstance(error, tf.errors.OpError):
      return describe_op_error(error)
  return _squash(str(error))
