"""Re-windowing: carry a checkpoint to another resolution and window size (the V2 paper's transfer).

The continuous position bias is an MLP over normalised log-spaced coordinates, so its weights serve
any window once the coordinates are normalised by the window they were trained with. Re-windowing
therefore sets `pretrained_window_sizes` to the source's (trained) stage windows, builds the model at
the new geometry (its coordinate tables and masks are derived, so they are built fresh), and copies
every learned tensor; an absolute position table, if any, is resized bicubically to the new grid.
"""

from __future__ import annotations

from typing import TypeVar

import torch

from swinv2.layers.position import interpolate_grid_table
from swinv2.models.base import Swinv2PreTrainedModel
from swinv2.models.swinv2 import stage_windows

ModelT = TypeVar("ModelT", bound=Swinv2PreTrainedModel)


def rewindow(model: ModelT, *, image_size: int | tuple[int, int], window_size: int) -> ModelT:
    """A copy of `model` built for `image_size` / `window_size`, with the same learned weights.

    Args:
        model: Any Swin V2 model (its class is kept).
        image_size: The new input size the windows are planned for.
        window_size: The new window.

    Example:
        >>> model_384 = rewindow(model_256_w8, image_size=384, window_size=24)
        >>> model_384.config.pretrained_window_sizes  # the windows the source was trained with
        (8, 8, 8, 8)
    """
    source = model.config
    trained_windows = tuple(
        source.pretrained_window_sizes[i] or stage_windows(source, i)[0] for i in range(source.num_layers)
    )
    config = source.replace(image_size=image_size, window_size=window_size, pretrained_window_sizes=trained_windows)
    target = model.with_config(config)
    state = model.state_dict()
    for key in [k for k in state if k.endswith("embeddings.position_embeddings")]:
        table = state[key]  # (1, 1 + L, C): transformers' unused leading row, then the patches' rows
        patches = interpolate_grid_table(table[:, 1:], source.patch_grid, config.patch_grid)  # (1, L', C)
        state[key] = torch.cat([table[:, :1], patches], dim=1)  # (1, 1 + L', C)
    target.load_state_dict(state, strict=True)
    return target.to(device=model.device, dtype=model.dtype).train(model.training)
