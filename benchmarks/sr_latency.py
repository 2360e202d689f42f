"""Swin2SR inference latency, side by side with transformers' Swin2SR on the same weights, in one run:
`python benchmarks/sr_latency.py [--model lightweight|classical] [--sizes 64 256] [--rounds 5]`.

The shapes are the original release's x2 models: "classical" (embed 180, six stages of six blocks,
pixel-shuffle upsampler) and "lightweight" (embed 60, four stages of six blocks, direct pixel shuffle).
Rounds are interleaved with the order rotated, so slow drifts of the machine hit both alike; reported
per input size: the median and min..max of single-image fp32 forward times, and the speed-up. Writes
`<out>/cpu-swin2sr-<model>.json` and `.md`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from swinv2 import Swin2SRConfig, Swin2SRForImageSuperResolution
from swinv2.cli.bench import machine_info

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = {
    "classical": dict(embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, upsampler="pixelshuffle"),
    "lightweight": dict(embed_dim=60, depths=(6,) * 4, num_heads=(6,) * 4, upsampler="pixelshuffledirect"),
}


def build(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Ours and transformers' x2 model of shape `name`, with the same (randomly initialised) weights."""
    from transformers import Swin2SRConfig as TheirConfig
    from transformers import Swin2SRForImageSuperResolution as Theirs

    fields = dict(SHAPES[name], window_size=8, mlp_ratio=2.0, upscale=2, image_size=64, resi_connection="1conv")
    torch.manual_seed(0)
    ours = Swin2SRForImageSuperResolution(Swin2SRConfig(**fields)).eval()
    theirs = Theirs(TheirConfig(**fields)).eval()
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all("relative_position_index" in k or "coords_table" in k for k in missing), missing
    return ours, theirs


def time_call(model: torch.nn.Module, pixels: torch.Tensor) -> float:
    with torch.no_grad():
        start = time.perf_counter()
        model(pixels)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="lightweight")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2, as on CI)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = dict(zip(("swinv2", "transformers"), build(args.model), strict=True))
    results: dict[str, dict[str, list[float]]] = {}
    for size in args.sizes:
        pixels = torch.rand(1, 3, size, size)
        with torch.no_grad():  # same weights, same output
            difference = (models["swinv2"](pixels).reconstruction - models["transformers"](pixels).reconstruction).abs()
        assert float(difference.max()) < 1e-4, float(difference.max())
        for model in models.values():
            time_call(model, pixels)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in models}
        for round_index in range(args.rounds):
            order = list(models) if round_index % 2 == 0 else list(reversed(models))
            for name in order:
                times[name].append(time_call(models[name], pixels))
        results[str(size)] = times
        print(size, {k: round(statistics.median(v) * 1000, 1) for k, v in times.items()}, flush=True)
    machine = machine_info(torch.device("cpu"))
    report = {"model": args.model, "shape": SHAPES[args.model], "machine": machine, "seconds": results}
    lines = [
        f"**Swin2SR {args.model} x2 inference**, fp32, batch 1; {machine['cpu']}, {machine['threads']} threads, "
        f"torch {machine['torch']}, transformers {machine['transformers']}; median of {args.rounds} interleaved "
        "rounds (min..max), ms per image.",
        "",
        "| input | swinv2 ms | transformers ms | speed-up |",
        "|---|---|---|---|",
    ]
    for size, times in results.items():
        ours, theirs = (statistics.median(times[n]) * 1000 for n in ("swinv2", "transformers"))
        spans = {n: f"{min(times[n]) * 1000:.0f}..{max(times[n]) * 1000:.0f}" for n in times}
        lines.append(
            f"| {size} x {size} | {ours:.1f} ({spans['swinv2']}) | {theirs:.1f} ({spans['transformers']}) | "
            f"{theirs / ours:.2f}x |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"cpu-swin2sr-{args.model}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
