"""Issue #20 item 1: every training process of a cluster reads its own part of the data, with its own seeds.

The loopback clusters of `tests/pipelines/training/test_distributed_training.py` check the logged shards of
real chief / worker processes; these tests check the plan, the TF_CONFIG numbering, and that the workers'
first batches differ while a single process with a fixed seed stays reproducible.
"""
import collections
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from datasets import tfrecord
from pipelines.inputs import classification_input
from pipelines.inputs import input_common
from tests.conftest import config_from_text
from tests.conftest import run_in_child
from tests.conftest import tiny_imagenet_records

TRAIN, EVAL = tf.estimator.ModeKeys.TRAIN, tf.estimator.ModeKeys.EVAL
Context = collections.namedtuple('Context', ['input_pipeline_id', 'num_input_pipelines'])


def test_shard_plan_by_file_then_by_record():
  files = ['a', 'b', 'c', 'd', 'e']
  assert tfrecord.shard_plan(files, 0, 1) == (files, False)
  assert tfrecord.shard_plan(files, 0, 2) == (['a', 'c', 'e'], False)
  assert tfrecord.shard_plan(files, 1, 2) == (['b', 'd'], False)
  assert tfrecord.shard_plan(['a'], 1, 2) == (['a'], True)
  with pytest.raises(ValueError, match='input shard 2 of 2'):
    tfrecord.shard_plan(files, 2, 2)


def _tf_config(monkeypatch, task_type, index, chief=1, workers=1):
  cluster = {'worker': ['127.0.0.1:%d' % (2000 + i) for i in range(workers)], 'ps': ['127.0.0.1:3000']}
  if chief:
    cluster['chief'] = ['127.0.0.1:1000']
  monkeypatch.setenv('TF_CONFIG', json.dumps({'cluster': cluster, 'task': {'type': task_type, 'index': index}}))


def _config(tmp_path):
  records = tiny_imagenet_records(tmp_path, 3)
  return config_from_text(tmp_path, '''
task: classification
classification: {image_size: 32, num_classes: 4}
data: {train_files: %s/train-*, eval_files: %s/train-*, shuffle_buffer: 4, num_parallel_calls: 1}
train: {batch_size: 4, steps: 1, learning_rate: {schedule: constant}}
runtime: {seed: 3}
''' % (records, records))


@pytest.fixture
def config(tmp_path):
  return _config(tmp_path)


def test_cluster_tasks_are_numbered_chief_first(config, monkeypatch):
  _tf_config(monkeypatch, 'chief', 0, workers=2)
  assert input_common.input_shard(config, TRAIN) == (0, 3)
  _tf_config(monkeypatch, 'worker', 1, workers=2)
  assert input_common.input_shard(config, TRAIN) == (2, 3)
  assert input_common.input_shard(config, EVAL) == (0, 1)  # evaluation reads the whole split
  _tf_config(monkeypatch, 'worker', 1, chief=0, workers=2)  # a worker-only cluster: worker 0 is the chief
  assert input_common.input_shard(config, TRAIN) == (1, 2)
  for task_type in ('ps', 'evaluator'):
    _tf_config(monkeypatch, task_type, 0)
    assert input_common.input_shard(config, TRAIN) == (0, 1)
  monkeypatch.delenv('TF_CONFIG')
  assert input_common.input_shard(config, TRAIN) == (0, 1)
  # The strategy's input context wins (multi_worker_mirrored).
  assert input_common.input_shard(config, TRAIN, Context(1, 4)) == (1, 4)
  assert input_common.for_pipeline(config, TRAIN, Context(1, 4))[0].runtime.seed == 3 + input_common.SEED_STRIDE
  assert input_common.for_pipeline(config, TRAIN, Context(0, 4))[0].runtime.seed == 3


_OPEN_SESSIONS = []


def _first_batch(config, input_context=None):
  """The first training batch, read in a session that is never closed: TF 1.15 can crash (SIGSEGV) in
  Session.close while the pipeline's threads are still filling its prefetch buffer, so the reading runs in
  a child process (`first_batches`) that leaves with os._exit."""
  with tf.Graph().as_default():
    features, labels = tf.data.make_one_shot_iterator(
        classification_input.dataset(config, TRAIN, input_context=input_context)).get_next()
    session = tf.Session()
    _OPEN_SESSIONS.append(session)
    return session.run([features['image'], labels])


def test_workers_read_different_batches_and_one_process_is_reproducible(tmp_path):
  out = run_in_child('tests.pipelines.inputs.test_sharding', 'first_batches', tmp_path)
  assert 'input: shard 1 of 2 (1 of 2 files)' in out and 'input: shard 2 of 2 (1 of 2 files)' in out, out[-3000:]
  assert 'FIRST BATCHES OK' in out, out[-3000:]


def first_batches(tmp_dir):
  import logging  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stdout)
  logging.getLogger('mnv2').setLevel(logging.INFO)
  config = _config(pathlib.Path(tmp_dir))
  chief, worker = _first_batch(config, Context(0, 2)), _first_batch(config, Context(1, 2))
  assert not np.allclose(chief[0], worker[0])
  again = _first_batch(config, Context(0, 2))
  np.testing.assert_array_equal(chief[0], again[0])
  np.testing.assert_array_equal(_first_batch(config)[0], _first_batch(config)[0])
  print('FIRST BATCHES OK')
  sys.stdout.flush()
  os._exit(0)  # pylint: disable=protected-access  (no Session.close, see _first_batch)


def test_fewer_files_than_workers_shards_by_record(config, tmp_path, caplog):
  import dataclasses  # pylint: disable=g-import-not-at-top
  one = sorted(tf.io.gfile.glob(config.data.train_files))[0]
  single = dataclasses.replace(config, data=dataclasses.replace(config.data, train_files=one, shuffle_buffer=1))
  total = sum(1 for _ in tf.io.tf_record_iterator(one))
  seen = []
  for index in range(2):
    with tf.Graph().as_default():
      data = tfrecord.read_dataset(one, lambda r: r, None, 1, True, shuffle_buffer=1, seed=1, shard=(index, 2),
                                   repeat=False)
      element = tf.data.make_one_shot_iterator(data).get_next()
      with tf.Session() as session:
        part = []
        while True:
          try:
            part.append(session.run(element)[0])
          except tf.errors.OutOfRangeError:
            break
    seen.append(set(part))
  assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == total
  caplog.set_level('INFO', logger='mnv2')
  with tf.Graph().as_default():  # the plan is logged when the pipeline is built
    classification_input.dataset(single, TRAIN, input_context=Context(1, 2))
  assert any('keeps every 2-th record' in r.getMessage() for r in caplog.records)
  assert os.path.basename(one).startswith('train-')
