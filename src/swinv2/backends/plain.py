"""The plain-ops switch: when every fast path must step aside for the model's plain PyTorch ops.

Required inside `plain()` (what export and deliberate tracing use), while `torch.compile` or
`torch.export` trace (they fuse plain ops themselves), under `torch.jit.trace` (which would record
packed weights as constants), and under `torch.func` transforms or forward-mode AD (which need plain
differentiable ops, not hand-written autograd nodes or out= writes). `plain_ops_required` is that
rule; every fast path consults it and no other.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch.autograd import forward_ad

_STATE = threading.local()


@contextlib.contextmanager
def plain() -> Iterator[None]:
    """Run the models on plain PyTorch ops only (no packed weights, no hand-written autograd nodes,
    no row blocks), e.g. for `torch.export` or `torch.onnx.export`.

    Example:
        >>> with swinv2.backends.plain():
        ...     program = torch.export.export(model, (pixel_values,))
    """
    previous = getattr(_STATE, "plain", False)
    _STATE.plain = True
    try:
        yield
    finally:
        _STATE.plain = previous


def plain_requested() -> bool:
    """Inside `plain()`."""
    return bool(getattr(_STATE, "plain", False))


def transformed(x: torch.Tensor) -> bool:
    """Whether `x` is seen through a `torch.func` transform (jvp, vmap, grad) or carries a forward-mode
    tangent. (False while `torch.compile` traces: it cannot trace the check, and it differentiates the
    traced graph itself.)"""
    if torch.compiler.is_compiling():
        return False
    is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    if is_wrapped is not None and is_wrapped(x):
        return True
    return forward_ad.unpack_dual(x).tangent is not None


def tracing() -> bool:
    """Inside `plain()`, or while `torch.compile` / `torch.export` / `torch.jit.trace` trace."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():  # type: ignore[attr-defined]  # not in __all__
        return True
    return plain_requested()


def plain_ops_required(x: torch.Tensor) -> bool:
    """Whether only plain ops may touch `x` (see the module docstring)."""
    return tracing() or transformed(x)
