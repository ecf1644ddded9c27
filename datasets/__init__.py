"""Converters (raw dataset -> TFRecords), decoders and preprocessing for ImageNet, COCO and VOC."""
from nets import compat  # noqa: F401  (tf-slim batch_norm shim for TF 2.15; see nets/compat.py)
