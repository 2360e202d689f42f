"""Crash-safe file helpers shared by the config, checkpoint and command-line writers.

Every output is written under a hidden name beside its destination (so on the same filesystem) and
renamed into place only when it is complete. The hidden name says what the entry is and which process
owns it, `.{name}.swinv2-{role}.{pid}[-{start}].{token}`, so that a later run can tell the leftovers of
a killed writer from the work of one that is still running, and clean up only the former:

- `staging`: an output being written (a directory holding the output under the destination's own name,
  or a temporary file). Never published by anyone but its owner; a dead owner's is deleted.
- `backup`: the previous destination, set aside while a replacement is swapped in. A dead owner's is
  restored when the destination is missing (the owner died between the two renames) and deleted when
  the destination is present (the swap completed).
- `discard`: a backup on its way out. Renaming it first makes its deletion safe to interrupt: a
  half-deleted copy is never mistaken for a backup to restore.

`start` is the owner's start time from /proc where available, so that a recycled pid is not taken for
the owner. This module imports only the standard library (it is the lowest tier).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STAGING = "staging"
BACKUP = "backup"
DISCARD = "discard"
_ROLES = (STAGING, BACKUP, DISCARD)
_MARK = "swinv2"
_ENTRY = re.compile(
    rf"\.(?P<tag>.+)\.{_MARK}-(?P<role>{'|'.join(_ROLES)})\.(?P<pid>\d+)(?:-(?P<start>\d+))?\.(?P<token>[0-9a-f]+)"
)
# Longest destination name kept verbatim in an entry's name; longer ones are shortened with a digest so
# that the entry's name stays under the usual 255-byte limit.
_LONGEST_TAG = 160


class DestinationExistsError(FileExistsError):
    """The destination exists and the caller did not ask to replace it."""


@dataclass(frozen=True)
class Leftover:
    """An entry this module made beside `destination`: its `role` and the process that owns it."""

    path: Path
    destination: Path
    role: str
    pid: int
    start: int | None

    def owner_alive(self) -> bool:
        """Whether the owning process still runs (a recycled pid with another start time does not count)."""
        return _process_alive(self.pid, self.start)


# ------------------------------------------------------------------------------------------ owners


def _start_time(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (Linux /proc), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name in parentheses may hold spaces
    try:
        return int(fields[19])  # field 22 of proc(5); `fields` starts at field 3
    except (IndexError, ValueError):
        return None


def _is_zombie(pid: int) -> bool:
    """Whether `pid` has exited and only waits to be reaped (its files are nobody's work any more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    fields = stat[stat.rfind(")") + 2 :].split()
    return bool(fields) and fields[0] in ("Z", "X")


def _process_alive(pid: int, start: int | None) -> bool:
    """Whether process `pid` (started at `start`, if known) runs. Unsure answers are "alive", so that a
    running writer's files are never taken for leftovers."""
    if pid == os.getpid():
        return start is None or start == _start_time(pid)
    if os.name == "nt":  # os.kill would terminate the process; the stdlib has no safe probe here
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    except OSError:
        return True
    if _is_zombie(pid):
        return False
    if start is None:
        return True
    now = _start_time(pid)
    return now is None or now == start


def _owner() -> str:
    """This process as written into entry names: `pid` or `pid-start`."""
    pid = os.getpid()
    start = _start_time(pid)
    return str(pid) if start is None else f"{pid}-{start}"


# ------------------------------------------------------------------------------------------- names


def _tag(name: str) -> str:
    """`name` as it appears in entry names: verbatim, or shortened with a digest when very long."""
    if len(name.encode()) <= _LONGEST_TAG:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{name[:40]}~{digest}"  # at most 4 bytes a character


def _entry_path(destination: Path, role: str) -> Path:
    """A fresh hidden path beside `destination` for `role`, owned by this process."""
    return destination.parent / f".{_tag(destination.name)}.{_MARK}-{role}.{_owner()}.{secrets.token_hex(6)}"


def leftovers(destination: str | os.PathLike[str]) -> list[Leftover]:
    """The staging, backup and discard entries beside `destination` (any owner, alive or not), by name."""
    destination = Path(destination)
    tag = _tag(destination.name)
    try:
        names = sorted(os.listdir(destination.parent))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        match = _ENTRY.fullmatch(name)
        if match and match["tag"] == tag:
            start = None if match["start"] is None else int(match["start"])
            found.append(Leftover(destination.parent / name, destination, match["role"], int(match["pid"]), start))
    return found


# -------------------------------------------------------------------------------------- filesystem


def _exists(path: Path) -> bool:
    """Whether `path` exists, a dangling symlink included (it would still be replaced)."""
    return os.path.lexists(path)


def _remove(path: Path) -> None:
    """Delete a file, link or directory tree; an entry already gone is fine (another run may clean up too)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def _fsync_path(path: Path) -> None:
    """Flush `path` (a file or, where the OS allows it, a directory) to disk; best effort."""
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return  # e.g. directories cannot be opened on Windows
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """Flush every file and directory under `path` (or the file `path`), so a rename publishes data on disk."""
    if path.is_symlink() or not path.is_dir():
        if path.is_file() and not path.is_symlink():
            _fsync_path(path)
        return
    for folder, _, files in os.walk(path):
        for name in files:
            child = Path(folder) / name
            if not child.is_symlink():
                _fsync_path(child)
        _fsync_path(Path(folder))


def _check_parent(destination: Path) -> None:
    """Refuse, naming the path, a destination whose folder is missing or is not a folder."""
    parent = destination.parent
    if parent.is_dir():
        return
    if _exists(parent):
        raise NotADirectoryError(f"cannot write '{destination}': '{parent}' is not a directory")
    raise FileNotFoundError(f"cannot write '{destination}': its directory '{parent}' does not exist")


def _refuse_existing(destination: Path) -> None:
    raise DestinationExistsError(f"'{destination}' exists; pass --overwrite (overwrite=True) to replace it")


# ---------------------------------------------------------------------------------------- recovery


def _discard(backup: Path, destination: Path) -> None:
    """Delete a backup: first rename it to a discard entry, so an interrupted deletion is never restored."""
    doomed = _entry_path(destination, DISCARD)
    try:
        os.rename(backup, doomed)
    except FileNotFoundError:
        return
    _remove(doomed)


def _settle_backup(backup: Path, destination: Path) -> None:
    """A backup whose swap did not finish: restore it when `destination` is missing, else delete it."""
    if _exists(destination):
        _discard(backup, destination)
        return
    try:
        os.rename(backup, destination)
    except FileNotFoundError:
        return  # another run restored or removed it first
    _fsync_path(destination.parent)


def recover(destination: str | os.PathLike[str]) -> list[Leftover]:
    """Clean up after writers of `destination` that died; returns the leftovers it handled.

    A dead owner's staging and discard entries are deleted. A dead owner's backup is renamed back to
    `destination` when `destination` is missing (the owner died between setting the old copy aside and
    moving the new one in), and deleted when `destination` is present (the new copy is complete). Entries
    of a process that is still running are never touched. Called on entry by `staged_output` and
    `atomic_write`, so the next write of a destination cleans up after an interrupted one.
    """
    destination = Path(destination)
    handled = []
    for leftover in leftovers(destination):
        if leftover.owner_alive():
            continue
        handled.append(leftover)
        if leftover.role == BACKUP:
            _settle_backup(leftover.path, destination)
        else:
            _remove(leftover.path)
    return handled


# ----------------------------------------------------------------------------------------- publish


def _publish(staged: Path, destination: Path, overwrite: bool) -> None:
    """Move the complete `staged` output to `destination`, keeping any old destination until it is in place.

    A file replacing a file is one atomic rename. Anything else that replaces an old destination goes
    destination -> backup, staged -> destination, then the backup is deleted: a crash in between leaves
    a backup that `recover` restores.
    """
    if not _exists(destination):
        # the stdlib has no rename-without-replace: a file (or empty directory) that someone else creates
        # between this check and the rename would be replaced
        os.rename(staged, destination)
        _fsync_path(destination.parent)
        return
    if not overwrite:
        _refuse_existing(destination)
    if _is_plain_file(staged) and _is_plain_file(destination):
        os.replace(staged, destination)
        _fsync_path(destination.parent)
        return
    backup = _entry_path(destination, BACKUP)
    os.rename(destination, backup)
    try:
        os.rename(staged, destination)
    except BaseException:
        _settle_backup(backup, destination)
        raise
    _fsync_path(destination.parent)
    _discard(backup, destination)


def _is_plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


@contextmanager
def staged_output(destination: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Write an output (a file or a directory) for `destination` and publish it only if the block succeeds.

    Yields a path that does not exist yet, with `destination`'s own name (so writers that go by the
    suffix behave the same), inside a staging directory beside `destination`. Write the file or directory
    there, check it, and leave the block: it is flushed to disk and renamed to `destination`. An exception
    in the block publishes nothing and removes the staging directory; a killed process leaves one that
    the next `recover` of the destination (done on entry here) deletes.

    With `overwrite`, an existing destination stays in place until the new output is complete, and is
    then swapped out (see `_publish`); so after any crash the destination is the old copy or the new one.

    Raises:
        DestinationExistsError: `destination` exists and `overwrite` is false (checked before anything is
            written, and again at publishing).
        NotADirectoryError, FileNotFoundError: `destination`'s directory is not a directory or is missing.
    """
    destination = Path(destination)
    _check_parent(destination)
    recover(destination)
    if _exists(destination) and not overwrite:
        _refuse_existing(destination)
    staging = _entry_path(destination, STAGING)
    staging.mkdir()
    try:
        staged = staging / destination.name
        yield staged
        if not _exists(staged):
            raise FileNotFoundError(f"nothing was written for '{destination}' (expected '{staged}')")
        _fsync_tree(staged)
        _publish(staged, destination, overwrite)
    finally:
        _remove(staging)


# ------------------------------------------------------------------------------------ single files


def atomic_write(target: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Call `write(tmp_path)` on a temporary file beside `target`, flush it, then rename it over `target`.

    A crash or an exception in `write` leaves `target` as it was (or absent), never half-written; the
    temporary file of a killed writer is removed by the next write of `target` (see `recover`).
    """
    target = Path(target)
    recover(target)
    tmp = _entry_path(target, STAGING)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    try:
        write(tmp)
        _fsync_path(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `target` atomically."""
    atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
