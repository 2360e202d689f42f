"""Produce the committed benchmark results: `python benchmarks/run.py [--device cuda]`.

CPU: tiny 256 px, inference batch 1 and 8 (fp32 and bf16 autocast) and a training step at batch 8,
against transformers and timm on the same weights. GPU (when a CUDA device is present): tiny (window 8)
and base (window 16) at 256 px, batch 256 bf16 inference eager and compiled, training step at 128.
Writes benchmarks/results/<device>-<variant>.json and .md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from swinv2.bench import run, to_markdown, write_report

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    variants = ["swinv2-tiny-patch4-window8-256"]
    if args.device != "cpu":
        variants.append("swinv2-base-patch4-window16-256")
    for variant in variants:
        report = run(variant, rounds=args.rounds, device=args.device, threads=args.threads)
        stem = f"{args.device.split(':')[0]}-{variant}"
        write_report(report, RESULTS, stem)
        print(to_markdown(report))


if __name__ == "__main__":
    main()
