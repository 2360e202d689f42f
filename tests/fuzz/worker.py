"""The fuzz worker: runs cases [start, stop) of a run in one process and reports each as a JSON line.

Started by the harness (`python -m fuzz.worker ...` with tests/ on PYTHONPATH) under an address-space
cap, so that a crash, an out-of-memory kill or a hang is pinned on the case that caused it. Protocol, one
JSON object per line on the file descriptor the harness reads (the original stdout; the library's own
prints go to stderr):

    {"event": "ready"}
    {"event": "start", "id": N, "kind": ..., "entry": ..., "mutation": ..., "dir": ...}
    {"event": "done", "id": N, "status": "ok" | "rejected" | "finding" | "fuzzer-error", "exc_type": ...,
     "message": ..., "problem": ..., "seconds": ...}

A case's directory is deleted when it keeps the contract and kept (with case.json) when it does not.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path


def _limit_address_space(gigabytes: float) -> None:
    if gigabytes > 0:
        cap = int(gigabytes * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--start", type=int, required=True)
    parser.add_argument("--stop", type=int, required=True)
    parser.add_argument("--step", type=int, default=1)
    parser.add_argument("--address-space-gb", type=float, default=6.0)
    args = parser.parse_args(argv)

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the library prints goes to the worker log, not the protocol
    sys.stdout = sys.stderr

    def send(**event: object) -> None:
        protocol.write(json.dumps(event, default=str) + "\n")
        protocol.flush()

    _limit_address_space(args.address_space_gb)
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    import torch

    torch.set_num_threads(1)
    from .cases import Builder, run_case
    from .seeds import build_seeds

    seeds = build_seeds(Path(args.seeds))
    builder = Builder(seeds, Path(args.work), args.seed)
    send(event="ready")
    for index in range(args.start, args.stop, args.step):
        began = time.monotonic()
        try:
            case = builder.build(index)
        except Exception as err:  # a bug of the fuzzer, not of the library: reported on its own
            send(
                event="start",
                id=index,
                kind=builder.kind_of(index),
                entry="(building the case)",
                mutation="",
                dir=str(Path(args.work) / f"c{index:06d}"),
            )
            send(
                event="done",
                id=index,
                status="fuzzer-error",
                exc_type=type(err).__name__,
                message=str(err)[:300],
                problem="case could not be built: " + traceback.format_exc(limit=-2)[-600:],
                seconds=time.monotonic() - began,
            )
            continue
        info = {
            "id": index,
            "kind": case.kind,
            "entry": case.entry,
            "mutation": case.mutation,
            "dir": str(case.directory),
            "argv": case.argv,
        }
        (case.directory / "case.json").write_text(json.dumps({**info, "seed": args.seed}, indent=2))
        send(event="start", **info)
        outcome = run_case(case)
        seconds = time.monotonic() - began
        if outcome.status == "finding":
            record = {**info, "seed": args.seed, **outcome.as_dict(), "seconds": seconds}
            (case.directory / "case.json").write_text(json.dumps(record, indent=2))
        else:
            shutil.rmtree(case.directory, ignore_errors=True)
        send(event="done", id=index, seconds=seconds, **outcome.as_dict())
    send(event="finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
