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
    for name in (task, task + '_input'):
      others = ['pipelines.%s' % other for other in TASKS if other != task]
      others += [o + '_input' for o in others]
      modules = list(_imported_modules(os.path.join(ROOT, 'pipelines', name + '.py')))
      assert [m for m in modules if any(m == o or m.startswith(o + '.') for o in others)] == [], name


def test_user_paths_go_through_gfile():
  """Issue #11: configs, records, labels, checkpoints, images and exports open through tf.io.gfile (gs://).

  The demo and the shapes generator write their own local scratch data and are exempt.
  """
  import re  # pylint: disable=g-import-not-at-top
  forbidden = re.compile(r'\bglob\.glob\(|(^|[^\w.])open\(|os\.path\.(isfile|exists|isdir)\(|'
                         r'os\.(listdir|makedirs|rename|remove)\(|io\.open\(')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  found = []
  for package in ('pipelines', 'datasets'):
    for name in sorted(os.listdir(os.path.join(root, package))):
      if not name.endswith('.py') or name in ('demo.py', 'shapes.py', 'shapes_render.py'):
        continue
      with open(os.path.join(root, package, name)) as f:
        for number, line in enumerate(f, 1):
          if forbidden.search(line.split('#')[0]):
            found.append('%s/%s:%d: %s' % (package, name, number, line.strip()))
  assert not found, '\n'.join(found)
