"""The Triton kernel behind `swinv2.triton_attention` (imported only when it runs; needs Triton).

Triton decides at its own import whether kernels compile for the GPU or run in its CPU interpreter
(`TRITON_INTERPRET=1`, for tests without a GPU); a process is one or the other.
"""

# Triton's conventions: upper-case compile-time constants and shape names (N803); `if` on a constexpr
# picks code at compile time, clearer than a conditional expression (SIM108).
# ruff: noqa: N803, SIM108

from __future__ import annotations

import triton
import triton.language as tl

NORM_EPS: tl.constexpr = tl.constexpr(1e-12)  # F.normalize's floor on the norm, as the other paths


@triton.jit
def window_attention_forward(
    qkv_ptr,  # (B_, N, 3C), last dim contiguous
    bias_ptr,  # (nWb, nH, N, N), last dim contiguous
    scale_ptr,  # (nH,) fp32
    out_ptr,  # (B_, N, C), last dim contiguous
    N,
    C,
    num_heads,
    bias_windows,
    stride_qkv_w,
    stride_qkv_n,
    stride_bias_w,
    stride_bias_h,
    stride_bias_m,
    stride_out_w,
    stride_out_n,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    IEEE_FP32: tl.constexpr,
):
    """One (query block, window, head): normalise, score, online softmax, weight the values, store."""
    window_head = tl.program_id(1)
    window = window_head // num_heads
    head = window_head % num_heads
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query tokens
    dims = tl.arange(0, BLOCK_D)  # (BLOCK_D,) channels of the head
    row_ok = rows < N
    dim_ok = dims < HEAD_DIM
    head_base = qkv_ptr + window * stride_qkv_w + head * HEAD_DIM
    q = tl.load(
        head_base + rows[:, None] * stride_qkv_n + dims[None, :], mask=row_ok[:, None] & dim_ok[None, :], other=0.0
    ).to(tl.float32)  # (BLOCK_M, BLOCK_D)
    q = (q / tl.maximum(tl.sqrt(tl.sum(q * q, axis=1)), NORM_EPS)[:, None]).to(qkv_ptr.dtype.element_ty)
    scale = tl.load(scale_ptr + head)
    bias_base = bias_ptr + (window % bias_windows) * stride_bias_w + head * stride_bias_h
    row_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    row_sum = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)  # (BLOCK_N,) key tokens
        col_ok = cols < N
        kv_mask = col_ok[:, None] & dim_ok[None, :]
        k = tl.load(head_base + C + cols[:, None] * stride_qkv_n + dims[None, :], mask=kv_mask, other=0.0)
        k = k.to(tl.float32)  # (BLOCK_N, BLOCK_D)
        k = (k / tl.maximum(tl.sqrt(tl.sum(k * k, axis=1)), NORM_EPS)[:, None]).to(qkv_ptr.dtype.element_ty)
        v = tl.load(head_base + 2 * C + cols[:, None] * stride_qkv_n + dims[None, :], mask=kv_mask, other=0.0)
        if IEEE_FP32:
            cosine = tl.dot(q, tl.trans(k), input_precision="ieee")  # (BLOCK_M, BLOCK_N)
        else:
            cosine = tl.dot(q, tl.trans(k))
        bias = tl.load(
            bias_base + rows[:, None] * stride_bias_m + cols[None, :],
            mask=row_ok[:, None] & col_ok[None, :],
            other=0.0,
        ).to(tl.float32)
        scores = tl.where(col_ok[None, :], cosine * scale + bias, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(scores, axis=1))
        rescale = tl.exp(row_max - new_max)
        probs = tl.exp(scores - new_max[:, None])  # (BLOCK_M, BLOCK_N), unnormalised
        row_sum = row_sum * rescale + tl.sum(probs, axis=1)
        if IEEE_FP32:
            acc = acc * rescale[:, None] + tl.dot(probs, v.to(tl.float32), input_precision="ieee")
        else:
            acc = acc * rescale[:, None] + tl.dot(probs.to(v.dtype), v)
        row_max = new_max
    out = acc / row_sum[:, None]
    tl.store(
        out_ptr + window * stride_out_w + rows[:, None] * stride_out_n + head * HEAD_DIM + dims[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=row_ok[:, None] & dim_ok[None, :],
    )
