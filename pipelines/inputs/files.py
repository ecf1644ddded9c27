"""The files a config names, checked before any graph is built: records, labels file, warm-start checkpoint.

`check_files(config, mode)` raises `config_lib.ConfigError` naming the key (`data.train_files`, ...; a
multitask member's as `multitask.<task>.data...`) when a file or glob the mode needs is unset or matches
nothing, and `check_num_classes` when the task section's `num_classes` disagrees with its labels file (the
section's `NUM_CLASSES_RULE`). Paths go through tf.io.gfile (gs://...).

Not here: reading the records (`pipelines.inputs.*_input`), the schema (`pipelines.config`).
"""
from pipelines import config_lib


# Which data keys each mode needs; checked before a graph is built.
_FILES_FOR_MODE = {'train': ('data.train_files',), 'eval': ('data.eval_files',),
                   'train_and_eval': ('data.train_files', 'data.eval_files')}


def check_files(config, mode, source=''):
  """Raises ConfigError naming the key if a file/glob the mode needs is unset or matches nothing."""
  members = config.member_configs()
  if members[0][0] is not None:
    for name, member in members:
      try:
        check_files(member, mode, source)
      except config_lib.ConfigError as e:
        raise config_lib.ConfigError(source, config.section().member_key(name, e.key), e.message)
    return
  for key in _FILES_FOR_MODE.get(mode, ()):
    pattern = getattr(config.data, key.split('.')[1])
    if not pattern:
      raise config_lib.ConfigError(source, key, 'is required for %s' % mode)
    if not _glob(pattern):
      raise config_lib.ConfigError(source, key, 'no file matches %r' % pattern)
  labels = config.data.labels_file
  if labels and not _glob(labels):
    raise config_lib.ConfigError(source, 'data.labels_file', 'file not found: %r' % labels)
  if labels:
    check_num_classes(config, source)
  checkpoint = config.train.warm_start.checkpoint
  if mode in ('train', 'train_and_eval') and checkpoint and not (
      _glob(checkpoint) or _glob(checkpoint + '.index') or _glob(checkpoint + '*')):
    raise config_lib.ConfigError(source, 'train.warm_start.checkpoint', 'no checkpoint at %r' % checkpoint)


def _glob(pattern):
  """tf.io.gfile.glob (local paths, gs://, ...); TensorFlow is imported only when a file is checked."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  try:
    return tf.io.gfile.glob(pattern)
  except tf.errors.OpError:
    return []


def check_num_classes(config, source=''):
  """Raises ConfigError naming `<task>.num_classes` and `data.labels_file` when the two disagree.

  A task section with a `NUM_CLASSES_RULE` (extra, meaning) needs num_classes = largest label id + extra.
  """
  from pipelines.tasks import labels as labels_lib  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  section = config.section()
  rule = getattr(section, 'NUM_CLASSES_RULE', None)
  if rule is None:
    return
  path = config.data.labels_file
  try:
    expected, why = labels_lib.expected_num_classes(rule, path)
  except ValueError as e:
    raise config_lib.ConfigError(source, 'data.labels_file', str(e))
  if section.num_classes != expected:
    raise config_lib.ConfigError(source, '%s.num_classes' % config.task,
                                 '%d disagrees with data.labels_file %r, which needs %d (%s)'
                                 % (section.num_classes, path, expected, why))
