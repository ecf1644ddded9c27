"""Data for the three tasks, one job per module, told apart by name.

Converters (raw dataset -> TFRecords, with their feature keys): `imagenet`, `coco`, `voc`. Record decoders:
`decoders`. Preprocessing of one decoded example: `classification_preprocessing`,
`detection_preprocessing`, `segmentation_preprocessing`. Plumbing: `tfrecord` (features, shard names, the
tf.data reader), `shard_writer`, `label_maps`. Demo data: `shapes`, `shapes_render`.

Nothing here imports `heads` or `pipelines`: data flows datasets -> heads -> pipelines. The per-task input
pipelines (decode -> preprocess -> batch, from a config) are `pipelines.inputs.*_input`.
"""
from nets import compat  # noqa: F401  (tf-slim batch_norm shim for TF 2.15; see nets/compat.py)
