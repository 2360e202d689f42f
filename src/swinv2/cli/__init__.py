"""`swinv2` command line: thin subcommands over the library, one module per command group.

Exit codes: 0 success, 1 failure (one line on stderr naming the file and the problem), 2 misuse.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from swinv2.cli import bench, convert, demo, info, use
from swinv2.cli.common import CommandError
from swinv2.io.checkpoints import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    """The `swinv2` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(prog="swinv2", description="Swin Transformer V2 tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (convert, bench, use, info, demo):
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        message = args.run(args)
    except CheckpointError as err:
        text = str(err) if err.report is None else err.report.describe(err.subject, limit=3)
        print(f"swinv2 {args.command}: error: {text}", file=sys.stderr)
        return 1
    except CommandError as err:
        if not err.reported:
            print(f"swinv2 {args.command}: error: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print(f"swinv2 {args.command}: error: {err}", file=sys.stderr)
        return 1
    if message:
        print(message)
    return 0
