"""Fused window attention in Triton: cosine scores, bias, softmax and values, forward and backward.

One program per (window, head, query block) reads q, k and v straight from the qkv projection's
(B*nW, N, 3C) output, normalises q and k in fp32, computes `cos(q, k) * scale + bias` block by block
with an online softmax (flash attention's recurrence), and writes the result into the heads-concatenated
(B*nW, N, C) layout the output projection reads. Against the SDPA path this removes the fp32 copies of
q and k, their normalisation passes, the head-major copies of q, k, v and of the output, and the
(nW*nH)-batched mask reads of a generic kernel: everything between the two linears is one read of qkv,
the bias and one write of the output. The backward (two kernels, see `swinv2.backends._triton_kernels`)
recomputes the probabilities from the saved log-sum-exp and writes the gradient in the projection's
layout, with the position bias's and the temperature's gradients summed atomically.

Arithmetic: fp32 inputs take IEEE fp32 dot products (no TF32), so the result agrees with the explicit
path to fp32 rounding; 16-bit inputs multiply normalised q and k rounded to their dtype, and the
probabilities rounded to v's, accumulating in fp32, as the SDPA path and flash attention do.

Triton is optional and imported only when the kernel runs (`swinv2.backends._triton_kernels`). `available(x)`
says whether it can run on `x`: Triton installed and `x` on CUDA, or, in a process started with
`TRITON_INTERPRET=1`, on the CPU through Triton's interpreter (slow; how the tests check the values
without a GPU).
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch


@functools.cache
def _triton_installed() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available(x: torch.Tensor) -> bool:
    """Whether the kernel can run on `x`: Triton installed and `x` on CUDA, or on the CPU in the interpreter."""
    if not _triton_installed():
        return False
    return x.device.type == "cpu" if _interpreting() else x.is_cuda


def _block(size: int, cap: int) -> int:
    """A power of two >= `size` (and >= 16, the smallest `tl.dot` side), at most `cap`."""
    return min(cap, max(16, 1 << (size - 1).bit_length()))


MAX_HEAD_DIM = 256  # a head's channels are one block of the kernels
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def supports(dtype: torch.dtype, head_dim: int) -> bool:
    """Whether the kernels compute attention in `dtype` for heads of `head_dim` channels."""
    return dtype in DTYPES and head_dim <= MAX_HEAD_DIM


def window_attention(qkv: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Scaled cosine window attention of the fused projection's output, before the output projection.

    Differentiable in qkv, bias and scale (a fused backward; nothing of size (N, N) per window is kept;
    the bias and scale gradients are atomic sums, not bit-reproducible from run to run).

    Args:
        qkv: (B_, N, 3C) projection output, B_ = images * nW; q, k, v are its thirds, heads
            contiguous within each; fp32, bf16 or fp16.
        bias: (nWb, nH, N, N) position bias (+ shift mask); window w uses bias[w % nWb].
        scale: (nH, 1, 1) or (nH,) temperatures exp(min(logit_scale, log 100)).
        num_heads: nH.

    Returns:
        (B_, N, C) in qkv's dtype: softmax(cos(q, k) * scale + bias) @ v, heads concatenated.
    """
    B_, N, three_c = qkv.shape
    if three_c % (3 * num_heads):
        raise ValueError(f"qkv's last dimension ({three_c}) must be 3 * C with C divisible by {num_heads} heads")
    if bias.shape[1:] != (num_heads, N, N) or B_ % bias.shape[0]:
        raise ValueError(f"bias {tuple(bias.shape)} does not fit {B_} windows of {N} tokens and {num_heads} heads")
    if not supports(qkv.dtype, three_c // 3 // num_heads):
        raise ValueError(
            f"the kernels take {[str(d).removeprefix('torch.') for d in DTYPES]} and heads of at most "
            f"{MAX_HEAD_DIM} channels; got {str(qkv.dtype).removeprefix('torch.')} and {three_c // 3 // num_heads}"
        )
    return _WindowAttention.apply(qkv.contiguous(), bias.contiguous(), scale.reshape(num_heads).float(), num_heads)


class _WindowAttention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        qkv: torch.Tensor,
        bias: torch.Tensor,
        scale: torch.Tensor,
        num_heads: int,
    ) -> torch.Tensor:
        from swinv2.backends import _triton_kernels

        B_, N, three_c = qkv.shape
        launch = _Launch(N, three_c // 3 // num_heads, qkv.dtype)
        scale = scale.contiguous()
        out = qkv.new_empty((B_, N, three_c // 3))  # (B_, N, C)
        keep = any(ctx.needs_input_grad[:3])  # type: ignore[attr-defined]
        lse = torch.empty((B_, num_heads, N), device=qkv.device, dtype=torch.float32) if keep else out
        with _on(qkv.device):
            _triton_kernels.window_attention_forward[launch.grid(B_ * num_heads)](
                qkv, bias, scale, out, lse, N, num_heads, bias.shape[0], STORE_LSE=keep, **launch.options
            )
        if keep:
            ctx.save_for_backward(qkv, bias, scale, out, lse)
            ctx.num_heads = num_heads  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, dout: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        from swinv2.backends import _triton_kernels

        qkv, bias, scale, out, lse = ctx.saved_tensors  # type: ignore[attr-defined]
        num_heads = ctx.num_heads  # type: ignore[attr-defined]
        B_, N, three_c = qkv.shape
        launch = _Launch(N, three_c // 3 // num_heads, qkv.dtype)
        dout = dout.contiguous()
        delta = torch.empty_like(lse)  # (B_, nH, N): rowsum(dout * out), written by the q kernel
        dqkv = torch.empty_like(qkv)  # every element written: q by the first kernel, k and v by the second
        term_grads = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]  # type: ignore[attr-defined]
        dbias = torch.zeros(bias.shape if term_grads else (1,), device=bias.device, dtype=torch.float32)
        dscale = torch.zeros_like(scale)
        grid = launch.grid(B_ * num_heads)
        common = (qkv, bias, scale, dout, lse, delta, dqkv)
        with _on(qkv.device):  # the q kernel first: it writes the delta the kv kernel reads
            _triton_kernels.window_attention_backward_q[grid](
                *common, out, N, num_heads, bias.shape[0], **launch.options
            )
            _triton_kernels.window_attention_backward_kv[grid](
                *common, dbias, dscale, N, num_heads, bias.shape[0], TERM_GRADS=term_grads, **launch.options
            )
        return (
            dqkv,
            dbias.to(bias.dtype) if ctx.needs_input_grad[1] else None,  # type: ignore[attr-defined]
            dscale if ctx.needs_input_grad[2] else None,  # type: ignore[attr-defined]
            None,
        )


def _on(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Launch on `device`'s GPU (Triton launches on the current one)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


class _Launch:
    """Block sizes, warps and grid of the kernels for windows of `tokens` tokens and heads of `head_dim`
    channels."""

    def __init__(self, tokens: int, head_dim: int, dtype: torch.dtype) -> None:
        block = _block(tokens, 64)
        self.blocks = -(-tokens // block)
        self.options = dict(
            HEAD_DIM=head_dim,
            BLOCK_D=_block(head_dim, MAX_HEAD_DIM),
            BLOCK_M=block,
            BLOCK_N=block,
            IEEE_FP32=dtype == torch.float32,
            num_warps=8 if block >= 64 else 4,  # 4 warps spill registers at 64x64 tiles (ptxas, sm_90)
        )

    def grid(self, window_heads: int) -> tuple[int, int]:
        """(windows * heads, token blocks): the long axis first, where CUDA allows 2^31 - 1 programs."""
        return (window_heads, self.blocks)
