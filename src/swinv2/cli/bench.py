"""Side-by-side speed and memory: this library against transformers and timm, same weights, one run.

Every implementation gets the same weights (ours converted to the peers' names) and the same input;
rounds are interleaved, with the order rotated each round, so slow drifts of the machine hit all
alike. A round times each implementation over a sample of about `MIN_SAMPLE_S` or more (short
calls are repeated, the same number of times for every implementation, as many as the fastest warm
call needs), so that one scheduler hiccup moves a median less; times are per call. Reported per
case: median and min..max milliseconds, images/s, achieved GFLOP/s (FLOPs counted by
`torch.utils.flop_counter` on the model, not assumed) next to a plain matmul's rate on the same
machine (the ceiling), and peak memory of a training step. Peers that are not installed are skipped
and named in the result.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F

from swinv2.backends import triton_attention
from swinv2.backends.packed_linear import cpu_has_bf16_units
from swinv2.cli.common import CommandError, positive_int, variant_name
from swinv2.io.keymaps import TIMM, from_transformers
from swinv2.models import Swinv2ForImageClassification
from swinv2.zoo import get_variant

IMPLEMENTATIONS = ("swinv2", "swinv2-triton", "transformers", "timm")
PEERS = ("transformers", "timm")
TRITON = "swinv2-triton"  # ours with attn_implementation="triton": on CUDA, cases not compiled
MIN_SAMPLE_S = 0.25  # a timed sample's length, about: calls faster than this are repeated within a round


@dataclass
class Case:
    """One measured setting."""

    name: str
    batch: int
    precision: str  # "fp32" or "bf16" (autocast)
    mode: str  # "inference" or "train"
    compiled: bool = False


@dataclass
class Measurement:
    """Timings of one implementation in one case."""

    median_ms: float
    min_ms: float
    max_ms: float
    images_per_s: float
    gflops_per_s: float
    peak_memory_mb: float | None = None
    profile_ms: dict[str, float] | None = None  # CPU: one profiled call's self time per op class
    calls_per_sample: int = 1  # calls timed together in each round (times are per call)


@dataclass
class Report:
    """A whole benchmark run."""

    machine: dict[str, Any]
    variant: str
    image_size: int
    gflops_per_image: float
    matmul_gflops_per_s: float
    rounds: int
    min_sample_s: float = MIN_SAMPLE_S
    cases: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "cpu": _cpu_model(),
        "cpu_bf16_units": cpu_has_bf16_units(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    for name in ("transformers", "timm"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    return info


def _cpu_model() -> str:
    """The CPU's model name (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a plain square matmul on this machine: the ceiling the models are compared against."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def count_flops(model: torch.nn.Module, pixel_values: torch.Tensor) -> int:
    """FLOPs of one inference forward pass, counted op by op (matmuls, convolutions, attention).

    A first, uncounted pass fills our cache of input-independent terms, so the count is the per-image
    work (the position-bias MLP, computed once, is left out). Our models are counted on their "eager"
    path: the same arithmetic as the fast path, in ops the counter knows (it cannot see inside
    oneDNN's fused linear).
    """
    from torch.utils.flop_counter import FlopCounterMode

    implementation: str | None = getattr(getattr(model, "config", None), "attn_implementation", None)
    # a model whose config has attn_implementation (ours) switches it with `set_attn_implementation(name)`
    if implementation is not None:
        cast(Callable[[str], None], model.set_attn_implementation)("eager")
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad():
            model(pixel_values)
            with counter:
                model(pixel_values)
    finally:
        if implementation is not None:
            cast(Callable[[str], None], model.set_attn_implementation)(implementation)
    return counter.get_total_flops()


# Op classes of the CPU profile, by ATen / oneDNN op name; everything else counts as "elementwise, other".
OP_CLASSES: dict[str, frozenset[str]] = {
    "linear, conv": frozenset(
        {"addmm", "mm", "_linear_pointwise", "mkldnn_convolution", "convolution_backward", "_mkl_linear"}
    ),
    "attention core": frozenset(
        {
            "bmm",
            "baddbmm",
            "_softmax",
            "_softmax_backward_data",
            "_scaled_dot_product_flash_attention_for_cpu",
            "_scaled_dot_product_flash_attention_for_cpu_backward",
        }
    ),
    "data movement": frozenset(
        {"copy_", "cat", "index", "index_select", "roll", "clone", "_index_put_impl_", "constant_pad_nd", "fill_"}
    ),
    "normalisation": frozenset({"native_layer_norm", "native_layer_norm_backward", "linalg_vector_norm"}),
}
OTHER_OPS = "elementwise, other"


# GPU kernels by name (lower case), first match wins; everything else counts as "elementwise, other".
GPU_KERNEL_CLASSES: list[tuple[str, tuple[str, ...]]] = [
    ("attention core", ("window_attention", "fmha", "flash", "attention", "softmax")),
    ("linear, conv", ("gemm", "cutlass", "xmma", "cublas", "conv", "wgrad", "dgrad")),
    ("normalisation", ("norm",)),
    ("data movement", ("copy", "memcpy", "memset", "index", "gather", "scatter", "cat", "pad", "transpose")),
]


def gpu_kernel_class(name: str) -> str:
    """The op class of a GPU kernel, from its name (cuBLAS/CUTLASS, SDPA, ours, inductor's fused ones)."""
    lowered = name.lower()
    return next((c for c, parts in GPU_KERNEL_CLASSES if any(p in lowered for p in parts)), OTHER_OPS)


def profile_op_classes(step: Callable[[], None], device: torch.device | None = None) -> dict[str, float]:
    """Milliseconds of one call of `step` per op class, by torch.profiler.

    CPU: self time of each ATen/oneDNN op, classed by `OP_CLASSES`. CUDA: device time of each kernel,
    classed by name (`gpu_kernel_class`). The profiler adds a little time to every op; the split, not
    the sum, is the point.
    """
    from torch.profiler import DeviceType, ProfilerActivity, profile

    on_gpu = device is not None and device.type == "cuda"
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if on_gpu else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        step()
        if on_gpu:
            torch.cuda.synchronize(device)
    totals = dict.fromkeys([*OP_CLASSES, OTHER_OPS], 0.0)
    if on_gpu:
        for event in prof.events():
            if event.device_type == DeviceType.CUDA:
                totals[gpu_kernel_class(event.name)] += event.time_range.elapsed_us() / 1e3
        return {k: round(v, 2) for k, v in totals.items()}
    for event in prof.key_averages():
        name = event.key.split("::")[-1]
        op_class = next((c for c, names in OP_CLASSES.items() if name in names), OTHER_OPS)
        totals[op_class] += event.self_cpu_time_total / 1e3
    return {k: round(v, 2) for k, v in totals.items()}


def _rss_mb(field_name: str) -> float | None:
    """A memory figure of this process from /proc (Linux), in MiB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_training_peak_mb(implementation: str, case: Case, variant: str) -> float | None:
    """Peak resident memory of two training steps in a fresh process, in MiB above the built model.

    A fresh process per implementation, because a process's peak never comes down: measured in one
    process, whichever ran first would pay for the allocator's growth and the others would not.
    """
    code = (
        "from swinv2.cli.bench import training_peak_in_this_process as peak; "
        f"print(peak({implementation!r}, {variant!r}, {case.batch}, {case.precision!r}, {torch.get_num_threads()}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=1800)
    try:
        return float(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def training_peak_in_this_process(
    implementation: str, variant: str, batch: int, precision: str, threads: int
) -> float | None:
    """Build only `implementation`, run two training steps, return VmHWM minus the RSS before them (MiB)."""
    torch.set_num_threads(threads)
    image_size = get_variant(variant).preprocessing.size
    model = build_model(implementation, variant)  # alone: weights do not change memory, other models would
    x = torch.randn(batch, 3, image_size, image_size)
    step = _step_function(model, Case("peak", batch, precision, "train"), x, torch.randint(0, 1000, (batch,)))
    base = _rss_mb("VmRSS")
    step()
    step()
    peak = _rss_mb("VmHWM")
    return None if base is None or peak is None else peak - base


def build_model(
    implementation: str, variant: str, weights_from: Swinv2ForImageClassification | None = None
) -> torch.nn.Module:
    """One implementation of `variant`, with `weights_from`'s weights when given (else its own init).

    Raises:
        ImportError: the peer library is not installed.
    """
    config = get_variant(variant).config_with(drop_path_rate=0.0)
    model: torch.nn.Module
    if implementation == "swinv2":
        model = Swinv2ForImageClassification(config)
        if weights_from is not None:
            model.load_state_dict(weights_from.state_dict())
        return model
    if implementation == "transformers":
        import transformers

        data = {k: v for k, v in config.to_dict().items() if k not in ("hidden_size", "num_layers", "stage_names")}
        model = transformers.Swinv2ForImageClassification(transformers.Swinv2Config(**data))
        if weights_from is not None:
            model.load_state_dict(weights_from.state_dict())
        return model
    import timm

    model = timm.create_model(get_variant(variant).timm_name, pretrained=False, drop_path_rate=0.0)
    if weights_from is not None:
        model.load_state_dict(from_transformers(weights_from.state_dict(), TIMM).tensors)
    return model


def build_models(variant: str, device: torch.device) -> tuple[dict[str, torch.nn.Module], list[str]]:
    """Ours, each installed peer and, on CUDA with Triton, ours with the fused kernel; all with the same
    (random) weights of `variant`."""
    torch.manual_seed(0)
    ours = cast(Swinv2ForImageClassification, build_model("swinv2", variant))
    models: dict[str, torch.nn.Module] = {"swinv2": ours}
    skipped = []
    if device.type == "cuda" and triton_attention.available(torch.empty(0, device=device)):
        fused = copy.deepcopy(ours)
        fused.set_attn_implementation("triton")
        models[TRITON] = fused
    for name in PEERS:
        try:
            models[name] = build_model(name, variant, weights_from=ours)
        except ImportError:
            skipped.append(f"{name} (not installed)")
    return {k: m.to(device) for k, m in models.items()}, skipped


def _step_function(model: torch.nn.Module, case: Case, x: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if case.precision == "bf16" else nullcontext()
    if case.mode == "inference":
        model.eval()
        forward = torch.compile(model) if case.compiled else model

        def infer() -> None:
            with torch.no_grad(), autocast:
                forward(x)

        return infer
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def train() -> None:
        with autocast:
            out = model(x)
            logits = out if isinstance(out, torch.Tensor) else out.logits  # timm returns a tensor
            loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return train


def measure(
    models: dict[str, torch.nn.Module],
    case: Case,
    variant: str,
    flops_per_image: float,
    rounds: int,
    device: torch.device,
    min_sample_s: float = MIN_SAMPLE_S,
) -> dict[str, Measurement]:
    """Interleaved rounds of every implementation in one case, each round a sample of about
    `min_sample_s` or more per implementation (the fastest of two warm calls of the fastest
    implementation sets how many calls that takes)."""
    image_size = get_variant(variant).preprocessing.size
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(case.batch, 3, image_size, image_size, generator=generator).to(device)
    labels = torch.randint(0, 1000, (case.batch,), generator=generator).to(device)
    kernel_applies = not case.compiled  # compiled, "triton" is "auto": not measured twice
    steps = {
        name: _step_function(model, case, x, labels)
        for name, model in models.items()
        if name != TRITON or kernel_applies
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    peaks: dict[str, float | None] = {name: None for name in steps}
    warm_s: dict[str, float] = {}
    for name, step in steps.items():  # warm-up (and compilation), with the memory peak of three steps
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        step()
        warm_s[name] = min(_timed(step, device) for _ in range(2))
        if device.type == "cuda":
            peaks[name] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        elif case.mode == "train":
            peaks[name] = cpu_training_peak_mb(name, case, variant)
    calls = calls_per_sample(min(warm_s.values()), min_sample_s)
    order = list(steps)
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            _sync(device)
            start = time.perf_counter()
            for _ in range(calls):
                steps[name]()
            _sync(device)
            times[name].append((time.perf_counter() - start) / calls)
    profiles = {name: profile_op_classes(step, device) for name, step in steps.items()}
    flops = flops_per_image * case.batch * (3 if case.mode == "train" else 1)  # backward ~ 2x forward
    out = {}
    for name, samples in times.items():
        median = statistics.median(samples)
        out[name] = Measurement(
            median_ms=median * 1e3,
            min_ms=min(samples) * 1e3,
            max_ms=max(samples) * 1e3,
            images_per_s=case.batch / median,
            gflops_per_s=flops / median / 1e9,
            peak_memory_mb=peaks[name] if case.mode == "train" else None,
            profile_ms=profiles.get(name),
            calls_per_sample=calls,
        )
    return out


def _timed(step: Callable[[], None], device: torch.device) -> float:
    """Seconds of one call of `step`."""
    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - start


def calls_per_sample(call_s: float, min_sample_s: float = MIN_SAMPLE_S) -> int:
    """How many calls of `call_s` seconds one timed sample needs to last `min_sample_s`."""
    return max(1, math.ceil(min_sample_s / max(call_s, 1e-9)))


def cpu_cases() -> list[Case]:
    """The CPU benchmark: inference at batch 1 and 8 in fp32 and bf16 autocast, a training step at 8."""
    return [
        Case("inference b1 fp32", 1, "fp32", "inference"),
        Case("inference b8 fp32", 8, "fp32", "inference"),
        Case("inference b1 bf16", 1, "bf16", "inference"),
        Case("inference b8 bf16", 8, "bf16", "inference"),
        Case("train step b8 fp32", 8, "fp32", "train"),
    ]


def gpu_cases() -> list[Case]:
    """The GPU benchmark: batch 256 bf16 inference eager, a training step at 128, then inference compiled
    (last: three cold compilations take the longest, and a time budget should cut that first)."""
    return [
        Case("inference b256 bf16", 256, "bf16", "inference"),
        Case("train step b128 bf16", 128, "bf16", "train"),
        Case("inference b256 bf16 compiled", 256, "bf16", "inference", compiled=True),
    ]


def run(
    variant: str = "swinv2-tiny-patch4-window8-256",
    cases: list[Case] | None = None,
    rounds: int = 5,
    device: str = "cpu",
    threads: int | None = None,
    budget_s: float | None = None,
    on_case: Callable[[Report], None] | None = None,
    min_sample_s: float = MIN_SAMPLE_S,
) -> Report:
    """Benchmark `variant` for every case; returns the report (see `to_markdown`, `asdict`).

    Args:
        budget_s: seconds after which no further case is started (the ones left are named in
            `Report.skipped`); a device lent for minutes gets its results back whole, case by case.
        on_case: called with the report after every finished case (e.g. to write it to disk, so that
            a run cut short still leaves what it measured).
        min_sample_s: about how long a timed sample per implementation and round lasts (see `measure`).
    """
    started = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    models, skipped = build_models(variant, dev)
    image_size = get_variant(variant).preprocessing.size
    probe = torch.randn(1, 3, image_size, image_size, device=dev)
    flops_per_image = count_flops(models["swinv2"].eval(), probe)
    rate_dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    rate_size = 2048 if dev.type == "cpu" else 8192  # a GPU needs the larger product to reach its peak
    report = Report(
        machine=machine_info(dev),
        variant=variant,
        image_size=image_size,
        gflops_per_image=flops_per_image / 1e9,
        matmul_gflops_per_s=matmul_rate(dev, rate_dtype, size=rate_size),
        rounds=rounds,
        min_sample_s=min_sample_s,
        skipped=skipped,
    )
    for case in cases or (cpu_cases() if dev.type == "cpu" else gpu_cases()):
        if budget_s is not None and time.perf_counter() - started > budget_s:
            report.skipped.append(f"{case.name} (time budget of {budget_s:.0f} s spent)")
            continue
        results = measure(models, case, variant, flops_per_image, rounds, dev, min_sample_s)
        report.cases.append({"case": asdict(case), "results": {k: asdict(v) for k, v in results.items()}})
        if on_case is not None:
            on_case(report)
    return report


def _bf16_units_note(machine: dict[str, Any]) -> str:
    if machine.get("device") != "cpu" or "cpu_bf16_units" not in machine:
        return ""
    return " with bf16 units" if machine["cpu_bf16_units"] else " without bf16 units (no AVX512-BF16/AMX)"


def _timing_cell(result: dict[str, Any]) -> str:
    return f"{result['median_ms']:.1f} ({result['min_ms']:.0f}..{result['max_ms']:.0f})"


def to_markdown(report: Report) -> str:
    """A table of the report: per case, each implementation's median (min..max) and our speed-up."""
    names = [n for n in IMPLEMENTATIONS if any(n in c["results"] for c in report.cases)]
    machine = report.machine
    header = ["case", *(f"{n} ms" for n in names), "speed-up vs faster peer", "images/s (ours)"]
    header.append("GFLOP/s (ours, % of matmul)")
    header.append("peak MB, training (" + " / ".join(names) + ")")
    lines = [
        f"**{report.variant}**, {report.image_size} px, {report.gflops_per_image:.2f} GFLOP per image (counted); "
        f"{machine['device']} ({machine.get('gpu') or machine.get('cpu') or machine['processor']}), "
        f"{machine['threads']} threads{_bf16_units_note(machine)}, torch {machine['torch']}, "
        f"transformers {machine.get('transformers')}, timm {machine.get('timm')}; plain matmul "
        f"{report.matmul_gflops_per_s:.0f} GFLOP/s; median of {report.rounds} interleaved rounds (min..max), "
        f"ms per call; a round times about {report.min_sample_s:g} s or more of calls of each implementation.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for entry in report.cases:
        results = entry["results"]
        ours = results["swinv2"]
        peers = [results[n]["median_ms"] for n in names if n in PEERS and n in results]
        peaks = [results[n]["peak_memory_mb"] if n in results else None for n in names]
        speed_up = f"{min(peers) / ours['median_ms']:.2f}x" if peers else "n/a"
        if peers and TRITON in results:
            speed_up += f" (triton {min(peers) / results[TRITON]['median_ms']:.2f}x)"
        row = [
            entry["case"]["name"],
            *(_timing_cell(results[n]) if n in results else "-" for n in names),
            speed_up,
            f"{ours['images_per_s']:.1f}",
            f"{ours['gflops_per_s']:.0f} ({100 * ours['gflops_per_s'] / report.matmul_gflops_per_s:.0f} %)",
            " / ".join("-" if peak is None else f"{peak:.0f}" for peak in peaks),
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += _profile_table(report, names)
    if report.skipped:
        lines += ["", "Not measured: " + ", ".join(report.skipped)]
    return "\n".join(lines) + "\n"


def _profile_table(report: Report, names: list[str]) -> list[str]:
    """Where the time goes: one profiled call per case and implementation, ms per op class (CPU self time,
    or GPU kernel time)."""
    rows = [
        (entry["case"]["name"], name, entry["results"][name]["profile_ms"])
        for entry in report.cases
        for name in names
        if name in entry["results"] and entry["results"][name].get("profile_ms")
    ]
    if not rows:
        return []
    classes = list(rows[0][2])
    on_gpu = str(report.machine.get("device", "cpu")).startswith("cuda")
    what = "GPU kernel time (kernels classed by name)" if on_gpu else "CPU self time"
    lines = [
        "",
        f"Where the time goes: {what} of one profiled call per op class, ms (torch.profiler).",
        "",
        "| case | implementation | " + " | ".join(classes) + " |",
        "|" + "---|" * (len(classes) + 2),
    ]
    for case_name, name, profile in rows:
        lines.append(f"| {case_name} | {name} | " + " | ".join(f"{profile[c]:.1f}" for c in classes) + " |")
    return lines


def write_report(report: Report, directory: str | Path, stem: str) -> tuple[Path, Path]:
    """Write `<stem>.json` and `<stem>.md` into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
    json_path.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    md_path.write_text(to_markdown(report), encoding="utf-8")
    return json_path, md_path


# ------------------------------------------------------------------------------- command
def bench_command(args: argparse.Namespace) -> str:
    """Run the benchmark against the installed peers; print (and optionally save) the table."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CommandError(f"--device {args.device}: no CUDA device here")
    report = run(args.variant, rounds=args.rounds, device=args.device, threads=args.threads)
    if args.out:
        json_path, md_path = write_report(report, args.out, args.device.split(":")[0])
        return to_markdown(report) + f"\nwrote {json_path} and {md_path}"
    return to_markdown(report)


def register(commands: Any) -> None:
    """Add `bench` to the `swinv2` subcommands."""
    speed = commands.add_parser(
        "bench",
        help="measure speed and memory against transformers and timm",
        description="Side-by-side benchmark on the same weights, interleaved rounds. CPU: inference at "
        "batch 1 and 8 (fp32, bf16 autocast) and a training step at batch 8. CUDA: bf16 inference at "
        "batch 256, eager and compiled, and a training step at batch 128.",
    )
    speed.add_argument("--variant", type=variant_name, default="swinv2-tiny-patch4-window8-256", metavar="NAME")
    speed.add_argument("--rounds", type=positive_int, default=5, help="interleaved timing rounds (default: 5)")
    speed.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    speed.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    speed.add_argument("--out", metavar="DIR", help="also write <device>.json and <device>.md into DIR")
    speed.set_defaults(run=bench_command)
