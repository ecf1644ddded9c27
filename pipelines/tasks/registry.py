"""Task name -> task class and config section: the one table of the tasks there are.

A config's `task:` value is looked up here, and nowhere else: generic code (runner, export, predict,
render, demo, the multi-task model) asks the task object (`pipelines.tasks.base.Task`) what to do. Adding a
task is one module with its class and one `register` call (README "Adding a task"):

    registry.register('regression', RegressionTask, RegressionConfig)

The YAML section of a task has the task's name. The built-in tasks are registered below by import path,
so this module imports no TensorFlow and loading a config does not import the task modules; a task's
module is imported when its class is first needed.

Not here: what a task does (its class), the shared config sections (`pipelines.config`).
"""
import collections
import importlib

_Entry = collections.namedtuple('_Entry', ['task', 'section', 'portable'])
_REGISTRY = collections.OrderedDict()


def register(name, task, section=None, portable=None):
  """Registers (or replaces) task `name`.

  Args:
    name: str, the config's `task:` value and the name of its YAML section.
    task: a `base.Task` subclass, or its 'module:Class' path (imported when first used).
    section: the dataclass of the task's YAML section (or its 'module:Class' path); None for a task whose
      config has no section of its own. Built-in sections are fields of `pipelines.config.Config`; the
      section of a task registered elsewhere is an extension section of it (`Config.extension_types`).
    portable: the task's TensorFlow-free half (a `pipelines.tasks.portable.PortableTask` subclass, or its
      'module:Class' path) that predicts with exported TFLite / ONNX models where TensorFlow is not
      installed; None when the task class is the only one (predicting then needs TensorFlow).

  Returns:
    `task`.
  """
  if not isinstance(name, str) or not name.isidentifier():
    raise ValueError('task name %r: must be a Python identifier (it is also a YAML section)' % (name,))
  _REGISTRY[name] = _Entry(task, section, portable)
  return task


def unregister(name):
  """Removes task `name` (tests that register a task of their own clean up with it)."""
  _REGISTRY.pop(name, None)


def names():
  """Registered task names, in registration order."""
  return list(_REGISTRY)


def check_name(name, key='task'):
  """Raises ValueError('<key>: unknown ...') listing the valid names unless `name` is registered."""
  if name not in _REGISTRY:
    raise ValueError('%s: unknown %r (valid: %s)' % (key, name, ', '.join(names())))


def _resolve(target):
  if not isinstance(target, str):
    return target
  module, attribute = target.split(':')
  return getattr(importlib.import_module(module), attribute)


def task_class(name):
  """The task class registered as `name` (imports its module); ValueError listing the names otherwise."""
  check_name(name)
  cls = _resolve(_REGISTRY[name].task)
  if getattr(cls, 'name', None) != name:
    raise ValueError('task %r: its class %s has name %r; a task class names itself (class attribute `name`)'
                     % (name, cls.__name__, getattr(cls, 'name', None)))
  return cls


def task_classes():
  """Every registered task class, in registration order."""
  return [task_class(name) for name in names()]


def portable_class(name):
  """Task `name`'s TensorFlow-free class (`pipelines.tasks.portable`); ValueError in one line if it has none."""
  check_name(name)
  entry = _REGISTRY[name]
  if entry.portable is None:
    raise ValueError('task %r has no TensorFlow-free predictor (registered without `portable`): predicting '
                     'with it needs TensorFlow' % name)
  return _resolve(entry.portable)


def prediction_class(name):
  """The class that describes and summarizes task `name`'s predictions: its TF-free class where it has one
  (importing no TensorFlow), else its task class."""
  check_name(name)
  return _resolve(_REGISTRY[name].portable) if _REGISTRY[name].portable is not None else task_class(name)


def prediction_classes():
  """`prediction_class` of every registered task, in registration order."""
  return [prediction_class(name) for name in names()]


def section_type(name):
  """The dataclass of task `name`'s YAML section, or None (unknown task, or one without a section)."""
  entry = _REGISTRY.get(name)
  return None if entry is None or entry.section is None else _resolve(entry.section)


def make_task(config, **kwargs):
  """The task object of `config` (`config.task`'s class built on the config)."""
  return task_class(config.task)(config, **kwargs)


# The built-in tasks (their modules import TensorFlow: by path, imported when first used; their TF-free halves
# in `pipelines.tasks.portable`).
register('classification', 'pipelines.tasks.classification:ClassificationTask',
         'pipelines.tasks.sections:ClassificationConfig', 'pipelines.tasks.portable:Classification')
register('detection', 'pipelines.tasks.detection:DetectionTask', 'pipelines.tasks.sections:DetectionConfig',
         'pipelines.tasks.portable:Detection')
register('segmentation', 'pipelines.tasks.segmentation:SegmentationTask',
         'pipelines.tasks.sections:SegmentationConfig', 'pipelines.tasks.portable:Segmentation')
register('multitask', 'pipelines.tasks.multitask:MultitaskTask', 'pipelines.config:MultitaskConfig',
         'pipelines.tasks.portable:Multitask')
