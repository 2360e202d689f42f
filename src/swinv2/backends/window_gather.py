"""Shifted windows as one gather: tokens to window slots and back, replacing pad -> roll -> partition
and reverse -> roll -> crop of `Swinv2Block.forward` (the tests hold both to the same values).

The shifted-window partition (zero-pad bottom/right to whole windows, roll by -shift, cut) is a fixed
permutation of the tokens plus zero slots, so one gather does it and one gather undoes it (dropping the
padding), instead of a pad, two rolls and two strided copies each way. In training the gradient of a
gather is another gather (a hand-written autograd node), not a scatter-add.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from swinv2.backends.plain import plain_requested, transformed
from swinv2.layers.windows import GridWindows, window_partition


@dataclass(frozen=True)
class WindowOrder:
    """Where each token of a grid goes when the grid is padded, rolled and cut into windows, and back.

    The shifted-window partition (zero-pad bottom/right to whole windows, roll by -shift, cut) is a
    fixed permutation of the tokens plus zero slots, so one gather does it, and one gather undoes it
    (dropping the padding), instead of a pad, two rolls and two strided copies each way.
    """

    to_windows: torch.Tensor  # (nW*N,) int64: the grid token in each window slot (padding slots: 0)
    to_grid: torch.Tensor  # (H*W,) int64: the window slot of each grid token
    pad_slots: torch.Tensor | None  # (P,) int64: window slots that hold padding, None without padding


def window_order(grid: tuple[int, int], window: int, shift: int, device: torch.device | None = None) -> WindowOrder:
    """The `WindowOrder` of an (H, W) grid for square windows of side `window`, rolled by `-shift`.

    Built from static-shape arithmetic only, so that `torch.compile` can trace it.
    """
    H, W = grid
    Hp, Wp = -(-H // window) * window, -(-W // window) * window
    N, windows_per_row = window * window, Wp // window
    rows = (torch.arange(Hp, device=device) + shift) % Hp  # padded row shown at rolled row r (roll by -shift)
    cols = (torch.arange(Wp, device=device) + shift) % Wp
    padding = (rows[:, None] >= H) | (cols[None, :] >= W)  # (Hp, Wp)
    source = (rows[:, None] * W + cols[None, :]).masked_fill(padding, 0)  # (Hp, Wp): grid index shown there
    to_windows = window_partition(source[None, :, :, None], window).reshape(-1)  # (nW*N,)
    r = (torch.arange(H, device=device) + (Hp - shift)) % Hp  # rolled row of each grid row (kept >= 0:
    # inductor in torch 2.14 fails to compile this gather when the modulo operand can be negative)
    c = (torch.arange(W, device=device) + (Wp - shift)) % Wp
    slot_of_row = (r // window) * windows_per_row * N + (r % window) * window  # (H,)
    slot_of_col = (c // window) * N + c % window  # (W,)
    to_grid = (slot_of_row[:, None] + slot_of_col[None, :]).reshape(-1)  # (H*W,)
    pads = Hp * Wp - H * W
    if not pads:
        return WindowOrder(to_windows, to_grid, None)
    is_pad = window_partition(padding[None, :, :, None], window).reshape(-1)  # (nW*N,)
    pad_slots = torch.argsort(is_pad.to(torch.int8), descending=True, stable=True)[:pads]  # (P,)
    return WindowOrder(to_windows, to_grid, pad_slots)


class _GatherTokens(torch.autograd.Function):
    """out[b, i] = x[b, index[i]] (then `zero_out` slots set to 0); the gradient is gathered back by
    `inverse` (then `zero_grad` slots set to 0). Valid when index and inverse are mutually inverse on
    the slots that are not zeroed, as `WindowOrder`'s are: a gather both ways, no scatter-add."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        index: torch.Tensor,
        inverse: torch.Tensor,
        zero_out: torch.Tensor | None,
        zero_grad: torch.Tensor | None,
    ) -> torch.Tensor:
        # save_for_backward takes None for an absent tensor; torch's annotation says Tensor only
        ctx.save_for_backward(inverse, zero_grad)  # type: ignore[arg-type]
        return _gather(x, index, zero_out)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        inverse, zero_grad = ctx.saved_tensors  # type: ignore[attr-defined]
        return _gather(grad, inverse, zero_grad), None, None, None, None


def _gather(x: torch.Tensor, index: torch.Tensor, zero: torch.Tensor | None) -> torch.Tensor:
    """(B, L, C) -> (B, len(index), C): rows of each image picked by `index`, `zero` rows cleared."""
    B, L, C = x.shape
    if B > 1:  # one gather over all images' rows: faster than index_select along dim 1
        index = (index + torch.arange(B, device=x.device)[:, None] * L).reshape(-1)  # (B*len(index),)
    out = x.reshape(B * L, C).index_select(0, index).view(B, -1, C)
    return out if zero is None else out.index_fill_(1, zero, 0.0)


def to_windows(x: torch.Tensor, order: WindowOrder) -> torch.Tensor:
    """(B, H*W, C) grid tokens -> (B, nW*N, C) window slots (padding slots zero)."""
    if torch.is_grad_enabled() and x.requires_grad and not (transformed(x) or plain_requested()):
        return _GatherTokens.apply(x, order.to_windows, order.to_grid, order.pad_slots, None)
    return _gather(x, order.to_windows, order.pad_slots)


def to_grid(windows: torch.Tensor, order: WindowOrder) -> torch.Tensor:
    """(B, nW*N, C) window slots -> (B, H*W, C) grid tokens (padding dropped); inverse of `to_windows`."""
    if torch.is_grad_enabled() and windows.requires_grad and not (transformed(windows) or plain_requested()):
        return _GatherTokens.apply(windows, order.to_grid, order.to_windows, None, order.pad_slots)
    return _gather(windows, order.to_grid, None)


class GatherWindows:
    """`WindowMoves` by `WindowOrder` gathers; the orders are kept in each grid's `GridWindows.extras`."""

    @staticmethod
    def _order(layout: GridWindows, shift: int) -> WindowOrder:
        key = f"gather-order-{shift}"
        order = layout.extras.get(key)
        if order is None:
            with torch.inference_mode(False):  # plain tensors, reusable outside inference mode
                order = window_order(layout.grid, layout.window, shift, layout.device)
            if not torch.compiler.is_compiling():  # under compile the layout is rebuilt per trace anyway
                layout.extras[key] = order
        return order

    def partition(self, hidden: torch.Tensor, layout: GridWindows, shift: int) -> torch.Tensor:
        """(B, H*W, C) -> (B*nW, N, C)."""
        N, C = layout.window * layout.window, hidden.shape[-1]
        return to_windows(hidden, self._order(layout, shift)).view(-1, N, C)

    def reverse(self, windows: torch.Tensor, layout: GridWindows, shift: int) -> torch.Tensor:
        """(B*nW, N, C) -> (B, H*W, C)."""
        padded_tokens = layout.padded[0] * layout.padded[1]
        C = windows.shape[-1]
        return to_grid(windows.reshape(-1, padded_tokens, C), self._order(layout, shift))
