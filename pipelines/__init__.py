"""Estimator layer: typed configs, the shared model_fn skeleton, one task per module, and the `mnv2` CLI."""
from nets import compat  # noqa: F401  (tf-slim batch_norm shim for TF 2.15; see nets/compat.py)
