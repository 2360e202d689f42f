"""The library's error types for bad input, and the one way a value is quoted in a message.

Every problem with something a user hands in (a file, a field of it, an image, an argument) raises a
subclass of `InputError` (a `ValueError`), whose message names where the problem is, the offending
value (shortened) and what would be accepted. Callers catch `InputError` (or `ValueError`) once; the
command line prints the message as its one line.
"""

from __future__ import annotations

from typing import Any

#: Longest quoted value in a message; longer ones keep their start and end.
QUOTE_LIMIT = 80


class InputError(ValueError):
    """Bad input: a file, field, value or argument this library cannot use (the message says which)."""


class ConfigError(InputError):
    """A configuration (a `Swinv2Config`, a config.json or a preprocessor_config.json) that is invalid."""


class LimitError(InputError):
    """Input that would need more memory or work than the configured limit allows (the message names it
    and how to raise it)."""


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)`, shortened to about `limit` characters, safe for any value.

    Python refuses to print ints of more than 4300 digits, and a hostile file can hold megabytes in
    one field, so huge values are described rather than printed.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<an int of about {int(value.bit_length() * 0.30103) + 1} digits>"
    try:
        text = repr(value)
    except Exception:  # a repr that fails (a recursive or hostile object) still gets a name
        text = f"<{type(value).__name__}>"
    if len(text) <= limit:
        return text
    keep = max(limit // 2 - 4, 8)
    return f"{text[:keep]} ... {text[-keep:]} ({len(text)} characters)"
