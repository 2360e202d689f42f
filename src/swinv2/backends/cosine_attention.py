"""Window cosine attention in plain torch ops, with a hand-written backward: the fp32 path of "auto".

Computes, per window and head, `softmax(cos(q, k) * scale + bias) @ v` straight from the qkv
projection's (B*nW, N, 3C) output, with fewer passes over memory than the op-for-op reference
(`swinv2.models.swinv2.eager_attention`, transformers' order):

- **Forward.** q and k are divided by their norms (floored at 1e-12 as `F.normalize` floors them), each
  written once, head-major, straight from the projection's strided layout (the reference copies q,
  k, v head-major, then normalises each into a new tensor). The scores are scaled, biased
  (+ shift mask) and softmaxed in place (on the CPU), in the reference's order, so the values are
  its bit for bit.
- **Backward.** One autograd node instead of ~25: the softmax gradient by its fused kernel,
  the bias gradient summed over images, and the normalisation's gradient in closed form,
  d/dq (q / |q|) . g = (g - q̂ <g, q̂>) / |q|, written into the gradient's qkv layout. Autograd's
  generic graph instead scales, divides and negates the (N, N) and (N, Dh) tensors several times
  over, and keeps more of them alive.

Training keeps two (N, N) tensors per window and head fewer than autograd through the reference ops
(speed: docs/performance.md and benchmarks/results/).
The gradients are as close to float64 as autograd's through the reference ops (not bit-equal: the
normalisation's gradient is summed in another order).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

NORM_EPS = 1e-12  # F.normalize's floor on the norm


def _unit_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, ...]:
    """q̂, k̂ and v, each (w, nH, N, Dh) head-major, and the floored norms |q|, |k| (w, nH, N, 1), from the
    projection's (w, N, 3C) output: q and k are divided by their norms straight from its strided
    layout, one pass each."""
    w, N, C3 = qkv.shape
    nH = num_heads
    Dh = C3 // 3 // nH
    q, k, v = qkv.view(w, N, 3, nH, Dh).permute(2, 0, 3, 1, 4).unbind(0)  # (w, nH, N, Dh) strided views
    norm_q = torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min_(NORM_EPS)  # (w, nH, N, 1)
    norm_k = torch.linalg.vector_norm(k, dim=-1, keepdim=True).clamp_min_(NORM_EPS)  # (w, nH, N, 1)
    q_unit = torch.div(q, norm_q, out=qkv.new_empty((w, nH, N, Dh)))  # (w, nH, N, Dh)
    k_unit = torch.div(k, norm_k, out=qkv.new_empty((w, nH, N, Dh)))  # (w, nH, N, Dh)
    v = qkv.new_empty((w, nH, N, Dh)).copy_(v)  # (w, nH, N, Dh)
    return q_unit, k_unit, v, norm_q, norm_k


def _probabilities(q_unit: torch.Tensor, k_unit: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """softmax(q̂ k̂ᵀ * scale + bias): (w, nH, N, N), scaled, biased and softmaxed in one buffer."""
    _, nH, N, _ = q_unit.shape
    scores = torch.matmul(q_unit, k_unit.transpose(-2, -1))  # (w, nH, N, N)
    scores.mul_(scale).view(-1, bias.shape[0], nH, N, N).add_(bias)  # windows of whole images: bias per image
    return _softmax(scores)


def _heads_concatenated(out: torch.Tensor) -> torch.Tensor:
    """(w, nH, N, Dh) -> (w, N, nH*Dh), the output projection's input."""
    w, nH, N, Dh = out.shape
    return out.transpose(1, 2).reshape(w, N, nH * Dh)


def _softmax_writes_in_place(t: torch.Tensor) -> bool:
    """Whether the softmax and its gradient overwrite their (N, N) input: on the CPU, whose kernels
    read a row before writing it (the tests hold both to the out-of-place kernels bit for bit).
    Elsewhere, where that is not checked, they allocate."""
    return t.is_cpu


def _softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim of (w, nH, N, N) scores, in place where `_softmax_writes_in_place`."""
    if _softmax_writes_in_place(scores):
        return torch.ops.aten._softmax.out(scores, -1, False, out=scores)
    return scores.softmax(dim=-1)


def _softmax_gradient(grad_probs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """The scores' gradient from the probabilities' (both (w, nH, N, N)), over `grad_probs` where
    `_softmax_writes_in_place`."""
    if _softmax_writes_in_place(grad_probs):
        return torch.ops.aten._softmax_backward_data.out(grad_probs, probs, -1, probs.dtype, grad_input=grad_probs)
    return torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)


def _through_normalisation(
    grad_unit: torch.Tensor, unit: torch.Tensor, norm: torch.Tensor, scale: torch.Tensor, out: torch.Tensor | None
) -> torch.Tensor:
    """Write into `out` (unless None) the gradient reaching x through x̂ = x / max(|x|, eps) for
    dL/dx̂ = scale * `grad_unit` = scale * g: scale * (g - x̂ <g, x̂>) / |x|, or scale * g / eps where
    the norm is floored (there the denominator is a constant, as in `F.normalize`).

    Args:
        grad_unit, unit: (w, nH, N, Dh). norm: (w, nH, N, 1), floored. scale: (nH, 1, 1).
        out: (w, nH, N, Dh), possibly a strided view.

    Returns:
        <g, x̂>: (w, nH, N, 1).
    """
    along = torch.linalg.vecdot(grad_unit, unit).unsqueeze(-1)  # (w, nH, N, 1)
    if out is not None:
        radial = along.masked_fill(norm <= NORM_EPS, 0.0)  # (w, nH, N, 1): no gradient through a floored norm
        torch.mul(torch.addcmul(grad_unit, unit, radial, value=-1.0), scale / norm, out=out)
    return along


class _CosineWindowAttention(torch.autograd.Function):
    """`window_attention` as one autograd node: the forward's steps, their tensors kept; backward written out."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        qkv: torch.Tensor,
        bias: torch.Tensor,
        scale: torch.Tensor,
        num_heads: int,
    ) -> torch.Tensor:
        q_unit, k_unit, v, norm_q, norm_k = _unit_heads(qkv, num_heads)
        probs = _probabilities(q_unit, k_unit, bias, scale)
        out = _heads_concatenated(torch.matmul(probs, v))  # (w, N, C)
        ctx.save_for_backward(q_unit, k_unit, v, probs, norm_q, norm_k, scale)
        ctx.bias_windows = bias.shape[0]  # type: ignore[attr-defined]
        return out

    @staticmethod
    @once_differentiable  # its out= and in-place writes record no graph: no double backward
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q_unit, k_unit, v, probs, norm_q, norm_k, scale = ctx.saved_tensors  # type: ignore[attr-defined]
        w, nH, N, Dh = q_unit.shape
        nW = ctx.bias_windows  # type: ignore[attr-defined]
        qkv_needs_grad, bias_needs_grad, scale_needs_grad, _ = ctx.needs_input_grad  # type: ignore[attr-defined]
        grad_out = grad_out.view(w, N, nH, Dh).transpose(1, 2).contiguous()  # (w, nH, N, Dh)
        grad_qkv = grad_q = grad_k = None
        if qkv_needs_grad:
            grad_qkv = grad_out.new_empty((w, N, 3, nH, Dh))
            grad_q, grad_k, grad_v = grad_qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (w, nH, N, Dh) views into it
            grad_v.copy_(torch.matmul(probs.transpose(-2, -1), grad_out))
        grad_probs = torch.matmul(grad_out, v.transpose(-2, -1))  # (w, nH, N, N)
        grad_scores = _softmax_gradient(grad_probs, probs)  # (w, nH, N, N)
        grad_bias = grad_scores.view(-1, nW, nH, N, N).sum(0) if bias_needs_grad else None  # (nW, nH, N, N)
        # scores = scale * q̂ k̂ᵀ + bias: dL/dq̂ = scale * (dscores @ k̂), dL/dk̂ = scale * (dscoresᵀ @ q̂),
        # dL/dscale = Σ dscores ⊙ q̂ k̂ᵀ = Σ <dscores @ k̂, q̂> per head
        grad_scale = None
        if qkv_needs_grad or scale_needs_grad:
            grad_q_unit = torch.matmul(grad_scores, k_unit)  # (w, nH, N, Dh)
            q_along = _through_normalisation(grad_q_unit, q_unit, norm_q, scale, grad_q)  # (w, nH, N, 1)
            grad_scale = q_along.sum((0, 2, 3)).view(nH, 1, 1) if scale_needs_grad else None  # (nH, 1, 1)
        if qkv_needs_grad:
            assert grad_qkv is not None  # allocated above when qkv_needs_grad
            grad_k_unit = torch.matmul(grad_scores.transpose(-2, -1), q_unit)  # (w, nH, N, Dh)
            _through_normalisation(grad_k_unit, k_unit, norm_k, scale, grad_k)
            grad_qkv = grad_qkv.view(w, N, 3 * nH * Dh)  # (w, N, 3C)
        return grad_qkv, grad_bias, grad_scale, None


def window_attention(qkv: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Scaled cosine attention within windows, differentiable in all three tensors.

    Args:
        qkv: (w, N, 3C) projection output, [q | k | v] with heads concatenated in each; `w` windows
            of whole images, a multiple of the bias's nW.
        bias: (nW, nH, N, N) or (1, nH, N, N) additive position bias (+ shift mask), in qkv's dtype.
        scale: (nH, 1, 1) temperature exp(min(logit_scale, log 100)); applied in qkv's dtype.
        num_heads: nH; C must be divisible by it.

    Returns:
        (w, N, C): each head's attended values, heads concatenated (the output projection's input).
    """
    scale = scale.to(qkv.dtype)  # as the reference scales its scores
    if torch.is_grad_enabled() and any(t.requires_grad for t in (qkv, bias, scale)):
        return _CosineWindowAttention.apply(qkv, bias, scale, num_heads)
    # Inference: each buffer is let go as soon as it is used, so later ones reuse its memory (a lower
    # inference peak). On CPython 3.11+ `del qkv` frees the projection's output when the caller passed
    # it straight in.
    q_unit, k_unit, v, _, _ = _unit_heads(qkv, num_heads)
    del qkv
    probs = _probabilities(q_unit, k_unit, bias, scale)
    del q_unit, k_unit
    out = torch.matmul(probs, v)  # (w, nH, N, Dh)
    del probs, v
    return _heads_concatenated(out)
