"""Linear layers of the fast path: the values of `F.linear` (+ exact GELU), through faster CPU kernels.

Two linear routes, both for inference on the CPU (no gradient needed, not under `torch.compile`, which
fuses on its own, nor under `torch.func` / forward-mode AD: `plain_ops_required`, which the model's
hand-written autograd nodes consult too); everything else, and the "eager" reference path, takes
plain `F.linear`:

- **fp32: a weight packed once, then multiplied by a kernel that skips the repacking.** MKL's addmm,
  which `F.linear` calls, repacks the weight on every call and first copies the broadcast bias into
  the whole output.
  - **oneDNN's matmul on its blocked layout**, with the bias (and an exact, erf GELU where asked) in
    its epilogue. At the tiny model's shapes a packed oneDNN linear in isolation takes 10-25% less
    time, and the whole model's inference 5-6% less at batch 1, 3.5% at batch 8; the fused GELU saves
    a pass over the block's largest activation. Its sums equal addmm's bit for bit up to
    `ONEDNN_SAME_SUM_K` inputs per output and from `PACKED_MIN_ROWS` rows. It takes every GELU-fused
    linear, and the linears without GELU it sums as addmm does.
  - **MKL's own sgemm on its packed operand** (`cblas_sgemm_pack`/`_compute`) for the other linears
    without GELU (more inputs), from `PACKED_MIN_ROWS` rows. Its sums are addmm's at most shapes and a
    few ulps apart at some (measured: 1.9e-6 at 64 x 3072 -> 768, outputs ~3); over the model the
    parity cases stay within 3.87e-6 of transformers (with addmm there: 3.05e-6; oneDNN: 1.07e-5). MKL
    packs for one row count: a weight keeps packs for `MKL_ROW_COUNTS_PER_WEIGHT` row counts, the
    least recently used going first. At the tiny model's shapes these linears take 6-29% less time
    in isolation, the model's inference 3.5-6% less at batch 1, 1-1.5% at batch 8.
- **bf16 autocast on an x86 CPU without bf16 units (no AVX512-BF16, no AMX).** There PyTorch's bf16
  matmul is emulated and 2.5-5x slower than fp32. The operands are rounded to bf16 exactly as autocast
  rounds them and multiplied on the fp32 units: a product of two bf16 numbers is exact in fp32, and
  bf16 matmuls accumulate in fp32 anyway, so the result, rounded to bf16, is what autocast promises,
  at fp32 speed. (The fused GELU, like a GPU epilogue, acts on the fp32 accumulator before rounding.)
  The weight is rounded and packed once, like the fp32 route's.

The packed weights are kept per weight tensor while it lives (`_packed_weight`), at a memory cost (the
tiny model, 108 MB of weights, measured resident: 57 MB of oneDNN packs; MKL's, 50 MB after batch 1 and
132 MB after batch 1 and 8, its packs for more rows being larger; more when fp32 and bf16-autocast
inference alternate). `forget_packed` gives them back (the models call it from `clear_caches`,
`train()`, `load_state_dict` and conversions such as `.to()`). A pack is remade whenever its weight
changes in place (an optimizer step, `copy_`, `load_state_dict`: its version counter moves) or is
replaced (`.data =`, `.to()`). Writes that bypass PyTorch's version counter (through `.data`, through
numpy or DLPack views of the weight, into its untyped storage, by another process into shared memory)
cannot be seen: call `forget_packed` after them.

And one memory rule, `in_row_chunks`: glibc serves allocations above 32 MiB with fresh mmap pages, so
an intermediate that large is page-faulted in (and zeroed by the kernel) on every call. At batch 8 the
stage-1 qkv (38 MB) and MLP hidden (50 MB) tensors run at up to half speed for that alone; computed in
row blocks they stay small, reuse heap memory and stay in cache.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch.autograd import forward_ad
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.weak import WeakIdKeyDictionary


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


@functools.cache
def _mkl_packed_linear_available() -> bool:
    if not (torch.backends.mkl.is_available() and torch.backends.mkldnn.is_available()):
        return False
    try:
        ops = (torch.ops.mkl._mkl_reorder_linear_weight, torch.ops.mkl._mkl_linear)
        return all(op.default is not None for op in ops)
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
    """`transformed(x)`, `torch.compile` tracing (which fuses the plain ops itself) or `torch.jit.trace`
    (which would record the kernels' packed weights as constants)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or transformed(x)


def _route(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> str:
    """ "plain", "fp32" (CPU inference in fp32) or "bf16-on-fp32" (see the module docstring). Empty
    operands and a bias that is not one value per output (which `F.linear` broadcasts, and the packed
    kernels would read past) take the plain ops."""
    if x.device.type != "cpu" or plain_ops_required(x):
        return "plain"
    if x.numel() == 0 or weight.numel() == 0 or (bias is not None and bias.shape != weight.shape[:1]):
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


@dataclass(frozen=True)
class _Layout:
    """A packed form of a weight: oneDNN's blocked layout (of the weight, or of it rounded to bf16 when
    `rounded`), or MKL's packed sgemm operand for products with `rows` rows."""

    library: Literal["onednn", "mkl"]
    rounded: bool = False
    rows: int = 0


ONEDNN = _Layout("onednn")
ONEDNN_ROUNDED = _Layout("onednn", rounded=True)


@dataclass(frozen=True)
class _Pack:
    """A weight in a packed layout, and what identifies the values it was packed from."""

    storage: StorageWeakRef  # the weight's storage, held weakly: while it lives, no other takes its address
    data_ptr: int
    version: int  # the weight's version counter when packed
    shape: torch.Size
    stride: tuple[int, ...]
    dtype: torch.dtype
    packed: torch.Tensor

    @classmethod
    def of(cls, weight: torch.Tensor, layout: _Layout) -> _Pack:
        packed = _pack(weight, layout)
        storage = StorageWeakRef(weight.untyped_storage())
        return cls(storage, weight.data_ptr(), weight._version, weight.shape, weight.stride(), weight.dtype, packed)

    def holds(self, weight: torch.Tensor) -> bool:
        """Whether `weight` still has the values this was packed from (as far as PyTorch can tell)."""
        return (
            not self.storage.expired()
            and self.data_ptr == weight.data_ptr()
            and self.version == weight._version
            and self.shape == weight.shape
            and self.stride == weight.stride()
            and self.dtype == weight.dtype
        )


# Up to this many inputs per output oneDNN's fp32 matmul sums as MKL's sgemm does (bit for bit; measured
# on AVX-512); above, its order differs (~3e-6 relative), which summed over a model came to 1.07e-5
# from transformers (1e-5 is the parity bound). GELU-fused linears take oneDNN at any K.
ONEDNN_SAME_SUM_K = 384
# Both packed routes start at this many rows: with up to 15, addmm takes MKL's small-matrix routines,
# whose sums neither packed kernel reproduces.
PACKED_MIN_ROWS = 32
MKL_ROW_COUNTS_PER_WEIGHT = 2  # MKL packs kept per weight: e.g. a row block's and the last block's

# weight tensor -> {_Layout: _Pack}, dropped with the weight
_PACKS: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _pack(weight: torch.Tensor, layout: _Layout) -> torch.Tensor:
    """`weight` in `layout`."""
    if layout.library == "mkl":
        return torch.ops.mkl._mkl_reorder_linear_weight(weight, layout.rows)
    return torch.ops.mkldnn._reorder_linear_weight(weight.to(torch.bfloat16).float() if layout.rounded else weight)


def _packed_weight(weight: torch.Tensor, layout: _Layout) -> torch.Tensor:
    """`_pack(weight, layout)`, made on first use and again whenever the weight's values may have
    changed (see the module docstring). Inference tensors, which have no version counter to tell
    in-place changes by, are not passed here."""
    slots = _PACKS.get(weight)
    if slots is None:
        slots = _PACKS[weight] = {}
    pack = slots.pop(layout, None)  # put back last: the slots run from least to most recently used
    if pack is None and layout.library == "mkl":
        row_counts = [kept for kept in list(slots) if kept.library == "mkl"]
        if len(row_counts) >= MKL_ROW_COUNTS_PER_WEIGHT:
            slots.pop(row_counts[0], None)  # the least recently used row count goes
    if pack is None or not pack.holds(weight):
        with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable outside inference mode
            pack = _Pack.of(weight.detach(), layout)
    slots[layout] = pack
    return pack.packed


def forget_packed(weights: Iterable[torch.Tensor]) -> None:
    """Drop the packed copies of `weights` (they are remade on next use)."""
    for weight in weights:
        _PACKS.pop(weight, None)


def _many_contiguous_rows(x: torch.Tensor) -> bool:
    """Whether `x` is a contiguous 2-D or higher input of at least `PACKED_MIN_ROWS` rows (for a vector,
    a transposed `x` or a few rows MKL's addmm takes other routines)."""
    return x.dim() >= 2 and x.is_contiguous() and x.numel() >= PACKED_MIN_ROWS * x.shape[-1]


def _sums_like_f_linear(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether oneDNN's product equals `F.linear`'s bit for bit (measured on AVX-512): at most
    `ONEDNN_SAME_SUM_K` inputs and `_many_contiguous_rows(x)`."""
    return weight.shape[1] <= ONEDNN_SAME_SUM_K and _many_contiguous_rows(x)


def _mkl_packs(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the MKL-packed route takes this fp32 linear: `_many_contiguous_rows(x)`, a contiguous
    weight that is not an inference tensor, and a torch built with MKL."""
    usable = _many_contiguous_rows(x) and weight.is_contiguous() and not weight.is_inference()
    return usable and _mkl_packed_linear_available()


def _mkl_packed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """fp32 `F.linear` by MKL's sgemm on the weight packed for `x`'s row count."""
    rows = x.numel() // x.shape[-1]
    packed = _packed_weight(weight, _Layout("mkl", rows=rows))
    return torch.ops.mkl._mkl_linear(x, packed, weight, bias, rows)


def _onednn_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool, round_weight: bool
) -> torch.Tensor:
    """fp32 `F.linear` (+ GELU) by oneDNN on the packed weight; `round_weight` rounds the weight to bf16
    first (x and bias arrive rounded)."""
    if not _onednn_linear_available():
        weight = weight.to(torch.bfloat16).float() if round_weight else weight
        out = F.linear(x, weight, bias)
        return F.gelu(out) if gelu else out
    if weight.is_inference():  # unpacked: oneDNN packs it inside the call, with the same sums
        packed = weight.to(torch.bfloat16).float() if round_weight else weight
    else:
        packed = _packed_weight(weight, ONEDNN_ROUNDED if round_weight else ONEDNN)
    # post-op "gelu" with algorithm "none" is the exact (erf) GELU; "none" post-op takes no algorithm
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "gelu" if gelu else "none", [], "none" if gelu else "")


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
    if route == "fp32" and (gelu or _sums_like_f_linear(x, weight)):
        return _onednn_linear(x, weight, bias, gelu, round_weight=False)
    if route == "fp32" and _mkl_packs(x, weight):
        return _mkl_packed_linear(x, weight, bias)
    if route == "bf16-on-fp32":
        with torch.autocast("cpu", enabled=False):
            x, bias = (t if t is None else t.to(torch.bfloat16).float() for t in (x, bias))
            return _onednn_linear(x, weight, bias, gelu, round_weight=True).to(torch.bfloat16)
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out


CHUNK_BYTES = 16 * 2**20  # intermediates per row block: half glibc's 32 MiB mmap ceiling


def in_row_chunks(
    fn: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, bytes_per_row: int, align: int = 1
) -> torch.Tensor:
    """`fn(x, 0)`, computed over blocks of rows (dim 0) whose intermediates stay under `CHUNK_BYTES`.

    As few blocks as that allows, of equal size as far as `align` lets them be (the last may be
    shorter): no sliver of a remainder, and few distinct row counts for the packed linears.
    `fn(rows, start)` must treat its rows independently; `start` is the index of the block's first
    row. Blocks are used on the CPU when autograd is off, outside `torch.compile` and `torch.jit.trace`;
    otherwise (and when `x` is small enough) `fn` sees all of `x` at once.

    Args:
        fn: row-wise function, (R, ...) -> (R, ...).
        x: (rows, ...) input.
        bytes_per_row: the largest intermediate `fn` allocates, per row of `x`.
        align: blocks hold a multiple of this many rows (at least one multiple, whatever its size).
    """
    budget = max(align, CHUNK_BYTES // max(bytes_per_row, 1) // align * align)  # the most rows a block takes
    total = x.shape[0]
    traced = torch.compiler.is_compiling() or torch.jit.is_tracing()  # a trace would fix the loop to this size
    if total <= budget or x.device.type != "cpu" or torch.is_grad_enabled() or traced:
        return fn(x, 0)
    blocks = -(-total // budget)  # ceil(total / budget)
    rows = -(-total // blocks)  # ceil(total / blocks) ...
    rows = -(-rows // align) * align  # ... up to a multiple of align: still within the budget
    first = fn(x[:rows], 0)
    out = first.new_empty((total, *first.shape[1:]))
    out[:rows] = first
    for start in range(rows, total, rows):
        out[start : start + rows] = fn(x[start : start + rows], start)
    return out
