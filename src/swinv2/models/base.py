"""`Swinv2PreTrainedModel`: what every Swin V2 model class shares, chiefly loading and saving.

On disk a model is a transformers directory: `config.json` + `model.safetensors` with transformers'
parameter names, so either library reads what the other writes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from swinv2 import kernels
from swinv2.config import Swinv2Config
from swinv2.convert import encoder_from_hf, encoder_to_hf, hf_encoder_name
from swinv2.io.checkpoints import LoadReport, load_into_model, read_state_dict, write_safetensors
from swinv2.io.hub import resolve_model_dir

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound="Swinv2PreTrainedModel")

_HEAD_PREFIX = "swinv2."  # where transformers' head models keep the encoder
_HEAD_MODULES = ("classifier.", "decoder.")


def _resolve_device(device: str | torch.device | None) -> torch.device | None:
    if device is None:
        return None
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_dtype(dtype: str | torch.dtype | None, config: Swinv2Config) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        dtype = config.extra.get("dtype") or config.extra.get("torch_dtype") or "float32"
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype or its name; got {dtype!r}")
    return resolved


class Swinv2PreTrainedModel(nn.Module):
    """Base of the Swin V2 models: holds the config, loads and saves transformers-format directories.

    Subclasses set `encoder_prefix` (where our encoder lives in the state dict) and
    `hf_encoder_prefix` (where transformers' class of the same name keeps it).
    """

    main_input_name = "pixel_values"
    encoder_prefix = "swinv2."
    hf_encoder_prefix = "swinv2."

    def __init__(self, config: Swinv2Config) -> None:
        super().__init__()
        if not isinstance(config, Swinv2Config):
            raise TypeError(f"config must be a Swinv2Config; got {type(config).__name__}")
        self.config = config

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the parameters."""
        return next(self.parameters()).dtype

    def with_config(self: ModelT, config: Swinv2Config) -> ModelT:
        """A freshly initialised model of this class, built the same way, for another config."""
        return type(self)(config)

    def set_attn_implementation(self, name: str) -> None:
        """Choose the attention implementation: "auto", "sdpa" (fused) or "eager" (explicit scores).

        The model gets its own config copy, so other models built from the same config are unaffected.
        """
        config = self.config.replace(attn_implementation=name)  # validates the name
        for module in self.modules():
            if isinstance(module, Swinv2PreTrainedModel):
                module.config = config
            elif hasattr(module, "implementation"):
                module.implementation = name

    def train(self: ModelT, mode: bool = True) -> ModelT:
        """`nn.Module.train`; entering training mode also gives back the packed inference weights
        (`swinv2.kernels`), which training would only leave behind, stale."""
        if mode:
            kernels.forget_packed(self.parameters())
        return super().train(mode)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """`nn.Module.load_state_dict`, after giving back the packed weights: their weak references would
        block `torch.utils.swap_tensors` (used when `torch.__future__` asks loads to swap parameters)."""
        kernels.forget_packed(self.parameters())
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        # `.to()`, `.cuda()`, `.half()`...: give the packs back, with the memory they hold and the weak
        # references that would block swapping the parameters
        kernels.forget_packed(self.parameters())
        return super()._apply(fn, recurse)

    def clear_caches(self) -> None:
        """Forget all cached inference terms and packed weights: needed after writes to the parameters that
        PyTorch cannot see (through `.data`, numpy or DLPack); it also gives back the packed weights'
        memory (see `swinv2.kernels`)."""
        for module in self.modules():
            if hasattr(module, "clear_cache"):
                module.clear_cache()
        kernels.forget_packed(self.parameters())

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each block's activations in the backward pass instead of storing them (less memory)."""
        self._set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self) -> None:
        """Store activations again (the default)."""
        self._set_gradient_checkpointing(False)

    def _set_gradient_checkpointing(self, enabled: bool) -> None:
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = enabled

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (optionally only those with requires_grad)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------------ transformers format
    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's tensors under transformers' names for the same class."""
        return self.to_hf_names(self.state_dict())

    def to_hf_names(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename tensors keyed by this model's parameter names (weights, gradients, ...) to transformers'."""
        encoder = {
            k.removeprefix(self.encoder_prefix): v for k, v in tensors.items() if k.startswith(self.encoder_prefix)
        }
        converted = encoder_to_hf(encoder)
        if converted.unmatched:
            raise KeyError(f"no transformers name for {converted.unmatched}")
        out = {self.hf_encoder_prefix + k: v for k, v in converted.tensors.items()}
        out.update({k: v for k, v in tensors.items() if not k.startswith(self.encoder_prefix)})
        return out

    def load_hf_state_dict(
        self,
        state: dict[str, torch.Tensor],
        *,
        source: str = "state dict",
        strict: bool = True,
        ignore_mismatched_sizes: bool = False,
    ) -> LoadReport:
        """Load transformers-named tensors of any Swinv2 class (base, head or backbone).

        An encoder saved by another class loads too: a classification checkpoint into a
        `Swinv2Backbone`, say. Weights of heads this class does not have are reported as `unused`.
        """
        checkpoint_prefix = _HEAD_PREFIX if any(k.startswith(_HEAD_PREFIX) for k in state) else ""
        encoder_state, heads, file_names = {}, {}, {}
        for key, tensor in state.items():
            if key.startswith(_HEAD_MODULES):
                heads[key] = tensor
            else:
                relative = key.removeprefix(checkpoint_prefix)
                encoder_state[relative] = tensor
                file_names[relative] = key
        converted = encoder_from_hf(encoder_state, num_patches=self.config.patch_grid[0] * self.config.patch_grid[1])
        own_keys = set(self.state_dict())
        report = LoadReport(unexpected=[file_names[k] for k in converted.unmatched])
        mapped: dict[str, torch.Tensor] = {}
        for relative, tensor in converted.tensors.items():
            if self.encoder_prefix + relative in own_keys:
                mapped[self.encoder_prefix + relative] = tensor
            else:  # another class's part of the encoder (a final norm, a mask token), named as in the file
                report.unused.append(checkpoint_prefix + (hf_encoder_name(relative) or relative))
        for key, tensor in heads.items():
            if key in own_keys:
                mapped[key] = tensor
            else:
                report.unused.append(key)
        if report.unused:
            logger.info("weights this %s does not use: %s", type(self).__name__, report.unused)
        return load_into_model(
            self,
            mapped,
            source=source,
            strict=strict,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
            report=report,
            display_names=self.hf_name,
        )

    def hf_name(self, key: str) -> str:
        """transformers' name(s) for one of this model's state-dict keys ("a | b | c" for the fused qkv)."""
        placeholder = torch.empty(3)  # only the names matter; the qkv split needs three rows
        return " | ".join(self.to_hf_names({key: placeholder}))

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write `config.json` and `model.safetensors` (transformers' names) into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.extra["architectures"] = [type(self).__name__]
        self.config.extra["dtype"] = str(self.dtype).removeprefix("torch.")
        write_safetensors(directory / "model.safetensors", self.hf_state_dict())
        self.config.save_pretrained(directory)
        return directory

    @classmethod
    def from_pretrained(
        cls: type[ModelT],
        name_or_path: str | os.PathLike[str],
        *,
        config: Swinv2Config | None = None,
        device: str | torch.device | None = None,
        device_map: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        torch_dtype: str | torch.dtype | None = None,
        strict: bool = True,
        ignore_mismatched_sizes: bool = False,
        output_loading_info: bool = False,
        **config_overrides: Any,
    ) -> ModelT | tuple[ModelT, LoadReport]:
        """Load a model from a transformers-format directory or a Hub id.

        Args:
            name_or_path: Directory with config.json and model.safetensors (or pytorch_model.bin),
                or a Hub id (needs huggingface_hub and a network).
            config: Use this config instead of the directory's.
            device / device_map: Where to put the model; "auto" picks CUDA when available.
            dtype / torch_dtype: Parameter dtype, a torch dtype or its name; "auto" uses the saved one.
            strict: Raise on missing, unexpected or wrong-shaped keys (listing all of them).
            ignore_mismatched_sizes: Re-initialise wrong-shaped tensors (a new head, say).
            output_loading_info: Also return the `LoadReport`.
            **config_overrides: Config fields to change, e.g. `num_labels=10` or
                `out_features=["stage2", "stage4"]`.

        Example:
            >>> model = Swinv2ForImageClassification.from_pretrained("path/to/dir", num_labels=10,
            ...                                                       ignore_mismatched_sizes=True)
        """
        directory = resolve_model_dir(name_or_path)
        if config is None:
            config = Swinv2Config.from_pretrained(directory)
        if config_overrides:
            config = config.replace(**config_overrides)
        model = cls(config)
        report = model.load_hf_state_dict(
            read_state_dict(directory),
            source=str(directory),
            strict=strict,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
        )
        model.to(device=_resolve_device(device or device_map), dtype=_resolve_dtype(dtype or torch_dtype, config))
        model.eval()
        return (model, report) if output_loading_info else model
