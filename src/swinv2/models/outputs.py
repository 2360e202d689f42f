"""Output dataclasses with transformers' attribute names.

Each behaves like transformers' `ModelOutput` where users rely on it: attribute access
(`out.logits`), key access (`out["logits"]`), and integer indexing / `to_tuple()` over the fields that
are not None, in declaration order (`out[0]`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch


class _ModelOutput:
    def to_tuple(self) -> tuple[Any, ...]:
        """The fields that are not None, in declaration order."""
        return tuple(v for v in (getattr(self, f.name) for f in dataclasses.fields(self)) if v is not None)  # type: ignore[arg-type]

    def keys(self) -> list[str]:
        """Names of the fields that are not None."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]  # type: ignore[arg-type]

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]


Tensors = tuple[torch.Tensor, ...]


@dataclass
class Swinv2ModelOutput(_ModelOutput):
    """Output of `Swinv2Model`.

    Attributes:
        last_hidden_state: (B, L, C) tokens of the last stage after the final norm (L = H*W).
        pooler_output: (B, C) mean of `last_hidden_state` over tokens (None without pooling).
        hidden_states: embedding output and each stage's output (after its patch merging), (B, L_i, C_i).
        attentions: per stage, the last block's (B*nW, nH, N, N) attention probabilities
            (transformers' convention).
        reshaped_hidden_states: `hidden_states` as (B, C_i, H_i, W_i).
    """

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
    reshaped_hidden_states: Tensors | None = None


@dataclass
class Swinv2ImageClassifierOutput(_ModelOutput):
    """Output of `Swinv2ForImageClassification`: `logits` (B, num_labels) and `loss` when labels are given."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
    reshaped_hidden_states: Tensors | None = None


@dataclass
class Swinv2MaskedImageModelingOutput(_ModelOutput):
    """Output of `Swinv2ForMaskedImageModeling`: `reconstruction` (B, C, H, W), `loss` with a mask."""

    loss: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
    reshaped_hidden_states: Tensors | None = None


@dataclass
class BackboneOutput(_ModelOutput):
    """Output of `Swinv2Backbone`: `feature_maps`, channels-first (B, C_i, H_i, W_i), one per out feature."""

    feature_maps: Tensors
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
