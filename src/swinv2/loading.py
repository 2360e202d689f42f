"""Any Swin V2 checkpoint into the right model class: detect the layout, rename to transformers' names,
load strictly. And the way back out to timm and Microsoft names.

timm and Microsoft files carry no config: name a variant (`swinv2.zoo`) or pass a config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch

from swinv2.config import CONFIG_NAME, Swinv2Config
from swinv2.io.checkpoints import CheckpointError, read_state_dict, write_safetensors
from swinv2.io.errors import ConfigError, InputError, quote
from swinv2.io.files import atomic_write
from swinv2.io.hub import resolve_model_dir
from swinv2.io.keymaps import MICROSOFT, MICROSOFT_SIMMIM, TIMM, from_transformers, to_transformers
from swinv2.io.layouts import detect_layout
from swinv2.models import (
    Swinv2Backbone,
    Swinv2ForImageClassification,
    Swinv2ForMaskedImageModeling,
    Swinv2Model,
    Swinv2PreTrainedModel,
)
from swinv2.zoo import Variant, get_variant

MODEL_CLASSES: dict[str, type[Swinv2PreTrainedModel]] = {
    cls.__name__: cls
    for cls in (Swinv2Model, Swinv2ForImageClassification, Swinv2ForMaskedImageModeling, Swinv2Backbone)
}

ConfigSource = Swinv2Config | str | os.PathLike[str] | None


@dataclass(frozen=True)
class ModelSource:
    """Where a model and its preprocessing come from, resolved once: a directory (local, or a Hub
    snapshot fetched once) or a named variant (random weights only)."""

    reference: str  # as the user gave it
    directory: Path | None = None
    variant: Variant | None = None


def resolve_model_source(reference: str | os.PathLike[str]) -> ModelSource:
    """A model directory, a variant name (ours, the Hub id of one, or timm's), or a Hub id, in that order.

    Raises:
        FileNotFoundError: none of them (the message names the local-path alternative).
    """
    path = Path(reference)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return ModelSource(str(reference), directory=path)
    try:
        return ModelSource(str(reference), variant=get_variant(str(reference)))
    except KeyError:
        return ModelSource(str(reference), directory=resolve_model_dir(reference))


def model_class_for(config: Swinv2Config, where: str | os.PathLike[str]) -> type[Swinv2PreTrainedModel]:
    """The model class a saved config names in `architectures` (a classifier when it names none).

    Raises:
        CheckpointError: the config names a class that is not a Swin V2 model (`where` names the directory).
    """
    names = config.extra.get("architectures") or ["Swinv2ForImageClassification"]
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise CheckpointError(
            f"'{where}': config.json's \"architectures\" must be a list of class names; got {quote(names)}"
        )
    cls = MODEL_CLASSES.get(names[0])
    if cls is None:
        raise CheckpointError(
            f"'{where}' holds a {quote(names[0])}, not a Swin V2 model (one of {sorted(MODEL_CLASSES)})"
        )
    return cls


def _resolve_config(variant: str | None, config: ConfigSource, source: str) -> Swinv2Config:
    if variant is not None and config is not None:
        raise InputError("give a variant or a config, not both")
    if variant is not None:
        return get_variant(variant).config
    if isinstance(config, Swinv2Config):
        return config
    if config is not None:
        return Swinv2Config.from_json_file(config)
    if Path(source).is_dir():
        raise ConfigError(
            f"'{source}' has no readable {CONFIG_NAME} (missing, or not a regular file): a model directory needs one"
        )
    raise ConfigError(f"'{source}' carries no config: name a variant (swinv2.list_variants()) or pass a config.json")


def _match_head(config: Swinv2Config, state: Mapping[str, torch.Tensor]) -> Swinv2Config:
    """Give the config the checkpoint's class count when a variant's default differs (a 22k head, say)."""
    head = state.get("classifier.weight")
    if head is not None and head.ndim == 2 and head.shape[0] != config.num_labels:
        return config.replace(num_labels=int(head.shape[0]))
    return config


def load_checkpoint(
    source: str | os.PathLike[str],
    *,
    variant: str | None = None,
    config: ConfigSource = None,
) -> Swinv2PreTrainedModel:
    """Load a Swin V2 checkpoint of any supported layout into the matching model class (eval mode).

    Args:
        source: A transformers directory, or a weight file (.safetensors, .bin, .pth, .pt).
        variant: For files without a config: the named variant whose shapes they have.
        config: Or a `Swinv2Config` / a config.json path.

    Returns:
        `Swinv2ForImageClassification` for classifiers, `Swinv2ForMaskedImageModeling` for SimMIM,
        otherwise the transformers class the directory names.

    Raises:
        FileNotFoundError, CheckpointError, ValueError: each naming the file and the problem.
    """
    path = Path(source)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        if variant is not None or (config is not None and not isinstance(config, Swinv2Config)):
            raise InputError(f"'{path}' carries its own config.json; drop the variant / config file")
        saved = config if isinstance(config, Swinv2Config) else Swinv2Config.from_pretrained(path)
        cls = model_class_for(saved, path)
        return cast(Swinv2PreTrainedModel, cls.from_pretrained(path, config=saved))  # no output_loading_info
    state = read_state_dict(path)
    layout = detect_layout(state, str(path))
    try:
        converted = to_transformers(state, layout)
    except CheckpointError as err:
        raise CheckpointError(f"cannot load '{path}' ({layout} layout): {err}") from None
    base = _resolve_config(variant, config, str(path))
    has_decoder = any(k.startswith("decoder.") for k in converted.tensors)
    cls = Swinv2ForMaskedImageModeling if layout == MICROSOFT_SIMMIM or has_decoder else Swinv2ForImageClassification
    try:
        model = cls(_match_head(base, converted.tensors))
    except InputError as err:  # the config does not describe a buildable model: say which file it was for
        raise type(err)(f"cannot load '{path}': {err}") from None
    read_as = get_variant(variant).name if variant else "the given config"
    context = "" if layout == "transformers" else f"{layout} layout, read as {read_as}"
    model.load_hf_state_dict(converted.tensors, source=str(path), context=context, unexpected=converted.unmatched)
    return model.eval()


def _official_state(model: Swinv2PreTrainedModel, layout: str, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    if not isinstance(model, Swinv2ForImageClassification):
        raise ValueError(
            f"cannot write '{path}': {layout} has no equivalent of {type(model).__name__}; "
            f"only classification models convert to {layout}"
        )
    converted = from_transformers(model.state_dict(), layout)
    if converted.unmatched:
        raise CheckpointError(f"cannot write '{path}': no {layout} name for {converted.unmatched}")
    return converted.tensors


def save_timm(model: Swinv2PreTrainedModel, path: str | os.PathLike[str]) -> None:
    """Write a classification model as a timm state dict (`.safetensors`, or `.pth`/`.bin` via torch.save).

    Raises:
        ValueError: `model` is not a `Swinv2ForImageClassification` (timm has no other head).
    """
    state = _official_state(model, TIMM, path)
    path = Path(path)
    if path.suffix == ".safetensors":
        write_safetensors(path, state)
    else:
        atomic_write(path, lambda tmp: torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp))


def to_microsoft(model: Swinv2PreTrainedModel) -> dict[str, torch.Tensor]:
    """A classification model's tensors under the official release names (without derived buffers).

    Raises:
        ValueError: `model` is not a `Swinv2ForImageClassification`.
    """
    return _official_state(model, MICROSOFT, "a Microsoft checkpoint")
