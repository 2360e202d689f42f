"""`python -m swinv2`: the `swinv2` command (and what `torchrun -m swinv2 train ...` runs)."""

import sys

from swinv2.cli import main

sys.exit(main())
