"""Output dataclasses with transformers' attribute names.

Each behaves like transformers' `ModelOutput`: an `OrderedDict` subclass (so a `Mapping`) whose entries are
the fields that are not None, in the order they were set (declaration order for a freshly built output).
`out.logits`, `out["logits"]` and `out[i]` (an index or slice into `to_tuple()`) all read the same value;
`out["logits"] = t` also sets the attribute, and setting a field attribute that was None adds its entry
(at the end, as transformers does). `len`, `in`, iteration (over keys), `keys()/values()/items()/get()`
work as on a dict; equality is the dataclass's (field by field). Entries cannot be removed through dict
methods (`del`, `pop`, `popitem`, `clear`, `setdefault`, `update` raise TypeError).

Two deliberate differences from transformers, both keeping "the entries are the fields that are not None":
assigning None to a field (by attribute or by key) removes its entry, where transformers keeps the old value
(attribute) or stores None (key); and a key that is not a field raises KeyError on assignment, since the
output could no longer be rebuilt from its entries.

Every output class is registered as a pytree node (flattened to its entries' values, with their keys as the
context, as transformers does), so `torch.export`, `torch.compile(fullgraph=True)` and `torch.jit.trace`
(strict=False) see through it, and export and compile hand back the same output class.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

import torch
import torch.utils._pytree as pytree


class _ModelOutput(OrderedDict[str, Any]):
    """Base of the output dataclasses (subclasses must be `@dataclass`es)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _register_pytree_node(cls)

    # ------------------------------------------------------------------ reads
    def __getitem__(self, key: str | int | slice) -> Any:
        """A field by name (KeyError when it is None), or an index / slice of `to_tuple()`."""
        if isinstance(key, str):
            return OrderedDict.__getitem__(self, key)
        return self.to_tuple()[key]

    def to_tuple(self) -> tuple[Any, ...]:
        """The values of the fields that are not None, in `keys()` order."""
        return tuple(self.values())

    # ----------------------------------------------------------------- writes
    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dataclass_fields__:
            if value is not None:
                OrderedDict.__setitem__(self, name, value)
            elif OrderedDict.__contains__(self, name):
                OrderedDict.__delitem__(self, name)
        super().__setattr__(name, value)

    def __setitem__(self, key: str, value: Any) -> None:
        """Set a field (its attribute too); None removes its entry."""
        if key not in self.__dataclass_fields__:
            raise KeyError(f"{type(self).__name__} has no field {key!r}")
        setattr(self, key, value)

    def _immutable(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__}'s entries follow its fields: set a field (to None to drop it)")

    __delitem__ = _immutable
    pop = _immutable
    popitem = _immutable
    clear = _immutable
    setdefault = _immutable
    update = _immutable

    # ------------------------------------------------------------------ pickle / copy
    def __reduce__(self) -> str | tuple[Any, ...]:
        # OrderedDict's reduce rebuilds with cls() and no arguments, which a required field refuses.
        reduced = super().__reduce__()
        assert isinstance(reduced, tuple)
        callable_, _args, *rest = reduced
        return (callable_, tuple(getattr(self, f.name) for f in dataclasses.fields(self)), *rest)


def _flatten(output: _ModelOutput) -> tuple[list[Any], list[str]]:
    return list(output.values()), list(output.keys())


def _flatten_with_keys(output: _ModelOutput) -> tuple[list[tuple[pytree.KeyEntry, Any]], list[str]]:
    return [(pytree.MappingKey(k), v) for k, v in output.items()], list(output.keys())


def _register_pytree_node(cls: type[_ModelOutput]) -> None:
    def unflatten(values: Any, context: Any) -> _ModelOutput:
        return cls(**dict(zip(context, values, strict=True)))

    pytree.register_pytree_node(
        cls,
        _flatten,
        unflatten,
        serialized_type_name=f"{cls.__module__}.{cls.__qualname__}",
        flatten_with_keys_fn=_flatten_with_keys,
    )


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


@dataclass
class Swin2SRModelOutput(_ModelOutput):
    """Output of `Swin2SRModel` (transformers returns a `BaseModelOutput` with these fields).

    Attributes:
        last_hidden_state: (B, C, H, W) deep features plus the shallow ones, for the input's own H, W.
        hidden_states: the embedding and each residual stage's output, (B, Hp*Wp, C) tokens of the grid
            padded to whole windows.
        attentions: per stage, the last block's (B*nW, nH, N, N) attention probabilities.
    """

    last_hidden_state: torch.Tensor
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None


@dataclass
class Swin2SRImageSuperResolutionOutput(_ModelOutput):
    """Output of `Swin2SRForImageSuperResolution` (transformers' `ImageSuperResolutionOutput` fields):
    `reconstruction` (B, C_out, H*upscale, W*upscale), and `loss` when labels are given."""

    loss: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
