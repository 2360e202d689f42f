"""One window-attention layer, implementation against implementation: `python benchmarks/attention.py`.

Times `Swinv2Attention` (query/key/value projections, attention, output projection) with attn_implementation
"eager", "sdpa" and, where it runs, "triton", forward (inference) and forward + backward, on the
shapes of the first stage of tiny (window 8) and base (window 16) at 256 px, shifted (bias + mask per
window). Rounds interleaved; median milliseconds and peak memory (CUDA) to <out>/<device>-attention.json
and .md. On the CPU (no Triton) it is a smoke run at a small batch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from swinv2.backends import triton_attention
from swinv2.layers.windows import shifted_window_mask
from swinv2.models.swinv2 import Swinv2Attention

RESULTS = Path(__file__).resolve().parent / "results"
# (name, channels, heads, window, grid side of stage 1 at 256 px)
LAYERS = [("tiny stage 1", 96, 3, 8, 64), ("base stage 1", 128, 4, 16, 64)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_layer(
    name: str, dim: int, heads: int, window: int, side: int, images: int, device: torch.device, rounds: int
) -> dict:
    """Median ms of forward and forward + backward per implementation, interleaved, bf16 autocast."""
    torch.manual_seed(0)
    windows_per_image = (side // window) ** 2
    mask = shifted_window_mask((side, side), window, window // 2, device=device, dtype=torch.float32)
    x = torch.randn(images * windows_per_image, window * window, dim, device=device)  # (B*nW, N, C)
    implementations = ["eager", "sdpa"] + (["triton"] if triton_attention.available(x) else [])
    layers = {}
    for implementation in implementations:
        torch.manual_seed(0)
        layers[implementation] = Swinv2Attention(dim, heads, window, 0, True, 0.0, implementation).to(device)

    def forward(layer: Swinv2Attention) -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            layer.eval()(x, mask, mask_key=("bench", side))

    def train(layer: Swinv2Attention) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out, _ = layer.train()(x.requires_grad_(), mask)
        out.float().sum().backward()
        layer.zero_grad(set_to_none=True)
        x.grad = None

    result: dict = {"layer": name, "images": images, "tokens": x.shape[0] * x.shape[1], "implementations": {}}
    for mode, step in (("forward", forward), ("forward + backward", train)):
        times: dict[str, list[float]] = {k: [] for k in layers}
        peaks: dict[str, float | None] = {}
        for implementation, layer in layers.items():  # warm-up (compiles Triton) and memory peak
            step(layer)
            _sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            step(layer)
            _sync(device)
            peaks[implementation] = (
                (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else None
            )
        order = list(layers)
        for r in range(rounds):
            for implementation in order[r % len(order) :] + order[: r % len(order)]:
                _sync(device)
                start = time.perf_counter()
                step(layers[implementation])
                _sync(device)
                times[implementation].append(time.perf_counter() - start)
        result["implementations"][mode] = {
            k: {"median_ms": 1e3 * statistics.median(v), "min_ms": 1e3 * min(v), "peak_mb": peaks[k]}
            for k, v in times.items()
        }
    return result


def to_markdown(results: list[dict], device: str) -> str:
    """The table of `measure_layer` results: median ms (and CUDA peak MB) per implementation and mode."""
    lines = [
        f"Window attention layer (qkv, attention, projection), bf16 autocast, {device}; median ms (peak MB).",
        "",
        "| layer | images | mode | eager | sdpa | triton |",
        "|---|---|---|---|---|---|",
    ]
    for entry in results:
        for mode, timings in entry["implementations"].items():
            cells = []
            for implementation in ("eager", "sdpa", "triton"):
                timing = timings.get(implementation)
                if timing is None:
                    cells.append("-")
                    continue
                peak = "" if timing["peak_mb"] is None else f" ({timing['peak_mb']:.0f})"
                cells.append(f"{timing['median_ms']:.2f}{peak}")
            lines.append(f"| {entry['layer']} | {entry['images']} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=None, help="default: 128 on CUDA, 1 on the CPU")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    device = torch.device(args.device)
    images = args.images or (128 if device.type == "cuda" else 1)
    results = [measure_layer(*layer, images=images, device=device, rounds=args.rounds) for layer in LAYERS]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{device.type}-attention"
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = to_markdown(results, torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")
    (args.out / f"{stem}.md").write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
