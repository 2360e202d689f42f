"""`python -m swinv2.cli`: the `swinv2` command."""

import sys

from swinv2.cli import main

sys.exit(main())
