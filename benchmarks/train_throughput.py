"""Training throughput, side by side: `swinv2.train.train` against the same loop written with transformers'
model, in one run: `python benchmarks/train_throughput.py [--workload demo|tiny256] [--rounds 3]`.

Three implementations train from the same starting weights (one model directory, written once and read
by both libraries) on the same data ("digits", resized by the same image processor), with the same
recipe: AdamW over `swinv2.train.optim.parameter_groups`, warm-up + cosine schedule, label smoothing 0.1,
gradient clipping at 5, the model's stochastic depth, the trainer's deterministic sampler and
per-sample augmentation, fp32 or bf16 autocast:

- "swinv2 train()": the library's whole trainer (`swinv2.train.train`), timed from its own
  `metrics.jsonl` (its `images_per_s` at every step);
- "transformers loop": the loop a transformers user would write around
  `transformers.Swinv2ForImageClassification` (data loader, forward, loss, backward, clip, step,
  schedule);
- "swinv2 loop": the same hand-written loop around our model, which separates the model's speed from
  the trainer's overhead.

Throughput is images per second over the steps after `--warmup` (data loading included), the median over
`--rounds` interleaved rounds whose order rotates, so slow drifts of the machine hit all alike. Writes
`<out>/<device>-train-<workload>.json` and `.md`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from swinv2 import Swinv2Config, Swinv2ForImageClassification, Swinv2ImageProcessor
from swinv2.cli.bench import machine_info
from swinv2.cli.demo import demo_config
from swinv2.train.data import DeterministicSampler, load_classification_data
from swinv2.train.optim import WarmupCosine, build_optimizer
from swinv2.train.trainer import TrainConfig, train
from swinv2.zoo import get_variant

RESULTS = Path(__file__).resolve().parent / "results"
IMPLEMENTATIONS = ("swinv2 train()", "transformers loop", "swinv2 loop")
LABEL_SMOOTHING, GRAD_CLIP, WEIGHT_DECAY, LR = 0.1, 5.0, 0.05, 1e-3


@dataclass(frozen=True)
class Workload:
    """A model, its input size and a batch."""

    name: str
    config: Swinv2Config
    batch_size: int
    mean_std: tuple[float, float] | None  # the processor's normalisation (None: ImageNet's)


def workloads() -> dict[str, Workload]:
    digits = {i: str(i) for i in range(10)}
    demo = demo_config()  # `swinv2 demo`'s model
    tiny = get_variant("swinv2-tiny-patch4-window8-256").config.replace(id2label=digits)
    return {
        "demo": Workload("demo (1.3 M parameters, 32 px, batch 48)", demo, 48, (0.5, 0.5)),
        "tiny256": Workload("swinv2-tiny, 256 px, batch 8", tiny, 8, None),
    }


def write_start(workload: Workload, directory: Path) -> None:
    """The starting point both libraries read: a transformers-format directory with its processor."""
    torch.manual_seed(0)
    model = Swinv2ForImageClassification(workload.config)
    height, width = workload.config.image_hw
    kwargs: dict[str, Any] = {"size": {"height": height, "width": width}}
    if workload.mean_std is not None:
        kwargs |= {"image_mean": [workload.mean_std[0]] * 3, "image_std": [workload.mean_std[1]] * 3}
    model.save_pretrained(directory, image_processor=Swinv2ImageProcessor(**kwargs))


def steady_rate(step_ends: list[float], images_per_step: int, warmup: int) -> float:
    """Images per second between the end of step `warmup` and the last step (`step_ends[k]`: seconds from
    the start to the end of step k + 1)."""
    steps = len(step_ends) - warmup
    return steps * images_per_step / (step_ends[-1] - step_ends[warmup - 1])


def run_trainer(start: Path, workload: Workload, steps: int, warmup: int, precision: str) -> float:
    """`swinv2.train.train` for `steps` steps; its step times come from its own metrics log."""
    with tempfile.TemporaryDirectory() as scratch:
        config = TrainConfig(
            data="digits",
            model=str(start),
            out=str(Path(scratch) / "run"),
            steps=steps,
            batch_size=workload.batch_size,
            lr=LR,
            weight_decay=WEIGHT_DECAY,
            label_smoothing=LABEL_SMOOTHING,
            grad_clip=GRAD_CLIP,
            precision=precision,
            log_every=1,
            val_fraction=0.02,  # the final evaluation is not timed; keep it short
        )
        train(config)
        records = [json.loads(line) for line in (Path(config.out) / "metrics.jsonl").read_text().splitlines()]
    # `images_per_s` at step k is (images so far) / (seconds since the loop started)
    ends = [r["step"] * workload.batch_size / r["images_per_s"] for r in records if "images_per_s" in r]
    return steady_rate(ends, workload.batch_size, warmup)


def run_loop(model: torch.nn.Module, start: Path, workload: Workload, steps: int, warmup: int, precision: str) -> float:
    """The hand-written loop: same data pieces, optimiser groups and schedule as the trainer."""
    processor = Swinv2ImageProcessor.from_pretrained(start)
    data = load_classification_data("digits", processor=processor, seed=0, val_fraction=0.02)
    sampler = DeterministicSampler(len(data.train), seed=0, rank=0, world_size=1, batch_size=workload.batch_size)
    sampler.set_epoch(0)
    data.train.set_epoch(0)
    loader = DataLoader(data.train, batch_sampler=sampler, num_workers=0, generator=torch.Generator())
    optimizer = build_optimizer(model, lr=LR, weight_decay=WEIGHT_DECAY)
    schedule = WarmupCosine(optimizer, warmup_steps=0, total_steps=steps, min_lr_ratio=0.01)
    autocast = nullcontext() if precision == "fp32" else torch.autocast("cpu", dtype=torch.bfloat16)
    model.train()
    ends: list[float] = []
    started = time.perf_counter()
    for pixels, labels in loader:
        with autocast:
            logits = model(pixel_values=pixels).logits.float()  # (B, classes)
            loss = F.cross_entropy(logits, labels, label_smoothing=LABEL_SMOOTHING)
        loss.backward()
        loss.item()  # the trainer logs every step's loss; so does this loop
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        ends.append(time.perf_counter() - started)
        if len(ends) == steps:
            break
    return steady_rate(ends, workload.batch_size, warmup)


def transformers_model(start: Path) -> torch.nn.Module:
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(start, attn_implementation="eager")


def measure_all(workload: Workload, rounds: int, steps: int, warmup: int, precision: str) -> dict[str, list[float]]:
    runners: dict[str, Callable[[Path], float]] = {
        "swinv2 train()": lambda start: run_trainer(start, workload, steps, warmup, precision),
        "transformers loop": lambda start: run_loop(
            transformers_model(start), start, workload, steps, warmup, precision
        ),
        "swinv2 loop": lambda start: run_loop(
            Swinv2ForImageClassification.from_pretrained(start), start, workload, steps, warmup, precision
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
    with tempfile.TemporaryDirectory() as scratch:
        start = Path(scratch) / "start"
        write_start(workload, start)
        for round_index in range(rounds):
            order = IMPLEMENTATIONS[round_index % 3 :] + IMPLEMENTATIONS[: round_index % 3]
            for name in order:
                rates[name].append(runners[name](start))
                print(f"round {round_index + 1}/{rounds}: {name}: {rates[name][-1]:.2f} images/s", flush=True)
    return rates


def to_markdown(report: dict[str, Any]) -> str:
    rates = report["images_per_s"]
    transformers = statistics.median(rates["transformers loop"])
    lines = [
        f"**Training throughput: {report['workload']}**, {report['precision']}; {report['cpu']}, "
        f"{report['threads']} threads, torch {report['torch']}, transformers {report['transformers']}; "
        f"{report['steps']} steps per run, the first {report['warmup']} not timed; median of {report['rounds']} "
        "interleaved rounds (min..max); data loading, loss, backward, clipping, AdamW and schedule included.",
        "",
        "| implementation | images/s | vs transformers loop |",
        "|---|---|---|",
    ]
    for name in IMPLEMENTATIONS:
        values = rates[name]
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.2f} ({min(values):.2f}..{max(values):.2f}) | {median / transformers:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(workloads()), default="demo")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per run (default: per workload)")
    parser.add_argument("--warmup", type=int, default=3, help="steps not timed at the start of a run")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2, as on CI)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workload = workloads()[args.workload]
    steps = args.steps or (30 if args.workload == "demo" else 15)
    if steps <= args.warmup:
        parser.error(f"--steps ({steps}) must exceed --warmup ({args.warmup})")
    rates = measure_all(workload, args.rounds, steps, args.warmup, args.precision)
    machine = machine_info(torch.device("cpu"))
    report = {
        "workload": workload.name,
        "precision": args.precision,
        "machine": machine,
        "cpu": machine["cpu"],
        "threads": machine["threads"],
        "torch": machine["torch"],
        "transformers": machine["transformers"],
        "steps": steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "images_per_s": rates,
    }
    assert all(math.isfinite(v) for values in rates.values() for v in values)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"cpu-train-{args.workload}-{args.precision}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(to_markdown(report))
    print(to_markdown(report))


if __name__ == "__main__":
    main()
