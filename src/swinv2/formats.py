"""Any Swin V2 checkpoint into our models: detect the layout from the keys, rename, load strictly.

Layouts:
    transformers  `embeddings.patch_embeddings...`, `encoder.layers.i.blocks.j.attention.self.query`,
                  optional `swinv2.` prefix; a directory with config.json carries its own config.
    timm          `patch_embed.proj`, `layers.i.blocks.j.attn.qkv` + `q_bias`/`v_bias`, `cpb_mlp`;
                  patch merging at the start of stage i+1 (`layers.{i+1}.downsample`); `head.fc`.
    microsoft     the official release: tensors under `model`, merging at the end of stage i
                  (`layers.i.downsample`), `head`, plus the derived buffers `relative_coords_table`,
                  `relative_position_index` and `attn_mask`, which are dropped (we rebuild them).
    microsoft-simmim  SimMIM pre-training: the encoder under `encoder.` with `encoder.mask_token`,
                  the decoder as `decoder.0`.
timm and Microsoft files carry no config: name a variant (`swinv2.zoo`) or pass a config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from swinv2.config import CONFIG_NAME, Swinv2Config
from swinv2.convert import from_timm, to_timm
from swinv2.io.checkpoints import CheckpointError, load_into_model, read_state_dict, write_safetensors
from swinv2.io.files import atomic_write
from swinv2.models import (
    Swinv2Backbone,
    Swinv2ForImageClassification,
    Swinv2ForMaskedImageModeling,
    Swinv2Model,
    Swinv2PreTrainedModel,
)
from swinv2.zoo import get_variant

TRANSFORMERS, TIMM, MICROSOFT, MICROSOFT_SIMMIM = "transformers", "timm", "microsoft", "microsoft-simmim"
LAYOUTS = (TRANSFORMERS, TIMM, MICROSOFT, MICROSOFT_SIMMIM)

_CPB = re.compile(r"(^|\.)layers\.\d+\.blocks\.\d+\.attn\.cpb_mlp\.")
_V1_BIAS_TABLE = re.compile(r"\.attn\.relative_position_bias_table$")
_DERIVED_BUFFER = re.compile(r"\.(relative_coords_table|relative_position_index|attn_mask)$")
_MICROSOFT_SIMMIM_PREFIX = "encoder."

_HF_CLASSES: dict[str, type[Swinv2PreTrainedModel]] = {
    cls.__name__: cls
    for cls in (Swinv2Model, Swinv2ForImageClassification, Swinv2ForMaskedImageModeling, Swinv2Backbone)
}


def detect_layout(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> str:
    """Which layout `state`'s keys follow (one of `LAYOUTS`).

    Raises:
        CheckpointError: the keys are not a Swin V2 checkpoint (a V1 Swin, another architecture).
    """
    keys = list(state)
    if any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in keys):
        return TRANSFORMERS
    if any(_V1_BIAS_TABLE.search(k) for k in keys):
        raise CheckpointError(f"'{source}' is a Swin Transformer V1 checkpoint (relative_position_bias_table), not V2")
    if not any(_CPB.search(k) for k in keys):
        raise CheckpointError(
            f"'{source}' does not look like a Swin V2 checkpoint: no patch embedding and no "
            f"continuous-position-bias (cpb_mlp) weights among its {len(keys)} tensors"
        )
    if "encoder.patch_embed.proj.weight" in state:
        return MICROSOFT_SIMMIM
    if "head.fc.weight" in state:
        return TIMM
    if "head.weight" in state or "layers.0.downsample.reduction.weight" in state:
        return MICROSOFT
    if any(_DERIVED_BUFFER.search(k) for k in keys):
        return MICROSOFT
    return TIMM


def _from_microsoft(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Microsoft classification names -> ours (same encoder names; `head` is our `classifier`)."""
    out = {}
    for key, tensor in state.items():
        if _DERIVED_BUFFER.search(key):
            continue
        out[("classifier." + key.removeprefix("head.")) if key.startswith("head.") else "swinv2." + key] = tensor
    return out


def _from_microsoft_simmim(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Microsoft SimMIM names -> our `Swinv2ForMaskedImageModeling` names."""
    out = {}
    for key, tensor in state.items():
        if _DERIVED_BUFFER.search(key):
            continue
        if key.startswith(_MICROSOFT_SIMMIM_PREFIX):
            out["swinv2." + key.removeprefix(_MICROSOFT_SIMMIM_PREFIX)] = tensor
        else:
            out[key] = tensor
    return out


def to_microsoft(model: Swinv2ForImageClassification) -> dict[str, torch.Tensor]:
    """Our classification model's tensors under the official release names (without derived buffers)."""
    out = {}
    for key, tensor in model.state_dict().items():
        out[
            ("head." + key.removeprefix("classifier."))
            if key.startswith("classifier.")
            else key.removeprefix("swinv2.")
        ] = tensor
    return out


ConfigSource = Swinv2Config | str | os.PathLike[str] | None


def _resolve_config(variant: str | None, config: ConfigSource, source: str) -> Swinv2Config:
    if variant is not None and config is not None:
        raise ValueError("give a variant or a config, not both")
    if variant is not None:
        return get_variant(variant).config()
    if isinstance(config, Swinv2Config):
        return config
    if config is not None:
        return Swinv2Config.from_json_file(config)
    raise ValueError(f"'{source}' carries no config: name a variant (swinv2.list_variants()) or pass a config.json")


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
            raise ValueError(f"'{path}' carries its own config.json; drop the variant / config file")
        saved = config if isinstance(config, Swinv2Config) else Swinv2Config.from_pretrained(path)
        names = saved.extra.get("architectures") or ["Swinv2ForImageClassification"]
        cls = _HF_CLASSES.get(names[0])
        if cls is None:
            raise CheckpointError(f"'{path}' holds a {names[0]}, not a Swin V2 model")
        return cls.from_pretrained(path, config=saved)  # type: ignore[return-value]
    state = read_state_dict(path)
    layout = detect_layout(state, str(path))
    base = _resolve_config(variant, config, str(path))
    model: Swinv2PreTrainedModel
    if layout == TRANSFORMERS:
        cls = (
            Swinv2ForMaskedImageModeling
            if any(k.startswith("decoder.") for k in state)
            else Swinv2ForImageClassification
        )
        model = cls(_match_head(base, state))
        model.load_hf_state_dict(state, source=str(path))
        return model.eval()
    if layout == MICROSOFT_SIMMIM:
        ours = _from_microsoft_simmim(state)
        model = Swinv2ForMaskedImageModeling(base)
    else:
        ours = from_timm(state) if layout == TIMM else _from_microsoft(state)
        model = Swinv2ForImageClassification(_match_head(base, ours))
    context = f"{layout} layout, read as {get_variant(variant).name if variant else 'the given config'}"
    load_into_model(model, ours, source=str(path), context=context)
    return model.eval()


def save_timm(model: Swinv2ForImageClassification, path: str | os.PathLike[str]) -> None:
    """Write a classification model as a timm state dict (`.safetensors`, or `.pth`/`.bin` via torch.save)."""
    if not isinstance(model, Swinv2ForImageClassification):
        raise ValueError(
            f"cannot write '{path}': timm has no equivalent of {type(model).__name__}; "
            "only classification models convert to timm"
        )
    state = to_timm(model.state_dict())
    path = Path(path)
    if path.suffix == ".safetensors":
        write_safetensors(path, state)
    else:
        atomic_write(path, lambda tmp: torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp))
