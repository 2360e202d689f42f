"""Values of the fused Triton window attention under Triton's CPU interpreter.

Run by `test_triton_attention.py` in a process started with `TRITON_INTERPRET=1` (Triton picks the
interpreter at its import, for the whole process); skipped when collected any other way.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from helpers import image_batch, perturb_, tiny_config
from swinv2 import Swinv2ForImageClassification, Swinv2Model
from swinv2.backends import triton_attention

pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run by test_triton_attention.py under TRITON_INTERPRET=1", allow_module_level=True)

# (windows, tokens per window, heads, head dim, bias windows): windows 8 (N 64), 7 (49, not a power of
# two), 12 (144, several key blocks), 4 (16, the smallest dot); head dims 32, 24 (padded), 16.
SHAPES = [(8, 64, 3, 32, 4), (4, 49, 2, 24, 1), (2, 144, 4, 32, 2), (2, 16, 2, 16, 2)]


def reference(qkv: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor, num_heads: int) -> torch.Tensor:
    """softmax(cos(q, k) * scale + bias) @ v in float64, heads concatenated: (B_, N, C)."""
    B_, N, three_c = qkv.shape
    C = three_c // 3
    q, k, v = qkv.double().view(B_, N, 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4)  # (B_, nH, N, Dh)
    scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * scale.double().view(1, -1, 1, 1)
    scores = (scores.view(-1, bias.shape[0], num_heads, N, N) + bias.double()).view(B_, num_heads, N, N)
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(B_, N, C)


def inputs(windows: int, tokens: int, num_heads: int, head_dim: int, bias_windows: int, seed: int = 0) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    qkv = torch.randn(windows, tokens, 3 * num_heads * head_dim, generator=generator)
    bias = 16 * torch.rand(bias_windows, num_heads, tokens, tokens, generator=generator)  # the position bias's range
    masked = torch.rand(bias_windows, 1, tokens, tokens, generator=generator) > 0.7
    masked[..., 0] = False  # every query keeps a key, as a shift mask does (a token sees its own region)
    bias = bias.masked_fill(masked, -1e4)  # the shift mask's value
    scale = 1 + 99 * torch.rand(num_heads, 1, 1, generator=generator)  # exp(logit_scale) in [1, 100]
    return qkv, bias, scale


@pytest.mark.parametrize("shape", SHAPES, ids=[f"w{s[0]}-N{s[1]}-h{s[2]}-d{s[3]}-b{s[4]}" for s in SHAPES])
def test_kernel_matches_the_formula_in_fp32(shape: tuple[int, ...]) -> None:
    qkv, bias, scale = inputs(*shape)
    out = triton_attention.window_attention(qkv, bias, scale, shape[2])
    assert out.shape == (shape[0], shape[1], shape[2] * shape[3]) and out.dtype == torch.float32
    # scores up to ~116 before exp: measured at most 6.7e-6; torch's explicit fp32 ops, up to 1.17e-5
    torch.testing.assert_close(out.double(), reference(qkv, bias, scale, shape[2]), atol=1e-5, rtol=0)


def reference_16_bit(qkv: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The kernel's stated 16-bit arithmetic in float64: normalised q and k, and the unnormalised
    probabilities, rounded to qkv's dtype; the rest exact."""
    B_, N, three_c = qkv.shape
    C = three_c // 3
    q, k, v = qkv.float().view(B_, N, 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4)  # (B_, nH, N, Dh)
    q, k = (F.normalize(t, dim=-1).to(qkv.dtype).double() for t in (q, k))
    scores = q @ k.transpose(-2, -1) * scale.double().view(1, -1, 1, 1)
    scores = (scores.view(-1, bias.shape[0], num_heads, N, N) + bias.double()).view(B_, num_heads, N, N)
    unnormalised = (scores - scores.amax(-1, keepdim=True)).exp()
    out = unnormalised.to(qkv.dtype).double() @ v.double() / unnormalised.sum(-1, keepdim=True)
    return out.transpose(1, 2).reshape(B_, N, C)


@pytest.mark.parametrize("shape", SHAPES, ids=[f"w{s[0]}-N{s[1]}-h{s[2]}-d{s[3]}-b{s[4]}" for s in SHAPES])
def test_kernel_in_fp16_follows_its_stated_rounding(shape: tuple[int, ...]) -> None:
    qkv, bias, scale = inputs(*shape)
    qkv, bias = qkv.half(), bias.half()
    out = triton_attention.window_attention(qkv, bias, scale, shape[2])
    assert out.dtype == torch.float16
    expected = reference_16_bit(qkv, bias, scale, shape[2])
    # Left: summation order, the output's fp16 rounding (|out| < 4: ulp 2^-9) and, past one key block,
    # probabilities rounded against the running row maximum. Measured: <= 1.0e-3 with one key block
    # (N <= 64), 3.4e-3 with three (N = 144).
    torch.testing.assert_close(out.double(), expected, atol=2e-3 if shape[1] <= 64 else 6e-3, rtol=0)


@pytest.mark.parametrize("shape", SHAPES, ids=[f"w{s[0]}-N{s[1]}-h{s[2]}-d{s[3]}-b{s[4]}" for s in SHAPES])
def test_kernel_gradients_match_the_formula_in_fp32(shape: tuple[int, ...]) -> None:
    leaves = [t.requires_grad_() for t in inputs(*shape)]  # qkv, bias, scale
    out = triton_attention.window_attention(*leaves, shape[2])
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    out.backward(upstream)
    exact = [t.detach().double().requires_grad_() for t in leaves]
    reference(*exact, shape[2]).backward(upstream.double())
    for name, actual, expected in zip(("qkv", "bias", "scale"), leaves, exact, strict=True):
        assert actual.grad.dtype == actual.dtype, name
        # Relative to the largest gradient, worst of 24 random draws: qkv 4.7e-6, bias 3.7e-6 (torch's
        # explicit fp32 ops: 4.4e-6, 4.2e-6); scale 2.7e-5 (torch: 9.7e-6), a sum of cancelling terms
        # whose delta comes from rowsum(dO * o), as in flash attention 2, rather than from p.
        error = (actual.grad.double() - expected.grad).abs().max() / expected.grad.abs().max()
        assert error <= (5e-5 if name == "scale" else 2e-5), (name, error.item())


def test_kernel_gradient_of_qkv_alone() -> None:
    """A frozen position bias and temperature: no bias/scale gradients computed, the same dqkv."""
    qkv, bias, scale = inputs(*SHAPES[1])
    both = qkv.clone().requires_grad_()
    triton_attention.window_attention(both, bias.requires_grad_(), scale, SHAPES[1][2]).sum().backward()
    alone = qkv.clone().requires_grad_()
    triton_attention.window_attention(alone, bias.detach(), scale.detach(), SHAPES[1][2]).sum().backward()
    torch.testing.assert_close(alone.grad, both.grad, atol=0, rtol=0)
    assert bias.grad is not None


def test_model_in_fp64_takes_the_auto_path(interpreted: list[int]) -> None:
    torch.manual_seed(0)
    model = perturb_(Swinv2Model(tiny_config(attn_implementation="triton"))).eval().double()
    x = image_batch(1, 64, 64).double()
    with torch.no_grad():
        actual = model(x).last_hidden_state
        model.set_attn_implementation("eager")
        expected = model(x).last_hidden_state
    assert not interpreted  # fp64 is not a dtype of the kernels
    torch.testing.assert_close(actual, expected, atol=1e-12, rtol=0)


@pytest.fixture
def bf16_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make Triton's interpreter compute bf16 as the GPU does, for the duration of a test.

    Triton 3.8's interpreter multiplies the raw uint16 storage of bf16 operands in `tl.dot` and
    truncates fp32 -> bf16 casts; the GPU multiplies the values and rounds to nearest even. Patched:
    bf16 dot operands widened to fp32 (exact), casts to bf16 rounded by torch.
    """
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    if not (hasattr(builder, "create_dot") and hasattr(builder, "cast_impl")):
        pytest.skip("this Triton's interpreter is built differently")
    plain_dot, plain_cast = builder.create_dot, builder.cast_impl

    def widened(handle: Any) -> Any:
        if handle.dtype.scalar == tl.bfloat16:
            return (handle.data.astype(np.uint32) << 16).view(np.float32)  # bf16 bits are fp32's top half
        return handle.data

    def create_dot(self: Any, a: Any, b: Any, acc: Any, *args: Any) -> Any:
        if tl.bfloat16 not in (a.dtype.scalar, b.dtype.scalar):
            return plain_dot(self, a, b, acc, *args)
        product = np.matmul(widened(a), widened(b), dtype=np.float32)
        return interpreter.TensorHandle(product + acc.data, acc.dtype.scalar)

    def cast_impl(self: Any, source: Any, target: Any) -> Any:
        if not (source.dtype.scalar == tl.float32 and target.scalar == tl.bfloat16):
            return plain_cast(self, source, target)
        rounded = torch.from_numpy(np.ascontiguousarray(source.data, dtype=np.float32)).bfloat16()
        return interpreter.TensorHandle(rounded.view(torch.int16).numpy().view(np.uint16), target.scalar)

    monkeypatch.setattr(builder, "create_dot", create_dot)
    monkeypatch.setattr(builder, "cast_impl", cast_impl)


@pytest.mark.parametrize("shape", SHAPES, ids=[f"w{s[0]}-N{s[1]}-h{s[2]}-d{s[3]}-b{s[4]}" for s in SHAPES])
def test_kernel_in_bf16_follows_its_stated_rounding(shape: tuple[int, ...], bf16_interpreter: None) -> None:
    qkv, bias, scale = inputs(*shape)
    qkv, bias = qkv.bfloat16(), bias.bfloat16()
    out = triton_attention.window_attention(qkv, bias, scale, shape[2])
    assert out.dtype == torch.bfloat16
    expected = reference_16_bit(qkv, bias, scale, shape[2])
    # Left: the output's own rounding. Measured 0.0078-0.0079, half a bf16 ulp at |out| in [2, 4).
    torch.testing.assert_close(out.double(), expected, atol=2**-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_kernel_gradients_in_16_bit_are_close_to_fp32(dtype: torch.dtype, bf16_interpreter: None) -> None:
    qkv, bias, scale = inputs(*SHAPES[0])
    grads = {}
    for precision in (torch.float32, dtype):
        leaves = [t.detach().to(precision).requires_grad_() for t in (qkv, bias)] + [scale.clone().requires_grad_()]
        out = triton_attention.window_attention(*leaves, SHAPES[0][2])
        out.float().backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
        grads[precision] = [t.grad.double() for t in leaves]
    for name, low, full in zip(("qkv", "bias", "scale"), grads[dtype], grads[torch.float32], strict=True):
        error = ((low - full).norm() / full.norm()).item()
        # Measured: fp16 0.0022-0.0026, bf16 0.014-0.024 (8x: 3 mantissa bits fewer); bounds ~4x.
        assert error < (0.01 if dtype == torch.float16 else 0.1), (name, error)


def test_kernel_reads_a_strided_projection_and_rejects_a_wrong_bias() -> None:
    qkv, bias, scale = inputs(*SHAPES[0])
    wide = torch.cat([qkv, torch.randn_like(qkv)], dim=-1)[..., : qkv.shape[-1]]  # rows strided by 6C
    torch.testing.assert_close(
        triton_attention.window_attention(wide, bias, scale, 3), triton_attention.window_attention(qkv, bias, scale, 3)
    )
    with pytest.raises(ValueError, match=r"bias \(4, 3, 64, 64\) does not fit 8 windows of 64 tokens and 2 heads"):
        triton_attention.window_attention(qkv, bias, scale, 2)
    with pytest.raises(ValueError, match="does not fit 6 windows"):
        triton_attention.window_attention(qkv[:6], bias, scale, 3)


@pytest.fixture
def interpreted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the kernel's calls."""
    calls: list[int] = []
    original = triton_attention.window_attention

    def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(triton_attention, "window_attention", counted)
    return calls


def test_model_with_the_kernel_matches_eager(interpreted: list[int]) -> None:
    torch.manual_seed(0)
    model = perturb_(Swinv2Model(tiny_config(attn_implementation="triton"))).eval()
    x = image_batch(1, 60, 52)  # padded grids, shifted windows with masks, both stages
    with torch.no_grad():
        actual = model(x, output_hidden_states=True)
        blocks = len(interpreted)
        model.set_attn_implementation("eager")
        expected = model(x, output_hidden_states=True)
    assert blocks == sum(model.config.depths)
    for a, e in zip(actual.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=0)


@pytest.mark.long  # 12 s under the interpreter; the kernel's own gradients are checked above by default
def test_model_trains_through_the_kernel_with_eager_gradients(interpreted: list[int]) -> None:
    torch.manual_seed(0)
    model = perturb_(Swinv2ForImageClassification(tiny_config(num_labels=3, attn_implementation="triton"))).train()
    x = image_batch(2, 60, 52)
    labels = torch.tensor([0, 2])

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model(x, labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    actual = gradients()
    assert len(interpreted) == sum(model.config.depths)
    model.set_attn_implementation("eager")
    expected = gradients()
    assert actual.keys() == expected.keys()
    for name, grad in expected.items():  # every parameter: query/key/value, biases, logit scale, position-bias MLP
        scale = grad.abs().max().clamp_min(1e-12)
        assert (actual[name] - grad).abs().max() <= 1e-4 * scale, name  # as the parity tests' gradients


def test_kernel_is_left_out_where_it_does_not_apply(interpreted: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = perturb_(Swinv2Model(tiny_config(attn_implementation="triton", attention_probs_dropout_prob=0.1)))
    x = image_batch(1, 64, 64)
    model.train()(x).last_hidden_state.sum().backward()  # attention dropout: the "auto" path
    assert not interpreted
    with torch.no_grad():
        expected = model.eval()(x).last_hidden_state
    assert interpreted  # eval mode: no dropout, the kernel
    interpreted.clear()
    monkeypatch.delenv("TRITON_INTERPRET")  # a CPU without the interpreter
    with torch.no_grad():
        torch.testing.assert_close(model(x).last_hidden_state, expected, atol=1e-5, rtol=0)
    assert not interpreted
