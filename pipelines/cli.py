"""The `mnv2` command line: one sub-command per job, each a thin wrapper over a library function.

Sub-commands register themselves in `_COMMANDS` (name -> (add_arguments, run)); nothing here holds logic
that the Python API does not also expose.
"""
import argparse
import os
import sys
import warnings

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# tf-slim calls the deprecated `Layer.apply` on TF 2.15; the warning is noise for users.
warnings.filterwarnings('ignore', message='`layer.apply` is deprecated')


def _add_profile(parser):
  parser.add_argument('--depth-multiplier', type=float, default=1.0, help='width multiplier (default 1.0)')
  parser.add_argument('--image-size', type=int, default=224, help='square input size in pixels (default 224)')
  parser.add_argument('--num-classes', type=int, default=1001, help='classifier outputs (default 1001)')
  parser.add_argument('--finegrain', action='store_true', help='keep the last layer at 1280 channels')


def _run_profile(args):
  from nets import profile  # pylint: disable=g-import-not-at-top
  result = profile.profile_mobilenet(args.depth_multiplier, args.image_size, args.num_classes, args.finegrain)
  title = 'MobileNetV2 %.2f at %dx%d, %d classes%s' % (
      args.depth_multiplier, args.image_size, args.image_size, args.num_classes,
      ' (finegrain)' if args.finegrain else '')
  print(profile.format_profile(result, title))
  return 0


_COMMANDS = {
    'profile': ('parameters and multiply-adds per layer type', _add_profile, _run_profile),
}


def build_parser():
  parser = argparse.ArgumentParser(prog='mnv2', description=__doc__.split('\n')[0])
  sub = parser.add_subparsers(dest='command', metavar='COMMAND')
  sub.required = True
  for name, (help_text, add_arguments, _) in sorted(_COMMANDS.items()):
    add_arguments(sub.add_parser(name, help=help_text, description=help_text))
  return parser


def main(argv=None):
  args = build_parser().parse_args(argv)
  return _COMMANDS[args.command][2](args)


if __name__ == '__main__':
  sys.exit(main())
