"""Stochastic depth (Huang et al., 2016): drop a whole residual branch per sample while training."""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Zero the branch for a random `rate` of the samples in training and scale the rest by 1/(1-rate).

    Identity in eval mode and at rate 0.
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, ...)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"
