"""The data flow of DESIGN.md, checked on the sources: datasets -> heads -> pipelines, never back; heads are
functions of end_points (they never build the backbone); no task module imports another task's module."""
import ast
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ('classification', 'detection', 'segmentation')


def _imported_modules(path):
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):  # also imports inside functions
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      for alias in node.names:
        yield '%s.%s' % (node.module, alias.name)


def _sources(package):
  paths = sorted(glob.glob(os.path.join(ROOT, package, '**', '*.py'), recursive=True))
  assert len(paths) > 3
  return paths


@pytest.mark.parametrize('package,forbidden', [('datasets', ('heads', 'pipelines')), ('heads', ('pipelines',)),
                                               ('nets', ('heads', 'pipelines', 'datasets'))])
def test_lower_layers_do_not_import_higher_ones(package, forbidden):
  wrong = [(os.path.relpath(path, ROOT), module) for path in _sources(package)
           for module in _imported_modules(path) if module.split('.')[0] in forbidden]
  assert wrong == []


def test_heads_never_build_the_backbone():
  for path in _sources('heads'):
    with open(path) as f:
      text = f.read()
    assert 'mobilenet_base(' not in text and 'mobilenet_v2.mobilenet(' not in text, path


def test_task_modules_do_not_import_each_other():
  for task in TASKS:
    for path in (os.path.join('tasks', task + '.py'), os.path.join('inputs', task + '_input.py')):
      others = ['pipelines.tasks.%s' % other for other in TASKS if other != task]
      others += ['pipelines.inputs.%s_input' % other for other in TASKS if other != task]
      modules = list(_imported_modules(os.path.join(ROOT, 'pipelines', path)))
      assert [m for m in modules if any(m == o or m.startswith(o + '.') for o in others)] == [], path


def test_user_paths_go_through_gfile():
  """Issue #11: configs, records, labels, checkpoints, images and exports open through tf.io.gfile (gs://).

  The demo and the shapes generator write their own local scratch data and are exempt.
  """
  import re  # pylint: disable=g-import-not-at-top
  forbidden = re.compile(r'\bglob\.glob\(|(^|[^\w.])open\(|os\.path\.(isfile|exists|isdir)\(|'
                         r'os\.(listdir|makedirs|rename|remove)\(|io\.open\(')
  found = []
  for package in ('pipelines', 'datasets'):
    for path in _sources(package):
      if os.path.basename(path) in ('demo.py', 'shapes.py', 'shapes_render.py'):
        continue
      if os.path.relpath(path, ROOT) == os.path.join('pipelines', 'tf_optional.py'):
        continue  # tf.io.gfile's local-file stand-in where TensorFlow is not installed (remote paths refused)
      with open(path) as f:
        for number, line in enumerate(f, 1):
          if forbidden.search(line.split('#')[0]):
            found.append('%s:%d: %s' % (os.path.relpath(path, ROOT), number, line.strip()))
  assert not found, '\n'.join(found)


# Issue #19: the layout a reader navigates by folder names, and task logic on the task classes.
PRODUCT_PACKAGES = ('pipelines', 'heads', 'datasets', 'nets')
TASK_NAMES = TASKS + ('multitask',)
MAX_MODULE_LINES = 450


def _task_name_comparisons(path):
  """(line, source) of every comparison (==, !=, in, not in) with a task name's string literal."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  found = []
  for node in ast.walk(tree):
    if not isinstance(node, ast.Compare):
      continue
    operands = [node.left] + list(node.comparators)
    literals = []
    for operand in operands:
      elements = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
      literals += [e for e in elements if isinstance(e, ast.Constant) and e.value in TASK_NAMES]
      literals += [e for e in elements if type(e).__name__ == 'Str' and getattr(e, 's', None) in TASK_NAMES]
    if literals:
      found.append((node.lineno, ast.dump(node)[:80]))
  return found


def test_generic_code_never_compares_a_task_name():
  """Apart from the registry and config validation, code asks the task object (`pipelines.tasks.base`)."""
  allowed = (os.path.join('pipelines', 'tasks', 'registry.py'), os.path.join('pipelines', 'config.py'),
             os.path.join('pipelines', 'tasks', 'sections.py'))
  found = ['%s:%d' % (os.path.relpath(path, ROOT), line) for package in PRODUCT_PACKAGES
           for path in _sources(package) for line, _ in _task_name_comparisons(path)]
  assert [f for f in found if not f.startswith(allowed)] == []
  assert len(found) <= 6, found


def test_pipelines_is_grouped_by_role():
  top = [n for n in os.listdir(os.path.join(ROOT, 'pipelines')) if n.endswith('.py')]
  packages = [n for n in os.listdir(os.path.join(ROOT, 'pipelines'))
              if os.path.isfile(os.path.join(ROOT, 'pipelines', n, '__init__.py'))]
  # __init__, __main__, config, config_lib, errors, tf_optional: the cross-cutting modules every role uses.
  assert len(top) <= 6, sorted(top)
  assert {'tasks', 'inputs', 'evaluation', 'export', 'training', 'cli'} <= set(packages), packages


def test_no_product_module_is_over_450_lines():
  long = []
  for package in PRODUCT_PACKAGES:
    for path in _sources(package):
      with open(path) as f:
        count = sum(1 for _ in f)
      if count > MAX_MODULE_LINES:
        long.append('%s: %d lines' % (os.path.relpath(path, ROOT), count))
  assert long == []


def test_no_package_sets_the_environment_when_imported():
  for package in PRODUCT_PACKAGES:
    for path in _sources(package):
      if os.path.basename(path) == '__init__.py':
        with open(path) as f:
          assert 'os.environ' not in f.read(), path


def test_tests_mirror_the_packages():
  for role in ('tasks', 'inputs', 'evaluation', 'export', 'training', 'cli'):
    assert glob.glob(os.path.join(ROOT, 'tests', 'pipelines', role, 'test_*.py')), role
