"""The benchmark harness: FLOP counting, interleaved measurement, the Markdown table."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers import tiny_config
from swinv2 import Swinv2ForImageClassification
from swinv2.cli.bench import (
    OTHER_OPS,
    Case,
    Report,
    calls_per_sample,
    count_flops,
    matmul_rate,
    measure,
    profile_op_classes,
    to_markdown,
)

# The module, not the `swinv2 bench` command function that `swinv2.cli` exports under the same name.
bench = importlib.import_module("swinv2.cli.bench")


def test_flops_are_counted_not_assumed() -> None:
    linear = torch.nn.Linear(10, 20)
    assert count_flops(linear, torch.randn(4, 10)) == 2 * 4 * 10 * 20
    model = Swinv2ForImageClassification(tiny_config()).eval()
    one = count_flops(model, torch.randn(1, 3, 64, 64))
    assert count_flops(model, torch.randn(2, 3, 64, 64)) == 2 * one
    ratio = count_flops(model, torch.randn(1, 3, 128, 128)) / one
    assert 3.9 < ratio < 4.1  # fixed windows: the work grows with the pixels (the head is the rest)


def test_matmul_rate_is_positive() -> None:
    assert matmul_rate(torch.device("cpu"), torch.float32, size=128, repeats=2) > 0


def test_measure_interleaves_and_reports_every_implementation() -> None:
    torch.manual_seed(0)
    models = {name: Swinv2ForImageClassification(tiny_config(num_labels=1000)) for name in ("swinv2", "timm")}
    case = Case("inference b2 fp32", 2, "fp32", "inference")
    results = measure(models, case, "swinv2-tiny-patch4-window8-256", 1e9, rounds=2, device=torch.device("cpu"))
    assert set(results) == {"swinv2", "timm"}
    for result in results.values():
        assert 0 < result.min_ms <= result.median_ms <= result.max_ms
        assert result.images_per_s == pytest.approx(2 / (result.median_ms / 1e3))
        assert result.gflops_per_s == pytest.approx(2 * 1e9 / (result.median_ms / 1e3) / 1e9)
        assert result.profile_ms is not None and result.profile_ms["linear, conv"] > 0


def test_short_calls_are_timed_in_samples_of_several() -> None:
    assert calls_per_sample(0.5, 0.25) == 1
    assert calls_per_sample(0.25, 0.25) == 1
    assert calls_per_sample(0.06, 0.25) == 5
    assert calls_per_sample(0.0, 0.25) >= 1


class _FakeClock:
    """A stand-in for the `time` module whose `perf_counter` advances only by `seconds_per_forward` at
    each forward of the models it is attached to: the timings `measure` sees are exact, whatever the
    machine's load."""

    def __init__(self, seconds_per_forward: float) -> None:
        self.now = 0.0
        self.seconds_per_forward = seconds_per_forward

    def perf_counter(self) -> float:
        return self.now

    def tick(self, *_: Any) -> None:
        self.now += self.seconds_per_forward


def test_measure_repeats_short_calls_alike_and_reports_per_call_times(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    models = {name: Swinv2ForImageClassification(tiny_config(num_labels=1000)) for name in ("swinv2", "timm")}
    clock = _FakeClock(seconds_per_forward=1 / 16)  # binary fractions: the clock's sums are exact
    monkeypatch.setattr(bench, "time", clock)
    forwards = dict.fromkeys(models, 0)
    for name, model in models.items():
        model.register_forward_hook(lambda *_, name=name: forwards.__setitem__(name, forwards[name] + 1))
        model.register_forward_hook(clock.tick)
    case = Case("inference b1 fp32", 1, "fp32", "inference")
    results = measure(
        models,
        case,
        "swinv2-tiny-patch4-window8-256",
        1e9,
        rounds=2,
        device=torch.device("cpu"),
        min_sample_s=0.25,
    )
    for name, result in results.items():
        assert result.calls_per_sample == 4  # 0.25 s of 1/16 s calls, the same count for both
        assert forwards[name] == 3 + 2 * 4 + 1  # warm-up, the rounds' samples, the profile
        assert result.median_ms == result.max_ms == 1e3 / 16  # per call, not per sample


def test_profile_splits_the_time_by_op_class() -> None:
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    profile = profile_op_classes(
        lambda: torch.cat([a @ b, (a * b).softmax(-1), torch.nn.functional.layer_norm(a, (256,))])
    )
    assert set(profile) == {"linear, conv", "attention core", "data movement", "normalisation", OTHER_OPS}
    assert all(profile[c] > 0 for c in profile)  # mm, softmax, cat, layer norm, mul: one op of each class


def test_markdown_table_states_the_ratio_against_the_faster_peer() -> None:
    timing = dict(min_ms=1.0, max_ms=3.0, images_per_s=1.0, gflops_per_s=10.0, peak_memory_mb=None)
    report = Report(
        machine=dict(device="cpu", processor="x86_64", threads=2, torch="2", transformers="5", timm="1"),
        variant="v",
        image_size=256,
        gflops_per_image=11.9,
        matmul_gflops_per_s=200.0,
        rounds=3,
        cases=[
            {
                "case": dict(name="inference b1 fp32", batch=1, precision="fp32", mode="inference", compiled=False),
                "results": {
                    "swinv2": dict(timing, median_ms=50.0),
                    "transformers": dict(timing, median_ms=60.0),
                    "timm": dict(timing, median_ms=80.0),
                },
            }
        ],
    )
    report.cases[0]["results"]["swinv2"]["profile_ms"] = {"linear, conv": 30.0, OTHER_OPS: 20.25}
    table = to_markdown(report)
    row = "| inference b1 fp32 | 50.0 (1..3) | 60.0 (1..3) | 80.0 (1..3) | 1.20x | 1.0 | 10 (5 %) | - / - / - |"
    assert row in table
    assert "| case | implementation | linear, conv | elementwise, other |" in table
    assert "| inference b1 fp32 | swinv2 | 30.0 | 20.2 |" in table
    assert "11.90 GFLOP per image" in table and "plain matmul 200 GFLOP/s" in table


def test_bench_command_has_help() -> None:
    done = subprocess.run([sys.executable, "-m", "swinv2.cli", "bench", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "--rounds" in done.stdout and "--threads" in done.stdout


def test_run_reports_each_case_as_it_ends_and_stops_at_its_time_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    def slow_measure(*args: object, **kwargs: object) -> dict:
        time.sleep(0.2)
        return {}

    monkeypatch.setattr(bench, "build_models", lambda variant, device: ({"swinv2": torch.nn.Identity()}, []))
    monkeypatch.setattr(bench, "count_flops", lambda model, x: 1)
    monkeypatch.setattr(bench, "matmul_rate", lambda *args, **kwargs: 1.0)
    monkeypatch.setattr(bench, "machine_info", lambda device: {})
    monkeypatch.setattr(bench, "measure", slow_measure)
    cases = [Case(f"case {i}", 1, "fp32", "inference") for i in range(3)]
    seen: list[int] = []
    report = bench.run(cases=cases, budget_s=0.1, on_case=lambda r: seen.append(len(r.cases)))
    assert seen == [1]  # the first case starts inside the budget, ends after it: the others are not started
    assert [c["case"]["name"] for c in report.cases] == ["case 0"]
    assert report.skipped == ["case 1 (time budget of 0 s spent)", "case 2 (time budget of 0 s spent)"]
    seen.clear()
    assert len(bench.run(cases=cases, on_case=lambda r: seen.append(len(r.cases))).cases) == 3
    assert seen == [1, 2, 3]


def test_markdown_shows_the_kernel_column_where_it_was_measured() -> None:
    timing = dict(min_ms=1.0, max_ms=3.0, images_per_s=1.0, gflops_per_s=10.0, peak_memory_mb=None)
    case = dict(batch=256, precision="bf16", compiled=False)
    report = Report(
        machine=dict(device="cuda:0", gpu="H200", processor="x86_64", threads=2, torch="2", transformers="5", timm="1"),
        variant="v",
        image_size=256,
        gflops_per_image=11.9,
        matmul_gflops_per_s=700000.0,
        rounds=3,
        cases=[
            {
                "case": dict(case, name="inference b256 bf16", mode="inference"),
                "results": {
                    "swinv2": dict(timing, median_ms=50.0),
                    "swinv2-triton": dict(timing, median_ms=40.0),
                    "transformers": dict(timing, median_ms=100.0),
                    "timm": dict(timing, median_ms=120.0),
                },
            },
            {
                "case": dict(case, name="train step b128 bf16", mode="train"),
                "results": {
                    "swinv2": dict(timing, median_ms=80.0, peak_memory_mb=900.0),
                    "transformers": dict(timing, median_ms=100.0, peak_memory_mb=1000.0),
                    "timm": dict(timing, median_ms=90.0, peak_memory_mb=1100.0),
                },
            },
        ],
    )
    table = to_markdown(report)
    assert "| case | swinv2 ms | swinv2-triton ms | transformers ms | timm ms | speed-up vs faster peer |" in table
    inference = "| inference b256 bf16 | 50.0 (1..3) | 40.0 (1..3) | 100.0 (1..3) | 120.0 (1..3) | 2.00x (triton 2.50x)"
    assert inference in table
    assert "| train step b128 bf16 | 80.0 (1..3) | - | 100.0 (1..3) | 90.0 (1..3) | 1.12x |" in table
    assert "| 900 / - / 1000 / 1100 |" in table


def test_attention_layer_benchmark_writes_its_table(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[3] / "benchmarks" / "attention.py"
    command = [sys.executable, str(script), "--device", "cpu", "--rounds", "1", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "cpu-attention.json").read_text())
    assert [r["layer"] for r in results] == ["tiny stage 1", "base stage 1"]
    for entry in results:
        for mode in ("forward", "forward + backward"):
            timings = entry["implementations"][mode]
            assert set(timings) == {"eager", "sdpa"}  # no Triton on the CPU outside the interpreter
            assert all(t["median_ms"] > 0 for t in timings.values())
    assert "| tiny stage 1 | 1 | forward |" in (tmp_path / "cpu-attention.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_bench_command_says_when_cuda_is_missing() -> None:
    command = [sys.executable, "-m", "swinv2.cli", "bench", "--device", "cuda"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert "--device cuda: no CUDA device here" in done.stderr


@pytest.mark.parametrize(
    ("kernel", "op_class"),
    [
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1", "linear, conv"),
        ("void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_32x32_128x1_tn_align8>", "linear, conv"),
        ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<...>)", "attention core"),
        ("window_attention_forward", "attention core"),
        ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float>", "attention core"),
        ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::BFloat16, float>", "normalisation"),
        ("triton_per_fused_native_layer_norm_0", "normalisation"),
        ("void at::native::elementwise_kernel<128, 4, at::native::direct_copy_kernel_cuda(...)>", "data movement"),
        ("void at::native::(anonymous namespace)::indexSelectLargeIndex<c10::BFloat16, long>", "data movement"),
        ("Memcpy HtoD (Pageable -> Device)", "data movement"),
        ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl(...)>", OTHER_OPS),
        ("triton_poi_fused_add_mul_3", OTHER_OPS),
    ],
)
def test_gpu_kernels_are_classed_by_name(kernel: str, op_class: str) -> None:
    from swinv2.cli.bench import gpu_kernel_class

    assert gpu_kernel_class(kernel) == op_class
