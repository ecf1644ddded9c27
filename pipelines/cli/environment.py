"""Process settings the `mnv2` command (and the benches) make before TensorFlow is first imported.

Importing a `pipelines` module changes nothing; these settings are made only by an entry point that calls
`configure()`: `mnv2` / `python -m pipelines` (`pipelines.cli.main.main`), the benches and the test suite.
"""
import os


def configure():
  """Sets defaults that TensorFlow reads once, when it is first imported; variables already set win.

  - TF_ENABLE_ONEDNN_OPTS=1: oneDNN roughly doubles CPU throughput of this graph on AVX2 hosts where TF 2.15
    leaves it off by default (see bench/README.md); TF_ENABLE_ONEDNN_OPTS=0 opts out.
  - TF_CPP_MIN_LOG_LEVEL=2: TensorFlow's C++ INFO/WARNING start-up lines (CPU features, oneDNN) drown the
    CLI's output; TF_CPP_MIN_LOG_LEVEL=0 shows them.
  """
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
