"""`python -m pipelines ...` is the same as the `mnv2` command."""
import sys

from pipelines.cli import main

if __name__ == '__main__':
  sys.exit(main.run())
