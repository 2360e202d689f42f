"""Where the fast paths plug into the models: a registry of backends, each a set of functions with
fixed signatures for the few hot operations of a window block.

The model file defines and registers the "eager" backend, the reference arithmetic; `swinv2.backends`
registers the others ("auto", "sdpa", "triton") when the package is imported, in the manner of
transformers' attention-interface registry. A model looks its backend up by
`config.attn_implementation` on every call, so `set_attn_implementation` takes effect at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from swinv2.layers.windows import GridWindows


class AttentionFunction(Protocol):
    """Attention inside windows, before the output projection.

    Args:
        module: the `Swinv2SelfAttention` (its projections, heads, dropout, training flag).
        windows: (w, N, C) tokens of windows of whole images (w a multiple of the bias's nW).
        terms: the call's `AttentionTerms` (bias + mask, temperature, fused q/k/v weight and bias).
        need_weights: also return the probabilities (w, nH, N, N).

    Returns:
        (w, N, C) context, heads concatenated, and the probabilities or None.
    """

    def __call__(
        self, module: Any, windows: torch.Tensor, terms: Any, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...


class WindowMoves(Protocol):
    """Tokens to window slots and back, replacing pad -> roll -> partition and reverse -> roll -> crop."""

    def partition(self, hidden: torch.Tensor, layout: GridWindows, shift: int) -> torch.Tensor:
        """(B, H*W, C) -> (B*nW, N, C)."""
        ...

    def reverse(self, windows: torch.Tensor, layout: GridWindows, shift: int) -> torch.Tensor:
        """(B*nW, N, C) -> (B, H*W, C)."""
        ...


LinearFunction = Callable[..., torch.Tensor]  # (x, weight, bias, gelu=False) -> F.linear(x, weight, bias) (+ GELU)
MlpFunction = Callable[[Any, torch.Tensor], torch.Tensor]  # (block, x (..., C)) -> the MLP's output (..., C)
# (fn, x, bytes_per_row, align) -> fn(x), possibly computed over blocks of rows of x
RowBlocksFunction = Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor, int, int], torch.Tensor]


@dataclass(frozen=True)
class Backend:
    """One way to run a window block's hot operations; every field computes what the eager one does."""

    name: str
    attention: AttentionFunction
    linear: LinearFunction
    mlp: MlpFunction
    row_blocks: RowBlocksFunction
    window_moves: WindowMoves | None = None  # None: the model's own pad, roll and partition


_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Make `backend` selectable as `attn_implementation=backend.name` (replacing one of that name)."""
    _BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    """The backend registered as `name`."""
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"no attention implementation {name!r} is registered; choose one of {sorted(_BACKENDS)}"
        ) from None


def backend_names() -> list[str]:
    """Names of the registered backends."""
    return sorted(_BACKENDS)


# Backends may keep copies derived from parameters (packed weights); the models call `release_caches`
# whenever parameters may be replaced or trained, so that no stale or orphaned copy stays.
_CACHE_RELEASERS: list[Callable[[Iterable[torch.Tensor]], None]] = []


def register_cache_release(release: Callable[[Iterable[torch.Tensor]], None]) -> None:
    """Have `release(parameters)` called whenever a model's parameters may change (see `release_caches`)."""
    if release not in _CACHE_RELEASERS:
        _CACHE_RELEASERS.append(release)


def release_caches(parameters: Iterable[torch.Tensor]) -> None:
    """Tell every backend to drop what it derived from `parameters`."""
    parameters = list(parameters)
    for release in _CACHE_RELEASERS:
        release(parameters)
