"""Tests for datasets.shard_writer: sharding, resuming, temp-file hygiene and error reporting."""
import glob
import os

import pytest
import tensorflow.compat.v1 as tf

from datasets import shard_writer
from datasets import tfrecord


def _encode(item):
  """Module-level (picklable) encode_fn: items are (name, value); names starting 'bad' are bad input."""
  name, value = item
  if name.startswith('bad'):
    raise tfrecord.ConversionError(name, 'broken on purpose')
  if name.startswith('bug'):
    raise KeyError('oops')
  example = tf.train.Example(features=tf.train.Features(feature={
      'name': tfrecord.bytes_feature(name), 'value': tfrecord.int64_feature(value)}))
  return [example.SerializeToString()]


def _items(n, bad=()):
  return [('%s-%d' % ('bad' if i in bad else 'img', i), i) for i in range(n)]


def _values(path):
  out = []
  for record in tf.io.tf_record_iterator(path):
    out.append(tf.train.Example.FromString(record).features.feature['value'].int64_list.value[0])
  return out


def _shards(directory):
  return sorted(p for p in glob.glob(os.path.join(directory, 'train-*')) if '.tmp-' not in p)


def test_write_sharded_two_workers_then_resume(tmp_path):
  out = str(tmp_path)
  stats = shard_writer.write_sharded(_items(10), _encode, out, 'train', 3, num_workers=2)
  assert stats == {'written': 10, 'skipped': 0, 'errors': [], 'shards_skipped': 0}
  shards = _shards(out)
  assert [os.path.basename(s) for s in shards] == ['train-0000%d-of-00003' % i for i in range(3)]
  per_shard = [_values(s) for s in shards]
  assert [len(v) for v in per_shard] == [3, 3, 4]  # contiguous split of 10 items: 10*i//3
  assert sorted(sum(per_shard, [])) == list(range(10))
  assert sum(per_shard, []) != list(range(10))  # shuffled before splitting
  # Resume: shard 1 lost, plus leftovers of a killed run; only shard 1 is rewritten, identically.
  os.remove(shards[1])
  stale = [shards[1] + '.tmp-99999', shards[2] + '.tmp-99998']
  for path in stale:
    with open(path, 'wb') as f:
      f.write(b'partial garbage')
  stats = shard_writer.write_sharded(_items(10), _encode, out, 'train', 3, num_workers=2)
  assert stats['shards_skipped'] == 2 and stats['written'] == 3
  assert [_values(s) for s in _shards(out)] == per_shard
  assert not os.path.exists(stale[0])  # a rewritten shard cleans its leftovers


def test_write_sharded_skip_reports_path(tmp_path, capsys):
  stats = shard_writer.write_sharded(_items(8, bad=(5,)), _encode, str(tmp_path), 'train', 2, num_workers=2)
  assert stats['written'] == 7 and stats['skipped'] == 1
  assert stats['errors'] == [('bad-5', 'broken on purpose')]
  assert 'bad-5: broken on purpose' in capsys.readouterr().err
  assert sorted(sum([_values(s) for s in _shards(str(tmp_path))], [])) == [0, 1, 2, 3, 4, 6, 7]


@pytest.mark.parametrize('num_workers', [1, 2])
def test_write_sharded_fail_names_path_and_leaves_no_partial_shard(tmp_path, num_workers):
  with pytest.raises(tfrecord.ConversionError, match='bad-5') as info:
    shard_writer.write_sharded(_items(8, bad=(5,)), _encode, str(tmp_path), 'train', 2,
                               num_workers=num_workers, on_error='fail')
  assert info.value.path == 'bad-5'
  names = os.listdir(str(tmp_path))
  assert not any('.tmp-' in n for n in names)
  # The shard holding bad-5 was not finished; only a complete shard may exist.
  for name in names:
    assert 5 not in _values(os.path.join(str(tmp_path), name))


def test_write_sharded_unexpected_error_names_item(tmp_path):
  items = _items(4) + [('bug-9', 9)]
  with pytest.raises(RuntimeError, match=r'bug-9.*KeyError'):
    shard_writer.write_sharded(items, _encode, str(tmp_path), 'train', 2, num_workers=2)
