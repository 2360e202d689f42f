"""Windows on a token grid: pad, cut into windows, put back; the shifted-window mask; a stage's layout.

The shifted-window scheme of Swin: a stage's grid is zero-padded at the bottom and right to whole
windows, rolled by -shift on alternate blocks, cut into non-overlapping windows for attention, then
put back, rolled by +shift and cropped. After the roll, windows at the bottom/right edge hold tokens of
up to 2x2 regions that were not neighbours; the shift mask keeps attention inside each region. The
mask is built on the padded grid (padding first, then the roll: timm's issue #2438 is the bug the
other order makes).

Shapes: B batch, H, W token grid, Hp, Wp padded grid, C channels, ws window side, N = ws*ws tokens
per window, nW windows per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

Grid = tuple[int, int]

# Score offset of a masked pair. The official code uses -100 (transformers adds it twice, -200). Scores
# reach at most 100 (cosine x temperature) + 16 (bias), so with -100 a masked probability is about
# e^-100..e^-136: partly subnormal floats, which slow CPU matmuls several-fold. -1e4 underflows to an
# exact zero in every float type (it is representable in fp16 and bf16), as transformers' -200 does.
MASKED = -1e4


def padded_grid(grid: Grid, window: int) -> Grid:
    """(Hp, Wp): `grid` rounded up to whole windows."""
    return (-(-grid[0] // window) * window, -(-grid[1] // window) * window)


def pad_bottom_right(x: torch.Tensor, multiple: tuple[int, int]) -> torch.Tensor:
    """Zero-pad a (B, H, W, C) grid at the bottom and right up to multiples of `multiple`."""
    _, H, W, _ = x.shape
    pad_h = -H % multiple[0]
    pad_w = -W % multiple[1]
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (B, H+pad_h, W+pad_w, C)
    return x


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """Cut a channels-last grid into non-overlapping windows, row-major over windows.

    Args:
        x: (B, Hp, Wp, C) with Hp, Wp multiples of `window`.

    Returns:
        (B*nW, N, C).
    """
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)  # (B, Hp/ws, ws, Wp/ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, C)  # (B*nW, N, C)


def window_reverse(windows: torch.Tensor, window: int, grid: Grid) -> torch.Tensor:
    """Inverse of `window_partition`: (B*nW, N, C) windows -> (B, Hp, Wp, C) for the padded `grid`."""
    Hp, Wp = grid
    C = windows.shape[-1]
    x = windows.view(-1, Hp // window, Wp // window, window, window, C)  # (B, Hp/ws, Wp/ws, ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, Hp, Wp, C)  # (B, Hp, Wp, C)


def shifted_window_mask(
    grid: Grid, window: int, shift: int, *, device: torch.device | None, dtype: torch.dtype
) -> torch.Tensor:
    """Additive mask that keeps shifted-window attention inside each pre-shift region.

    Args:
        grid: (Hp, Wp), the padded grid (multiples of `window`).
        window: Window side.
        shift: Cyclic shift (> 0).

    Returns:
        (nW, N, N) of zeros and `MASKED`.
    """

    def region(length: int) -> torch.Tensor:
        index = torch.arange(length, device=device)
        return (index >= length - window).long() + (index >= length - shift).long()  # 0, 1 or 2

    Hp, Wp = grid
    label = region(Hp)[:, None] * 3 + region(Wp)[None, :]  # (Hp, Wp): one id per region
    windows = window_partition(label[None, :, :, None], window).squeeze(-1)  # (nW, N)
    different = windows[:, None, :] != windows[:, :, None]  # (nW, N, N)
    return torch.zeros(different.shape, device=device, dtype=dtype).masked_fill(different, MASKED)


def clamp_window(resolution: int, window: int, shift: int) -> tuple[int, int]:
    """(window, shift) for a grid of side `resolution`: a grid no larger than the window is one window,
    which is not shifted (transformers' and the official rule; keyed on the grid's height)."""
    if resolution <= window:
        return max(1, resolution), 0
    return window, shift


@dataclass(frozen=True)
class GridWindows:
    """What the blocks of a stage need for one input grid, independent of the input itself."""

    grid: Grid  # (H, W)
    padded: Grid  # (Hp, Wp), multiples of the window
    window: int
    shift: int  # the shifted blocks' roll
    mask: torch.Tensor | None  # (nW, N, N) shift mask of the padded grid, fp32; None without shifted blocks
    device: torch.device
    extras: dict[str, Any] = field(default_factory=dict, compare=False)  # per-grid data a backend keeps

    @property
    def key(self) -> tuple[Grid, torch.device]:
        """Identifies the mask (its padded grid and device), for caches of terms derived from it."""
        return (self.padded, self.device)


class WindowLayout:
    """A stage's windows: side and shift, and the `GridWindows` of the last input grid seen.

    Any module that runs window blocks owns one (a Swin V2 stage, a super-resolution residual group).
    """

    def __init__(self, window: int, shift: int) -> None:
        self.window = window
        self.shift = shift
        self._last: GridWindows | None = None

    def __repr__(self) -> str:
        return f"WindowLayout(window={self.window}, shift={self.shift})"

    def for_grid(self, grid: Grid, device: torch.device) -> GridWindows:
        """The `GridWindows` of `grid`, cached for the last grid seen (inputs of one size are the usual
        case); built afresh under `torch.compile`, which traces it."""
        if torch.compiler.is_compiling():
            return self._build(grid, device)
        last = self._last
        if last is None or last.grid != grid or last.device != device:
            with torch.inference_mode(False):  # plain tensors, reusable outside inference mode
                self._last = last = self._build(grid, device)
        return last

    def _build(self, grid: Grid, device: torch.device) -> GridWindows:
        padded = padded_grid(grid, self.window)
        mask = None
        if self.shift:
            mask = shifted_window_mask(padded, self.window, self.shift, device=device, dtype=torch.float32)
        return GridWindows(grid, padded, self.window, self.shift, mask, device)
