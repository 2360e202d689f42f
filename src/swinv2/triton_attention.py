"""Fused window attention in one Triton kernel (inference): cosine scores, bias, softmax, values.

One program per (query block, window, head) reads q, k and v straight from the qkv projection's
(B*nW, N, 3C) output, normalises q and k in fp32, computes `cos(q, k) * scale + bias` block by block
with an online softmax (flash attention's recurrence), and writes the result into the heads-concatenated
(B*nW, N, C) layout the output projection reads. Against the SDPA path this removes the fp32 copies of
q and k, their normalisation passes, the head-major copies of q, k, v and of the output, and the
(nW*nH)-batched mask reads of a generic kernel: everything between the two linears is one read of qkv,
the bias and one write of the output.

Arithmetic: fp32 inputs take IEEE fp32 dot products (no TF32), so the result agrees with the explicit
path to fp32 rounding; 16-bit inputs multiply normalised q and k rounded to their dtype, and the
probabilities rounded to v's, accumulating in fp32, as the SDPA path and flash attention do.

Triton is optional and imported only when the kernel runs (`swinv2._triton_kernels`). `available(x)`
says whether it can run on `x`: Triton installed and `x` on CUDA, or, in a process started with
`TRITON_INTERPRET=1`, on the CPU through Triton's interpreter (slow; how the tests check the values
without a GPU).
"""

from __future__ import annotations

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


def window_attention(qkv: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Scaled cosine window attention of the fused projection's output, before the output projection.

    Args:
        qkv: (B_, N, 3C) projection output, B_ = images * nW; q, k, v are its thirds, heads
            contiguous within each.
        bias: (nWb, nH, N, N) position bias (+ shift mask); window w uses bias[w % nWb].
        scale: (nH, 1, 1) or (nH,) temperatures exp(min(logit_scale, log 100)).
        num_heads: nH.

    Returns:
        (B_, N, C) in qkv's dtype: softmax(cos(q, k) * scale + bias) @ v, heads concatenated.
    """
    B_, N, three_c = qkv.shape
    C = three_c // 3
    head_dim = C // num_heads
    if bias.shape[1:] != (num_heads, N, N) or B_ % bias.shape[0]:
        raise ValueError(f"bias {tuple(bias.shape)} does not fit {B_} windows of {N} tokens and {num_heads} heads")
    qkv = qkv if qkv.stride(-1) == 1 else qkv.contiguous()
    bias = bias if bias.stride(-1) == 1 else bias.contiguous()
    scale = scale.reshape(num_heads).float().contiguous()
    out = qkv.new_empty((B_, N, C))
    block = _block(N, 64)
    grid = (triton_cdiv(N, block), B_ * num_heads)
    from swinv2 import _triton_kernels

    _triton_kernels.window_attention_forward[grid](
        qkv,
        bias,
        scale,
        out,
        N,
        C,
        num_heads,
        bias.shape[0],
        qkv.stride(0),
        qkv.stride(1),
        bias.stride(0),
        bias.stride(1),
        bias.stride(2),
        out.stride(0),
        out.stride(1),
        HEAD_DIM=head_dim,
        BLOCK_D=_block(head_dim, 256),
        BLOCK_M=block,
        BLOCK_N=block,
        IEEE_FP32=qkv.dtype == torch.float32,
    )
    return out


def triton_cdiv(a: int, b: int) -> int:
    """ceil(a / b) for positive ints."""
    return -(-a // b)
