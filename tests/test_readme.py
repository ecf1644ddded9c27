"""The README is the first thing a user reads: it must document every config key and CLI command."""
import dataclasses
import os
import typing

from pipelines.cli import main as cli
from pipelines import config as schema
from pipelines import config_lib

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'README.md')


def _keys(cls, prefix=''):
  hints = typing.get_type_hints(cls)
  for field in dataclasses.fields(cls):
    if field.name == config_lib.EXTENSIONS:  # not a YAML key: where registered tasks' sections are kept
      continue
    if dataclasses.is_dataclass(hints[field.name]):
      for key in _keys(hints[field.name], prefix + field.name + '.'):
        yield key
    else:
      yield prefix + field.name


def test_every_config_key_is_documented():
  with open(README) as f:
    text = f.read()
  # A row documents `section.key` in full or, grouped with its siblings, as `.key`.
  missing = [key for key in _keys(schema.Config)
             if '`%s`' % key not in text and '`.%s`' % key.rsplit('.', 1)[-1] not in text]
  assert not missing


def test_every_command_is_documented():
  with open(README) as f:
    text = f.read()
  assert [name for name in cli._COMMANDS if '`mnv2 %s' % name not in text] == []  # pylint: disable=protected-access
  for dataset in ('imagenet', 'coco', 'voc'):
    assert '`mnv2 convert %s' % dataset in text
  assert 'make demo' in text and 'make test' in text
