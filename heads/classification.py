"""Classification head: global average pool, dropout, 1x1 conv logits on one backbone endpoint.

The layers are TF-Slim's (`nets.mobilenet_v2.classifier`), so built inside the `MobilenetV2` scope the
variables are `MobilenetV2/Logits/Conv2d_1c_1x1/{weights,biases}` as in the public checkpoints. No loss here.
"""
from nets import mobilenet_spec
from nets import mobilenet_v2

LOGITS = mobilenet_spec.LOGITS
PREDICTIONS = mobilenet_spec.PREDICTIONS
DEFAULT_ENDPOINT = mobilenet_spec.LAYER_19


def head(end_points, num_classes, is_training, endpoint=DEFAULT_ENDPOINT):
  """Logits from `end_points[endpoint]`.

  Args:
    end_points: dict of backbone endpoints (float32 [B, H, W, C] tensors).
    num_classes: int, logits size (incl. background for ImageNet's 1001).
    is_training: bool, dropout mode.
    endpoint: which endpoint to classify.

  Returns:
    dict LOGITS -> float32 [B, num_classes], PREDICTIONS -> softmax probabilities float32 [B, num_classes].

  Raises:
    ValueError: `endpoint` is not in `end_points` (the message lists the valid names).
  """
  if endpoint not in end_points:
    raise ValueError('Unknown endpoint %r for the classification head; valid: %s' % (
        endpoint, ', '.join(sorted(end_points))))
  logits, points = mobilenet_v2.classifier(end_points[endpoint], num_classes, is_training, dict(end_points))
  return {LOGITS: logits, PREDICTIONS: points[PREDICTIONS]}
