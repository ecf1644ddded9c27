"""MobileNetV2 architecture as data, and the static endpoint description computed from it.

The spec is the paper's Table 2 written one row per layer, in the order TF-Slim's `V2_DEF` lists them.
Nothing here builds TensorFlow ops: `nets.mobilenet_v2` turns a spec into a graph, and `feature_info`
answers "which endpoint has which stride and how many channels" without a graph (heads use it to pick
features by name).

Channel rounding follows TF-Slim exactly (`_make_divisible`), because the public checkpoints were
trained with it: a different rounding changes variable shapes and breaks restoring.
"""
import collections

# Block kinds of the spec.
CONV = 'conv'
INVERTED_RESIDUAL = 'expanded_conv'

# Per-layer record. `expansion` is the inverted-residual expansion factor and `expansion_divisible_by` its
# channel rounding (TF-Slim rounds the first block's factor-1 "expansion" to 1, others to 8).
LayerSpec = collections.namedtuple(
    'LayerSpec', ['kind', 'stride', 'num_outputs', 'kernel_size', 'expansion', 'expansion_divisible_by'])


def conv(stride, num_outputs, kernel_size):
  return LayerSpec(CONV, stride, num_outputs, kernel_size, None, None)


def inverted_residual(stride, num_outputs, expansion=6, expansion_divisible_by=8):
  return LayerSpec(INVERTED_RESIDUAL, stride, num_outputs, 3, expansion, expansion_divisible_by)


def _repeat(n, stride, num_outputs):
  """Paper Table 2 row: n blocks, the first with `stride`, the rest with stride 1."""
  return [inverted_residual(stride if i == 0 else 1, num_outputs) for i in range(n)]


# Paper Table 2 (t=6 except the first block), one entry per layer: layer_1 .. layer_19.
V2_SPEC = tuple(
    [conv(2, 32, 3),
     inverted_residual(1, 16, expansion=1, expansion_divisible_by=1)] +
    _repeat(2, 2, 24) + _repeat(3, 2, 32) + _repeat(4, 2, 64) + _repeat(3, 1, 96) +
    _repeat(3, 2, 160) + _repeat(1, 1, 320) +
    [conv(1, 1280, 1)])

# Graph-independent defaults (channel rounding as in TF-Slim's `depth_multiplier`).
DEFAULT_DIVISIBLE_BY = 8
DEFAULT_MIN_DEPTH = 8
VALID_OUTPUT_STRIDES = (8, 16, 32)

# Endpoint-name suffixes of an inverted-residual block (TF-Slim's names).
EXPANSION_OUTPUT = 'expansion_output'
DEPTHWISE_OUTPUT = 'depthwise_output'
OUTPUT = 'output'

# Endpoints of the classifier built on top of the base network.
GLOBAL_POOL = 'global_pool'
LOGITS = 'Logits'
PREDICTIONS = 'Predictions'

FeatureInfo = collections.namedtuple('FeatureInfo', ['name', 'stride', 'channels'])


def endpoint_name(layer_number, suffix=None):
  """TF-Slim endpoint name: endpoint_name(15, EXPANSION_OUTPUT) -> 'layer_15/expansion_output'."""
  return 'layer_%d' % layer_number + ('/' + suffix if suffix else '')


# The endpoints the heads of this project tap, named once here so no head retypes the strings.
# At multiplier 1.0 (V2_SPEC): layer_4/depthwise_output stride 4 (144 ch), layer_7/depthwise_output stride 8
# (192 ch), layer_14/depthwise_output stride 16 (576 ch), layer_15/expansion_output stride 16 (576 ch),
# layer_18 stride 32 (320 ch, the last inverted residual), layer_19 stride 32 (1280 ch).
LAYER_4_DEPTHWISE = endpoint_name(4, DEPTHWISE_OUTPUT)  # DeepLabv3+ decoder's low-level features (stride 4)
LAYER_7_DEPTHWISE = endpoint_name(7, DEPTHWISE_OUTPUT)  # the decoder's at decoder_output_stride 8
LAYER_14_DEPTHWISE = endpoint_name(14, DEPTHWISE_OUTPUT)  # the decoder's at decoder_output_stride 16
LAYER_15_EXPANSION = endpoint_name(15, EXPANSION_OUTPUT)  # SSDLite's first (stride-16) feature map
LAYER_18 = endpoint_name(18)  # DeepLab's features (the last bottleneck, before the 1x1 to 1280)
LAYER_19 = endpoint_name(19)  # the last conv: classification, SSDLite's second map


def layer_name(index):
  """One-based TF-Slim endpoint name of spec entry `index` (zero-based): 0 -> 'layer_1'."""
  return endpoint_name(index + 1)


def make_divisible(value, divisor, min_value=None):
  """TF-Slim's channel rounding: nearest multiple of `divisor`, never below 90% of `value`."""
  min_value = min_value or divisor
  new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
  if new_value < 0.9 * value:
    new_value += divisor
  return int(new_value)


def check_depth_multiplier(depth_multiplier):
  if not depth_multiplier or depth_multiplier <= 0:
    raise ValueError('depth_multiplier must be > 0, got %r' % (depth_multiplier,))


def check_output_stride(output_stride):
  if output_stride is not None and output_stride not in VALID_OUTPUT_STRIDES:
    raise ValueError('output_stride must be None or one of %s, got %r' % (VALID_OUTPUT_STRIDES, output_stride))


def resolve_spec(conv_defs=None, depth_multiplier=1.0, finegrain_classification_mode=False):
  """The spec to build: `conv_defs` (or V2_SPEC), with TF-Slim's finegrain rule applied.

  Finegrain mode keeps the last 1x1 conv at full width for multipliers below 1 (TF-Slim divides its
  `num_outputs` by the multiplier, which the multiplier then cancels).
  """
  check_depth_multiplier(depth_multiplier)
  spec = list(conv_defs if conv_defs is not None else V2_SPEC)
  if not spec:
    raise ValueError('conv_defs must list at least one layer')
  for i, layer in enumerate(spec):
    if not isinstance(layer, LayerSpec) or layer.kind not in (CONV, INVERTED_RESIDUAL):
      raise ValueError('conv_defs[%d] must be a nets.mobilenet_spec.LayerSpec of kind %r or %r, got %r'
                       % (i, CONV, INVERTED_RESIDUAL, layer))
  if finegrain_classification_mode and depth_multiplier < 1:
    spec[-1] = spec[-1]._replace(num_outputs=spec[-1].num_outputs / depth_multiplier)
  return spec


def layer_plan(spec, depth_multiplier=1.0, output_stride=None, min_depth=None, divisible_by=None):
  """Per layer: (LayerSpec, output channels, inner channels, layer stride, atrous rate, cumulative stride).

  Atrous rule (TF-Slim / DeepLab): once the cumulative stride reaches `output_stride`, later strides
  become 1 and multiply the dilation rate instead, so the feature map stops shrinking.
  """
  check_output_stride(output_stride)
  divisible_by = divisible_by or DEFAULT_DIVISIBLE_BY
  min_depth = min_depth or DEFAULT_MIN_DEPTH
  plan = []
  in_channels, current_stride, rate = 3, 1, 1
  for layer in spec:
    out_channels = make_divisible(layer.num_outputs * depth_multiplier, divisible_by, min_depth)
    if output_stride is not None and current_stride == output_stride:
      layer_stride, layer_rate = 1, rate
      rate *= layer.stride
    else:
      layer_stride, layer_rate = layer.stride, 1
      current_stride *= layer.stride
    inner = None
    if layer.kind == INVERTED_RESIDUAL:
      inner = make_divisible(in_channels * layer.expansion, layer.expansion_divisible_by)
    plan.append((layer, out_channels, inner, layer_stride, layer_rate, current_stride))
    in_channels = out_channels
  return plan


def has_expansion(inner_channels, in_channels):
  """TF-Slim skips the 1x1 expansion when it would not widen the input (the first block)."""
  return inner_channels is not None and inner_channels > in_channels


def feature_info(depth_multiplier=1.0, output_stride=None, conv_defs=None, finegrain_classification_mode=False,
                 min_depth=None, divisible_by=None):
  """Every base-network endpoint's (name, stride, channels), from the spec alone.

  Args:
    depth_multiplier: float > 0, width multiplier.
    output_stride: None (=32) or 8/16/32; with atrous convolution, strides past the cap report the cap.
    conv_defs, finegrain_classification_mode, min_depth, divisible_by: as `mobilenet_base`.

  Returns:
    list of FeatureInfo in build order; the stride of `layer_N/expansion_output` is that of the block's
    input (expansion is a 1x1 conv before the strided depthwise conv).
  """
  spec = resolve_spec(conv_defs, depth_multiplier, finegrain_classification_mode)
  infos = []
  in_channels, in_stride = 3, 1
  for i, (layer, out_ch, inner, _, _, stride) in enumerate(
      layer_plan(spec, depth_multiplier, output_stride, min_depth, divisible_by)):
    name = layer_name(i)
    infos.append(FeatureInfo(name, stride, out_ch))
    if layer.kind == INVERTED_RESIDUAL:
      if has_expansion(inner, in_channels):
        infos.append(FeatureInfo(name + '/' + EXPANSION_OUTPUT, in_stride, inner))
      infos.append(FeatureInfo(name + '/' + DEPTHWISE_OUTPUT, stride, inner))
      infos.append(FeatureInfo(name + '/' + OUTPUT, stride, out_ch))
    in_channels, in_stride = out_ch, stride
  return infos


def feature_info_by_name(**kwargs):
  """`feature_info(**kwargs)` as a dict endpoint name -> FeatureInfo."""
  return {info.name: info for info in feature_info(**kwargs)}
