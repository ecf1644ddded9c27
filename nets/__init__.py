"""Backbones. MobileNetV2 with the TF-Slim public API lives in `nets.mobilenet_v2`."""
from nets import compat  # noqa: F401  (tf-slim batch_norm shim for TF 2.15; see nets/compat.py)
