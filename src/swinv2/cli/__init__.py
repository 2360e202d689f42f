"""`swinv2` command line: thin subcommands over the library, one module per command group.

Exit codes: 0 success, 1 failure (one line on stderr naming the file and the problem), 2 misuse,
130 interrupted (a training run stopped by Ctrl-C or SIGTERM saves its checkpoint first and exits 130 or
143). Whatever goes wrong, a failure is one line; `--debug` (or the environment variable
`SWINV2_DEBUG=1`) adds the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Sequence

from swinv2.cli import bench, convert, demo, export, info, plan, train, upscale, use
from swinv2.cli.common import CommandError
from swinv2.io.checkpoints import CheckpointError
from swinv2.io.errors import InputError
from swinv2.train.trainer import TrainingStopped

DEBUG_VARIABLE = "SWINV2_DEBUG"


def build_parser() -> argparse.ArgumentParser:
    """The `swinv2` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(prog="swinv2", description="Swin Transformer V2 tools.")
    parser.add_argument(
        "--debug", action="store_true", help=f"show the traceback of a failure (or set {DEBUG_VARIABLE}=1)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (convert, export, bench, use, upscale, info, plan, train, demo):
        group.register(commands)
    for command in commands.choices.values():  # `swinv2 COMMAND ... --debug` works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _one_line(text: str) -> str:
    """`text` as one line: its lines joined, so a message never spills over several."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def describe_failure(err: BaseException) -> str:
    """The one line a failure is reported as: the library's own message for bad input, otherwise the
    exception named (a bug, or something the library should have caught; `--debug` shows where)."""
    if isinstance(err, CheckpointError) and err.report is not None:
        return _one_line(err.report.describe(err.subject, limit=3))
    if isinstance(err, (InputError, CommandError, OSError)):
        return _one_line(str(err)) or type(err).__name__
    if isinstance(err, MemoryError):
        return "out of memory (lower the batch size or the image size, or set SWINV2_MEMORY_LIMIT lower)"
    detail = _one_line(str(err))
    return f"unexpected {type(err).__name__}" + (f": {detail}" if detail else "") + " (run with --debug for details)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    if not debug:  # torch's and PIL's notes are not the user's business on the command line
        warnings.simplefilter("ignore")
    try:
        message = args.run(args)
    except TrainingStopped as stopped:
        print(f"swinv2 {args.command}: {stopped}", file=sys.stderr)
        return stopped.exit_status
    except KeyboardInterrupt:
        print(f"swinv2 {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # every failure is one line; the traceback only on request
        if debug:
            traceback.print_exc()
        if not (isinstance(err, CommandError) and err.reported):
            print(f"swinv2 {args.command}: error: {describe_failure(err)}", file=sys.stderr)
        return 1
    if message:
        print(message)
    return 0
