"""Typed, strict YAML configs: dataclass schemas, loading, `--set` overrides, validation, saving.

Precedence: dataclass defaults -> YAML file -> `--set dotted.key=value` overrides -> `validate()` -> frozen.
Every error names the dotted key and the YAML file it came from, and is raised before any graph is built.
This module knows nothing about the schema itself (see `pipelines.config`); it only maps nested dicts onto
dataclasses and back.
"""
import copy
import dataclasses
import typing

import yaml

from pipelines import tf_optional


class ConfigError(ValueError):
  """A config problem, with the file and the dotted key in the message."""

  def __init__(self, source, key, message):
    self.source, self.key, self.message = source, key, message
    where = '%s: ' % source if source else ''
    super(ConfigError, self).__init__('%s%s: %s' % (where, key or '<root>', message))


# ------------------------------------------------------------------------------ rules for validate()
# A schema's `validate()` raises ValueError('key: message'); these are the rules every section uses.


def check_positive(name, value):
  if value is None or value <= 0:
    raise ValueError('%s: must be > 0, got %r' % (name, value))


def check_one_of(name, value, valid):
  if value not in valid:
    raise ValueError('%s: %r is not one of %s' % (name, value, ', '.join(valid)))


def check_keep_prob(name, value):
  if not 0 < value <= 1:
    raise ValueError('%s: must be in (0, 1], got %r' % (name, value))


# ------------------------------------------------------------------------------ dicts <-> dataclasses


def _origin(tp):
  return getattr(tp, '__origin__', None)


def _is_optional(tp):
  return _origin(tp) is typing.Union and type(None) in tp.__args__


def _strip_optional(tp):
  args = [a for a in tp.__args__ if a is not type(None)]
  return args[0]


def _type_name(tp):
  if dataclasses.is_dataclass(tp):
    return 'mapping'
  if _is_optional(tp):
    return '%s or null' % _type_name(_strip_optional(tp))
  if _origin(tp) in (list, typing.List):
    return 'list of %s' % _type_name(tp.__args__[0])
  if _origin(tp) in (dict, typing.Dict):
    return 'mapping of %s' % _type_name(tp.__args__[1])
  return getattr(tp, '__name__', str(tp))


def _convert(value, tp, key, source):
  """Checks `value` against type `tp` and returns it converted (ints accepted for floats)."""
  if _is_optional(tp):
    return None if value is None else _convert(value, _strip_optional(tp), key, source)
  if dataclasses.is_dataclass(tp):
    return from_dict(tp, value, source, key)
  if _origin(tp) in (list, typing.List):
    if not isinstance(value, (list, tuple)):
      raise ConfigError(source, key, 'expected %s, got %r' % (_type_name(tp), value))
    return [_convert(v, tp.__args__[0], '%s[%d]' % (key, i), source) for i, v in enumerate(value)]
  if _origin(tp) in (dict, typing.Dict):
    if not isinstance(value, dict):
      raise ConfigError(source, key, 'expected %s, got %r' % (_type_name(tp), value))
    return {str(k): _convert(v, tp.__args__[1], '%s.%s' % (key, k), source) for k, v in value.items()}
  if tp is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if tp in (int, float) and isinstance(value, bool):
    raise ConfigError(source, key, 'expected %s, got %r' % (tp.__name__, value))
  if not isinstance(value, tp):
    raise ConfigError(source, key, 'expected %s, got %r' % (_type_name(tp), value))
  return value


# A schema may hold sections that are not its fields (a registered task's): a field of this name (a dict
# section name -> section) stores them, and the class method `extension_types()` gives their dataclasses.
# In YAML, and in `to_dict`, they are sections like the others.
EXTENSIONS = 'extensions'


def _field_types(cls):
  """The keys a mapping for `cls` may hold -> their types (fields, plus extension sections)."""
  hints = typing.get_type_hints(cls)
  types = {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name != EXTENSIONS}
  extension_types = getattr(cls, 'extension_types', None)
  if extension_types is not None:
    types.update(extension_types())
  return types


def from_dict(cls, data, source='', prefix=''):
  """Builds dataclass `cls` from a nested dict; unknown keys and wrong types raise ConfigError."""
  if data is None:
    data = {}
  if not isinstance(data, dict):
    raise ConfigError(source, prefix, 'expected a mapping, got %r' % (data,))
  types = _field_types(cls)
  unknown = sorted(set(data) - set(types))
  if unknown:
    raise ConfigError(source, _join(prefix, unknown[0]),
                      'unknown key (valid keys here: %s)' % ', '.join(sorted(types)))
  kwargs = {name: _convert(value, types[name], _join(prefix, name), source) for name, value in data.items()}
  if getattr(cls, 'extension_types', None) is not None:
    kwargs[EXTENSIONS] = dict((name, kwargs.pop(name)) for name in cls.extension_types() if name in kwargs)
  return cls(**kwargs)


def _join(prefix, name):
  return '%s.%s' % (prefix, name) if prefix else name


def to_dict(obj):
  """Nested dict of a config; extension sections at the top level like the others."""
  data = dataclasses.asdict(obj)
  data.update(data.pop(EXTENSIONS, None) or {})
  return data


def parse_override(text, source='--set'):
  """'a.b.c=value' -> (['a', 'b', 'c'], parsed YAML value)."""
  if '=' not in text:
    raise ConfigError(source, text, "override must look like dotted.key=value")
  key, raw = text.split('=', 1)
  key = key.strip()
  if not key or any(not part for part in key.split('.')):
    raise ConfigError(source, key, 'empty key in override %r' % text)
  try:
    value = yaml.safe_load(raw) if raw.strip() else ''
  except yaml.YAMLError as e:
    raise ConfigError(source, key, 'cannot parse value %r: %s' % (raw, e))
  return key.split('.'), value


def apply_override(data, path, value, cls, source):
  """Sets `value` at `path` in the nested dict `data`, checking each key against schema `cls`."""
  node, tp = data, cls
  for depth, part in enumerate(path):
    dotted = '.'.join(path[:depth + 1])
    if not dataclasses.is_dataclass(tp):
      raise ConfigError(source, dotted, 'is not a section: cannot set a sub-key')
    types = _field_types(tp)
    if part not in types:
      raise ConfigError(source, dotted, 'unknown key (valid keys here: %s)' % ', '.join(sorted(types)))
    tp = types[part]
    if _is_optional(tp) and dataclasses.is_dataclass(_strip_optional(tp)):
      tp = _strip_optional(tp)
    if depth == len(path) - 1:
      node[part] = value
    else:
      if not isinstance(node.get(part), dict):
        node[part] = {}
      node = node[part]


def _check_unread(data, from_file, applied, unread_sections, path):
  """Raises ConfigError at the first key of a section `unread_sections(data)` rejects, naming its origin."""
  for section, reason in sorted(unread_sections(data).items()):
    for keys, source in applied:
      if keys[0] == section:
        raise ConfigError(source, '.'.join(keys), reason)
    if section in from_file:
      value = from_file[section]
      first = sorted(value)[0] if isinstance(value, dict) and value else None
      raise ConfigError(path, _join(section, first) if first else section, reason)


def load(cls, path, overrides=(), unread_sections=None):
  """Loads YAML `path` into dataclass `cls`, applies `overrides` ('k=v' strings), then validates.

  `unread_sections(data)`, if given, maps top-level sections the resolved data must not hold (e.g. the
  sections of other tasks) to the reason; a key in one of them is reported like an unknown key.

  Raises:
    ConfigError: missing/unparsable file, unknown key, a key the config does not read, wrong type, or a
      failed `validate()` rule.
  """
  gfile = tf_optional.files(path)
  if not gfile.exists(path) or gfile.isdir(path):
    raise ConfigError(path, None, 'config file not found')
  try:
    with gfile.GFile(path, 'r') as f:
      data = yaml.safe_load(f.read()) or {}
  except yaml.YAMLError as e:
    raise ConfigError(path, None, 'invalid YAML: %s' % e)
  if not isinstance(data, dict):
    raise ConfigError(path, None, 'expected a mapping at the top level, got %r' % (data,))
  from_file = copy.deepcopy(data)
  applied = []
  for text in overrides:
    source = '%s (--set %s)' % (path, text)
    keys, value = parse_override(text, source=source)
    apply_override(data, keys, value, cls, source)
    applied.append((keys, source))
  if unread_sections is not None:
    _check_unread(data, from_file, applied, unread_sections, path)
  config = from_dict(cls, data, source=path)
  validate(config, path)
  return config


def validate(config, source=''):
  """Runs `validate()` on the config and every nested section; a ValueError becomes a ConfigError."""
  def visit(obj, prefix):
    for f in dataclasses.fields(obj):
      value = getattr(obj, f.name)
      if dataclasses.is_dataclass(value):
        visit(value, _join(prefix, f.name))
      elif f.name == EXTENSIONS:
        for name, section in sorted(value.items()):
          visit(section, _join(prefix, name))
    check = getattr(obj, 'validate', None)
    if check is not None:
      try:
        check()
      except ConfigError:
        raise
      except ValueError as e:
        # Rules raise ValueError('key: message'); attach the section path and the file.
        text = str(e)
        key, _, message = text.partition(': ')
        raise ConfigError(source, _join(prefix, key), message or text)
  visit(config, '')


def save(config, path):
  """Writes the resolved config as YAML (atomically) so a run can be reproduced exactly."""
  save_dict(to_dict(config), path)


def save_dict(data, path):
  """Writes a nested dict as YAML via a temporary name and a rename."""
  from datasets import tfrecord  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  tfrecord.atomic_write(path, yaml.safe_dump(data, default_flow_style=False, sort_keys=False))
