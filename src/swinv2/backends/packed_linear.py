"""Linear layers of the fast path: the values of `F.linear` (+ exact GELU), through faster CPU kernels.

Two routes, both for inference on the CPU (no gradient needed and `plain_ops_required` false);
everything else, and the eager reference, takes plain `F.linear`:

- **fp32: a weight packed once, then multiplied by a kernel that skips the repacking.** MKL's addmm,
  which `F.linear` calls, repacks the weight on every call and first copies the broadcast bias into
  the whole output.
  - **oneDNN's matmul on its blocked layout**, with the bias (and an exact, erf GELU where asked) in
    its epilogue: every GELU-fused linear, and those without GELU whose sums it makes as addmm does
    (up to `ONEDNN_SAME_SUM_K` inputs per output, from `PACKED_MIN_ROWS` rows).
  - **MKL's own sgemm on its packed operand** (`cblas_sgemm_pack`/`_compute`) for the other linears
    without GELU, from `PACKED_MIN_ROWS` rows: its sums are addmm's at most shapes and a few ulps
    apart at some. MKL packs for one row count; a weight keeps packs for `MKL_ROW_COUNTS_PER_WEIGHT`
    row counts, the least recently used going first.
- **bf16 autocast on an x86 CPU without bf16 units (no AVX512-BF16, no AMX).** There PyTorch's bf16
  matmul is emulated, several times slower than fp32. The operands are rounded to bf16 exactly as
  autocast rounds them and multiplied on the fp32 units: a product of two bf16 numbers is exact in
  fp32, and bf16 matmuls accumulate in fp32 anyway, so the result, rounded to bf16, is what autocast
  promises. (The fused GELU, like a GPU epilogue, acts on the fp32 accumulator before rounding.)

The packed weights are kept per weight tensor while it lives (`_packed_weight`), at a memory cost of
about one more copy of the linear weights (docs/performance.md). `forget_packed` gives them back; the
models call it, through `swinv2.models.registry.release_caches`, from `clear_caches`, `train()`,
`load_state_dict` and conversions such as `.to()`. A pack is remade whenever its weight changes in
place (an optimizer step, `copy_`: its version counter moves) or is replaced (`.data =`, `.to()`).
Writes that bypass PyTorch's version counter (through `.data`, numpy or DLPack views, the untyped
storage, another process's shared memory) cannot be seen: call `forget_packed` after them.

And one memory rule, `in_row_chunks`: glibc serves allocations above 32 MiB with fresh mmap pages, so
an intermediate that large is page-faulted in (and zeroed by the kernel) on every call; computed in
row blocks the intermediates stay small, reuse heap memory and stay in cache.
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
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.weak import WeakIdKeyDictionary

from swinv2.backends.plain import plain_ops_required, tracing


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
# on Intel AVX-512: on AMD EPYC MKL takes other kernels, and at 384 inputs the two differ by ~2e-6, still
# well inside the parity bound); above, its order differs (~3e-6 relative), which summed over a model came to 1.07e-5
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
    """Whether oneDNN's product equals `F.linear`'s bit for bit (measured on Intel AVX-512): at most
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
            x = x.to(torch.bfloat16).float()
            bias = bias if bias is None else bias.to(torch.bfloat16).float()
            return _onednn_linear(x, weight, bias, gelu, round_weight=True).to(torch.bfloat16)
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out


CHUNK_BYTES = 16 * 2**20  # intermediates per row block: half glibc's 32 MiB mmap ceiling


def in_row_chunks(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, bytes_per_row: int, align: int = 1
) -> torch.Tensor:
    """`fn(x)`, computed over blocks of rows (dim 0) whose intermediates stay under `CHUNK_BYTES`.

    As few blocks as that allows, of equal size as far as `align` lets them be (the last may be
    shorter): no sliver of a remainder, and few distinct row counts for the packed linears.
    `fn(rows)` must treat its rows independently. Blocks are used on the CPU when autograd is off
    and nothing traces; otherwise (and when `x` is small enough) `fn` sees all of `x` at once.

    Args:
        fn: row-wise function, (R, ...) -> (R, ...).
        x: (rows, ...) input.
        bytes_per_row: the largest intermediate `fn` allocates, per row of `x`.
        align: blocks hold a multiple of this many rows (at least one multiple, whatever its size).
    """
    budget = max(align, CHUNK_BYTES // max(bytes_per_row, 1) // align * align)  # the most rows a block takes
    total = x.shape[0]
    # a trace would fix the loop to this size; and the size test comes last, so that a trace with a
    # dynamic batch records no guard on it
    if tracing() or torch.is_grad_enabled() or x.device.type != "cpu" or total <= budget:
        return fn(x)
    blocks = -(-total // budget)  # ceil(total / budget)
    rows = -(-total // blocks)  # ceil(total / blocks) ...
    rows = -(-rows // align) * align  # ... up to a multiple of align: still within the budget
    first = fn(x[:rows])
    out = first.new_empty((total, *first.shape[1:]))
    out[:rows] = first
    for start in range(rows, total, rows):
        out[start : start + rows] = fn(x[start : start + rows])
    return out
