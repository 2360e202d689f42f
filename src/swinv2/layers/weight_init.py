"""Weight initialisation: truncated normal linears and convolutions, identity norms."""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def trunc_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """Fill `tensor` from N(0, std^2) truncated to ±2 std, by inverting the CDF (one pass, no rejection loop)."""
    edge = math.erf(2.0 / math.sqrt(2.0))  # erf of the +2 std bound, in the (2*CDF - 1) scale
    tensor.uniform_(-edge, edge).erfinv_().mul_(std * math.sqrt(2.0))
    return tensor.clamp_(-2.0 * std, 2.0 * std)


def trunc_normal_init(module: nn.Module, std: float) -> None:
    """Initialise Linear/Conv weights from a truncated normal (±2 std), biases to zero, norms to identity."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        trunc_normal_(module.weight, std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
