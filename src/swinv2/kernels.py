"""Linear layers of the fast path: the values of `F.linear` (+ exact GELU), through faster CPU kernels.

Two linear routes, both for inference on the CPU (no gradient needed, not under `torch.compile`, which
fuses on its own, nor under `torch.func` / forward-mode AD: `plain_ops_required`, which the model's
hand-written autograd nodes consult too); everything else, and the "eager" reference path, takes
plain `F.linear`:

- **fp32 linear + GELU: one oneDNN matmul with bias and GELU in its epilogue**, instead of MKL's addmm
  (which first copies the broadcast bias into the whole output) and a GELU pass over the largest
  activation of the block. Its GELU is the exact (erf) one. Linears without GELU stay on MKL: oneDNN
  saves little there, and its own summation order moved the outputs ~15% further from the eager path.
- **bf16 autocast on an x86 CPU without bf16 units (no AVX512-BF16, no AMX).** There PyTorch's bf16
  matmul is emulated and 2.5-5x slower than fp32. The operands are rounded to bf16 exactly as autocast
  rounds them and multiplied on the fp32 units: a product of two bf16 numbers is exact in fp32, and
  bf16 matmuls accumulate in fp32 anyway, so the result, rounded to bf16, is what autocast promises,
  at fp32 speed. (The fused GELU, like a GPU epilogue, acts on the fp32 accumulator before rounding.)

And one memory rule, `in_row_chunks`: glibc serves allocations above 32 MiB with fresh mmap pages, so
an intermediate that large is page-faulted in (and zeroed by the kernel) on every call. At batch 8 the
stage-1 qkv (38 MB) and MLP hidden (50 MB) tensors run at up to half speed for that alone; computed in
row blocks they stay small, reuse heap memory and stay in cache.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.autograd import forward_ad


@functools.cache
def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 natively (x86: AVX512-BF16 or AMX). Non-x86 CPUs count as yes."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return True  # ARM's bf16 extensions and others: leave autocast's own kernels alone
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return True  # cannot tell: keep the default kernels
    return bool(flags & {"avx512_bf16", "amx_bf16"})


@functools.cache
def _onednn_linear_available() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return torch.ops.mkldnn._linear_pointwise.default is not None
    except (AttributeError, RuntimeError):
        return False


def transformed(x: torch.Tensor) -> bool:
    """Whether `x` is seen through a `torch.func` transform (jvp, vmap, grad) or carries a forward-mode
    tangent (`torch.autograd.forward_ad`): then only plain differentiable ops may touch it, not out=
    writes, other kernels or hand-written autograd nodes. (False while `torch.compile` traces: it
    cannot trace the check, and it differentiates the traced graph itself.)"""
    if torch.compiler.is_compiling():
        return False
    is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    if is_wrapped is not None and is_wrapped(x):
        return True
    return forward_ad.unpack_dual(x).tangent is not None


def plain_ops_required(x: torch.Tensor) -> bool:
    """`transformed(x)`, or `torch.compile` tracing (which fuses the plain ops itself)."""
    return torch.compiler.is_compiling() or transformed(x)


def _route(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> str:
    """ "plain", "fp32" (CPU inference in fp32) or "bf16-on-fp32" (see the module docstring)."""
    if x.device.type != "cpu" or plain_ops_required(x):
        return "plain"
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return "plain"
    if torch.is_autocast_enabled("cpu"):
        bf16 = torch.get_autocast_dtype("cpu") == torch.bfloat16
        if bf16 and weight.dtype == torch.float32 and not cpu_has_bf16_units():
            return "bf16-on-fp32"
        return "plain"
    return "fp32" if x.dtype == weight.dtype == torch.float32 else "plain"


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool) -> torch.Tensor:
    if not _onednn_linear_available():
        out = F.linear(x, weight, bias)
        return F.gelu(out) if gelu else out
    # post-op "gelu" with algorithm "none" is the exact (erf) GELU; "none" post-op takes no algorithm
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu" if gelu else "none", [], "none" if gelu else "")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu: bool = False) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, followed by exact GELU when `gelu`, by the fastest equal kernel.

    Args:
        x: (..., K) input.
        weight: (M, K); bias: (M,) or None.
        gelu: apply `F.gelu` (erf form) to the result.

    Returns:
        (..., M) in the dtype `F.linear` would give (bf16 under bf16 autocast).
    """
    route = _route(x, weight, bias)
    if route == "fp32" and gelu:
        return _onednn_linear(x, weight, bias, gelu)
    if route == "bf16-on-fp32":
        with torch.autocast("cpu", enabled=False):
            rounded = [t if t is None else t.to(torch.bfloat16).float() for t in (x, weight, bias)]
            return _onednn_linear(*rounded, gelu).to(torch.bfloat16)
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out


CHUNK_BYTES = 16 * 2**20  # intermediates per row block: half glibc's 32 MiB mmap ceiling


def in_row_chunks(
    fn: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, bytes_per_row: int, align: int = 1
) -> torch.Tensor:
    """`fn(x, 0)`, computed over blocks of rows (dim 0) whose intermediates stay under `CHUNK_BYTES`.

    `fn(rows, start)` must treat its rows independently; `start` is the index of the block's first
    row. Blocks are used on the CPU when autograd is off and outside `torch.compile`; otherwise (and
    when `x` is small enough) `fn` sees all of `x` at once.

    Args:
        fn: row-wise function, (R, ...) -> (R, ...).
        x: (rows, ...) input.
        bytes_per_row: the largest intermediate `fn` allocates, per row of `x`.
        align: blocks hold a multiple of this many rows (at least one multiple, whatever its size).
    """
    rows = max(align, CHUNK_BYTES // max(bytes_per_row, 1) // align * align)
    total = x.shape[0]
    if total <= rows or x.device.type != "cpu" or torch.is_grad_enabled() or torch.compiler.is_compiling():
        return fn(x, 0)
    first = fn(x[:rows], 0)
    out = first.new_empty((total, *first.shape[1:]))
    out[:rows] = first
    for start in range(rows, total, rows):
        out[start : start + rows] = fn(x[start : start + rows], start)
    return out
