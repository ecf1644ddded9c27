"""Class names and class counts from a label file, for every task (the one reader the tasks share).

A task's `num_classes` means something different per task (see `pipelines.config`): classification and
segmentation count the classes including background 0 (largest id + 1), detection counts the object
classes without background, which the Object Detection API makes equal to the largest label-map id.
`expected_num_classes` turns a label file into that number, so a config that disagrees with its own
label file fails before any graph is built instead of training a wrong-sized head.

Not here: writing label files (`datasets.tfrecord`, `datasets.label_maps`), reading labels from records.
"""
from datasets import label_maps
from datasets import tfrecord

def read_labels(labels_file):
  """dict label id -> name from an OD API `label_map.pbtxt` or a TF-Slim `labels.txt`; {} for None."""
  if not labels_file:
    return {}
  if labels_file.endswith('.pbtxt'):
    return label_maps.read_label_map(labels_file)
  return tfrecord.read_label_file(labels_file)


def class_names(labels_file, num_classes, first=0):
  """Names of ids first..num_classes - 1 + first from `labels_file`; ids it does not name become str(id)."""
  names = read_labels(labels_file)
  return [names.get(i, str(i)) for i in range(first, num_classes + first)]


def expected_num_classes(rule, labels_file):
  """(num_classes a task needs for `labels_file`, an explanation) -- see the module docstring.

  Args:
    rule: (extra, meaning): the task section's `NUM_CLASSES_RULE`, num_classes = largest id + extra.
    labels_file: a label file (`read_labels`).
  """
  labels = read_labels(labels_file)
  if not labels:
    raise ValueError('%s: no labels' % labels_file)
  extra, meaning = rule
  largest = max(labels)
  return largest + extra, 'largest id %d; %s' % (largest, meaning)
