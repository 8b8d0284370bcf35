"""`python -m jtrain ...` is the `jtrain` command."""

import sys

from jtrain.cli import main

if __name__ == "__main__":
    sys.exit(main())
