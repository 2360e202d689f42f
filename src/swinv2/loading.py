"""Any Swin V2 or Swin2SR checkpoint into the right model class: detect the layout, rename to transformers'
names, load strictly. And the way back out to timm, Microsoft and original Swin2SR names.

timm and Microsoft files carry no config: name a variant (`swinv2.zoo`) or pass a config. Original Swin2SR
files carry none either; their config is read from the tensors (`swinv2.io.swin2sr_keys`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from swinv2.config import CONFIG_NAME, Swin2SRConfig, Swinv2Config
from swinv2.io.checkpoints import CheckpointError, read_state_dict, write_safetensors
from swinv2.io.errors import ConfigError, InputError, quote
from swinv2.io.files import atomic_write
from swinv2.io.hub import resolve_model_dir
from swinv2.io.jsonfile import read_json_object
from swinv2.io.keymaps import (
    MICROSOFT,
    MICROSOFT_SIMMIM,
    SWIN2SR_ORIGINAL,
    TIMM,
    TRANSFORMERS,
    from_transformers,
    to_transformers,
)
from swinv2.io.layouts import detect_layout
from swinv2.io.swin2sr_keys import infer_original_fields, original_to_transformers, transformers_to_original
from swinv2.layers.windows import clamp_window, shifted_window_mask
from swinv2.models import (
    PreTrainedModel,
    Swin2SRForImageSuperResolution,
    Swin2SRModel,
    Swinv2Backbone,
    Swinv2ForImageClassification,
    Swinv2ForMaskedImageModeling,
    Swinv2Model,
    Swinv2PreTrainedModel,
)
from swinv2.models.swinv2 import relative_coords_table, relative_position_index
from swinv2.zoo import Variant, get_variant

MODEL_CLASSES: dict[str, type[Swinv2PreTrainedModel]] = {
    cls.__name__: cls
    for cls in (Swinv2Model, Swinv2ForImageClassification, Swinv2ForMaskedImageModeling, Swinv2Backbone)
}

SR_MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    cls.__name__: cls for cls in (Swin2SRModel, Swin2SRForImageSuperResolution)
}

ConfigSource = Swinv2Config | Swin2SRConfig | str | os.PathLike[str] | None


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
    if isinstance(config, Swin2SRConfig):
        raise InputError(f"'{source}' holds Swin V2 weights; a Swin2SRConfig does not apply")
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


def _saved_model_type(directory: Path) -> Any:
    """The `model_type` a model directory's config.json names (None when it names none)."""
    return read_json_object(directory / CONFIG_NAME, "config.json").get("model_type")


def _load_sr_directory(path: Path, config: ConfigSource) -> PreTrainedModel:
    saved = config if isinstance(config, Swin2SRConfig) else Swin2SRConfig.from_pretrained(path)
    names = saved.extra.get("architectures") or ["Swin2SRForImageSuperResolution"]
    cls = SR_MODEL_CLASSES.get(names[0]) if isinstance(names, list) and names else None
    if cls is None:
        raise CheckpointError(
            f"'{path}' holds a {quote(names[0] if isinstance(names, list) and names else names)}, "
            f"not a Swin2SR model (one of {sorted(SR_MODEL_CLASSES)})"
        )
    return cast(PreTrainedModel, cls.from_pretrained(path, config=saved))


def swin2sr_config_from_weights(
    state: dict[str, torch.Tensor], source: str | os.PathLike[str], **overrides: Any
) -> Swin2SRConfig:
    """The `Swin2SRConfig` an original Swin2SR state dict implies (`swinv2.io.swin2sr_keys.infer_original_fields`),
    with `overrides` winning over what the tensors say (`img_range=255.0` for the JPEG models, say).

    Raises:
        CheckpointError: a tensor the config is read from is missing or misshaped (naming the file and key).
        ConfigError: the result is not a valid config (naming the file); also when the file keeps no derived
            buffer to read `window_size` from and none is given.
    """
    fields = infer_original_fields(state, str(source))
    fields.update(overrides)
    if "window_size" not in fields:
        raise ConfigError(
            f"'{source}' keeps no relative_position_index, relative_coords_table or attn_mask to read the window "
            "size from: pass window_size=... (8 for the released Swin2SR models, 7 for the JPEG ones)"
        )
    try:
        return Swin2SRConfig(**fields)
    except InputError as err:
        raise type(err)(f"cannot load '{source}': {err}") from None


def _given_sr_config(
    config: Swin2SRConfig | str | os.PathLike[str], overrides: dict[str, Any], path: Path
) -> Swin2SRConfig:
    """A given Swin2SR config (object or config.json), with `overrides`; errors name the weight file too."""
    sr_config = config if isinstance(config, Swin2SRConfig) else Swin2SRConfig.from_json_file(config)
    try:
        return sr_config.replace(**overrides) if overrides else sr_config
    except InputError as err:
        raise type(err)(f"cannot load '{path}': {err}") from None


def _build_sr(cls: type[PreTrainedModel], config: Swin2SRConfig, path: Path) -> PreTrainedModel:
    try:
        return cls(config)
    except InputError as err:  # the config does not describe a buildable model: say which file it was for
        raise type(err)(f"cannot load '{path}': {err}") from None


def _load_swin2sr_original(
    path: Path, state: dict[str, torch.Tensor], variant: str | None, config: ConfigSource, overrides: dict[str, Any]
) -> PreTrainedModel:
    if variant is not None or isinstance(config, Swinv2Config):
        raise InputError(f"'{path}' is an original Swin2SR checkpoint: Swin V2 variants and configs do not apply")
    if config is None:
        read_as = "a config read from its tensors"
        sr_config = swin2sr_config_from_weights(state, path, **overrides)
    else:
        read_as = "the given config" if isinstance(config, Swin2SRConfig) else f"'{config}'"
        sr_config = _given_sr_config(config, overrides, path)
    try:
        converted = original_to_transformers(state, sr_config.upsampler, sr_config.upscale)
    except CheckpointError as err:
        raise CheckpointError(f"cannot load '{path}' ({SWIN2SR_ORIGINAL} layout): {err}") from None
    model = _build_sr(Swin2SRForImageSuperResolution, sr_config, path)
    context = f"{SWIN2SR_ORIGINAL} layout, read as {read_as}"
    model.load_hf_state_dict(converted.tensors, source=str(path), context=context, unexpected=converted.unmatched)
    return model.eval()


def load_checkpoint(
    source: str | os.PathLike[str],
    *,
    variant: str | None = None,
    config: ConfigSource = None,
    **overrides: Any,
) -> Any:  # the class depends on the file (see Returns): narrow with isinstance
    """Load a Swin V2 or Swin2SR checkpoint of any supported layout into the matching model class (eval mode).

    Args:
        source: A transformers directory (Swin V2 or Swin2SR), or a weight file (.safetensors, .bin, .pth, .pt).
        variant: For Swin V2 files without a config: the named variant whose shapes they have.
        config: Or a `Swinv2Config` / `Swin2SRConfig` / a config.json path. An original Swin2SR file needs
            none: its config is read from the tensors.
        overrides: Config fields that win over the variant's, the config's or the inferred ones (for an
            original Swin2SR file: `img_range=255.0`, or `window_size` when the file kept no buffer to read it
            from); not for directories, which carry their config.

    Returns:
        `Swinv2ForImageClassification` for classifiers, `Swinv2ForMaskedImageModeling` for SimMIM,
        `Swin2SRForImageSuperResolution` for original Swin2SR files, otherwise the transformers class the
        directory names.

    Raises:
        FileNotFoundError, CheckpointError, ValueError: each naming the file and the problem.
    """
    path = Path(source)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        own_config = config is None or isinstance(config, Swinv2Config | Swin2SRConfig)
        if variant is not None or overrides or not own_config:
            raise InputError(f"'{path}' carries its own config.json; drop the variant / config file / overrides")
        if isinstance(config, Swin2SRConfig) or (config is None and _saved_model_type(path) == "swin2sr"):
            return _load_sr_directory(path, config).eval()
        saved = config if isinstance(config, Swinv2Config) else Swinv2Config.from_pretrained(path)
        cls = model_class_for(saved, path)
        return cast(Swinv2PreTrainedModel, cls.from_pretrained(path, config=saved))  # no output_loading_info
    state = read_state_dict(path)
    layout = detect_layout(state, str(path))
    if layout == SWIN2SR_ORIGINAL:
        return _load_swin2sr_original(path, state, variant, config, overrides)
    if layout == TRANSFORMERS and any(k.startswith("swin2sr.") for k in state):
        return _load_sr_file(path, state, variant, config, overrides)
    try:
        converted = to_transformers(state, layout)
    except CheckpointError as err:
        raise CheckpointError(f"cannot load '{path}' ({layout} layout): {err}") from None
    base = _resolve_config(variant, config, str(path))
    if overrides:
        base = base.replace(**overrides)
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


def _load_sr_file(
    path: Path, state: dict[str, torch.Tensor], variant: str | None, config: ConfigSource, overrides: dict[str, Any]
) -> PreTrainedModel:
    """A transformers-named Swin2SR state dict (a bare weight file): its config must be given."""
    if variant is not None or isinstance(config, Swinv2Config):
        raise InputError(f"'{path}' holds Swin2SR weights: Swin V2 variants and configs do not apply")
    if config is None:
        raise ConfigError(f"'{path}' carries no config: pass a Swin2SRConfig or its config.json")
    sr_config = _given_sr_config(config, overrides, path)
    has_head = any(not k.startswith("swin2sr.") for k in state)
    model = _build_sr(Swin2SRForImageSuperResolution if has_head else Swin2SRModel, sr_config, path)
    model.load_hf_state_dict(state, source=str(path))
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


#: The value the release's stored shift masks hold for a masked pair (ours compute with `MASKED`).
_RELEASE_MASKED = -100.0


def _swin2sr_derived_buffers(config: Swin2SRConfig) -> dict[str, torch.Tensor]:
    """The buffers the release's model stores beside its weights (its `load_state_dict(strict=True)` wants them):
    every block's coordinate table and index, and each shifted block's mask for the training image size.
    The window and shift follow the release's rule (one unshifted window when the image is no larger)."""
    H, W = config.image_hw
    window, shift = clamp_window(min(H, W), config.window_size, config.window_size // 2)
    table = relative_coords_table(window, 0)[None]  # (1, 2ws-1, 2ws-1, 2)
    index = relative_position_index(window)  # (N, N)
    mask = None
    if shift and H % window == 0 and W % window == 0:
        mask = shifted_window_mask((H, W), window, shift, device=None, dtype=torch.float32)  # (nW, N, N)
        mask = torch.zeros_like(mask).masked_fill(mask != 0, _RELEASE_MASKED)
    buffers: dict[str, torch.Tensor] = {}
    for i, depth in enumerate(config.depths):
        for j in range(depth):
            block = f"layers.{i}.residual_group.blocks.{j}."
            buffers[block + "attn.relative_coords_table"] = table.clone()
            buffers[block + "attn.relative_position_index"] = index.clone()
            if j % 2 and mask is not None:
                buffers[block + "attn_mask"] = mask.clone()
    return buffers


def to_swin2sr_original(model: PreTrainedModel, *, buffers: bool = True) -> dict[str, torch.Tensor]:
    """A `Swin2SRForImageSuperResolution`'s tensors under the original Swin2SR release's names (q/k/v fused).

    Args:
        model: The model.
        buffers: Also the derived buffers the release stores (coordinate tables, indices, shift masks), which
            its own strict load requires and from which `load_checkpoint` reads the window size back.

    Raises:
        ValueError: `model` is not a `Swin2SRForImageSuperResolution`.
        CheckpointError: a tensor has no name in the release (none should).
    """
    if not isinstance(model, Swin2SRForImageSuperResolution):
        raise ValueError(
            f"only a Swin2SRForImageSuperResolution converts to the original Swin2SR layout; got {type(model).__name__}"
        )
    config = model.config
    converted = transformers_to_original(model.state_dict(), config.upsampler, config.upscale)
    if converted.unmatched:
        raise CheckpointError(f"no original Swin2SR name for {converted.unmatched}")
    state = {k: v.detach().cpu() for k, v in converted.tensors.items()}
    return state | _swin2sr_derived_buffers(config) if buffers else state


def save_swin2sr_original(model: PreTrainedModel, path: str | os.PathLike[str], *, wrapper: str | None = None) -> None:
    """Write a Swin2SR model as an original-release checkpoint (weights and derived buffers): `.safetensors`,
    or `.pth`/`.bin` via torch.save, optionally under `wrapper` ("params" or "params_ema", as BasicSR writes).

    The file holds no config: `load_checkpoint` reads it back from the tensors, all but `img_range`, which a
    model with `img_range` other than 1.0 needs passed again (`load_checkpoint(path, img_range=255.0)`).

    Raises:
        ValueError: not a `Swin2SRForImageSuperResolution`, or a wrapper asked of a safetensors file.
    """
    path = Path(path)
    if path.suffix == ".safetensors" and wrapper is not None:
        raise ValueError(f"cannot write '{path}': a safetensors file has no wrapper key; drop wrapper={wrapper!r}")
    state = to_swin2sr_original(model)
    if path.suffix == ".safetensors":
        write_safetensors(path, state)
    else:
        data: dict[str, Any] = state if wrapper is None else {wrapper: state}
        atomic_write(path, lambda tmp: torch.save(data, tmp))
