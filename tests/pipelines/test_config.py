"""Config loading: round trip, strict keys and types, overrides, validate() rules, file checks."""
import dataclasses
import os

import pytest
import yaml

from pipelines import config as schema
from pipelines.tasks import registry
from pipelines import config_lib
from pipelines.inputs import files as input_files

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write(tmp_path, data, name='c.yaml'):
  path = str(tmp_path / name)
  with open(path, 'w') as f:
    yaml.safe_dump(data, f)
  return path


BASE = {'task': 'classification', 'data': {'num_train_examples': 100}, 'train': {'steps': 10}}


def test_paper_configs_load():
  for name in sorted(os.listdir(os.path.join(REPO, 'configs'))):
    config = schema.load(os.path.join(REPO, 'configs', name))
    assert config.task in registry.names()


def test_round_trip(tmp_path):
  config = schema.load(_write(tmp_path, BASE), ['train.learning_rate.base=0.1', 'classification.output_stride=16'])
  saved = str(tmp_path / 'saved.yaml')
  schema.save(config, saved)
  again = schema.load(saved)
  assert again == config
  assert again.train.learning_rate.base == 0.1 and again.classification.output_stride == 16
  with open(saved) as f:
    assert set(yaml.safe_load(f)) == {'task', 'model', 'data', 'train', 'eval', 'runtime', 'classification'}


@pytest.mark.parametrize('data,key', [
    (dict(BASE, modle={}), 'modle'),
    (dict(BASE, train={'steps': 10, 'lr': 1}), 'train.lr'),
    (dict(BASE, train={'steps': 10, 'learning_rate': {'bsae': 1}}), 'train.learning_rate.bsae'),
])
def test_unknown_keys_name_dotted_key_and_file(tmp_path, data, key):
  path = _write(tmp_path, data)
  with pytest.raises(config_lib.ConfigError) as info:
    schema.load(path)
  assert key in str(info.value) and path in str(info.value) and 'unknown key' in str(info.value)


@pytest.mark.parametrize('override,key', [
    ('train.steps=ten', 'train.steps'),
    ('model.depth_multiplier=[1]', 'model.depth_multiplier'),
    ('train.batch_size=true', 'train.batch_size'),
    ('classification.output_stride=abc', 'classification.output_stride'),
])
def test_wrong_types(tmp_path, override, key):
  with pytest.raises(config_lib.ConfigError, match=key.replace('.', r'\.')):
    schema.load(_write(tmp_path, BASE), [override])


def test_int_accepted_for_float(tmp_path):
  assert schema.load(_write(tmp_path, BASE), ['train.learning_rate.base=1']).train.learning_rate.base == 1.0


@pytest.mark.parametrize('override,key', [
    ('model.depth_multiplier=0', 'model.depth_multiplier'),
    ('model.divisible_by=0', 'model.divisible_by'),
    ('model.weight_decay=-1', 'model.weight_decay'),
    ('model.bn_decay=1.0', 'model.bn_decay'),
    ('classification.output_stride=4', 'classification.output_stride'),
    ('classification.dropout_keep_prob=0', 'classification.dropout_keep_prob'),
    ('classification.image_size=0', 'classification.image_size'),
    ('classification.num_classes=0', 'classification.num_classes'),
    ('detection.num_classes=0', 'detection.num_classes'),
    ('detection.image_size=0', 'detection.image_size'),
    ('detection.min_depth=0', 'detection.min_depth'),
    ('segmentation.num_classes=0', 'segmentation.num_classes'),
    ('segmentation.output_stride=4', 'segmentation.output_stride'),
    ('segmentation.dropout_keep_prob=1.5', 'segmentation.dropout_keep_prob'),
    ('train.steps=0', 'train.steps'),
    ('train.batch_size=-2', 'train.batch_size'),
    ('train.optimizer=lbfgs', 'train.optimizer'),
    ('train.label_smoothing=1.5', 'train.label_smoothing'),
    ('train.moving_average_decay=1.0', 'train.moving_average_decay'),
    ('train.learning_rate.schedule=step', 'train.learning_rate.schedule'),
    ('train.learning_rate.base=0', 'train.learning_rate.base'),
    ('train.learning_rate.decay_rate=2', 'train.learning_rate.decay_rate'),
    ('train.learning_rate.decay_epochs=0', 'train.learning_rate.decay_epochs'),
    ('train.learning_rate.warmup_steps=-1', 'train.learning_rate.warmup_steps'),
    ('data.num_train_examples=0', 'data.num_train_examples'),
    ('data.prefetch=0', 'data.prefetch'),
    ('data.num_parallel_calls=-1', 'data.num_parallel_calls'),
    ('eval.batch_size=0', 'eval.batch_size'),
    ('eval.steps=0', 'eval.steps'),
    ('runtime.save_checkpoints_steps=0', 'runtime.save_checkpoints_steps'),
    ('task=regression', 'task'),
    ('classification.top_k=0', 'classification.top_k'),
    ('classification.preprocessing.area_range=[0, 1]', 'classification.preprocessing.area_range'),
    ('classification.preprocessing.color_distortion=strong', 'classification.preprocessing.color_distortion'),
    ('classification.preprocessing.eval_central_fraction=0', 'classification.preprocessing.eval_central_fraction'),
    ('detection.classification_loss=focal', 'detection.classification_loss'),
    ('detection.iou_threshold=0', 'detection.iou_threshold'),
    ('detection.unmatched_threshold=0.7', 'detection.unmatched_threshold'),
    ('detection.max_objects=0', 'detection.max_objects'),
    ('detection.max_detections=0', 'detection.max_detections'),
    ('detection.hard_example_miner.min_negatives_per_image=-1', 'detection.hard_example_miner.min_negatives_per_image'),
    ('detection.hard_example_miner.iou_threshold=0', 'detection.hard_example_miner.iou_threshold'),
    ('detection.hard_example_miner.loss_type=focal', 'detection.hard_example_miner.loss_type'),
    ('detection.anchors.num_layers=4', 'detection.anchors.num_layers'),
    ('segmentation.crop_size=0', 'segmentation.crop_size'),
    ('segmentation.eval_crop_size=0', 'segmentation.eval_crop_size'),
    ('segmentation.min_scale=3', 'segmentation.min_scale'),
    ('segmentation.hard_pixel_top_k=0', 'segmentation.hard_pixel_top_k'),
    ('segmentation.eval_scales=[]', 'segmentation.eval_scales'),
])
def test_every_validate_rule_has_a_failing_example(tmp_path, override, key):
  section = key.split('.')[0]
  path = _write(tmp_path, dict(BASE, task=section) if section in registry.names() else BASE)
  with pytest.raises(config_lib.ConfigError) as info:
    schema.load(path, [override])
  assert key in str(info.value) and path in str(info.value)


def test_bad_override_syntax(tmp_path):
  path = _write(tmp_path, BASE)
  with pytest.raises(config_lib.ConfigError, match='dotted.key=value'):
    schema.load(path, ['train.steps'])
  with pytest.raises(config_lib.ConfigError, match='train.steps.x'):
    schema.load(path, ['train.steps.x=1'])


def test_missing_and_invalid_files(tmp_path):
  with pytest.raises(config_lib.ConfigError, match='not found'):
    schema.load(str(tmp_path / 'nope.yaml'))
  bad = tmp_path / 'bad.yaml'
  bad.write_text(u'task: [unclosed\n')
  with pytest.raises(config_lib.ConfigError, match='invalid YAML'):
    schema.load(str(bad))


def test_check_files_names_key(tmp_path):
  path = _write(tmp_path, dict(BASE, data={'num_train_examples': 1, 'train_files': str(tmp_path / 'x-*')}))
  config = schema.load(path)
  with pytest.raises(config_lib.ConfigError, match='data.train_files'):
    input_files.check_files(config, 'train', path)
  with pytest.raises(config_lib.ConfigError, match='data.eval_files'):
    input_files.check_files(config, 'eval', path)
  (tmp_path / 'x-0').write_text(u'')
  input_files.check_files(config, 'train', path)
  config = dataclasses.replace(config, train=dataclasses.replace(
      config.train, warm_start=schema.WarmStartConfig(checkpoint=str(tmp_path / 'missing.ckpt'))))
  with pytest.raises(config_lib.ConfigError, match='train.warm_start.checkpoint'):
    input_files.check_files(config, 'train', path)


def test_configs_are_frozen(tmp_path):
  config = schema.load(_write(tmp_path, BASE))
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.train.steps = 3


@pytest.mark.parametrize('task,override', [
    ('detection', 'model.output_stride=16'),  # moved to the tasks that read it: an unknown key everywhere
    ('detection', 'segmentation.output_stride=16'),
    ('classification', 'detection.max_objects=3'),
    ('segmentation', 'classification.image_size=64'),
])
def test_keys_the_task_does_not_read_are_errors(tmp_path, task, override):
  path = _write(tmp_path, dict(BASE, task=task))
  key = override.split('=')[0]
  with pytest.raises(config_lib.ConfigError) as info:
    schema.load(path, [override])
  assert key in str(info.value) and path in str(info.value)
  assert ('not read by task %r' % task) in str(info.value) or 'unknown key' in str(info.value)


def test_other_task_sections_in_the_file_are_errors(tmp_path):
  path = _write(tmp_path, dict(BASE, task='detection', segmentation={'aspp_rates': [6]}))
  with pytest.raises(config_lib.ConfigError, match=r"segmentation\.aspp_rates: not read by task 'detection'"):
    schema.load(path)
  # --set task=... re-targets the file, and then its own section is the one that must go.
  with pytest.raises(config_lib.ConfigError, match=r"detection\.max_objects: not read by task 'segmentation'"):
    schema.load(_write(tmp_path, dict(BASE, task='detection', detection={'max_objects': 3}), 'd.yaml'),
                ['task=segmentation'])


def test_paper_configs_state_only_keys_their_task_reads():
  config = schema.load(os.path.join(REPO, 'configs', 'ssdlite_mobilenet_v2_coco.yaml'))
  assert config.detection.num_classes == 90 and config.detection.image_size == 320
  config = schema.load(os.path.join(REPO, 'configs', 'deeplabv3_mobilenet_v2_voc.yaml'))
  assert config.segmentation.num_classes == 21 and config.segmentation.output_stride == 16


@pytest.mark.parametrize('task,labels,num_classes,expected', [
    ('classification', '0:background\n1:cat\n2:dog\n', 4, 3),
    ('segmentation', '0:background\n1:cat\n2:dog\n', 2, 3),
    ('detection', 'item { id: 1 name: "cat" }\nitem { id: 7 name: "dog" }\n', 2, 7),
])
def test_num_classes_must_agree_with_the_label_file(tmp_path, task, labels, num_classes, expected):
  label_path = tmp_path / ('label_map.pbtxt' if task == 'detection' else 'labels.txt')
  label_path.write_text(labels)
  data = dict(BASE, task=task, data={'num_train_examples': 1, 'labels_file': str(label_path)})
  path = _write(tmp_path, dict(data, **{task: {'num_classes': num_classes}}))
  with pytest.raises(config_lib.ConfigError) as info:
    input_files.check_files(schema.load(path), None, path)
  message = str(info.value)
  assert '%s.num_classes' % task in message and str(label_path) in message and 'needs %d' % expected in message
  input_files.check_files(schema.load(path, ['%s.num_classes=%d' % (task, expected)]), None, path)

