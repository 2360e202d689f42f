"""Produce the committed benchmark results: `python benchmarks/run.py [--device cuda]`.

CPU: tiny 256 px, inference batch 1 and 8 (fp32 and bf16 autocast) and a training step at batch 8,
against transformers and timm on the same weights. GPU (when a CUDA device is present): tiny (window 8)
and base (window 16) at 256 px, batch 256 bf16 inference eager and compiled, training step at 128.
Writes <out>/<device>-<variant>.json and .md after every case, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from swinv2.cli.bench import Report, run, to_markdown, write_report

RESULTS = Path(__file__).resolve().parent / "results"
CPU_VARIANTS = ["swinv2-tiny-patch4-window8-256"]
GPU_VARIANTS = ["swinv2-tiny-patch4-window8-256", "swinv2-base-patch4-window16-256"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2, as on CI)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results directory (default: {RESULTS})")
    parser.add_argument(
        "--budget-s", type=float, default=None, help="start no case after this many seconds (all variants)"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    for variant in CPU_VARIANTS if args.device == "cpu" else GPU_VARIANTS:
        stem = f"{args.device.split(':')[0]}-{variant}"
        left = None if args.budget_s is None else args.budget_s - (time.perf_counter() - started)
        if left is not None and left <= 0:
            print(f"{variant}: not measured, the time budget of {args.budget_s:.0f} s is spent", flush=True)
            continue

        def save(report: Report, stem: str = stem) -> None:
            write_report(report, args.out, stem)

        report = run(variant, rounds=args.rounds, device=args.device, threads=args.threads, budget_s=left, on_case=save)
        save(report)
        print(to_markdown(report), flush=True)


if __name__ == "__main__":
    main()
