"""The Triton kernels behind `swinv2.triton_attention` (imported only when they run; needs Triton).

Per window w and head h, with q, k, v (N, Dh) read from the projection's output:
    qn, kn = q / max(|q|, eps), k / max(|k|, eps)          (rows)
    s = (qn @ kn^T) * scale[h] + bias[w % nWb, h]           p = softmax(s)        o = p @ v
Backward, from dO (flash attention 2's recomputation, with the cosine's and the bias's terms; the q
kernel runs first and leaves delta for the kv kernel):
    delta = rowsum(dO * o)    dv = p^T @ dO    ds = p * (dO @ v^T - delta)
    dbias[w % nWb, h] += ds   dscale[h] += sum(ds * cos)   dqn = scale * (ds @ kn)   dkn = scale * (ds^T @ qn)
    dq = (dqn - qn * rowsum(dqn * qn)) / max(|q|, eps)      (likewise dk; dq = dqn / eps where |q| <= eps)

dbias and dscale are sums by atomic adds, in no fixed order: not bit-reproducible from run to run.
All tensors are contiguous: qkv and dqkv (B_, N, 3C), bias (nWb, nH, N, N), out and dout (B_, N, C),
lse and delta (B_, nH, N) fp32. Triton decides at its own import whether kernels compile for the GPU
or run in its CPU interpreter (`TRITON_INTERPRET=1`, for tests without a GPU); a process is one or
the other.
"""

# Triton's conventions: upper-case compile-time constants and shape names.
# ruff: noqa: N803

from __future__ import annotations

import triton
import triton.language as tl

NORM_EPS: tl.constexpr = tl.constexpr(1e-12)  # F.normalize's floor on the norm, as the other paths
# Sizes Triton would otherwise specialise on (values 1 and multiples of 16), multiplying cold compiles.
RUNTIME_SIZES = ["num_heads", "bias_windows"]


@triton.jit
def _unit_rows(x):
    """x / max(|x|, eps) per row, fp32."""
    return x / tl.maximum(tl.sqrt(tl.sum(x * x, axis=1)), NORM_EPS)[:, None]


@triton.jit
def _unit_rows_backward(grad, x):
    """The gradient at x of `_unit_rows`, given the gradient at its output (fp32)."""
    norm = tl.sqrt(tl.sum(x * x, axis=1))
    clamped = tl.maximum(norm, NORM_EPS)
    unit = x / clamped[:, None]
    through_norm = (grad - unit * tl.sum(grad * unit, axis=1)[:, None]) / clamped[:, None]
    return tl.where((norm >= NORM_EPS)[:, None], through_norm, grad / NORM_EPS)


@triton.jit
def _dot(a, b, IEEE_FP32: tl.constexpr):
    """a @ b accumulated in fp32; IEEE fp32 products for fp32 operands (no TF32)."""
    if IEEE_FP32:
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def _load_tile(ptr, rows, cols, row_stride, mask):
    """ptr[rows[:, None] * row_stride + cols[None, :]], zeros where `mask` is false."""
    return tl.load(ptr + rows[:, None] * row_stride + cols[None, :], mask=mask, other=0.0)


@triton.jit
def _score_gradients(qn, kn, v, dout, lse, delta, bias, scale, pair_ok, IEEE_FP32: tl.constexpr):
    """Recompute one (query block, key block) tile of a window: its cosines, probabilities (from the
    saved log-sum-exp) and the gradient at its scores."""
    cosine = _dot(qn, tl.trans(kn), IEEE_FP32)  # (BLOCK_M, BLOCK_N)
    probs = tl.where(pair_ok, tl.exp(cosine * scale + bias.to(tl.float32) - lse[:, None]), 0.0)
    dprobs = _dot(dout, tl.trans(v), IEEE_FP32)
    return cosine, probs, probs * (dprobs - delta[:, None])


@triton.jit
def _this_program(N, num_heads, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK: tl.constexpr):
    """This program's (window, head) and block of tokens. The grid is (windows * heads, token blocks):
    the long axis first, where CUDA allows 2^31 - 1 programs (the others stop at 65535).

    Returns window_head, window (int64: offsets of big batches pass 2^31 elements), head, the block's
    tokens (BLOCK,) and the head's channels (BLOCK_D,), each with its in-range mask.
    """
    window_head = tl.program_id(0)
    window = (window_head // num_heads).to(tl.int64)
    head = window_head % num_heads
    tokens = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    dims = tl.arange(0, BLOCK_D)
    return window_head, window, head, tokens, tokens < N, dims, dims < HEAD_DIM


@triton.jit(do_not_specialize=RUNTIME_SIZES)
def window_attention_forward(
    qkv_ptr,
    bias_ptr,
    scale_ptr,
    out_ptr,
    lse_ptr,
    N,
    num_heads,
    bias_windows,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    IEEE_FP32: tl.constexpr,
    STORE_LSE: tl.constexpr,
):
    """One (query block, window, head): normalise, score, online softmax, weight the values, store."""
    program = _this_program(N, num_heads, HEAD_DIM, BLOCK_D, BLOCK_M)
    window_head, window, head, rows, row_ok, dims, dim_ok = program  # rows: (BLOCK_M,) query tokens
    C = num_heads * HEAD_DIM
    head_base = qkv_ptr + window * N * 3 * C + head * HEAD_DIM
    q_mask = row_ok[:, None] & dim_ok[None, :]
    q = _load_tile(head_base, rows, dims, 3 * C, q_mask)
    qn = _unit_rows(q.to(tl.float32)).to(q.dtype)  # (BLOCK_M, BLOCK_D)
    scale = tl.load(scale_ptr + head)
    bias_base = bias_ptr + ((window % bias_windows) * num_heads + head) * N * N
    row_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    row_sum = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)  # (BLOCK_N,) key tokens
        col_ok = cols < N
        kv_mask = col_ok[:, None] & dim_ok[None, :]
        k = _load_tile(head_base + C, cols, dims, 3 * C, kv_mask)
        kn = _unit_rows(k.to(tl.float32)).to(k.dtype)  # (BLOCK_N, BLOCK_D)
        v = _load_tile(head_base + 2 * C, cols, dims, 3 * C, kv_mask)
        cosine = _dot(qn, tl.trans(kn), IEEE_FP32)  # (BLOCK_M, BLOCK_N)
        bias = _load_tile(bias_base, rows, cols, N, row_ok[:, None] & col_ok[None, :])
        scores = tl.where(col_ok[None, :], cosine * scale + bias.to(tl.float32), float("-inf"))
        new_max = tl.maximum(row_max, tl.max(scores, axis=1))
        rescale = tl.exp(row_max - new_max)
        probs = tl.exp(scores - new_max[:, None])  # (BLOCK_M, BLOCK_N), unnormalised
        row_sum = row_sum * rescale + tl.sum(probs, axis=1)
        acc = acc * rescale[:, None] + _dot(probs.to(v.dtype), v, IEEE_FP32)
        row_max = new_max
    out = acc / row_sum[:, None]
    tl.store(
        out_ptr + window * N * C + rows[:, None] * C + head * HEAD_DIM + dims[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=q_mask,
    )
    if STORE_LSE:
        tl.store(lse_ptr + window_head * N + rows, row_max + tl.log(row_sum), mask=row_ok)


@triton.jit(do_not_specialize=RUNTIME_SIZES)
def window_attention_backward_kv(
    qkv_ptr,
    bias_ptr,
    scale_ptr,
    dout_ptr,
    lse_ptr,
    delta_ptr,
    dqkv_ptr,
    dbias_ptr,
    dscale_ptr,
    N,
    num_heads,
    bias_windows,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    IEEE_FP32: tl.constexpr,
    TERM_GRADS: tl.constexpr,
):
    """One (key block, window, head): dk and dv over all queries; dbias and dscale added atomically
    (when TERM_GRADS: the position bias or the temperature needs its gradient)."""
    program = _this_program(N, num_heads, HEAD_DIM, BLOCK_D, BLOCK_N)
    window_head, window, head, cols, col_ok, dims, dim_ok = program  # cols: (BLOCK_N,) key tokens
    C = num_heads * HEAD_DIM
    kv_mask = col_ok[:, None] & dim_ok[None, :]
    head_base = qkv_ptr + window * N * 3 * C + head * HEAD_DIM
    k = _load_tile(head_base + C, cols, dims, 3 * C, kv_mask)
    k32 = k.to(tl.float32)  # (BLOCK_N, BLOCK_D)
    kn = _unit_rows(k32).to(k.dtype)
    v = _load_tile(head_base + 2 * C, cols, dims, 3 * C, kv_mask)
    scale = tl.load(scale_ptr + head)
    bias_offset = ((window % bias_windows) * num_heads + head) * N * N
    dkn = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dscale = tl.zeros((BLOCK_N,), tl.float32)
    for start in range(0, N, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query tokens
        row_ok = rows < N
        pair_ok = row_ok[:, None] & col_ok[None, :]
        q_mask = row_ok[:, None] & dim_ok[None, :]
        q = _load_tile(head_base, rows, dims, 3 * C, q_mask)
        qn = _unit_rows(q.to(tl.float32)).to(q.dtype)  # (BLOCK_M, BLOCK_D)
        dout = _load_tile(dout_ptr + window * N * C + head * HEAD_DIM, rows, dims, C, q_mask)
        lse = tl.load(lse_ptr + window_head * N + rows, mask=row_ok, other=0.0)
        delta = tl.load(delta_ptr + window_head * N + rows, mask=row_ok, other=0.0)
        bias = _load_tile(bias_ptr + bias_offset, rows, cols, N, pair_ok)
        cosine, probs, dscores = _score_gradients(qn, kn, v, dout, lse, delta, bias, scale, pair_ok, IEEE_FP32)
        dv += _dot(tl.trans(probs.to(dout.dtype)), dout, IEEE_FP32)
        if TERM_GRADS:  # relaxed: a sum in any order, no memory fence per atomic
            tl.atomic_add(
                dbias_ptr + bias_offset + rows[:, None] * N + cols[None, :], dscores, mask=pair_ok, sem="relaxed"
            )
            dscale += tl.sum(dscores * cosine, axis=0)
        dkn += _dot(tl.trans(dscores.to(qn.dtype)), qn, IEEE_FP32)  # scale applied once, in fp32, below
    if TERM_GRADS:
        tl.atomic_add(dscale_ptr + head, tl.sum(dscale, axis=0), sem="relaxed")
    dk = _unit_rows_backward(dkn * scale, k32)
    dhead_base = dqkv_ptr + window * N * 3 * C + head * HEAD_DIM
    tl.store(dhead_base + C + cols[:, None] * 3 * C + dims[None, :], dk.to(dqkv_ptr.dtype.element_ty), mask=kv_mask)
    tl.store(dhead_base + 2 * C + cols[:, None] * 3 * C + dims[None, :], dv.to(dqkv_ptr.dtype.element_ty), mask=kv_mask)


@triton.jit(do_not_specialize=RUNTIME_SIZES)
def window_attention_backward_q(
    qkv_ptr,
    bias_ptr,
    scale_ptr,
    dout_ptr,
    lse_ptr,
    delta_ptr,
    dqkv_ptr,
    out_ptr,
    N,
    num_heads,
    bias_windows,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    IEEE_FP32: tl.constexpr,
):
    """One (query block, window, head): delta = rowsum(dO * o) for its rows (stored for the kv kernel,
    launched after this one), then dq over all keys."""
    program = _this_program(N, num_heads, HEAD_DIM, BLOCK_D, BLOCK_M)
    window_head, window, head, rows, row_ok, dims, dim_ok = program  # rows: (BLOCK_M,) query tokens
    C = num_heads * HEAD_DIM
    q_mask = row_ok[:, None] & dim_ok[None, :]
    head_base = qkv_ptr + window * N * 3 * C + head * HEAD_DIM
    q = _load_tile(head_base, rows, dims, 3 * C, q_mask)
    q32 = q.to(tl.float32)  # (BLOCK_M, BLOCK_D)
    qn = _unit_rows(q32).to(q.dtype)
    dout = _load_tile(dout_ptr + window * N * C + head * HEAD_DIM, rows, dims, C, q_mask)
    out = _load_tile(out_ptr + window * N * C + head * HEAD_DIM, rows, dims, C, q_mask)
    delta = tl.sum(dout.to(tl.float32) * out.to(tl.float32), axis=1)  # (BLOCK_M,)
    tl.store(delta_ptr + window_head * N + rows, delta, mask=row_ok)
    lse = tl.load(lse_ptr + window_head * N + rows, mask=row_ok, other=0.0)
    scale = tl.load(scale_ptr + head)
    bias_base = bias_ptr + ((window % bias_windows) * num_heads + head) * N * N
    dqn = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)  # (BLOCK_N,) key tokens
        col_ok = cols < N
        pair_ok = row_ok[:, None] & col_ok[None, :]
        kv_mask = col_ok[:, None] & dim_ok[None, :]
        k = _load_tile(head_base + C, cols, dims, 3 * C, kv_mask)
        kn = _unit_rows(k.to(tl.float32)).to(k.dtype)  # (BLOCK_N, BLOCK_D)
        v = _load_tile(head_base + 2 * C, cols, dims, 3 * C, kv_mask)
        bias = _load_tile(bias_base, rows, cols, N, pair_ok)
        _, _, dscores = _score_gradients(qn, kn, v, dout, lse, delta, bias, scale, pair_ok, IEEE_FP32)
        dqn += _dot(dscores.to(kn.dtype), kn, IEEE_FP32)  # scale applied once, in fp32, below
    dq = _unit_rows_backward(dqn * scale, q32)
    tl.store(
        dqkv_ptr + window * N * 3 * C + head * HEAD_DIM + rows[:, None] * 3 * C + dims[None, :],
        dq.to(dqkv_ptr.dtype.element_ty),
        mask=q_mask,
    )
