"""Small file helpers shared by the config and checkpoint writers."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(target: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Call `write(tmp_path)` on a temporary file beside `target`, then rename it over `target`.

    A crash or an exception in `write` leaves `target` as it was (or absent), never half-written.
    """
    target = Path(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `target` atomically."""
    atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
