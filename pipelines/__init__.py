"""Estimator layer: typed configs, the shared model_fn skeleton, one task per module, and the `mnv2` CLI."""
import os

# oneDNN roughly doubles CPU throughput of this graph on AVX2 hosts where TF 2.15 leaves it off by default
# (see bench/README.md). It must be set before TensorFlow is imported; TF_ENABLE_ONEDNN_OPTS=0 opts out.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
# TensorFlow's C++ INFO/WARNING start-up lines (CPU features, oneDNN) drown the CLI's output; set
# TF_CPP_MIN_LOG_LEVEL=0 to see them.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from nets import compat  # noqa: E402,F401  (tf-slim batch_norm shim for TF 2.15; see nets/compat.py)
