"""Activation modules by transformers' `hidden_act` names."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the fast GELU approximation of CLIP."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class FastGELU(nn.Module):
    """transformers' `gelu_fast`: the tanh GELU approximation written with x*x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


_FACTORIES: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "gelu_fast": FastGELU,
    "quick_gelu": QuickGELU,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "mish": nn.Mish,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "linear": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """The module for a transformers `hidden_act` name (see `swinv2.config.ACTIVATIONS`)."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_FACTORIES)}")
    return _FACTORIES[name]()
