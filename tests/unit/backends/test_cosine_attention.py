"""`swinv2.backends.cosine_attention`: the fp32 "auto" attention with its hand-written backward.

Forward: bit for bit the op-for-op reference (`swinv2.models.swinv2.eager_attention`'s arithmetic).
Backward: `gradcheck` in float64 (finite differences), and fp32 gradients as close to a float64
reference as autograd's own through the reference ops.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from swinv2.backends import cosine_attention
from swinv2.backends.cosine_attention import window_attention
from swinv2.layers.windows import MASKED

# (windows, tokens per window, heads, head dim, bias windows): several images' windows with a shift
# mask (bias windows 4 of 8), one image, a plain bias shared by all windows, a window size that is not
# a power of two (7x7 = 49), and the tiny model's stage-1 and stage-4 heads.
SHAPES = [(8, 16, 2, 8, 4), (4, 16, 2, 8, 4), (6, 16, 3, 4, 1), (2, 49, 2, 8, 2), (8, 64, 3, 32, 4), (2, 64, 24, 32, 1)]
IDS = [f"w{s[0]}-N{s[1]}-h{s[2]}-d{s[3]}-b{s[4]}" for s in SHAPES]


def reference(qkv: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor, num_heads: int) -> torch.Tensor:
    """transformers' op order: normalise, score, scale, add the bias, softmax, weight the values."""
    w, N, three_c = qkv.shape
    C = three_c // 3
    q, k, v = qkv.view(w, N, 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4).contiguous().unbind(0)
    scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * scale  # (w, nH, N, N)
    scores = scores.view(-1, bias.shape[0], num_heads, N, N) + bias
    probs = scores.view(w, num_heads, N, N).softmax(dim=-1)
    return (probs @ v).transpose(1, 2).reshape(w, N, C)


def inputs(
    windows: int, tokens: int, num_heads: int, head_dim: int, bias_windows: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(windows * tokens + num_heads)
    qkv = torch.randn(windows, tokens, 3 * num_heads * head_dim, generator=generator, dtype=dtype)
    bias = 16 * torch.rand(bias_windows, num_heads, tokens, tokens, generator=generator, dtype=dtype)
    if bias_windows > 1:  # a shift mask: every query keeps its own token
        masked = torch.rand(bias_windows, 1, tokens, tokens, generator=generator) > 0.7
        bias = bias.masked_fill(masked & ~torch.eye(tokens, dtype=torch.bool), MASKED)
    scale = 1 + 99 * torch.rand(num_heads, 1, 1, generator=generator, dtype=dtype)  # exp(logit_scale) in [1, 100]
    return qkv, bias, scale


def _gradients(fn, qkv, bias, scale, num_heads, grad_out) -> tuple[torch.Tensor, ...]:
    leaves = [t.detach().requires_grad_() for t in (qkv, bias, scale)]
    return torch.autograd.grad(fn(*leaves, num_heads), leaves, grad_out)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_is_the_reference_bit_for_bit(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    qkv, bias, scale = inputs(*shape, dtype=dtype)
    out = window_attention(qkv, bias, scale, shape[2])
    assert out.shape == (shape[0], shape[1], shape[2] * shape[3]) and out.dtype == dtype
    assert torch.equal(out, reference(qkv, bias, scale, shape[2]))


def test_forward_reads_a_strided_projection() -> None:
    """qkv as a slice of a wider tensor (the projection's output viewed in place) gives the same result."""
    qkv, bias, scale = inputs(4, 16, 2, 8, 4)
    wide = torch.cat([qkv, torch.randn(4, 16, 5)], dim=-1)[..., : qkv.shape[-1]]
    assert not wide.is_contiguous()
    assert torch.equal(window_attention(wide, bias, scale, 2), window_attention(qkv, bias, scale, 2))


@pytest.mark.parametrize("shape", [(4, 9, 2, 3, 2), (3, 4, 1, 5, 1)], ids=["masked", "plain"])
@pytest.mark.parametrize("wanted", ["qkv bias scale", "qkv", "bias scale", "bias", "scale"])
def test_backward_passes_gradcheck_in_float64(shape: tuple[int, ...], wanted: str) -> None:
    qkv, bias, scale = inputs(*shape, dtype=torch.float64)
    bias = bias.clamp_min(-30.0)  # finite differences need probabilities that move
    scale = scale / 20  # keep the softmax away from saturation, where differences lose their digits
    named = {"qkv": qkv, "bias": bias, "scale": scale}
    leaves = tuple(t.requires_grad_(name in wanted.split()) for name, t in named.items())
    assert torch.autograd.gradcheck(lambda *t: window_attention(*t, shape[2]), leaves)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_fp32_gradients_as_close_to_float64_as_autograds(shape: tuple[int, ...]) -> None:
    qkv, bias, scale = inputs(*shape)
    grad_out = torch.randn(shape[0], shape[1], shape[2] * shape[3], generator=torch.Generator().manual_seed(1))
    exact = _gradients(reference, qkv.double(), bias.double(), scale.double(), shape[2], grad_out.double())
    ours = _gradients(window_attention, qkv, bias, scale, shape[2], grad_out)
    autograd = _gradients(reference, qkv, bias, scale, shape[2], grad_out)
    for name, e, o, a in zip(("qkv", "bias", "scale"), exact, ours, autograd, strict=True):
        largest = e.abs().max().item()
        ours_error = (o.double() - e).abs().max().item() / largest
        autograd_error = (a.double() - e).abs().max().item() / largest
        # measured, relative to the largest gradient: ours 1.3e-7 .. 3.7e-6, autograd's 1.1e-7 .. 3.7e-6,
        # ours at most 1.5x autograd's
        assert ours_error <= max(2 * autograd_error, 1e-6), (name, ours_error, autograd_error)


def test_no_grad_builds_no_graph() -> None:
    qkv, bias, scale = inputs(4, 16, 2, 8, 4)
    qkv.requires_grad_()
    assert window_attention(qkv, bias, scale, 2).grad_fn is not None
    with torch.no_grad():
        assert window_attention(qkv, bias, scale, 2).grad_fn is None


@pytest.mark.parametrize(("part", "value"), [(0, 0.0), (1, 0.0), (0, 1e-14)], ids=["zero-q", "zero-k", "tiny-q"])
def test_a_floored_norm_has_the_reference_gradient(part: int, value: float) -> None:
    """|x| below F.normalize's floor (1e-12) divides by the floor, a constant: the gradient there is
    g * scale / 1e-12, huge, and the reference's; elsewhere it is unaffected."""
    qkv, bias, scale = inputs(4, 16, 2, 8, 4, dtype=torch.float64)
    floored = (1, 3, slice(16 * part, 16 * part + 16))  # both heads' q (or k) of one token
    qkv[floored] = value
    grad_out = torch.randn(4, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ours = _gradients(window_attention, qkv, bias, scale, 2, grad_out)
    expected = _gradients(reference, qkv, bias, scale, 2, grad_out)
    rest = torch.ones_like(qkv, dtype=torch.bool)
    rest[floored] = False
    assert expected[0][floored].abs().max() > 1e9  # the floored row really is divided by 1e-12
    torch.testing.assert_close(ours[0][floored], expected[0][floored], rtol=1e-9, atol=0)
    torch.testing.assert_close(ours[0][rest], expected[0][rest], rtol=0, atol=1e-12 * expected[0][rest].abs().max())
    for o, e in zip(ours[1:], expected[1:], strict=True):
        torch.testing.assert_close(o, e, rtol=0, atol=1e-12 * e.abs().max())


def test_double_backward_is_refused_clearly() -> None:
    """The backward writes in place and records no graph: a second derivative says so (the "eager"
    implementation's plain ops support it)."""
    qkv, bias, scale = inputs(4, 16, 2, 8, 4)
    qkv.requires_grad_()
    (grad,) = torch.autograd.grad(window_attention(qkv, bias, scale, 2).square().sum(), qkv, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad.sum().backward()


def test_the_allocating_softmax_used_off_the_cpu_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off the CPU the softmax and its gradient allocate instead of writing in place; same values."""
    qkv, bias, scale = inputs(8, 16, 2, 8, 4)
    grad_out = torch.randn(8, 16, 16, generator=torch.Generator().manual_seed(1))
    in_place = window_attention(qkv, bias, scale, 2), _gradients(window_attention, qkv, bias, scale, 2, grad_out)
    writes: list[bool] = []

    def allocating(t: torch.Tensor) -> bool:
        writes.append(False)
        return False

    monkeypatch.setattr(cosine_attention, "_softmax_writes_in_place", allocating)
    allocated = window_attention(qkv, bias, scale, 2), _gradients(window_attention, qkv, bias, scale, 2, grad_out)
    assert len(writes) == 3  # the inference forward, the training forward and the backward
    assert torch.equal(allocated[0], in_place[0])
    for a, b in zip(allocated[1], in_place[1], strict=True):
        assert torch.equal(a, b)
