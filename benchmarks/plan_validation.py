"""Check `swinv2.plan` against real training steps, and plan SwinV2-G on big GPUs:
`python benchmarks/plan_validation.py [--part validate|giant|both] [--out benchmarks/results]`.

validate: for a few model sizes that fit a CPU, the planned peak (fake tensors) against the peak of a real
CPU training step (fp32, forward + cross-entropy + backward + AdamW step, the second of two steps so the
optimiser state exists). Two measurements of the real step:
- "tracker": the planner's own `LiveBytes` dispatch mode run on real tensors. The same instrument on
  both sides: it checks that the fake execution allocates what the real one does, not the instrument.
- "profiler": `torch.profiler` memory events (the CPU allocator's own allocation and free records),
  summed in time order on top of the bytes held before the step (parameters, buffers, optimiser state,
  the batch), an independent instrument.
Writes plan-validation.md and .json; the planned peak must be within 15 % of the measured ones.

giant: `swinv2-giant` (the zoo's variant; the paper's shape if the zoo lacks it) at 192 px (window 12,
pre-training) and 640 px (window 40, fine-tuning), bf16, FSDP over 8 and 64 GPUs, activation
checkpointing off and on, 1-8 images per GPU; which fit in 80 GB (H100) and 141 GB (H200) with 10 % of
the memory kept free. Writes plan-giant.md and .json.

Run with one thread: `OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/plan_validation.py`.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from swinv2.config import Swinv2Config
from swinv2.models import Swinv2ForImageClassification
from swinv2.plan import LiveBytes, measure_step, plan
from swinv2.zoo import get_variant

TOLERANCE = 0.15
MARGIN = 0.10  # of the GPU memory kept free for what the plan does not count
GPUS = {"80 GB (H100)": 80 * 10**9, "141 GB (H200)": 141 * 10**9}
MB = 1e6
GIB = 2**30

GIANT_CAVEATS = [
    "Caveats: the fake step runs the model's CPU path (SDPA attention); the GPU kernels may save other",
    "tensors. Part of the activations does not depend on the batch (read off the rows: about 1.5 GiB at",
    "192 px, 15 GiB at 640 px; each block's position-bias terms (nW, nH, N, N) with N = 1600 at window 40, and",
    "the fused q/k/v weights, are saved for the backward); checkpointing recomputes them. Not counted: the",
    "allocator's cache and fragmentation, the CUDA context, NCCL buffers (hence the 10 % margin).",
]
TINY = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
SMALL = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
# (name, config fields, batch, activation checkpointing)
CASES: list[tuple[str, dict[str, Any], int, bool]] = [
    ("tiny 128 px w8", dict(TINY, image_size=128, window_size=8), 4, False),
    ("tiny 128 px w8, checkpointing", dict(TINY, image_size=128, window_size=8), 4, True),
    ("tiny 256 px w8", dict(TINY, image_size=256, window_size=8), 2, False),
    ("small 256 px w8", dict(SMALL, image_size=256, window_size=8), 2, False),
    ("small 256 px w8, checkpointing", dict(SMALL, image_size=256, window_size=8), 2, True),
]


def _held_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer, *tensors: torch.Tensor) -> int:
    storages: dict[int, int] = {}
    held = [*model.parameters(), *model.buffers(), *tensors]
    held += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    for tensor in held:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def _training_inputs(
    config: Swinv2Config, batch: int, checkpointing: bool
) -> tuple[Swinv2ForImageClassification, torch.Tensor, torch.Tensor]:
    """The seeded model in training mode (checkpointed if asked) and a batch for it."""
    torch.manual_seed(0)
    model = Swinv2ForImageClassification(config).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    pixels = torch.randn(batch, 3, config.image_hw[0], config.image_hw[1])
    return model, pixels, torch.zeros(batch, dtype=torch.long)


def profiler_peak(config: Swinv2Config, batch: int, checkpointing: bool) -> int:
    """Peak bytes of the second real training step from torch.profiler's allocator events."""
    model, pixels, labels = _training_inputs(config, batch, checkpointing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(pixels).logits, labels)
        loss.backward()
        del loss
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    base = _held_bytes(model, optimizer, pixels, labels)
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True, record_shapes=False) as prof:
        step()
    # each op's own allocations net of its own frees (children excluded), and "[memory]" frees outside ops,
    # in time order: the allocator's view at op granularity (an op's transient inside itself is netted)
    events = sorted(
        (e for e in prof.events() if e.self_cpu_memory_usage),
        key=lambda e: (e.time_range.start, e.self_cpu_memory_usage),
    )
    live = peak = 0
    for event in events:
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return base + peak


def tracker_peak(config: Swinv2Config, batch: int, checkpointing: bool) -> int:
    """Peak bytes of the second real training step from the planner's tracker run on real tensors."""
    model, pixels, labels = _training_inputs(config, batch, checkpointing)
    return measure_step(model, pixels, labels, tracker=LiveBytes()).peak


def validate(out: Path) -> bool:
    rows: list[dict[str, Any]] = []
    for name, fields, batch, checkpointing in CASES:
        config = Swinv2Config(**fields)
        start = time.perf_counter()
        planned = plan(config, batch_size=batch, activation_checkpointing=checkpointing)
        plan_s = time.perf_counter() - start
        tracked = tracker_peak(config, batch, checkpointing)
        profiled = profiler_peak(config, batch, checkpointing)
        row = {
            "case": name,
            "batch": batch,
            "parameters": planned.parameters,
            "planned_peak_bytes": planned.peak_bytes,
            "tracker_peak_bytes": tracked,
            "profiler_peak_bytes": profiled,
            "error_vs_tracker": planned.peak_bytes / tracked - 1,
            "error_vs_profiler": planned.peak_bytes / profiled - 1,
            "plan_seconds": round(plan_s, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    ok = all(abs(r["error_vs_tracker"]) <= TOLERANCE and abs(r["error_vs_profiler"]) <= TOLERANCE for r in rows)
    meta = {"torch": torch.__version__, "machine": platform.machine(), "tolerance": TOLERANCE, "within": ok}
    (out / "plan-validation.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# Planned vs measured peak memory of a CPU training step (fp32, AdamW, 2nd step)",
        "",
        f"torch {torch.__version__}, CPU, one thread; `python benchmarks/plan_validation.py --part validate`.",
        "Planned: `swinv2.plan.plan` on fake tensors. Measured on a real step: the same `LiveBytes` tracker",
        "(same instrument: checks fake vs real execution), and torch.profiler's allocator memory events",
        "(an independent instrument). Tolerance 15 %.",
        "",
        "| case | batch | params (M) | planned (MB) | tracker (MB) | error | profiler (MB) | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['batch']} | {r['parameters'] / 1e6:.1f} | {r['planned_peak_bytes'] / MB:.1f} "
            f"| {r['tracker_peak_bytes'] / MB:.1f} | {r['error_vs_tracker']:+.1%} "
            f"| {r['profiler_peak_bytes'] / MB:.1f} | {r['error_vs_profiler']:+.1%} |"
        )
    lines += ["", f"All within {TOLERANCE:.0%}: {'yes' if ok else 'NO'}.", ""]
    (out / "plan-validation.md").write_text("\n".join(lines))
    return ok


def giant_config() -> tuple[Swinv2Config, str]:
    try:
        return get_variant("swinv2-giant").config, "zoo variant swinv2-giant"
    except KeyError:
        fields: dict[str, Any] = dict(
            embed_dim=512, depths=(2, 2, 42, 4), num_heads=(16, 32, 64, 128), image_size=192, window_size=12
        )
        return Swinv2Config(**fields), "paper shape (embed 512, depths 2-2-42-4, heads 16-32-64-128; not in the zoo)"


def giant(out: Path, batches: tuple[int, ...]) -> None:
    config, origin = giant_config()
    rows: list[dict[str, Any]] = []
    for image, window in ((192, 12), (640, 40)):
        for checkpointing in (False, True):
            for batch in batches:
                for world in (8, 64):
                    start = time.perf_counter()
                    p = plan(
                        config,
                        image_size=image,
                        window_size=window,
                        batch_size=batch,
                        precision="bf16",
                        world_size=world,
                        fsdp=True,
                        activation_checkpointing=checkpointing,
                    )
                    row = {
                        "image": image,
                        "window": window,
                        "checkpointing": checkpointing,
                        "batch_per_gpu": batch,
                        "world_size": world,
                        "peak_bytes": p.peak_bytes,
                        "activation_bytes": p.activation_bytes,
                        "sharded_state_bytes": p.parameter_bytes + p.gradient_bytes + p.optimizer_bytes,
                        "fits": {gpu: p.fits(size, MARGIN) for gpu, size in GPUS.items()},
                        "parameters": p.parameters,
                        "flops_per_image": p.flops_per_image,
                        "seconds": round(time.perf_counter() - start, 1),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    _write_giant(out, origin, rows, batches)  # after every row: a long run leaves a partial table


def _write_giant(out: Path, origin: str, rows: list[dict[str, Any]], batches: tuple[int, ...]) -> None:
    meta = {"model": origin, "precision": "bf16 (MixedPrecisionPolicy param bf16, reduce fp32)", "margin": MARGIN}
    (out / "plan-giant.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    first = rows[0]
    flops_at = {r["image"]: r["flops_per_image"] for r in rows}
    lines = [
        "# SwinV2-G: which FSDP settings fit (planned on fake tensors)",
        "",
        f"Model: {origin}; {first['parameters'] / 1e9:.3f} B parameters. bf16 = FSDP MixedPrecisionPolicy",
        "(param bf16, reduce fp32), fp32 masters and AdamW state sharded; one FSDP unit per Swinv2Block.",
        f"Fits: planned peak <= {1 - MARGIN:.0%} of the GPU memory (allocator, CUDA context and NCCL buffers",
        "are not in the plan). Forward GFLOPs per image (multiply-add = 2): "
        + ", ".join(f"{image} px {flops / 1e9:.0f}" for image, flops in sorted(flops_at.items())),
        "`python benchmarks/plan_validation.py --part giant`.",
        "",
        "| px (window) | act. ckpt | batch/GPU | GPUs | sharded state (GiB) | activations (GiB) | peak (GiB) "
        "| 80 GB | 141 GB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fits = ["yes" if r["fits"][gpu] else "no" for gpu in GPUS]
        lines.append(
            f"| {r['image']} ({r['window']}) | {'on' if r['checkpointing'] else 'off'} | {r['batch_per_gpu']} "
            f"| {r['world_size']} | {r['sharded_state_bytes'] / GIB:.1f} | {r['activation_bytes'] / GIB:.1f} "
            f"| {r['peak_bytes'] / GIB:.1f} | {fits[0]} | {fits[1]} |"
        )
    lines += ["", *GIANT_CAVEATS, ""]
    (out / "plan-giant.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("validate", "giant", "both"), default="both")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--batches", default="1,2,4,8", help="giant: images per GPU, comma-separated")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part in ("validate", "both"):
        ok = validate(args.out)
        print("validation within tolerance:", ok)
    if args.part in ("giant", "both"):
        giant(args.out, tuple(int(b) for b in args.batches.split(",")))


if __name__ == "__main__":
    main()
