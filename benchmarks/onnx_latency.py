"""Deployed latency: onnxruntime on our ONNX export against onnxruntime on transformers' Swinv2 exported by
the same exporter, same weights, same session options, in one run; our PyTorch path alongside:
`python benchmarks/onnx_latency.py [--variant swinv2-tiny-patch4-window8-256] [--batches 1 8]`.

Both files are written by PyTorch's dynamo-based ONNX exporter with a dynamic batch (transformers' model
through a wrapper returning its logits, ours through `swinv2.export.save_onnx`); both sessions get
`intra_op_num_threads = --threads` and the default graph optimisations. Rounds are interleaved with the
order rotated; reported: median and min..max ms per call, and export times. Writes
`<out>/cpu-onnx-<variant>.json` and `.md`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from swinv2 import Swinv2ForImageClassification
from swinv2.cli.bench import machine_info
from swinv2.export import save_onnx, settings_for
from swinv2.zoo import get_variant

RESULTS = Path(__file__).resolve().parent / "results"


class _Logits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def export_transformers(model: torch.nn.Module, path: Path, size: int) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Logits(model.eval()),
            (torch.rand(2, 3, size, size),),
            str(path),
            dynamo=True,
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch", min=1, max=4096)}},
            optimize=True,
        )


def main() -> None:
    import onnxruntime
    from transformers import Swinv2ForImageClassification as Theirs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="swinv2-tiny-patch4-window8-256")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads (default 2, as on CI)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variant = get_variant(args.variant)
    torch.manual_seed(0)
    ours = Swinv2ForImageClassification(variant.config).eval()
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        ours.save_pretrained(directory / "model")
        their_model = Theirs.from_pretrained(directory / "model", attn_implementation="eager").eval()
        size = variant.config.image_hw[0]
        exports: dict[str, float] = {}
        started = time.perf_counter()
        save_onnx(ours, directory / "ours.onnx", settings_for(ours, dynamic_batch=True))
        exports["swinv2"] = time.perf_counter() - started
        for precision in ("int8", "fp16"):
            started = time.perf_counter()
            save_onnx(ours, directory / f"ours-{precision}.onnx", settings_for(ours, precision=precision))
            exports[f"swinv2 {precision}"] = time.perf_counter() - started
        started = time.perf_counter()
        export_transformers(their_model, directory / "theirs.onnx", size)
        exports["transformers"] = time.perf_counter() - started
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        sessions = {
            name: onnxruntime.InferenceSession(
                str(directory / f"{file}.onnx"), options, providers=["CPUExecutionProvider"]
            )
            for name, file in (
                ("swinv2 onnx", "ours"),
                ("transformers onnx", "theirs"),
                ("swinv2 onnx int8", "ours-int8"),
                ("swinv2 onnx fp16", "ours-fp16"),
            )
        }
        results: dict[str, dict[str, list[float]]] = {}
        accuracy: dict[str, dict[str, float]] = {}
        for batch in args.batches:
            pixels = torch.rand(batch, 3, size, size)
            feed = {"pixel_values": pixels.numpy()}
            with torch.no_grad():
                reference = ours(pixels).logits.numpy()
            calls: dict[str, Callable[[], object]] = {
                name: (lambda s=session, f=feed: s.run(None, f)) for name, session in sessions.items()
            }

            def pytorch(x: torch.Tensor = pixels) -> object:
                with torch.no_grad():
                    return ours(x)

            calls["swinv2 pytorch"] = pytorch
            for name, session in sessions.items():
                got = session.run(None, feed)[0]
                difference = float(np.abs(got - reference).max())
                relative = difference / float(np.abs(reference).max())
                if name in ("swinv2 onnx", "transformers onnx"):
                    assert difference < 1e-3, (name, difference)
                entry = accuracy.setdefault(name, {"max_abs": 0.0, "relative": 0.0, "top1_agree": 1.0})
                entry["max_abs"] = max(entry["max_abs"], difference)
                entry["relative"] = max(entry["relative"], relative)
                entry["top1_agree"] = min(entry["top1_agree"], float((got.argmax(1) == reference.argmax(1)).mean()))
            for call in calls.values():
                call()  # warm-up
            times: dict[str, list[float]] = {name: [] for name in calls}
            names = list(calls)
            for round_index in range(args.rounds):
                for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
                    start = time.perf_counter()
                    calls[name]()
                    times[name].append(time.perf_counter() - start)
            results[str(batch)] = times
            print(batch, {k: round(statistics.median(v) * 1000, 1) for k, v in times.items()}, flush=True)
    machine = machine_info(torch.device("cpu"))
    machine["onnxruntime"] = onnxruntime.__version__
    report = {
        "variant": args.variant,
        "machine": machine,
        "export_seconds": exports,
        "seconds": results,
        "accuracy_vs_pytorch_fp32": accuracy,
    }
    lines = [
        f"**{args.variant} in onnxruntime**; {machine['cpu']}, {machine['threads']} threads, torch "
        f"{machine['torch']}, onnxruntime {machine['onnxruntime']}, transformers {machine['transformers']}; both files "
        "from PyTorch's dynamo exporter with a dynamic batch, same session options (int8: onnxruntime's dynamic "
        "quantisation of our file; fp16: onnxruntime's fp16 converter, fp32 input and output); median of "
        f"{args.rounds} interleaved rounds (min..max), ms per call. Export: swinv2 {exports['swinv2']:.1f} s "
        f"(with its onnxruntime check; int8 {exports['swinv2 int8']:.1f} s, fp16 {exports['swinv2 fp16']:.1f} s), "
        f"transformers {exports['transformers']:.1f} s.",
        "",
        "| batch | swinv2 onnx | transformers onnx | swinv2 onnx int8 | swinv2 onnx fp16 | swinv2 pytorch "
        "| swinv2 onnx speed-up vs transformers onnx (fp32; int8) |",
        "|---|---|---|---|---|---|---|",
    ]
    columns = ["swinv2 onnx", "transformers onnx", "swinv2 onnx int8", "swinv2 onnx fp16", "swinv2 pytorch"]
    for batch, times in results.items():
        med = {name: statistics.median(values) * 1000 for name, values in times.items()}
        cells = [f"{med[n]:.1f} ({min(times[n]) * 1000:.0f}..{max(times[n]) * 1000:.0f})" for n in columns]
        theirs = med["transformers onnx"]
        lines.append(
            f"| {batch} | {' | '.join(cells)} | {theirs / med['swinv2 onnx']:.2f}x; "
            f"{theirs / med['swinv2 onnx int8']:.2f}x |"
        )
    lines += [
        "",
        "Accuracy against our PyTorch model in fp32 (largest over the batches; randomly initialised weights, "
        "random images): largest absolute logit difference, the same relative to the largest logit, and the "
        "share of images whose top class agrees.",
        "",
        "| file | max abs | relative | top-1 agreement |",
        "|---|---|---|---|",
    ]
    for name, entry in accuracy.items():
        lines.append(f"| {name} | {entry['max_abs']:.2g} | {entry['relative']:.2g} | {entry['top1_agree']:.0%} |")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"cpu-onnx-{args.variant}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
