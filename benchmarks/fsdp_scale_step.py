"""One FSDP training step of a large variant on the CPU, its measured peak per process next to the planner's:
`torchrun --standalone --nproc_per_node=2 benchmarks/fsdp_scale_step.py [--variant swinv2-huge]
[--image-size 128] [--window-size 8] [--batch-size 1]`.

Each process builds the classifier on the meta device and materialises only its shard
(`swinv2.train.sharding.build_sharded`), then takes two AdamW steps (the first creates the optimiser state;
the second is the steady state). Measured: the process's resident-set peak, less its resident set before
the model is built (the Python, PyTorch and gloo runtime), which is an upper bound on what the tensors
took (the allocator may keep freed memory), next to `swinv2.plan.plan(...)` for the same settings on
fake tensors. A tensor tracker (`swinv2.plan.LiveBytes`) is not used here: FSDP frees and re-gathers
blocks by resizing storages in place, which a dispatch-level tracker does not see.
Writes `<out>/cpu-fsdp-<variant>.json` and `.md` from rank 0.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch
import torch.distributed as dist

from swinv2 import Swinv2ForImageClassification
from swinv2.plan import plan
from swinv2.train.sharding import build_sharded
from swinv2.zoo import get_variant

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 1024**3


def _resident_bytes() -> int:
    """The process's resident set now (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="swinv2-huge")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--window-size", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    config = get_variant(args.variant).config_with(image_size=args.image_size, window_size=args.window_size)
    runtime = _resident_bytes()
    started = time.perf_counter()
    model = build_sharded(Swinv2ForImageClassification, config, seed=0)
    built = time.perf_counter() - started
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    generator = torch.Generator().manual_seed(rank)
    pixels = torch.rand(args.batch_size, 3, args.image_size, args.image_size, generator=generator)
    labels = torch.randint(0, config.num_labels, (args.batch_size,), generator=generator)
    step_seconds = []
    for _ in range(2):
        started = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(pixel_values=pixels).logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_seconds.append(time.perf_counter() - started)
    resident = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peaks = [torch.zeros(2, dtype=torch.float64) for _ in range(world)]
    dist.all_gather(peaks, torch.tensor([resident - runtime, runtime], dtype=torch.float64))
    if rank == 0:
        planned = plan(config, batch_size=args.batch_size, world_size=world, fsdp=True, image_size=args.image_size)
        report = {
            "variant": args.variant,
            "image_size": args.image_size,
            "window_size": args.window_size,
            "batch_size": args.batch_size,
            "world_size": world,
            "parameters": sum(p.numel() for p in model.parameters()),
            "build_seconds": built,
            "step_seconds": step_seconds,
            "measured_peak_bytes": [int(p[0]) for p in peaks],
            "runtime_resident_bytes": [int(p[1]) for p in peaks],
            "plan": planned.to_dict(),
        }
        worst = max(report["measured_peak_bytes"])
        lines = [
            f"**One FSDP training step of {args.variant}** ({report['parameters'] / 1e6:.1f} M parameters) on the "
            f"CPU: `torchrun --nproc_per_node={world}`, gloo, {args.image_size} px, window {args.window_size}, "
            f"batch {args.batch_size} per process, fp32, AdamW, one FSDP unit per block; the second step.",
            "",
            "| per process | GiB |",
            "|---|---|",
            f"| planned peak (`swinv2 plan`, fake tensors) | {planned.peak_bytes / GIB:.2f} |",
            *(
                f"| measured peak, rank {r} (resident-set peak less the {int(p[1]) / GIB:.2f} GiB runtime) "
                f"| {int(p[0]) / GIB:.2f} |"
                for r, p in enumerate(peaks)
            ),
            "",
            f"Planned / measured: {planned.peak_bytes / worst:.3f}. Build (meta device, sharded "
            f"materialisation) {built:.0f} s; steps {', '.join(f'{s:.0f} s' for s in step_seconds)}.",
        ]
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"cpu-fsdp-{args.variant}"
        (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
