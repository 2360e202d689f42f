"""The fuzz harness: runs a range of cases in worker subprocesses, restarts a worker that dies, times out
cases that hang, and groups the findings for a report.

A worker that crashes (a segfault, an out-of-memory kill, the address-space cap hit outside Python) or
runs a case past `timeout` seconds is killed and the case recorded as a finding with the signal or
"timeout"; a fresh worker goes on with the next case. Cases that break the contract keep their directory
(the mutated files and a case.json saying what was done) under `keep/`.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent
DEFAULT_TIMEOUT = 20.0
#: Memory limit the library is told about (checked before allocating) and the harder cap on the worker.
MEMORY_LIMIT = os.environ.get("SWINV2_FUZZ_MEMORY_LIMIT", "2GB")
ADDRESS_SPACE_GB = float(os.environ.get("SWINV2_FUZZ_ADDRESS_SPACE_GB", "6"))
STARTUP_TIMEOUT = 180.0


@dataclass
class FuzzResult:
    """Every case's record and what the run cost."""

    seed: int
    records: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    restarts: int = 0
    keep: Path | None = None

    @property
    def findings(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] in ("finding", "fuzzer-error")]

    def per_kind(self) -> dict[str, dict[str, int]]:
        table: dict[str, Counter[str]] = defaultdict(Counter)
        for record in self.records:
            table[record["kind"]][record["status"]] += 1
        return {kind: dict(counts) for kind, counts in sorted(table.items())}

    def groups(self) -> list[dict[str, Any]]:
        """Findings grouped by input kind, exception type, broken rule and message head (numbers, quoted values
        and case paths blanked), most frequent first; the entry points that hit each group are counted."""
        grouped: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for record in self.findings:
            problem = _NUMBER.sub("N", record["problem"].split(":")[0])
            key = (record["kind"], record["exc_type"], problem, message_head(record)[:60])
            grouped[key].append(record)
        out = []
        for (kind, exc_type, problem, head), members in grouped.items():
            example = members[0]
            out.append(
                {
                    "kind": kind,
                    "exc_type": exc_type,
                    "problem": problem,
                    "message_head": head,
                    "count": len(members),
                    "entries": dict(Counter(m["entry"] for m in members).most_common()),
                    "example": {k: example.get(k) for k in ("id", "entry", "mutation", "message", "dir", "argv")},
                }
            )
        return sorted(out, key=lambda g: (-g["count"], g["kind"], g["message_head"]))

    def summary(self) -> dict[str, Any]:
        statuses = Counter(r["status"] for r in self.records)
        return {
            "seed": self.seed,
            "cases": len(self.records),
            "seconds": round(self.seconds, 1),
            "worker_restarts": self.restarts,
            "statuses": dict(statuses),
            "per_kind": self.per_kind(),
            "kept": str(self.keep),
            "groups": self.groups(),
        }

    def describe(self, limit: int = 60) -> str:
        """A readable report: counts per kind, then each finding group with a reproducer."""
        lines = [
            f"{len(self.records)} cases (seed {self.seed}) in {self.seconds:.0f} s, "
            f"{self.restarts} worker restarts; outcomes {dict(Counter(r['status'] for r in self.records))}"
        ]
        for kind, counts in self.per_kind().items():
            lines.append(f"  {kind:18} {counts}")
        groups = self.groups()
        lines.append(f"{len(self.findings)} findings in {len(groups)} groups (reproducers under {self.keep}):")
        for group in groups[:limit]:
            example = group["example"]
            lines.append(
                f"- [{group['count']}x] {group['kind']}: {group['exc_type']} ({group['problem']}): "
                f"{group['message_head']}"
            )
            lines.append(f"    entry points: {group['entries']}")
            lines.append(f"    e.g. case {example['id']} via {example['entry']}: {example['mutation'][:200]}")
            lines.append(f"    -> {(example['message'] or '')[:240]}")
            lines.append(f"    files: {example['dir']}")
        if len(groups) > limit:
            lines.append(f"... and {len(groups) - limit} more groups")
        return "\n".join(lines)


_CASE_PATH = re.compile(r"(/[^\s'\"]*)?/c\d{6}(/[^\s'\"(),;]*)?")
_QUOTED = re.compile(r"'[^']{0,200}'|\"[^\"]{0,200}\"")
_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(\.\d+)?(e[+-]?\d+)?")


def message_head(record: dict[str, Any]) -> str:
    """The message with case paths, quoted values and numbers blanked, cut short: the grouping key."""
    text = _CASE_PATH.sub("<path>", record.get("message") or "")
    text = _QUOTED.sub("'…'", text)
    text = _NUMBER.sub("N", text)
    return text[:100]


def _reader(stream: Any, sink: queue.Queue[str | None]) -> None:
    for line in stream:
        sink.put(line)
    sink.put(None)


def _spawn(seeds: Path, work: Path, seed: int, start: int, stop: int, step: int, log: Any) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "SWINV2_MEMORY_LIMIT": MEMORY_LIMIT,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "PYTHONHASHSEED": "0",
        }
    )
    command = [
        sys.executable,
        "-m",
        "fuzz.worker",
        "--seeds",
        str(seeds),
        "--work",
        str(work),
        "--seed",
        str(seed),
        "--start",
        str(start),
        "--stop",
        str(stop),
        "--step",
        str(step),
        "--address-space-gb",
        str(ADDRESS_SPACE_GB),
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=str(REPO_ROOT), env=env, start_new_session=True
    )


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])[-400:]


def _run_lane(
    seed: int,
    start: int,
    stop: int,
    step: int,
    seeds: Path,
    work: Path,
    timeout: float,
    result: FuzzResult,
    lock: threading.Lock,
    lane: int,
    deadline: float | None,
) -> None:
    """Run cases start, start+step, ... < stop, restarting the worker after each crash or timeout."""
    index = start
    failures_before_ready = 0
    log_path = work / f"worker-{lane}.log"
    while index < stop:
        if deadline is not None and time.monotonic() > deadline:
            return
        with log_path.open("a") as log:
            process = _spawn(seeds, work, seed, index, stop, step, log)
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_reader, args=(process.stdout, lines), daemon=True).start()
        current: dict[str, Any] | None = None
        ready = False
        while True:
            wait = STARTUP_TIMEOUT if not ready else timeout
            if current is not None:
                wait = max(0.0, current["_deadline"] - time.monotonic())
            try:
                line = lines.get(timeout=wait)
            except queue.Empty:
                line = "TIMEOUT"
            if line == "TIMEOUT" or line is None:
                _kill(process)
                if current is None:
                    if line is None and not ready:
                        failures_before_ready += 1
                        if failures_before_ready >= 3:
                            raise RuntimeError(f"fuzz worker failed to start: {_log_tail(log_path, 12)}")
                        time.sleep(2)
                        break
                    if line is None:  # died between cases: go on after the last one reported
                        break
                    raise RuntimeError(f"fuzz worker did not start within {STARTUP_TIMEOUT} s")
                if line is None:
                    code = process.returncode
                    how = f"signal {-code}" if code < 0 else f"exit {code}"
                    problem = f"worker died ({how})"
                    message = _log_tail(log_path)
                    exc_type = "crash"
                else:
                    problem, exc_type = f"no result within {timeout:.0f} s", "timeout"
                    message = f"case ran over {timeout:.0f} s"
                record = {k: v for k, v in current.items() if not k.startswith("_")}
                record.update(
                    status="finding",
                    exc_type=exc_type,
                    message=message,
                    problem=problem,
                    seconds=time.monotonic() - current["_began"],
                )
                try:
                    case_dir = Path(record["dir"])
                    if case_dir.is_dir():
                        (case_dir / "case.json").write_text(json.dumps({**record, "seed": seed}, indent=2))
                except OSError:
                    pass
                with lock:
                    result.records.append(record)
                    result.restarts += 1
                index = current["id"] + step
                break
            event = json.loads(line)
            if event["event"] == "ready":
                ready, failures_before_ready = True, 0
            elif event["event"] == "start":
                current = {**event, "_began": time.monotonic(), "_deadline": time.monotonic() + timeout}
                current.pop("event")
            elif event["event"] == "done":
                assert current is not None and current["id"] == event["id"]
                record = {k: v for k, v in current.items() if not k.startswith("_")}
                record.update({k: v for k, v in event.items() if k not in ("event", "id")})
                with lock:
                    result.records.append(record)
                index = current["id"] + step
                current = None
                if deadline is not None and time.monotonic() > deadline:
                    _kill(process)
                    return
            elif event["event"] == "finished":
                process.wait()
                return


def run_fuzz(
    cases: int,
    seed: int,
    out: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    jobs: int = 1,
    start: int = 0,
    max_seconds: float | None = None,
) -> FuzzResult:
    """Run cases [start, start+cases) of the run `seed` in `jobs` worker lanes.

    Args:
        cases: How many cases.
        seed: The run seed; case N is the same for the same seed and N.
        out: Directory for seeds, worker logs and kept reproducers (`keep/cNNNNNN/`); a temporary one if None.
        timeout: Seconds a case may take before its worker is killed and the case recorded as a hang.
        jobs: Parallel workers (lane j runs every jobs-th case).
        max_seconds: Stop starting new cases after this long (the records say how many ran).
    """
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="swinv2-fuzz-"))
    out.mkdir(parents=True, exist_ok=True)
    seeds, work = out / "seeds", out / "keep"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # built afresh by every run (the library's writers may have changed), once, before the lanes start
    shutil.rmtree(seeds, ignore_errors=True)
    _build_seeds_in_subprocess(seeds)
    result = FuzzResult(seed=seed, keep=work)
    lock = threading.Lock()
    began = time.monotonic()
    deadline = began + max_seconds if max_seconds else None
    errors: list[BaseException] = []

    def lane(j: int) -> None:
        try:
            _run_lane(seed, start + j, start + cases, jobs, seeds, work, timeout, result, lock, j, deadline)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=lane, args=(j,)) for j in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.monotonic() - began
    result.records.sort(key=lambda r: r["id"])
    if errors:
        raise errors[0]
    return result


def _build_seeds_in_subprocess(seeds: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from pathlib import Path; from fuzz.seeds import build_seeds; build_seeds(Path(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(seeds)],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(REPO_ROOT),
        timeout=STARTUP_TIMEOUT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"building the fuzz seeds failed: {done.stderr[-2000:]}")
