"""Correctness on an accelerator: parity, 16-bit autocast, torch.compile, training, memory.

Marked `gpu`: they run where CUDA is (`pytest -m gpu tests/gpu`, see `benchmarks/device.sh`) and are
skipped elsewhere. `SWINV2_TEST_DEVICE=cpu` runs the same checks on the CPU (except the CUDA memory
one), which keeps this file honest on machines without a GPU.

TF32 is switched off for the fp32 comparisons: with it, cuBLAS and cuDNN round matmul inputs to 10
mantissa bits and no 1e-5 comparison means anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from helpers import BASE_SHAPED, TINY_SHAPED, hf_twins, image_batch, natural_images, perturb_
from swinv2 import Swinv2Config, Swinv2ForImageClassification, Swinv2Model
from swinv2.backends import triton_attention

DEVICE = torch.device(os.environ.get("SWINV2_TEST_DEVICE", "cuda"))
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device (or SWINV2_TEST_DEVICE)"
    ),
]
ATOL = 1e-5  # fp32, as on the CPU
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.fixture(autouse=True)
def no_tf32() -> Iterator[None]:
    if DEVICE.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def _config(**fields: Any) -> Swinv2Config:
    return Swinv2Config(**{**TINY_SHAPED, "image_size": 256, "window_size": 8, "drop_path_rate": 0.0, **fields})


CASES = {
    "tiny-w8-256": (_config(), (256, 256)),
    "tiny-w8-padded": (_config(), (200, 232)),
    "base-w16-256": (_config(**BASE_SHAPED, window_size=16), (256, 256)),
}


def _kernel_runs_here() -> bool:
    return DEVICE.type == "cuda" and triton_attention.available(torch.empty(0, device=DEVICE))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("implementation", ["eager", "auto", "sdpa", "triton"])
def test_fp32_matches_transformers_on_the_device(case: str, implementation: str) -> None:
    if implementation == "triton" and not _kernel_runs_here():
        pytest.skip("the Triton kernel runs on CUDA with Triton installed")
    config, size = CASES[case]
    theirs, ours = (m.to(DEVICE) for m in hf_twins("Swinv2Model", config))
    ours.set_attn_implementation(implementation)
    x = image_batch(2, *size).to(DEVICE)
    with torch.no_grad():
        expected = theirs(x, output_hidden_states=True)
        actual = ours(x, output_hidden_states=True)
    differences = [_max_diff(a, e) for a, e in zip(actual.hidden_states, expected.hidden_states, strict=True)]
    differences.append(_max_diff(actual.last_hidden_state, expected.last_hidden_state))
    # "sdpa" in fp32 is opt-in: its kernels sum in their own order (on the CPU up to 1.22e-5, see README)
    bound = ATOL if implementation != "sdpa" else 2 * ATOL
    assert max(differences) <= bound, differences


@pytest.mark.parametrize("precision", list(HALF))
@pytest.mark.parametrize("implementation", ["auto", "triton"])
def test_16_bit_autocast_is_as_close_to_fp32_as_transformers(precision: str, implementation: str) -> None:
    """Ours ("auto": SDPA under autocast; the Triton kernel) vs transformers, each against fp32 eager."""
    if implementation == "triton" and not _kernel_runs_here():
        pytest.skip("the Triton kernel runs on CUDA with Triton installed")
    theirs, ours = (m.to(DEVICE) for m in hf_twins("Swinv2Model", _config()))
    ours.set_attn_implementation(implementation)
    x = natural_images(4, 256).to(DEVICE)
    with torch.no_grad():
        reference = ours(x).last_hidden_state.double()
        with torch.autocast(DEVICE.type, dtype=HALF[precision]):
            actual = ours(x).last_hidden_state
            expected = theirs(x).last_hidden_state
    assert actual.dtype == expected.dtype
    assert torch.isfinite(actual).all()
    ours_error = (actual.double() - reference).abs()
    theirs_error = (expected.double() - reference).abs()
    # The same rounding of the same inputs: ours may differ in summation order, not in precision.
    assert ours_error.mean() <= 1.25 * theirs_error.mean(), (ours_error.mean(), theirs_error.mean())
    assert ours_error.max() <= 2.0 * theirs_error.max(), (ours_error.max(), theirs_error.max())


def test_fp16_autocast_stays_finite_on_a_base_sized_model() -> None:
    config = Swinv2Config(
        embed_dim=128, depths=(2, 2, 6, 2), num_heads=(4, 8, 16, 32), image_size=256, window_size=16, num_labels=1000
    )
    torch.manual_seed(0)
    model = perturb_(Swinv2ForImageClassification(config), scale=0.05).eval().to(DEVICE)
    x = natural_images(4, 256).to(DEVICE)
    with torch.no_grad():
        fp32 = model(x).logits
        with torch.autocast(DEVICE.type, dtype=torch.float16):
            out = model(x, output_hidden_states=True)
    assert out.logits.dtype == torch.float16
    assert all(torch.isfinite(h).all() for h in out.hidden_states)
    # The CPU test of the same model measured 0.1 % of the logits' range; 0.5 % here.
    assert _max_diff(out.logits, fp32) < 0.005 * fp32.abs().max().item()


def _gradients(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, precision: str) -> dict:
    model.zero_grad(set_to_none=True)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model(x).logits
    F.cross_entropy(logits.float(), labels).backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def test_training_gradients_of_each_implementation() -> None:
    torch.manual_seed(0)
    model = perturb_(Swinv2ForImageClassification(_config(num_labels=10))).train().to(DEVICE)
    x = natural_images(4, 256).to(DEVICE)
    labels = torch.tensor([0, 3, 5, 9], device=DEVICE)
    model.set_attn_implementation("eager")
    reference = _gradients(model, x, labels, "fp32")
    for implementation in ("auto", "sdpa", "triton") if _kernel_runs_here() else ("auto", "sdpa"):
        model.set_attn_implementation(implementation)
        grads = _gradients(model, x, labels, "fp32")
        for name, grad in reference.items():
            scale = grad.abs().max().clamp_min(1e-12)
            assert _max_diff(grads[name], grad) <= 1e-4 * scale, (implementation, name)


@pytest.mark.parametrize("implementation", ["auto", "triton"])
def test_bf16_training_gradients_are_as_close_to_fp32_as_transformers(implementation: str) -> None:
    if implementation == "triton" and not _kernel_runs_here():
        pytest.skip("the Triton kernel runs on CUDA with Triton installed")
    theirs, ours = (m.train().to(DEVICE) for m in hf_twins("Swinv2ForImageClassification", _config(num_labels=10)))
    ours.set_attn_implementation(implementation)
    x = natural_images(4, 256).to(DEVICE)
    labels = torch.tensor([0, 3, 5, 9], device=DEVICE)
    reference = _gradients(ours, x, labels, "fp32")  # our parameter names are transformers'
    actual = _gradients(ours, x, labels, "bf16")
    expected = _gradients(theirs, x, labels, "bf16")
    assert set(actual) == set(expected) == set(reference)
    for name, grad in reference.items():
        ours_error = ((actual[name] - grad).norm() / grad.norm()).item()
        theirs_error = ((expected[name] - grad).norm() / grad.norm()).item()
        # On the CPU: relative errors 1-2 %, ours at most 1.16x transformers' (median 1.02x)
        assert ours_error <= 1.5 * theirs_error + 1e-3, (name, ours_error, theirs_error)


def test_moving_a_model_between_devices_leaves_no_stale_cache() -> None:
    torch.manual_seed(0)
    model = perturb_(Swinv2Model(_config())).eval()
    x = image_batch(1, 256, 256)
    with torch.no_grad():
        on_cpu = model(x).last_hidden_state
        on_device = model.to(DEVICE)(x.to(DEVICE)).last_hidden_state
        model.to(dtype=torch.float64)
        in_fp64 = model(x.to(DEVICE, torch.float64)).last_hidden_state
        back = model.to("cpu", torch.float32)(x).last_hidden_state
    assert on_device.device.type == DEVICE.type and in_fp64.dtype == torch.float64
    assert _max_diff(on_device.cpu(), on_cpu) <= ATOL
    assert _max_diff(in_fp64.cpu(), on_cpu) <= ATOL
    assert torch.equal(back, on_cpu)


def test_kernel_launches_past_the_grids_second_axis_limit() -> None:
    """80,000 (window, head) programs: more than CUDA's 65,535 on a grid's second or third axis."""
    if not _kernel_runs_here():
        pytest.skip("the Triton kernel runs on CUDA with Triton installed")
    generator = torch.Generator().manual_seed(0)
    windows, tokens, heads, head_dim = 40_000, 16, 2, 16
    qkv = torch.randn(windows, tokens, 3 * heads * head_dim, generator=generator).to(DEVICE)
    bias = (16 * torch.rand(4, heads, tokens, tokens, generator=generator)).to(DEVICE)
    scale = torch.full((heads,), 10.0, device=DEVICE)
    out = triton_attention.window_attention(qkv, bias, scale, heads)
    q, k, v = qkv.view(windows, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4)  # (windows, nH, N, Dh)
    scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * 10.0
    scores = (scores.view(-1, 4, heads, tokens, tokens) + bias).view(windows, heads, tokens, tokens)
    expected = (scores.softmax(-1) @ v).transpose(1, 2).reshape(windows, tokens, heads * head_dim)
    assert _max_diff(out, expected) <= ATOL  # the last windows too: every program ran


@pytest.mark.skipif(DEVICE.type != "cuda", reason="CUDA memory statistics")
def test_gradient_checkpointing_lowers_peak_memory() -> None:
    torch.manual_seed(0)
    model = Swinv2ForImageClassification(_config(num_labels=10)).train().to(DEVICE)
    x = natural_images(16, 256).to(DEVICE)
    labels = torch.zeros(16, dtype=torch.long, device=DEVICE)

    def peak_mb() -> float:
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _gradients(model, x, labels, "bf16")
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20

    plain = peak_mb()
    model.gradient_checkpointing_enable()
    checkpointed = peak_mb()
    assert checkpointed < 0.6 * plain, (checkpointed, plain)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_model_matches_eager_and_compiles_once(precision: str) -> None:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    model = perturb_(Swinv2Model(_config())).eval().to(DEVICE)
    compiled = torch.compile(model, fullgraph=True)
    autocast = torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    outputs = []
    with torch.no_grad(), autocast:
        expected = model(image_batch(2, 256, 256).to(DEVICE)).last_hidden_state
        for seed in range(3):  # new values of one shape: compiled once
            outputs.append(compiled(image_batch(2, 256, 256, seed=seed).to(DEVICE)).last_hidden_state)
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert frames == 1, f"{frames} graphs for one input shape"
    # inductor fuses and reorders: fp32 within 1e-4, bf16 within its own rounding of activations ~3
    bound = 1e-4 if precision == "fp32" else 0.25
    assert _max_diff(outputs[0], expected) <= bound
