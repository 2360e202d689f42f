"""`Swinv2PreTrainedModel`: what every model class shares: its config, loading, saving, caches.

Format-neutral: a model's parameter names are transformers', so a transformers directory
(`config.json` + `model.safetensors`) loads with no renaming, and either library reads what the other
writes. Other layouts are renamed in `swinv2.io.keymaps` before they reach a model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from swinv2.config import Swinv2Config
from swinv2.io.checkpoints import LoadReport, load_into_model, read_state_dict, write_safetensors
from swinv2.io.hub import resolve_model_dir
from swinv2.io.keymaps import HEAD_MODULES, is_transformers_encoder_key
from swinv2.models.registry import get_backend, release_caches

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound="Swinv2PreTrainedModel")


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

    Class attributes:
        config_class: The config type the class is built from.
        base_model_prefix: Where head models keep their encoder in the state dict.
        main_input_name: The forward argument that carries the images.
    """

    config_class: type[Swinv2Config] = Swinv2Config
    base_model_prefix = "swinv2"
    main_input_name = "pixel_values"

    def __init__(self, config: Swinv2Config) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"config must be a {self.config_class.__name__}; got {type(config).__name__}")
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
        """Choose the attention implementation: "auto", "sdpa" (fused), "eager" (the reference) or "triton".

        The model gets its own config copy, so other models built from the same config are unaffected.
        """
        config = self.config.replace(attn_implementation=name)  # validates the name
        get_backend(name)  # and that it is registered
        for module in self.modules():
            if isinstance(module, Swinv2PreTrainedModel):
                module.config = config
            elif hasattr(module, "implementation"):
                setattr(module, "implementation", name)  # noqa: B010 (any module with the attribute)

    def train(self: ModelT, mode: bool = True) -> ModelT:
        """`nn.Module.train`; entering training mode also gives back the backends' packed inference
        weights, which training would only leave behind, stale."""
        if mode:
            self._release_derived()
        return super().train(mode)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """`nn.Module.load_state_dict`, after giving back the packed weights: their weak references would
        block `torch.utils.swap_tensors` (used when `torch.__future__` asks loads to swap parameters)."""
        self._release_derived()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        # `.to()`, `.cuda()`, `.half()`...: give the packs back, with the memory they hold and the weak
        # references that would block swapping the parameters
        self._release_derived()
        return super()._apply(fn, recurse)

    def clear_caches(self) -> None:
        """Forget all cached inference terms and packed weights: needed after writes to the parameters that
        PyTorch cannot see (through `.data`, numpy or DLPack); it also gives back the packed weights' memory."""
        self._release_derived()

    def _release_derived(self) -> None:
        """Drop everything derived from the parameters: the modules' cached terms (with the fused
        projections, whose packs go with them) and the backends' packs of the parameters themselves."""
        for module in self.modules():
            clear = getattr(module, "clear_cache", None)
            if callable(clear):
                clear()
        release_caches(self.parameters())

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each block's activations in the backward pass instead of storing them (less memory)."""
        self._set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self) -> None:
        """Store activations again (the default)."""
        self._set_gradient_checkpointing(False)

    def _set_gradient_checkpointing(self, enabled: bool) -> None:
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                setattr(module, "gradient_checkpointing", enabled)  # noqa: B010 (any module with the attribute)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (optionally only those with requires_grad)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------------------ loading
    def load_hf_state_dict(
        self,
        state: Mapping[str, torch.Tensor],
        *,
        source: str = "state dict",
        strict: bool = True,
        ignore_mismatched_sizes: bool = False,
        context: str = "",
        unexpected: Sequence[str] = (),
    ) -> LoadReport:
        """Load transformers-named tensors of any Swinv2 class (base, head or backbone).

        An encoder saved by another class loads too (a classification checkpoint into a
        `Swinv2Backbone`, a base model into a classifier): the `swinv2.` prefix is added or removed as
        this class needs. Known Swin V2 weights this class has no place for (another head's, a final
        norm a backbone lacks) are reported as `unused`; names no Swin V2 model has as `unexpected`.

        Args:
            state: The tensors.
            source: Where they came from, for messages.
            strict: Raise one `CheckpointError` listing every missing, unexpected and wrong-shaped key.
            ignore_mismatched_sizes: Leave wrong-shaped tensors freshly initialised (a new head).
            context: A note for messages (the layout and variant a file was read as).
            unexpected: Keys a conversion already found no name for.
        """
        own = self.state_dict()
        prefix = self.base_model_prefix + "."
        own_prefixed = any(k.startswith(prefix) for k in own)
        file_prefixed = any(k.startswith(prefix) for k in state)
        report = LoadReport(unexpected=list(unexpected))
        mapped: dict[str, torch.Tensor] = {}
        for key, tensor in state.items():
            target = key
            if not key.startswith(HEAD_MODULES):
                relative = key.removeprefix(prefix) if file_prefixed else key
                if not is_transformers_encoder_key(relative):
                    report.unexpected.append(key)
                    continue
                target = prefix + relative if own_prefixed else relative
            if target in own:
                mapped[target] = tensor
            else:
                report.unused.append(key)
        if report.unused:
            logger.info("weights this %s does not use: %s", type(self).__name__, report.unused)
        self._release_derived()
        return load_into_model(
            self,
            mapped,
            source=source,
            strict=strict,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
            report=report,
            context=context,
        )

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write `config.json` and `model.safetensors` into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.extra["architectures"] = [type(self).__name__]
        self.config.extra["dtype"] = str(self.dtype).removeprefix("torch.")
        write_safetensors(directory / "model.safetensors", self.state_dict())
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
            config = cls.config_class.from_pretrained(directory)
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
