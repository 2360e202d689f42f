"""What the `swinv2` commands share: the one-line error, argument types and model arguments."""

from __future__ import annotations

import argparse

from swinv2.zoo import get_variant


class CommandError(Exception):
    """A failure to report as one line and exit status 1 (`reported`: the details are already on stderr)."""

    def __init__(self, message: str, reported: bool = False) -> None:
        super().__init__(message)
        self.reported = reported


def _int_at_least(text: str, minimum: int, kind: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {kind} integer; got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a {kind} integer; got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int of at least 1 (a count, a batch size)."""
    return _int_at_least(text, 1, "positive")


def non_negative_int(text: str) -> int:
    """argparse type: an int of at least 0 (a seed)."""
    return _int_at_least(text, 0, "non-negative")


def variant_name(name: str) -> str:
    """argparse type: a known variant's canonical name (ours, the Hub id or timm's)."""
    try:
        return get_variant(name).name
    except KeyError as err:
        raise argparse.ArgumentTypeError(err.args[0]) from None


def add_model_arguments(sub: argparse.ArgumentParser, required: bool = True) -> None:
    """--model and --random-weights."""
    sub.add_argument("--model", required=required, metavar="M", help="model directory, Hub id or variant name")
    sub.add_argument("--random-weights", action="store_true", help="allow a variant name (random weights)")
