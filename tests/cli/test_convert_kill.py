"""SIGKILL `swinv2 convert` (the console script) at random moments, many times.

After every kill, DST is the complete old copy or the complete new one (or, while the old one is set aside
for the swap, absent with that old copy in a backup beside it), and once the next run has recovered (a
call to `recover`, or sometimes a whole uncut `swinv2 convert`) it is the old or the new copy again and no
staging, backup or discard entry is left in DST's folder. Two different sources are converted into the
same DST alternately, so old and new always differ.

Kill moments are seeded and drawn three ways, so that many land while the output is written, verified and
placed rather than while torch is imported: anywhere in a measured full run, a random time after the
staging directory appears, and as soon as a backup of the old copy appears.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import transformers

from helpers import hf_config, perturb_, tiny_config
from swinv2.io.files import leftovers, recover

SWINV2 = Path(sys.executable).parent / "swinv2"
POLL_S = 0.0005


def tree_digest(path: Path) -> dict[str, str] | None:
    """{relative path: sha256} of every file under `path` (a file's own digest under ''); None if absent."""
    if not path.exists():
        return None
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in path.rglob("*") if p.is_file()
    }


def hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def convert_command(src: Path, dst: Path, overwrite: bool) -> list[str]:
    return [str(SWINV2), "convert", str(src), str(dst), *(["--overwrite"] if overwrite else [])]


@dataclass(frozen=True)
class Source:
    path: Path
    output: dict[str, str]  # the tree digest of its converted directory


@dataclass(frozen=True)
class Setup:
    sources: tuple[Source, Source]
    run_s: float  # one whole uncut run
    after_staging_s: float  # from the staging directory's appearance to the end of the run


def _timed_run(src: Path, dst: Path) -> tuple[float, float]:
    """Run one uncut conversion; (its duration, the time from its staging directory's appearance to its end)."""
    began = time.monotonic()
    process = subprocess.Popen(
        convert_command(src, dst, overwrite=False), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    staged_at = None
    while process.poll() is None:
        if staged_at is None and any(entry.role == "staging" for entry in leftovers(dst)):
            staged_at = time.monotonic()
        time.sleep(POLL_S)
    ended = time.monotonic()
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    return ended - began, ended - (staged_at or began)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """Two transformers directories with different weights, their converted outputs and measured timings."""
    root = tmp_path_factory.mktemp("kill-sources")
    sources, runs, tails = [], [], []
    for seed, name in enumerate(("a", "b")):
        torch.manual_seed(seed)
        model = transformers.Swinv2ForImageClassification(hf_config(tiny_config(num_labels=5)))
        perturb_(model, seed=seed).save_pretrained(root / name)
        reference = root / f"{name}-converted"
        run_s, tail_s = _timed_run(root / name, reference)
        sources.append(Source(root / name, tree_digest(reference) or {}))
        runs.append(run_s)
        tails.append(tail_s)
    assert sources[0].output != sources[1].output
    return Setup((sources[0], sources[1]), max(runs), max(tails))


# --------------------------------------------------------------------------------------------- kills


def _wait_for(process: subprocess.Popen[bytes], dst: Path, role: str, limit_s: float) -> None:
    """Poll until an entry of `role` appears beside `dst`, the process ends, or `limit_s` passes."""
    deadline = time.monotonic() + limit_s
    while process.poll() is None and time.monotonic() < deadline:
        if any(entry.role == role for entry in leftovers(dst)):
            return
        time.sleep(POLL_S)


def _kill_at_random(command: list[str], dst: Path, setup: Setup, rng: random.Random) -> tuple[str, int | None]:
    """Start `command` and SIGKILL it at a drawn moment; (how the moment was drawn, its exit status)."""
    how = rng.choice(["anytime", "after staging", "at backup"])
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if how == "anytime":
        time.sleep(rng.uniform(0.0, 1.1 * setup.run_s))
    elif how == "after staging":
        _wait_for(process, dst, "staging", 3 * setup.run_s)
        time.sleep(rng.uniform(0.0, 1.1 * setup.after_staging_s))
    else:
        _wait_for(process, dst, "backup", 3 * setup.run_s)
    process.kill()
    return how, process.wait(timeout=60)


def _phase(exit_status: int | None, roles: list[str], dst: Path, new: dict[str, str]) -> str:
    """Where the run was when it ended, read from what it left behind."""
    if exit_status == 0:
        return "finished before the kill"
    if "discard" in roles:
        return "deleting the old copy"
    if "backup" in roles:
        return "between the renames" if not dst.exists() else "swapped, old copy not yet deleted"
    if "staging" in roles:
        return "published, staging not yet removed" if tree_digest(dst) == new else "writing or verifying"
    return "exiting after publishing" if tree_digest(dst) == new else "loading (nothing staged)"


def _assert_old_or_new(dst: Path, old: dict[str, str] | None, new: dict[str, str], phase: str) -> None:
    """DST is the complete old or new copy; or absent with the old copy in its backup, between the renames."""
    now = tree_digest(dst)
    if now is None and old is not None:
        backups = [entry.path for entry in leftovers(dst) if entry.role == "backup"]
        assert [tree_digest(path) for path in backups] == [old], phase
    else:
        assert now in (old, new), phase


def kill_many(setup: Setup, root: Path, kills: int, seed: int) -> Counter[str]:
    """`kills` killed conversions into one DST; returns how many ended in each phase."""
    rng = random.Random(seed)
    dst = root / "hf"
    phases: Counter[str] = Counter()
    for attempt in range(kills):
        if rng.random() < 0.2:
            shutil.rmtree(dst, ignore_errors=True)  # now and then a fresh write instead of --overwrite
        old = tree_digest(dst)
        source = next((s for s in setup.sources if s.output != old), None) or rng.choice(setup.sources)
        command = convert_command(source.path, dst, overwrite=old is not None)
        how, exit_status = _kill_at_random(command, dst, setup, rng)
        roles = sorted(entry.role for entry in leftovers(dst))
        phase = _phase(exit_status, roles, dst, source.output)
        phases[phase] += 1
        context = f"kill {attempt} ({how}, {phase}, leftovers {roles})"
        _assert_old_or_new(dst, old, source.output, context)
        if rng.random() < 0.25:  # the next run recovers: a whole uncut conversion of the other source
            other = next(s for s in setup.sources if s is not source)
            result = subprocess.run(
                convert_command(other.path, dst, overwrite=True), capture_output=True, text=True, timeout=300
            )
            assert result.returncode == 0, (context, result.stderr)
            assert tree_digest(dst) == other.output, context
        else:
            recover(dst)
            assert tree_digest(dst) in ((old, source.output) if old is not None else (None, source.output)), context
        assert hidden(root) == [], context
    final = subprocess.run(convert_command(setup.sources[0].path, dst, True), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert tree_digest(dst) == setup.sources[0].output
    assert hidden(root) == []
    return phases


def _report(phases: Counter[str], setup: Setup, began: float) -> None:
    print(f"\n{sum(phases.values())} kills in {time.monotonic() - began:.1f} s", end="; ")
    print(f"uncut run {setup.run_s:.2f} s, staging to end {setup.after_staging_s:.2f} s; where they landed:")
    for phase, count in phases.most_common():
        print(f"  {count:4d}  {phase}")


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL and /proc-free pid probing are POSIX")
def test_killed_conversions_leave_the_old_or_the_new_copy_and_no_leftovers(setup, tmp_path):
    began = time.monotonic()
    phases = kill_many(setup, tmp_path, kills=7, seed=0)
    _report(phases, setup, began)


@pytest.mark.long
@pytest.mark.skipif(os.name == "nt", reason="SIGKILL and /proc-free pid probing are POSIX")
def test_many_killed_conversions_leave_the_old_or_the_new_copy_and_no_leftovers(setup, tmp_path):
    began = time.monotonic()
    phases = kill_many(setup, tmp_path, kills=80, seed=1)
    _report(phases, setup, began)
    assert phases["writing or verifying"] > 0
