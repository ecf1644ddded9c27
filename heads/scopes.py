"""The arg_scope every head puts around its own layers: batch norm (centered, scaled) + activation.

The public SSDLite (`conv_hyperparams`) and DeepLab heads both put BN and an activation after every conv of
their own, with SAME padding and stride 1 unless a layer says otherwise; only the activation differs (ReLU6
vs ReLU). Weight decay, BN decay/epsilon and the training mode stay with the caller's arg_scope.
"""
import contextlib

import tf_slim as slim


@slim.add_arg_scope
@contextlib.contextmanager
def conv_bn_scope(activation_fn, is_training=None, normalizer_fn=None):
  """arg_scope for conv2d/separable_conv2d: BN + `activation_fn`; `is_training` None keeps the caller's.

  `normalizer_fn` (None = slim.batch_norm) is the hook for another batch norm with slim's signature and
  arg_scope entry; the model builder sets it with `slim.arg_scope([conv_bn_scope], normalizer_fn=...)`, so
  the heads that call this scope need not know about it.
  """
  bn_args = {'center': True, 'scale': True}
  if is_training is not None:
    bn_args['is_training'] = is_training
  with slim.arg_scope([slim.conv2d, slim.separable_conv2d], normalizer_fn=normalizer_fn or slim.batch_norm,
                      activation_fn=activation_fn, padding='SAME', stride=1), \
      slim.arg_scope([slim.batch_norm], **bn_args):
    yield
