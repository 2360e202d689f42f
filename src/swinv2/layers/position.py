"""Per-position tables on a token grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def interpolate_grid_table(table: torch.Tensor, source: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """Resize a (1, Hs*Ws, C) per-position table to (1, Ht*Wt, C) by bicubic interpolation."""
    if source == target:
        return table
    C = table.shape[-1]
    grid = table.reshape(1, source[0], source[1], C).permute(0, 3, 1, 2)  # (1, C, Hs, Ws)
    grid = F.interpolate(grid.float(), size=target, mode="bicubic", align_corners=False).to(table.dtype)
    return grid.permute(0, 2, 3, 1).reshape(1, target[0] * target[1], C)  # (1, Ht*Wt, C)
