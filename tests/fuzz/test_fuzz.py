"""Fuzzing the library's input boundary: model directories, weight files, JSON configs, shard indexes,
pickles with code-executing payloads, images and the `swinv2` command line.

The rule under test: a bad input either loads or raises the library's own `InputError` (or a
`FileNotFoundError` naming the path) with one line of at most 1000 characters naming the file; the CLI
exits 0, 1 or 2 and on 1 prints exactly one `swinv2 <command>: error:` line, and its --json output is
strict JSON. No pickle payload runs, no case hangs (20 s per case), and no case exhausts memory before a
check (each worker runs with SWINV2_MEMORY_LIMIT=2GB and a 6 GB address-space cap).

- `test_short_fuzz_run` runs in the default suite: a fixed seed and enough cases that every input kind
  is covered several times, in well under a minute. It fails listing each group of findings with the
  mutation that produced it and the kept directory holding the mutated files.
- `test_long_fuzz_run` (`pytest -m long`) runs SWINV2_FUZZ_CASES cases (default 5000) of seed
  SWINV2_FUZZ_SEED (default 1) with SWINV2_FUZZ_JOBS workers (default 2) and prints the summary.

The same harness runs as a script for reports: `python -m tests.fuzz.run --cases N --seed S --report F`.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

import pytest

from fuzz import mutators
from fuzz.cases import KINDS, SCHEDULE, Builder
from fuzz.harness import run_fuzz

SHORT_SEED = 20240601
SHORT_CASES = int(os.environ.get("SWINV2_FUZZ_SHORT_CASES", "150"))


def _keep_dir(name: str) -> Path:
    """Where a run keeps its seeds and reproducers: SWINV2_FUZZ_KEEP, else a fixed folder in the temp dir
    (so the failure message can point at files that outlive pytest's own temporary directories)."""
    root = Path(os.environ.get("SWINV2_FUZZ_KEEP", Path(tempfile.gettempdir()) / "swinv2-fuzz"))
    return root / name


def test_schedule_covers_every_input_kind_in_the_short_run() -> None:
    """The short run is long enough to visit every kind of input more than once."""
    builder = Builder(Path("."), Path("."), 0)
    visited = {builder.kind_of(i) for i in range(SHORT_CASES)}
    assert visited == set(KINDS)
    assert 2 * len(SCHEDULE) <= SHORT_CASES


def test_png_size_rewrite_keeps_a_valid_crc() -> None:
    """The IHDR rewrite (used to reach PIL's size checks and the 1 x 16,777,216 case) keeps the chunk's
    CRC right, so the decoder gets past the checksum to the dimensions."""
    import zlib

    from PIL import Image

    blob = mutators.rewrite_png_size(mutators.png_bytes(4, 3), 1, 16_777_216)
    body, crc = blob[12:29], int.from_bytes(blob[29:33], "big")
    assert zlib.crc32(body) == crc
    with Image.open(__import__("io").BytesIO(blob)) as image:
        assert image.size == (1, 16_777_216)


def test_json_mutations_reach_the_issue_findings() -> None:
    """The JSON mutator can produce each hostile value the issue reported (lists as label maps, 1e999,
    a 5000-digit int, patch_size 1e9, deep nesting, a top-level array)."""
    rng = random.Random(0)
    seen = " ".join(
        mutators.mutate_json(rng, {"id2label": {"0": "a"}, "patch_size": 4})[0].decode("utf-8", "replace")
        for _ in range(3000)
    )
    assert "1e999" in seen and "9" * 5000 in seen and "[[[[[[[[" in seen
    assert '"patch_size": 1000000000' in seen and '"id2label": [' in seen


def test_short_fuzz_run() -> None:
    """A fixed-seed run over every input kind; any case that breaks the error contract fails the test."""
    result = run_fuzz(SHORT_CASES, SHORT_SEED, out=_keep_dir(f"short-{SHORT_SEED}"))
    assert len(result.records) == SHORT_CASES
    if result.findings:
        pytest.fail("cases broke the error contract:\n" + result.describe(), pytrace=False)


@pytest.mark.long
def test_long_fuzz_run() -> None:
    """SWINV2_FUZZ_CASES cases of seed SWINV2_FUZZ_SEED; prints the summary, writes report.json beside the
    reproducers, and fails when anything broke the contract."""
    cases = int(os.environ.get("SWINV2_FUZZ_CASES", "5000"))
    seed = int(os.environ.get("SWINV2_FUZZ_SEED", "1"))
    jobs = int(os.environ.get("SWINV2_FUZZ_JOBS", "2"))
    out = _keep_dir(f"long-{seed}")
    result = run_fuzz(cases, seed, out=out, jobs=jobs)
    (out / "report.json").write_text(json.dumps({**result.summary(), "records": result.findings}, indent=2))
    print(result.describe(limit=200))
    if result.findings:
        pytest.fail("cases broke the error contract:\n" + result.describe(limit=200), pytrace=False)
