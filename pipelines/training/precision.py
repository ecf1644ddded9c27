"""Precision and compilation: mixed precision (float16, bfloat16) and XLA, as session and optimizer settings.

Mixed precision (`mixed_precision_optimizer`, `mixed_precision_session_config`): float16 = dynamic loss
scaling + grappler's auto mixed precision rewrite (GPU); bfloat16 = grappler's oneDNN bfloat16 rewrite (CPUs
with AVX512_BF16 / AMX, TensorFlow 2.x). Variables stay float32. XLA (`xla_session_config`): global JIT.
A precision the host cannot run computes in float32 with one warning naming the key.

Not here: the strategies (`pipelines.training.distribution`).
"""
import copy
import logging
import os

import tensorflow.compat.v1 as tf

from pipelines.training.distribution import STACK
from pipelines.training.distribution import TF1
from pipelines.training.distribution import visible_gpus

LOG = logging.getLogger('mnv2')
MIXED_PRECISION_KEY = 'runtime.mixed_precision'
XLA_KEY = 'runtime.xla'
PRECISIONS = (None, 'float16', 'bfloat16')

_WARNED = set()


def _warn_once(message, *args):
  text = message % args
  if text not in _WARNED:
    _WARNED.add(text)
    LOG.warning(text)


def cpu_flags(path='/proc/cpuinfo'):
  """The `flags` of the first CPU in /proc/cpuinfo (empty set when unreadable)."""
  try:
    with tf.io.gfile.GFile(path, 'r') as f:
      for line in f:
        if line.startswith('flags'):
          return set(line.split(':', 1)[1].split())
  except (IOError, OSError, tf.errors.OpError):
    pass
  return set()


def cpu_supports_bfloat16(flags=None):
  flags = cpu_flags() if flags is None else flags
  return bool({'avx512_bf16', 'amx_bf16'} & set(flags))


def _onednn_disabled():
  return os.environ.get('TF_ENABLE_ONEDNN_OPTS', '').strip().lower() in ('0', 'false')


def _check_precision(precision):
  if precision in ('none', 'null', 'float32'):
    return None
  if precision not in PRECISIONS:
    raise ValueError('%s: unknown %r (valid: null, float16, bfloat16)' % (MIXED_PRECISION_KEY, precision))
  return precision


def effective_precision(precision, emulate_float16_on_cpu=False, gpus=None, flags=None):
  """What `precision` turns into on this host: None, 'float16', 'float16-cpu-emulation' or 'bfloat16'.

  Logs ONE warning (per process and message, logger 'mnv2') when the setting cannot take effect and says
  what it falls back to. `emulate_float16_on_cpu` (TensorFlow 2.x only) uses grappler's
  `auto_mixed_precision_cpu`, which inserts the float16 casts around float32 CPU kernels: a way to see the
  float16 graph without a GPU (tests), not a speed-up.
  """
  precision = _check_precision(precision)
  if precision is None:
    return None
  if precision == 'float16':
    if (visible_gpus() if gpus is None else gpus):
      return 'float16'
    if emulate_float16_on_cpu and not TF1:
      return 'float16-cpu-emulation'
    _warn_once('%s: float16 needs a GPU and none is visible: computing in float32 (dynamic loss scaling stays '
               'on, so checkpoints match a GPU run)', MIXED_PRECISION_KEY)
    return None
  if TF1:
    _warn_once('%s: bfloat16 needs TensorFlow 2.x (oneDNN auto mixed precision); %s computes in float32',
               MIXED_PRECISION_KEY, STACK)
    return None
  if not cpu_supports_bfloat16(flags):
    _warn_once('%s: bfloat16 needs a CPU with AVX512_BF16 or AMX (no avx512_bf16 / amx_bf16 in '
               '/proc/cpuinfo): computing in float32', MIXED_PRECISION_KEY)
    return None
  if _onednn_disabled():
    _warn_once('%s: bfloat16 needs oneDNN but TF_ENABLE_ONEDNN_OPTS=0: computing in float32',
               MIXED_PRECISION_KEY)
    return None
  return 'bfloat16'


def mixed_precision_optimizer(optimizer, precision):
  """`optimizer` wrapped for `precision`: float16 -> dynamic loss scaling; otherwise unchanged.

  float16 always gets the loss scale (also where the float16 rewrite falls back to float32), so the
  checkpoint has the same variables (`current_loss_scale`, `good_steps`) on every host and a run can move
  between a GPU and a CPU machine. A float32 graph restores such a checkpoint (extra keys are ignored).
  """
  if _check_precision(precision) == 'float16':
    return tf.train.experimental.MixedPrecisionLossScaleOptimizer(optimizer, 'dynamic')
  return optimizer


def mixed_precision_session_config(precision, session_config=None, emulate_float16_on_cpu=False, gpus=None,
                                   flags=None):
  """A copy of `session_config` with the grappler rewrite of `precision` switched on (if it can take effect).

  float16: `auto_mixed_precision` (GPU; what enable_mixed_precision_graph_rewrite does, without its
  process-global state); float16 emulated on CPU: `auto_mixed_precision_cpu` (TF 2.x); bfloat16:
  `auto_mixed_precision_onednn_bfloat16` (TF 2.x, CPUs with AVX512_BF16 / AMX).
  """
  from tensorflow.core.protobuf import rewriter_config_pb2  # pylint: disable=g-import-not-at-top
  config = tf.ConfigProto(allow_soft_placement=True) if session_config is None else copy.deepcopy(session_config)
  mode = effective_precision(precision, emulate_float16_on_cpu, gpus, flags)
  field = {'float16': 'auto_mixed_precision', 'float16-cpu-emulation': 'auto_mixed_precision_cpu',
           'bfloat16': 'auto_mixed_precision_onednn_bfloat16'}.get(mode)
  if field:
    setattr(config.graph_options.rewrite_options, field, rewriter_config_pb2.RewriterConfig.ON)
  return config


# ----------------------------------------------------------------------------------------------------------
# XLA


def xla_session_config(enabled, session_config=None, gpus=None):
  """A copy of `session_config` with XLA's global JIT (`global_jit_level = ON_1`) when `enabled`.

  Global JIT only clusters GPU ops unless TF_XLA_FLAGS has --tf_xla_cpu_global_jit; with no GPU visible
  this adds that flag to the environment. TensorFlow reads TF_XLA_FLAGS once, at the first session of the
  process, so call this before any session is created (the flag is then on for the rest of the process).
  Both stacks' CPU wheels have the XLA CPU JIT (measured: _XlaCompile/_XlaRun in the partition graphs).
  """
  config = tf.ConfigProto(allow_soft_placement=True) if session_config is None else copy.deepcopy(session_config)
  if not enabled:
    return config
  config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
  if not (visible_gpus() if gpus is None else gpus):
    flags = os.environ.get('TF_XLA_FLAGS', '')
    if '--tf_xla_cpu_global_jit' not in flags:
      os.environ['TF_XLA_FLAGS'] = (flags + ' --tf_xla_cpu_global_jit').strip()
      LOG.info('%s: no GPU visible; added --tf_xla_cpu_global_jit to TF_XLA_FLAGS so XLA clusters CPU ops '
               '(takes effect only if no session was created before)', XLA_KEY)
  return config
