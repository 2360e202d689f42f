"""The memory limit every allocation driven by input is checked against, before it happens.

A config, a checkpoint or an image decides how much memory the library asks for: a config.json with a
huge `embed_dim`, or a 1 x 16,777,216 pixel PNG, would otherwise allocate tens of gigabytes before any
check could refuse it. Models (their parameters and a batch-1 forward's activations) and image decoding
and resizing are therefore sized first and refused above `memory_limit()`.

The limit is the memory this process can have: the smallest of the machine's physical memory, the
process's address-space limit (`ulimit -v`) and its cgroup's `memory.max`. Raise or lower it with the
environment variable `SWINV2_MEMORY_LIMIT` (bytes, or digits and a unit: "64GB", "512MB"; "none" turns
the check off), or `set_memory_limit(...)` from Python.
"""

from __future__ import annotations

import contextlib
import os
import resource
from pathlib import Path

from swinv2.io.errors import InputError, LimitError, quote

ENV_VAR = "SWINV2_MEMORY_LIMIT"
_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}  # huggingface_hub's (decimal) units
_FALLBACK = 64 * 10**9  # where the machine's memory cannot be read
_override: int | None = None
_unlimited = False


def parse_bytes(size: int | str, name: str) -> int:
    """Bytes in `size`: a positive int, or digits and a unit as huggingface_hub reads them ("5GB", "1.5KB").

    Raises:
        InputError: anything else (the message quotes `name` and the value).
    """
    if isinstance(size, int) and not isinstance(size, bool):
        if size <= 0:
            raise InputError(f"{name} must be positive; got {quote(size)}")
        return size
    text = str(size).strip()
    unit = text[-2:].upper()
    try:
        value = float(text[:-2].strip()) if unit in _UNITS else float("nan")
    except ValueError:
        value = float("nan")
    if not 0 < value < 1e30:
        raise InputError(f"{name} must be bytes (an int) or digits and one of {list(_UNITS)}; got {quote(size)}")
    return int(value * _UNITS[unit])


def _machine_memory() -> int:
    """Physical memory, the address-space rlimit and the cgroup limit: the smallest that is known."""
    candidates = [_FALLBACK]
    with contextlib.suppress(ValueError, OSError, AttributeError):
        candidates = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and soft > 0:
        candidates.append(soft)
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            candidates.append(int(text))
    except OSError:
        pass
    return min(candidates)


def set_memory_limit(limit: int | str | None) -> None:
    """Set the limit for this process: bytes, "64GB", "none" (no limit) or None (back to the default)."""
    global _override, _unlimited
    _unlimited = isinstance(limit, str) and limit.strip().lower() == "none"
    _override = None if limit is None or _unlimited else parse_bytes(limit, "the memory limit")


def memory_limit() -> int | None:
    """The limit in bytes (None: unlimited): `set_memory_limit`, else `SWINV2_MEMORY_LIMIT`, else the machine's."""
    if _unlimited:
        return None
    if _override is not None:
        return _override
    value = os.environ.get(ENV_VAR, "").strip()
    if value.lower() == "none":
        return None
    if value:
        try:
            return parse_bytes(int(value) if value.isdigit() else value, ENV_VAR)
        except InputError as err:
            raise LimitError(f"environment variable {err}") from None
    return _machine_memory()


def check_memory(needed: int, what: str) -> None:
    """Refuse, before allocating, work that needs more than the limit.

    Args:
        needed: Bytes the work will need (an estimate that errs large).
        what: The work, as the message should name it ("building Swinv2Model from config.json 'x'").

    Raises:
        LimitError: `needed` is above `memory_limit()`; the message says how to raise it.
    """
    limit = memory_limit()
    if limit is not None and needed > limit:
        raise LimitError(
            f"{what} needs about {_gigabytes(needed)} of memory, more than the limit of {_gigabytes(limit)}; "
            f'if that is intended, raise the limit with {ENV_VAR} (e.g. {ENV_VAR}="{_suggest(needed)}") '
            "or swinv2.set_memory_limit(...)"
        )


def _gigabytes(count: int) -> str:
    if count >= 10**15:
        return f"{count:.3g} bytes"
    return f"{count / 1e9:.3g} GB"


def _suggest(needed: int) -> str:
    return f"{min(needed // 10**9 + 1, 10**6)}GB"
