"""Config -> MobileNetV2 backbone and its arg_scope: the one place every task builds its backbone.

Each task's public model fixes a few backbone conventions, resolved here from the config and nowhere
else (`backbone_options`):

  task            variable scope                  output stride            channel rounding (min_depth / divisible_by)
  classification  MobilenetV2                     classification.output_stride (null = 32)   TF-Slim: 8 / 8, finegrain mode
  detection       FeatureExtractor/MobilenetV2    32                       OD API: detection.min_depth (16) / 8
  segmentation    MobilenetV2                     segmentation.output_stride (16)            DeepLab: 8 / 8 at 1.0, 1 / 1 otherwise
  multitask       MobilenetV2 (shared)            multitask.output_stride (null = 32)        TF-Slim: 8 / 8

`model.divisible_by`, when set, overrides the rounding divisor of every task; `model.depth_multiplier` and
`model.use_explicit_padding` apply to all. The backbone is built up to the deepest endpoint the task's
head needs (`endpoints`), and `feature_info` describes the same backbone without a graph, so heads and
anchors can read strides and channels from it.

`arg_scope` is the paper's training scope (`nets.mobilenet_v2.training_scope`) with the model section's
weight decay, init and batch-norm decay, and batch norm in training mode only when `train.freeze_batch_norm`
(null = DeepLab's rule for segmentation: frozen below 12 images per step) allows it.

`normalizer_fn` is the one batch-norm hook: with `train.sync_batch_norm` the backbone (`mobilenet_base`'s
`normalizer_fn`) and every head conv scope (`heads.scopes.conv_bn_scope`, set through `arg_scope`) use
`pipelines.training.sync_batch_norm` (global-batch moments across replicas, slim's variables).

Not here: the heads (`heads/`), losses, anything about devices or precision (`pipelines.training.runner`).
"""
import collections
import contextlib
import re

import tensorflow.compat.v1 as tf
import tf_slim as slim

from heads import scopes as head_scopes
from nets import mobilenet_spec
from nets import mobilenet_v2
from pipelines.training import sync_batch_norm

_TF_SLIM_DIVISIBLE_BY = 8

# Everything `mobilenet_base` needs besides the images, resolved for one task.
BackboneOptions = collections.namedtuple('BackboneOptions', [
    'scope', 'depth_multiplier', 'output_stride', 'min_depth', 'divisible_by', 'finegrain_classification_mode',
    'use_explicit_padding'])


def backbone_options(config):
  """The task's backbone conventions (see the module docstring) as `BackboneOptions`: its task class's."""
  from pipelines.tasks import registry  # pylint: disable=g-import-not-at-top  (the task modules import this one)
  return registry.task_class(config.task).backbone_options(config)


def tf_slim_options(config, scope, output_stride, min_depth=None, finegrain=False):
  """`BackboneOptions` with TF-Slim's channel rounding (8, or `model.divisible_by`): the classifier's,
  SSDLite's and the shared multi-task backbone's convention."""
  model = config.model
  return BackboneOptions(scope, model.depth_multiplier, output_stride, min_depth,
                         model.divisible_by or _TF_SLIM_DIVISIBLE_BY, finegrain, model.use_explicit_padding)


def feature_info(config):
  """dict endpoint name -> `nets.mobilenet_spec.FeatureInfo` (stride, channels) of the task's backbone."""
  opts = backbone_options(config)
  return mobilenet_spec.feature_info_by_name(
      depth_multiplier=opts.depth_multiplier, output_stride=opts.output_stride, min_depth=opts.min_depth,
      divisible_by=opts.divisible_by, finegrain_classification_mode=opts.finegrain_classification_mode)


def batch_norm_training(config, is_training):
  """bool: batch norm uses batch statistics and updates its moving ones (else frozen at the moving ones)."""
  freeze = config.train.freeze_batch_norm
  if freeze is None:
    from pipelines.tasks import registry  # pylint: disable=g-import-not-at-top
    freeze = registry.task_class(config.task).freezes_batch_norm(config)
  return bool(is_training and not freeze)


def arg_scope(config, is_training):
  """The training arg_scope of backbone and heads (weight decay, init, batch-norm decay and mode, dropout).

  Dropout follows `is_training` (not the batch-norm freeze); its keep probability is the task's own
  `dropout_keep_prob` where the task has dropout.
  """
  model = config.model
  keep_prob = getattr(config.section(), 'dropout_keep_prob', 1.0)  # heads may set their own
  scope = mobilenet_v2.training_scope(is_training=batch_norm_training(config, is_training),
                                      weight_decay=model.weight_decay, stddev=model.init_stddev,
                                      dropout_keep_prob=keep_prob, bn_decay=model.bn_decay)
  with slim.arg_scope(scope), slim.arg_scope([slim.dropout], is_training=is_training), \
      slim.arg_scope([head_scopes.conv_bn_scope], normalizer_fn=normalizer_fn(config)) as combined:
    return combined


def normalizer_fn(config):
  """The batch norm of backbone and heads: `sync_batch_norm.sync_batch_norm` with `train.sync_batch_norm`, else
  None (= slim.batch_norm). sync_batch_norm is slim.batch_norm outside a multi-replica training step."""
  return sync_batch_norm.sync_batch_norm if config.train.sync_batch_norm else None


def _layer_number(endpoint):
  match = re.match(r'layer_(\d+)', endpoint)
  if not match:
    raise ValueError('not a backbone endpoint: %r (expected layer_N or layer_N/...)' % (endpoint,))
  return int(match.group(1))


def backbone(config, images, endpoints, reuse=None):
  """Builds the task's MobileNetV2 under its variable scope, up to the deepest of `endpoints`.

  Call inside `arg_scope(config, is_training)`.

  Args:
    config: `pipelines.config.Config`.
    images: float32 [B, H, W, 3] in [-1, 1].
    endpoints: endpoint names the head needs (e.g. `heads.ssdlite.FEATURE_ENDPOINTS`); the build stops at
      the deepest layer among them, so no unused layer gets variables.
    reuse: None, or True to share the variables of an earlier call (multi-scale evaluation).

  Returns:
    (end_points, scope): dict endpoint name -> tensor, and the backbone's `tf.VariableScope` (heads whose
    public variables live under it are built inside `in_scope(scope)`).
  """
  opts = backbone_options(config)
  final = 'layer_%d' % max(_layer_number(name) for name in endpoints)
  with tf.variable_scope(opts.scope, values=[images], reuse=reuse) as scope:
    _, end_points = mobilenet_v2.mobilenet_base(
        images, depth_multiplier=opts.depth_multiplier, output_stride=opts.output_stride, min_depth=opts.min_depth,
        divisible_by=opts.divisible_by, finegrain_classification_mode=opts.finegrain_classification_mode,
        use_explicit_padding=opts.use_explicit_padding, final_endpoint=final, scope=scope,
        normalizer_fn=normalizer_fn(config))
  return end_points, scope


@contextlib.contextmanager
def in_scope(scope):
  """Re-enters a variable scope returned by `backbone` (variables and op names under it, as first built);
  a name (str) opens that scope instead (a head's public scope when the backbone is shared)."""
  if isinstance(scope, str):
    with tf.variable_scope(scope):
      yield
    return
  with tf.variable_scope(scope, auxiliary_name_scope=False), tf.name_scope(scope.original_name_scope):
    yield
