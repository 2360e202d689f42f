"""`swinv2.io.files`: crash-safe publishing of files and directories, and recovery after killed writers.

A dead owner is simulated two ways: entries named with the pid of a finished subprocess, and a real
subprocess that kills itself (SIGKILL) at a chosen step of publishing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from swinv2.io import files
from swinv2.io.files import DestinationExistsError, atomic_write, atomic_write_text, leftovers, recover, staged_output

FILES_MODULE = Path(files.__file__)


# ---------------------------------------------------------------------------------------- helpers


def write_output(path: Path, kind: str, text: str) -> None:
    """A file, or a directory holding two files, whose content is `text`."""
    if kind == "file":
        path.write_text(text, encoding="utf-8")
    else:
        path.mkdir()
        (path / "weights.bin").write_text(text, encoding="utf-8")
        (path / "config.json").write_text(f'{{"text": "{text}"}}', encoding="utf-8")


def read_output(path: Path) -> str:
    """The `text` of `write_output` (checking a directory is complete)."""
    if path.is_dir():
        assert sorted(p.name for p in path.iterdir()) == ["config.json", "weights.bin"]
        return (path / "weights.bin").read_text(encoding="utf-8")
    return path.read_text(encoding="utf-8")


def hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has finished (and been reaped)."""
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(process.stdout)


@pytest.fixture
def live_pid():
    """The pid of a process that runs for the whole test."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def entry(destination: Path, role: str, pid: int, start: int | None = None, token: str = "0a1b2c") -> Path:
    """The documented name of a leftover: `.{name}.swinv2-{role}.{pid}[-{start}].{token}`."""
    owner = str(pid) if start is None else f"{pid}-{start}"
    return destination.parent / f".{destination.name}.swinv2-{role}.{owner}.{token}"


KINDS = ["file", "dir"]


# ---------------------------------------------------------------------------------------- publish


@pytest.mark.parametrize("kind", KINDS)
def test_publishes_a_new_output_and_leaves_nothing_else(tmp_path, kind):
    destination = tmp_path / "out"
    with staged_output(destination) as staged:
        assert not staged.exists()
        write_output(staged, kind, "new")
        assert not destination.exists()  # nothing visible before the block completes
    assert read_output(destination) == "new"
    assert hidden(tmp_path) == []


def test_staged_path_keeps_the_name_and_sits_in_an_owned_staging_directory_beside_the_destination(tmp_path):
    destination = tmp_path / "model.safetensors"
    with staged_output(destination) as staged:
        assert staged.name == destination.name  # writers that go by the suffix behave the same
        assert staged.parent.parent == tmp_path
        assert staged.parent.name.startswith(f".model.safetensors.swinv2-staging.{os.getpid()}")
        (only,) = leftovers(destination)
        assert (only.role, only.pid, only.path) == ("staging", os.getpid(), staged.parent)
        assert only.owner_alive()
        staged.write_bytes(b"x")


@pytest.mark.parametrize("kind", KINDS)
def test_existing_destination_without_overwrite_is_refused_before_anything_is_written(tmp_path, kind):
    destination = tmp_path / "out"
    write_output(destination, kind, "old")
    refused = r"'.*out' exists; pass --overwrite \(overwrite=True\)"
    with pytest.raises(DestinationExistsError, match=refused) as err, staged_output(destination):
        raise AssertionError("the block must not run")
    assert isinstance(err.value, FileExistsError)
    assert str(destination) in str(err.value) and "\n" not in str(err.value)
    assert read_output(destination) == "old"
    assert hidden(tmp_path) == []


@pytest.mark.parametrize(("old_kind", "new_kind"), [(a, b) for a in KINDS for b in KINDS])
def test_overwrite_keeps_the_old_copy_until_the_block_completes(tmp_path, old_kind, new_kind):
    destination = tmp_path / "out"
    write_output(destination, old_kind, "old")
    with staged_output(destination, overwrite=True) as staged:
        write_output(staged, new_kind, "new")
        assert read_output(destination) == "old"
    assert read_output(destination) == "new"
    assert destination.is_dir() == (new_kind == "dir")
    assert hidden(tmp_path) == []


def test_destination_that_appears_during_the_block_is_refused_at_publishing(tmp_path):
    destination = tmp_path / "out"
    with pytest.raises(DestinationExistsError), staged_output(destination) as staged:
        write_output(staged, "file", "new")
        write_output(destination, "file", "someone else's")
    assert read_output(destination) == "someone else's"
    assert hidden(tmp_path) == []


def test_a_block_that_writes_nothing_publishes_nothing(tmp_path):
    destination = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="nothing was written for"), staged_output(destination):
        pass
    assert not destination.exists()
    assert hidden(tmp_path) == []


# --------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("overwrite", [False, True])
def test_an_exception_in_the_block_publishes_nothing_and_leaves_no_leftovers(tmp_path, kind, overwrite):
    destination = tmp_path / "out"
    if overwrite:
        write_output(destination, kind, "old")
    with pytest.raises(RuntimeError, match="verification failed"), staged_output(destination, overwrite) as staged:
        write_output(staged, kind, "new")
        raise RuntimeError("verification failed")
    assert read_output(destination) == "old" if overwrite else not destination.exists()
    assert hidden(tmp_path) == []


def test_a_failed_swap_puts_the_old_copy_back(tmp_path, monkeypatch):
    destination = tmp_path / "out"
    write_output(destination, "dir", "old")
    real_rename = os.rename

    def rename(src, dst):
        if Path(dst) == destination and ".swinv2-staging." in str(src):
            raise OSError("disk unplugged")
        real_rename(src, dst)

    monkeypatch.setattr(files.os, "rename", rename)
    with pytest.raises(OSError, match="disk unplugged"), staged_output(destination, overwrite=True) as staged:
        write_output(staged, "dir", "new")
    assert read_output(destination) == "old"
    assert hidden(tmp_path) == []


def test_missing_or_non_directory_parent_is_refused_naming_the_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    not_a_directory = f"cannot write '{blocker / 'out'}': '{blocker}' is not a directory"
    with pytest.raises(NotADirectoryError, match=not_a_directory), staged_output(blocker / "out"):
        pass
    missing = tmp_path / "missing" / "out"
    no_directory = f"cannot write '{missing}': its directory '.*missing' does not exist"
    with pytest.raises(FileNotFoundError, match=no_directory), staged_output(missing):
        pass


def test_a_very_long_destination_name_works(tmp_path):
    destination = tmp_path / ("n" * 250)
    with staged_output(destination) as staged:
        write_output(staged, "dir", "new")
        assert len(staged.parent.name.encode()) < 255
        assert [leftover.role for leftover in leftovers(destination)] == ["staging"]
    with staged_output(destination, overwrite=True) as staged:
        write_output(staged, "dir", "newer")
    assert read_output(destination) == "newer"
    assert hidden(tmp_path) == []


# --------------------------------------------------------------------------------------- recovery


@pytest.mark.parametrize("kind", KINDS)
def test_dead_owners_staging_and_discard_entries_are_deleted(tmp_path, dead_pid, kind):
    destination = tmp_path / "out"
    write_output(destination, kind, "current")
    write_output(entry(destination, "staging", dead_pid), kind, "half")
    write_output(entry(destination, "discard", dead_pid, token="ff"), kind, "half-deleted")
    handled = recover(destination)
    assert sorted(leftover.role for leftover in handled) == ["discard", "staging"]
    assert read_output(destination) == "current"
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("kind", KINDS)
def test_dead_owners_backup_is_restored_when_the_destination_is_missing(tmp_path, dead_pid, kind):
    """The owner died between renaming the destination to its backup and moving the new copy in."""
    destination = tmp_path / "out"
    write_output(entry(destination, "backup", dead_pid), kind, "old")
    write_output(entry(destination, "staging", dead_pid), "dir", "new")  # complete or not: never published
    recover(destination)
    assert read_output(destination) == "old"
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("kind", KINDS)
def test_dead_owners_backup_is_deleted_when_the_destination_is_present(tmp_path, dead_pid, kind):
    """The owner died after the swap, before deleting the old copy."""
    destination = tmp_path / "out"
    write_output(destination, kind, "new")
    write_output(entry(destination, "backup", dead_pid), kind, "old")
    recover(destination)
    assert read_output(destination) == "new"
    assert hidden(tmp_path) == []


def test_the_next_write_recovers_first(tmp_path, dead_pid):
    """Entering `staged_output` restores a dead owner's backup, so without overwrite it is refused."""
    destination = tmp_path / "out"
    write_output(entry(destination, "backup", dead_pid), "dir", "old")
    with pytest.raises(DestinationExistsError), staged_output(destination):
        pass
    assert read_output(destination) == "old"
    assert hidden(tmp_path) == []


def test_a_live_owners_entries_are_never_touched(tmp_path, live_pid):
    destination = tmp_path / "out"
    theirs = [
        entry(destination, "staging", live_pid),
        entry(destination, "backup", live_pid, token="01"),
        entry(destination, "discard", live_pid, token="02"),
    ]
    for path in theirs:
        write_output(path, "dir", "theirs")
    assert recover(destination) == []
    with staged_output(destination) as staged:  # a concurrent writer of ours is fine beside them
        write_output(staged, "file", "ours")
    assert read_output(destination) == "ours"
    assert all(read_output(path) == "theirs" for path in theirs)


def test_this_processs_own_entries_count_as_alive(tmp_path):
    destination = tmp_path / "out"
    with staged_output(destination) as staged:
        assert recover(destination) == []
        assert staged.parent.is_dir()
        write_output(staged, "file", "new")


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/stat").exists(), reason="needs /proc for start times")
def test_a_recycled_pid_is_not_taken_for_the_owner(tmp_path):
    destination = tmp_path / "out"
    start = files._start_time(os.getpid())
    assert start is not None
    write_output(entry(destination, "staging", os.getpid(), start + 1), "dir", "stale")  # same pid, other process
    write_output(entry(destination, "staging", os.getpid(), start, token="ab"), "dir", "ours")
    handled = recover(destination)
    assert [leftover.start for leftover in handled] == [start + 1]
    assert [leftover.start for leftover in leftovers(destination)] == [start]


def test_entries_of_other_destinations_and_foreign_names_are_left_alone(tmp_path, dead_pid):
    destination = tmp_path / "out"
    foreign = [
        tmp_path / ".out.old",
        tmp_path / ".out.swinv2-staging.notapid.00",
        tmp_path / f".out.swinv2-leftover.{dead_pid}.00",
        entry(tmp_path / "out.b", "staging", dead_pid),  # another destination's: cleaned when that one is written
        entry(tmp_path / "other", "backup", dead_pid),
    ]
    for path in foreign:
        path.mkdir()
    assert recover(destination) == []
    assert hidden(tmp_path) == sorted(path.name for path in foreign)


# ------------------------------------------------- a real writer killed at each step of publishing

CHILD = textwrap.dedent(
    """
    import importlib.util, os, signal, sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("files_under_test", sys.argv[1])
    files = sys.modules["files_under_test"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(files)  # the module alone: no torch to import
    destination, kill_after, kind = Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    renames = []

    def killing_after(move):
        def moved(src, dst):
            move(src, dst)
            renames.append(dst)
            if len(renames) == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        return moved

    os.rename, os.replace = killing_after(os.rename), killing_after(os.replace)
    with files.staged_output(destination, overwrite=True) as staged:
        if kind == "file":
            staged.write_text("new", encoding="utf-8")
        else:
            staged.mkdir()
            (staged / "weights.bin").write_text("new", encoding="utf-8")
            (staged / "config.json").write_text('{"text": "new"}', encoding="utf-8")
        if kill_after == 0:
            os.kill(os.getpid(), signal.SIGKILL)
    """
)

# (renames done before the kill, what DST is before recovery, after recovery, which leftovers remain)
STEPS = [
    (0, "old", "old", ["staging"]),  # killed while writing
    (1, None, "old", ["backup", "staging"]),  # destination set aside, new copy not yet moved in
    (2, "new", "new", ["backup", "staging"]),  # swapped, old copy not yet deleted
    (3, "new", "new", ["discard", "staging"]),  # old copy being deleted
]


@pytest.mark.parametrize(("kill_after", "before", "after", "roles"), STEPS, ids=lambda v: str(v))
def test_a_writer_killed_at_each_step_leaves_the_old_or_the_new_copy(tmp_path, kill_after, before, after, roles):
    destination = tmp_path / "out"
    write_output(destination, "dir", "old")
    child = [sys.executable, "-c", CHILD, str(FILES_MODULE), str(destination), str(kill_after), "dir"]
    result = subprocess.run(child, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert (read_output(destination) if destination.exists() else None) == before
    assert sorted(leftover.role for leftover in leftovers(destination)) == roles
    recover(destination)
    assert read_output(destination) == after
    assert hidden(tmp_path) == []


def test_a_file_writer_killed_after_its_rename_leaves_only_an_empty_staging_directory(tmp_path):
    destination = tmp_path / "out.pth"
    write_output(destination, "file", "old")
    child = [sys.executable, "-c", CHILD, str(FILES_MODULE), str(destination), "1", "file"]
    result = subprocess.run(child, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert read_output(destination) == "new"  # one atomic replace: never a moment without a copy
    (staging,) = leftovers(destination)
    assert list(staging.path.iterdir()) == []
    recover(destination)
    assert hidden(tmp_path) == []


# ------------------------------------------------------------------------------------ atomic_write


def test_atomic_write_replaces_and_a_failed_write_leaves_the_target(tmp_path):
    target = tmp_path / "config.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text(encoding="utf-8") == "two"

    def failing(tmp: Path) -> None:
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert target.read_text(encoding="utf-8") == "two"
    assert hidden(tmp_path) == []


def test_atomic_write_removes_a_dead_writers_temporary_file(tmp_path, dead_pid):
    target = tmp_path / "config.json"
    stale = entry(target, "staging", dead_pid)
    stale.write_text("half", encoding="utf-8")
    atomic_write_text(target, "whole")
    assert target.read_text(encoding="utf-8") == "whole"
    assert hidden(tmp_path) == []


def test_atomic_write_temporary_file_names_its_owner(tmp_path):
    target = tmp_path / "config.json"
    seen: list[files.Leftover] = []
    atomic_write(target, lambda tmp: (seen.extend(leftovers(target)), tmp.write_text("x", encoding="utf-8")))
    (only,) = seen
    assert (only.role, only.pid) == ("staging", os.getpid())
