"""Run the fuzzer as a script and write a JSON report.

    python -m tests.fuzz.run --cases 5000 --seed 1 --jobs 2 --report fuzz-report.json [--out DIR]
    python -m tests.fuzz.run --minutes 10 --cases 100000 --jobs 2 --report fuzz-report.json

Prints the readable summary (cases per kind, outcomes, finding groups with a reproducer each); the report
holds the same as JSON. Exit status 1 when there are findings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .harness import DEFAULT_TIMEOUT, run_fuzz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000, help="cases to run (default 5000)")
    parser.add_argument("--seed", type=int, default=1, help="run seed (default 1)")
    parser.add_argument("--start", type=int, default=0, help="first case number (to rerun a range)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel workers (default 1)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per case before a hang")
    parser.add_argument("--minutes", type=float, default=None, help="stop starting cases after this long")
    parser.add_argument("--out", type=Path, default=None, help="seeds, logs and kept reproducers (default: a tmp dir)")
    parser.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    result = run_fuzz(
        args.cases,
        args.seed,
        out=args.out,
        timeout=args.timeout,
        jobs=args.jobs,
        start=args.start,
        max_seconds=args.minutes * 60 if args.minutes else None,
    )
    print(result.describe(limit=200))
    if args.report:
        args.report.write_text(json.dumps({**result.summary(), "records": result.findings}, indent=2) + "\n")
    return 1 if result.findings else 0


if __name__ == "__main__":
    sys.exit(main())
