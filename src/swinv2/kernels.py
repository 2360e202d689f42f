"""Linear layers of the fast path: the values of `F.linear` (+ exact GELU), through faster CPU kernels.

Two linear routes, both for inference on the CPU (no gradient needed, not under `torch.compile`, which
fuses on its own, nor under `torch.func` / forward-mode AD: `plain_ops_required`, which the model's
hand-written autograd nodes consult too); everything else, and the "eager" reference path, takes
plain `F.linear`:

- **fp32: oneDNN's matmul on the weight packed once into its blocked layout**, with the bias (and an
  exact, erf GELU where asked) in its epilogue. MKL's addmm, which `F.linear` calls, repacks the
  weight on every call and first copies the broadcast bias into the whole output. At the tiny model's
  shapes a packed oneDNN linear in isolation takes 10-25% less time, and the whole model's inference
  5-6% less at batch 1, 3.5% at batch 8; the fused GELU saves a pass over the block's largest
  activation. Its sums equal addmm's bit for bit up to `ONEDNN_SAME_SUM_K` inputs per output and
  from `ONEDNN_SAME_SUM_ROWS` rows; other linears without GELU stay on `F.linear`.
- **bf16 autocast on an x86 CPU without bf16 units (no AVX512-BF16, no AMX).** There PyTorch's bf16
  matmul is emulated and 2.5-5x slower than fp32. The operands are rounded to bf16 exactly as autocast
  rounds them and multiplied on the fp32 units: a product of two bf16 numbers is exact in fp32, and
  bf16 matmuls accumulate in fp32 anyway, so the result, rounded to bf16, is what autocast promises,
  at fp32 speed. (The fused GELU, like a GPU epilogue, acts on the fp32 accumulator before rounding.)
  The weight is rounded and packed once, like the fp32 route's.

The packed weights are kept per weight tensor while it lives (`_packed_weight`): one more copy of
the linear weights during CPU inference (the tiny model: ~110 MB; two when fp32 and bf16-autocast
inference alternate), given back by `forget_packed` (the models call it from `clear_caches`,
`train()`, `load_state_dict` and conversions such as `.to()`). A pack is remade whenever its
weight changes in place (an optimizer step, `copy_`, `load_state_dict`: its version counter moves)
or is replaced (`.data =`, `.to()`). Writes that bypass PyTorch's version counter (through `.data`,
through numpy or DLPack views of the weight, into its untyped storage, by another process into
shared memory) cannot be seen: call `forget_packed` after them.

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


@dataclass(frozen=True)
class _Pack:
    """A weight in oneDNN's blocked layout, and what identifies the values it was packed from."""

    storage: StorageWeakRef  # the weight's storage, held weakly: while it lives, no other takes its address
    data_ptr: int
    version: int  # the weight's version counter when packed
    shape: torch.Size
    stride: tuple[int, ...]
    dtype: torch.dtype
    packed: torch.Tensor

    @classmethod
    def of(cls, weight: torch.Tensor, rounded: bool) -> _Pack:
        packed = _pack(weight, rounded)
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
ONEDNN_SAME_SUM_ROWS = 32  # and from this many rows (below 16, MKL's small-matrix routines sum otherwise)

# weight tensor -> {rounded: _Pack}: a slot for the fp32 and one for the bf16-on-fp32 route, dropped
# with the weight
_PACKS: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _pack(weight: torch.Tensor, rounded: bool) -> torch.Tensor:
    """`weight` (rounded to bf16 first when `rounded`), reordered into oneDNN's blocked layout."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.to(torch.bfloat16).float() if rounded else weight)


def _packed_weight(weight: torch.Tensor, rounded: bool) -> torch.Tensor:
    """`_pack(weight, rounded)`, made on first use and again whenever the weight's values may have
    changed (see the module docstring).

    An inference tensor has no version counter to tell in-place changes by: it is passed on unpacked
    (oneDNN then packs it inside each call, with the same sums)."""
    if weight.is_inference():
        return weight.to(torch.bfloat16).float() if rounded else weight
    slots = _PACKS.get(weight)
    if slots is None:
        slots = _PACKS[weight] = {}
    pack = slots.get(rounded)
    if pack is None or not pack.holds(weight):
        with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable outside inference mode
            pack = slots[rounded] = _Pack.of(weight.detach(), rounded)
    return pack.packed


def forget_packed(weights: Iterable[torch.Tensor]) -> None:
    """Drop the packed copies of `weights` (they are remade on next use)."""
    for weight in weights:
        _PACKS.pop(weight, None)


def _sums_like_f_linear(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether oneDNN's product equals `F.linear`'s bit for bit (measured on AVX-512): at most
    `ONEDNN_SAME_SUM_K` inputs, and at least `ONEDNN_SAME_SUM_ROWS` rows of a contiguous 2-D or higher
    `x` (for a vector, a transposed `x` or a few rows, MKL takes other routines: with up to 15 rows
    its sums differed)."""
    if weight.shape[1] > ONEDNN_SAME_SUM_K or x.dim() < 2 or not x.is_contiguous():
        return False
    return x.numel() >= ONEDNN_SAME_SUM_ROWS * x.shape[-1]


def _onednn_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool, round_weight: bool
) -> torch.Tensor:
    """fp32 `F.linear` (+ GELU) by oneDNN on the packed weight; `round_weight` rounds the weight to bf16
    first (x and bias arrive rounded)."""
    if not _onednn_linear_available():
        weight = weight.to(torch.bfloat16).float() if round_weight else weight
        out = F.linear(x, weight, bias)
        return F.gelu(out) if gelu else out
    packed = _packed_weight(weight, round_weight)
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

    `fn(rows, start)` must treat its rows independently; `start` is the index of the block's first
    row. Blocks are used on the CPU when autograd is off, outside `torch.compile` and `torch.jit.trace`;
    otherwise (and when `x` is small enough) `fn` sees all of `x` at once.

    Args:
        fn: row-wise function, (R, ...) -> (R, ...).
        x: (rows, ...) input.
        bytes_per_row: the largest intermediate `fn` allocates, per row of `x`.
        align: blocks hold a multiple of this many rows (at least one multiple, whatever its size).
    """
    rows = max(align, CHUNK_BYTES // max(bytes_per_row, 1) // align * align)
    total = x.shape[0]
    traced = torch.compiler.is_compiling() or torch.jit.is_tracing()  # a trace would fix the loop to this size
    if total <= rows or x.device.type != "cpu" or torch.is_grad_enabled() or traced:
        return fn(x, 0)
    first = fn(x[:rows], 0)
    out = first.new_empty((total, *first.shape[1:]))
    out[:rows] = first
    for start in range(rows, total, rows):
        out[start : start + rows] = fn(x[start : start + rows], start)
    return out
