"""Task heads (classification, SSDLite, DeepLab), each a function of backbone endpoints."""
from nets import compat  # noqa: F401  (tf-slim batch_norm shim for TF 2.15; see nets/compat.py)
