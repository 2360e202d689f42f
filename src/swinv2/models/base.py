"""`PreTrainedModel`: what every model class shares: its config, loading, saving, caches; and
`Swinv2PreTrainedModel`, the base of the Swin V2 classes (the Swin2SR classes have theirs in
`swinv2.models.swin2sr`).

Format-neutral: a model's parameter names are transformers', so a transformers directory
(`config.json` + `model.safetensors`) loads with no renaming, and either library reads what the other
writes. Other layouts are renamed in `swinv2.io.keymaps` before they reach a model. What differs
between model families is a handful of class attributes and hooks: `config_class`,
`base_model_prefix`, `head_modules`, `is_encoder_key` and `config_size`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from swinv2.config import CONFIG_NAME, Swinv2Config
from swinv2.config.common import ConfigFile
from swinv2.io.checkpoints import (
    PICKLE_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    CheckpointError,
    LoadReport,
    load_into_model,
    parse_shard_size,
    read_state_dict,
    split_into_shards,
    weight_file_bytes,
    write_safetensors,
)
from swinv2.io.errors import InputError
from swinv2.io.files import atomic_write, atomic_write_text
from swinv2.io.hub import resolve_model_dir
from swinv2.io.keymaps import HEAD_MODULES, is_transformers_encoder_key
from swinv2.io.limits import check_memory
from swinv2.layers.weight_init import trunc_normal_init
from swinv2.models.registry import get_backend, release_caches
from swinv2.models.size import Head, ModelSize, model_size

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound="PreTrainedModel")


def _resolve_device(device: str | torch.device | None) -> torch.device | None:
    if device is None:
        return None
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_dtype(dtype: str | torch.dtype | None, config: ConfigFile) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        dtype = config.dtype or "float32"
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype or its name; got {dtype!r}")
    return resolved


_SHARD_NAME = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
#: A main-branch norm of `Swinv2Config.extra_norm_period` (`Swinv2Block.extra_norm`), no prefix. Not a
#: transformers name (its Swinv2 has no such norm), so not in `swinv2.io.keymaps`' tables.
_EXTRA_NORM_KEY = re.compile(r"encoder\.layers\.\d+\.blocks\.(?P<j>\d+)\.extra_norm\.(?:weight|bias)$")


class LoadingInfo(LoadReport, dict[str, Any]):
    """What `from_pretrained(..., output_loading_info=True)` returns beside the model.

    It is transformers' loading-info dict: `missing_keys`, `unexpected_keys` (every checkpoint key the
    model has no place for, another head's included) and `mismatched_keys` ((key, checkpoint shape,
    model shape), re-initialised ones included) as sets, `error_msgs` as a list; and it is this
    library's `LoadReport` (`missing`, `unexpected`, `mismatched`, `unused`, `reinitialized`, `ok`).
    """

    __eq__ = dict.__eq__
    __hash__ = None
    __repr__ = dict.__repr__

    def __init__(self, report: LoadReport, shapes: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]]) -> None:
        LoadReport.__init__(
            self,
            missing=list(report.missing),
            unexpected=list(report.unexpected),
            mismatched=list(report.mismatched),
            unused=list(report.unused),
            reinitialized=list(report.reinitialized),
        )
        dict.__init__(
            self,
            missing_keys=set(report.missing),
            unexpected_keys=set(report.unexpected) | set(report.unused),
            mismatched_keys=set(report.mismatched) | {(k, *shapes[k]) for k in report.reinitialized if k in shapes},
            error_msgs=[],
        )


class _Saveable(Protocol):
    def save_pretrained(self, directory: str | os.PathLike[str]) -> Any: ...


class BackboneType(str, Enum):
    """Where a backbone's weights come from (transformers' `BackboneType` values)."""

    TIMM = "timm"
    TRANSFORMERS = "transformers"


class PreTrainedModel(nn.Module):
    """Base of every model class: holds the config, loads and saves transformers-format directories.

    Class attributes (set by each model family's base):
        config_class: The config type the class is built from.
        base_model_prefix: Where head models keep their encoder in the state dict.
        head_modules: Prefixes of transformers' head parameters, outside the encoder.
        main_input_name: The forward argument that carries the images.
    """

    config_class: type[ConfigFile]
    config: Any  # a `config_class` instance; each family's base narrows the type
    base_model_prefix: str
    head_modules: tuple[str, ...] = ()
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True

    def __init__(self, config: ConfigFile) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"config must be a {self.config_class.__name__}; got {type(config).__name__}")
        if torch.get_default_device().type != "meta":  # a meta-device build allocates nothing
            size = self.config_size(config)
            check_memory(size.total_bytes, f"building {type(self).__name__} ({size.parameters:,} parameters)")
        self.config = config
        self._weights_initialized = False

    # ------------------------------------------------------------------- family hooks
    @classmethod
    def config_size(cls, config: Any) -> ModelSize:
        """Parameters and memory a model of this class built from `config` needs (checked before building)."""
        raise NotImplementedError

    @classmethod
    def encoder_parameters(cls, config: Any) -> int:
        """Parameters of the encoder alone (what any checkpoint for `config` must at least hold)."""
        raise NotImplementedError

    @staticmethod
    def is_encoder_key(key: str) -> bool:
        """Whether `key` (no prefix) names a tensor of this family's transformers encoder."""
        raise NotImplementedError

    # ------------------------------------------------------------------- transformers' surface
    def post_init(self) -> None:
        """transformers' end-of-`__init__` hook: initialise the weights, unless that is done already (every
        class of this library initialises its own; a subclass adding modules calls this last)."""
        if not self._weights_initialized:
            self._initialize_weights()
            self._weights_initialized = True

    def _initialize_weights(self) -> None:
        """Truncated-normal linears and convolutions, identity norms, for every module that is not inside an
        already-initialised Swin V2 model. Classes with parameters of their own kinds override this."""

        def visit(module: nn.Module) -> None:
            for child in module.children():
                if isinstance(child, PreTrainedModel) and child._weights_initialized:
                    continue
                trunc_normal_init(child, self.config.initializer_range)
                visit(child)

        visit(self)

    @property
    def base_model(self) -> nn.Module:
        """The encoder: the `base_model_prefix` attribute of a head model, the model itself otherwise."""
        found = getattr(self, self.base_model_prefix, self)
        return found if isinstance(found, nn.Module) else self

    @classmethod
    def can_generate(cls) -> bool:
        """False: no Swin V2 model generates sequences."""
        return False

    def get_input_embeddings(self) -> nn.Module:
        """The patch embedding (`embeddings.patch_embeddings`: pad, strided projection, flatten), as transformers."""
        base = self.base_model
        if base is not self and isinstance(base, PreTrainedModel):
            return base.get_input_embeddings()
        return self.get_submodule("embeddings.patch_embeddings")

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replace the patch embedding; `value` maps (B, C_in, H, W) to (B, L, C) tokens and their (H, W) grid."""
        base = self.base_model
        if base is not self and isinstance(base, PreTrainedModel):
            base.set_input_embeddings(value)
        else:
            setattr(self.get_submodule("embeddings"), "patch_embeddings", value)  # noqa: B010

    def _output_options(
        self, output_attentions: bool | None, output_hidden_states: bool | None, return_dict: bool | None
    ) -> tuple[bool, bool, bool]:
        """The forward's output switches, each None taken from the config as transformers does."""
        config = self.config
        return (
            config.output_attentions if output_attentions is None else output_attentions,
            config.output_hidden_states if output_hidden_states is None else output_hidden_states,
            config.use_return_dict if return_dict is None else return_dict,
        )

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the parameters."""
        return next(self.parameters()).dtype

    def with_config(self: ModelT, config: Any) -> ModelT:
        """A freshly initialised model of this class, built the same way, for another config."""
        return type(self)(config)

    def set_attn_implementation(self, name: str) -> None:
        """Choose the attention implementation: "auto", "sdpa" (fused), "eager" (the reference) or "triton".

        The model gets its own config copy, so other models built from the same config are unaffected.
        """
        config = self.config.replace(attn_implementation=name)  # validates the name
        get_backend(name)  # and that it is registered
        for module in self.modules():
            if isinstance(module, PreTrainedModel):
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

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict[str, Any] | None = None) -> None:
        """Recompute each block's activations in the backward pass instead of storing them (less memory).

        Args:
            gradient_checkpointing_kwargs: Keyword arguments of `torch.utils.checkpoint.checkpoint`;
                default `{"use_reentrant": False}`, as transformers.
        """
        self._set_gradient_checkpointing(True, dict(gradient_checkpointing_kwargs or {"use_reentrant": False}))

    def gradient_checkpointing_disable(self) -> None:
        """Store activations again (the default)."""
        self._set_gradient_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        """Whether any stage recomputes its activations in the backward pass."""
        return any(bool(getattr(m, "gradient_checkpointing", False)) for m in self.modules())

    def _set_gradient_checkpointing(self, enabled: bool, kwargs: dict[str, Any] | None = None) -> None:
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                setattr(module, "gradient_checkpointing", enabled)  # noqa: B010 (any module with the attribute)
                if kwargs is not None:
                    setattr(module, "checkpoint_kwargs", dict(kwargs))  # noqa: B010

    def num_parameters(
        self, only_trainable: bool = False, exclude_embeddings: bool = False, *, trainable_only: bool | None = None
    ) -> int:
        """Number of parameters, as transformers counts them.

        Args:
            only_trainable: Count only those with requires_grad (`trainable_only` is the older name).
            exclude_embeddings: Leave out `nn.Embedding` weights (Swin V2 has none: the count is the same).
        """
        if trainable_only is not None:
            only_trainable = trainable_only
        embeddings = {f"{name}.weight" for name, m in self.named_modules() if isinstance(m, nn.Embedding)}
        return sum(
            p.numel()
            for name, p in self.named_parameters()
            if (p.requires_grad or not only_trainable) and not (exclude_embeddings and name in embeddings)
        )

    # ------------------------------------------------------------------------------ loading
    def _map_hf_state(self, state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
        """Rename transformers-named tensors of any class of this family to this model's keys: (mapped,
        unexpected, unused)."""
        own = self.state_dict()
        prefix = self.base_model_prefix + "."
        own_prefixed = any(k.startswith(prefix) for k in own)
        file_prefixed = any(k.startswith(prefix) for k in state)
        mapped: dict[str, torch.Tensor] = {}
        unexpected: list[str] = []
        unused: list[str] = []
        for key, tensor in state.items():
            target = key
            if not key.startswith(self.head_modules):
                relative = key.removeprefix(prefix) if file_prefixed else key
                if not self.is_encoder_key(relative):
                    unexpected.append(key)
                    continue
                target = prefix + relative if own_prefixed else relative
            if target in own:
                mapped[target] = tensor
            else:
                unused.append(key)
        return mapped, unexpected, unused

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
        """Load transformers-named tensors of any class of this family (base, head or backbone).

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
        mapped, unknown, unused = self._map_hf_state(state)
        report = LoadReport(unexpected=[*unexpected, *unknown], unused=unused)
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

    def _load_pretrained_state(
        self, state: Mapping[str, torch.Tensor], source: str, strict: bool | None, ignore_mismatched_sizes: bool
    ) -> LoadingInfo:
        """`load_hf_state_dict`, with transformers' rule when `strict` is None: a head (`classifier.`,
        `decoder.`) the checkpoint lacks keeps its fresh initialisation, with a warning naming its keys;
        any other problem raises as with strict=True."""
        mapped, unknown, unused = self._map_hf_state(state)
        own = self.state_dict()
        fresh = [k for k in own if k not in mapped]
        new_head = strict is None and bool(fresh) and all(k.startswith(self.head_modules) for k in fresh)
        if unused:
            logger.info("weights this %s does not use: %s", type(self).__name__, unused)
        self._release_derived()

        def load(tensors: Mapping[str, torch.Tensor], strict: bool) -> LoadReport:
            report = LoadReport(unexpected=list(unknown), unused=list(unused))
            return load_into_model(
                self,
                tensors,
                source=source,
                strict=strict,
                ignore_mismatched_sizes=ignore_mismatched_sizes,
                report=report,
            )

        if new_head:
            try:
                report = load({**mapped, **{k: own[k].clone() for k in fresh}}, strict=True)
            except CheckpointError:
                load(mapped, strict=True)  # raises, listing the head's keys among the rest
                raise
            report.missing = fresh
            logger.warning(
                "Some weights of %s were not initialized from the checkpoint at %s and are newly initialized: %s; "
                "train this model on a down-stream task before using it for predictions",
                type(self).__name__,
                source,
                fresh,
            )
        else:
            report = load(mapped, strict=strict is not False)
        shapes = {k: (tuple(t.shape), tuple(own[k].shape)) for k, t in mapped.items()}
        return LoadingInfo(report, shapes)

    # ------------------------------------------------------------------------------- saving
    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        *,
        safe_serialization: bool = True,
        state_dict: Mapping[str, torch.Tensor] | None = None,
        max_shard_size: int | str | None = None,
        image_processor: _Saveable | None = None,
    ) -> Path:
        """Write `config.json` and the weights into `save_directory`, as transformers lays them out.

        Args:
            save_directory: Created if needed.
            safe_serialization: Write `model.safetensors`; False writes `pytorch_model.bin` (`torch.save`).
            state_dict: Write these tensors instead of the model's own.
            max_shard_size: Split safetensors weights larger than this (bytes, or "5GB"-style) into
                `model-0000i-of-0000n.safetensors` and `model.safetensors.index.json`; None: one file.
            image_processor: Also write its `preprocessor_config.json` (through its `save_pretrained`).

        Every file is written atomically; weight files of another layout that would shadow the new ones
        on loading (and stale shards) are removed.
        """
        directory = Path(save_directory)
        if directory.is_file():
            raise NotADirectoryError(f"save_pretrained expects a directory; '{directory}' is a file")
        directory.mkdir(parents=True, exist_ok=True)
        state = self.state_dict() if state_dict is None else state_dict
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
        max_bytes = None if max_shard_size is None else parse_shard_size(max_shard_size)
        shards = [list(tensors)] if max_bytes is None else split_into_shards(tensors, max_bytes)
        if not safe_serialization and len(shards) > 1:
            raise ValueError("sharded weights are written as safetensors only; pass safe_serialization=True")

        written: set[str] = set()
        if not safe_serialization:
            tensors = {k: v.clone() for k, v in tensors.items()}  # own storages: no views of larger tensors
            atomic_write(directory / PICKLE_WEIGHTS_NAME, lambda tmp: torch.save(tensors, tmp))
            written.add(PICKLE_WEIGHTS_NAME)
        elif len(shards) <= 1:
            write_safetensors(directory / SAFE_WEIGHTS_NAME, tensors)
            written.add(SAFE_WEIGHTS_NAME)
        else:
            weight_map: dict[str, str] = {}
            for i, keys in enumerate(shards, start=1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                write_safetensors(directory / name, {k: tensors[k] for k in keys})
                weight_map.update(dict.fromkeys(keys, name))
                written.add(name)
            total_size = sum(t.numel() * t.element_size() for t in tensors.values())
            index = {
                "metadata": {"total_parameters": self.num_parameters(), "total_size": total_size},
                "weight_map": weight_map,
            }
            atomic_write_text(directory / SAFE_WEIGHTS_INDEX_NAME, json.dumps(index, indent=2, sort_keys=True) + "\n")
            written.add(SAFE_WEIGHTS_INDEX_NAME)
        for path in directory.iterdir():
            stale = path.name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME) or _SHARD_NAME.fullmatch(path.name)
            if stale and path.name not in written and path.is_file():
                path.unlink()

        self.config.extra["architectures"] = [type(self).__name__]
        self.config.dtype = str(self.dtype).removeprefix("torch.")
        self.config.save_pretrained(directory)
        if image_processor is not None:
            image_processor.save_pretrained(directory)
        return directory

    @classmethod
    def from_pretrained(
        cls: type[ModelT],
        pretrained_model_name_or_path: str | os.PathLike[str] | None,
        *,
        config: ConfigFile | None = None,
        state_dict: Mapping[str, torch.Tensor] | None = None,
        subfolder: str = "",
        device: str | torch.device | None = None,
        device_map: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        torch_dtype: str | torch.dtype | None = None,
        strict: bool | None = None,
        ignore_mismatched_sizes: bool = False,
        output_loading_info: bool = False,
        **config_overrides: Any,
    ) -> ModelT | tuple[ModelT, LoadingInfo]:
        """Load a model from a transformers-format directory or a Hub id.

        Args:
            pretrained_model_name_or_path: Directory with config.json and model.safetensors (or a
                sharded model.safetensors.index.json, or pytorch_model.bin), or a Hub id (needs
                huggingface_hub and a network). May be None when both `config` and `state_dict` are given.
            config: Use this config instead of the directory's.
            state_dict: Load these (transformers-named) tensors instead of the directory's weights.
            subfolder: Where in the directory (or Hub repository) the files are.
            device / device_map: Where to put the model; "auto" picks CUDA when available.
            dtype / torch_dtype: Parameter dtype, a torch dtype or its name; "auto" uses the saved one.
            strict: True: raise on missing, unexpected or wrong-shaped keys (listing all of them).
                None (the default): transformers' rule, a missing head (`classifier.`, `decoder.`) is left freshly
                initialised with a warning naming its keys; anything else raises. False: load what fits.
            ignore_mismatched_sizes: Re-initialise wrong-shaped tensors (a new head, say).
            output_loading_info: Also return the `LoadingInfo`: transformers' dict (`missing_keys`,
                `unexpected_keys`, `mismatched_keys`, `error_msgs`), also a `LoadReport`.
            **config_overrides: Config fields to change, e.g. `num_labels=10` or
                `out_features=["stage2", "stage4"]`.

        Example:
            >>> model = Swinv2ForImageClassification.from_pretrained("path/to/dir", num_labels=10,
            ...                                                       ignore_mismatched_sizes=True)
        """
        directory: Path | None = None
        if pretrained_model_name_or_path is not None:
            directory = resolve_model_dir(pretrained_model_name_or_path) / subfolder
        elif config is None or state_dict is None:
            raise ValueError("pretrained_model_name_or_path may be None only when config and state_dict are given")
        if config is None:
            assert directory is not None
            config = cls.config_class.from_pretrained(directory)
        if config_overrides:
            config = config.replace(**config_overrides)
        if state_dict is None and strict is not False:
            assert directory is not None
            _check_weights_cover_config(directory, cls.encoder_parameters(config))
        try:
            model = cls(config)
        except InputError as err:  # a config that builds no model here: name the directory it came from
            where = "the given config" if directory is None else f"'{directory / CONFIG_NAME}'"
            raise type(err)(f"{where}: {err}") from None
        if state_dict is None:
            assert directory is not None
            state_dict = read_state_dict(directory)
        info = model._load_pretrained_state(
            state_dict,
            source="state dict" if directory is None else str(directory),
            strict=strict,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
        )
        model.to(device=_resolve_device(device or device_map), dtype=_resolve_dtype(dtype or torch_dtype, config))
        model.eval()
        return (model, info) if output_loading_info else model


class Swinv2PreTrainedModel(PreTrainedModel):
    """Base of the Swin V2 models (`swinv2.` prefix in heads; `classifier.` and `decoder.` heads)."""

    config_class: type[Swinv2Config] = Swinv2Config
    config: Swinv2Config
    size_head: Head = "none"  # the head `model_size` counts for this class
    base_model_prefix = "swinv2"
    head_modules = HEAD_MODULES

    def __init__(self, config: Swinv2Config) -> None:
        super().__init__(config)

    @classmethod
    def config_size(cls, config: Swinv2Config) -> ModelSize:
        return model_size(config, cls.size_head)

    @classmethod
    def encoder_parameters(cls, config: Swinv2Config) -> int:
        return model_size(config, "none").parameters

    @staticmethod
    def is_encoder_key(key: str) -> bool:
        return is_transformers_encoder_key(key) or _EXTRA_NORM_KEY.match(key) is not None

    def _map_hf_state(self, state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
        """As the base class; an extra norm this model has no place for is `unexpected`, never `unused`:
        every class holds the whole encoder, so such a key means another `extra_norm_period`."""
        mapped, unexpected, unused = super()._map_hf_state(state)
        misplaced = [k for k in unused if _is_extra_norm_key(k)]
        return mapped, [*unexpected, *misplaced], [k for k in unused if k not in misplaced]

    def load_hf_state_dict(self, state: Mapping[str, torch.Tensor], **kwargs: Any) -> LoadReport:
        """As the base class (same arguments); a refusal that involves extra-norm keys says so."""
        try:
            return super().load_hf_state_dict(state, **kwargs)
        except CheckpointError as err:
            raise self._explain_extra_norms(err, state, str(kwargs.get("source", "state dict"))) from None

    def _load_pretrained_state(
        self, state: Mapping[str, torch.Tensor], source: str, strict: bool | None, ignore_mismatched_sizes: bool
    ) -> LoadingInfo:
        try:
            return super()._load_pretrained_state(state, source, strict, ignore_mismatched_sizes)
        except CheckpointError as err:
            raise self._explain_extra_norms(err, state, source) from None

    def _explain_extra_norms(self, err: CheckpointError, state: Mapping[str, torch.Tensor], source: str) -> Exception:
        """`err`, with the `extra_norm_period` the weights imply and the config field to fix when extra-norm
        keys are among its missing or unexpected ones."""
        report = err.report
        if report is None or not any(_is_extra_norm_key(k) for k in [*report.missing, *report.unexpected]):
            return err
        ours = self.config.extra_norm_period
        blocks = [block for k in state if (block := _extra_norm_block(k)) is not None]
        theirs = math.gcd(*blocks)  # the norms end blocks k, 2k, ...: their gcd is k (0: none)
        where = f"'{Path(source) / CONFIG_NAME}'" if Path(source).is_dir() else "the config"
        if theirs == ours:
            detail = f"the weights' `extra_norm` keys do not match the config's extra_norm_period={ours}"
        else:
            held = f"every {theirs} blocks (extra_norm_period={theirs})" if theirs else "nowhere (extra_norm_period=0)"
            detail = (
                f"the model was built with extra_norm_period={ours}, but the weights have these main-branch norms "
                f"{held}; set extra_norm_period={theirs} in {where} to load them"
            )
        return CheckpointError(f"{err}; {detail}", report, err.subject)


def _extra_norm_block(key: str) -> int | None:
    """The block (counted from 1 in its stage) whose `extra_norm_period` norm `key` names, with or without
    a head's `swinv2.` prefix; None for any other key."""
    match = _EXTRA_NORM_KEY.fullmatch(key.removeprefix(Swinv2PreTrainedModel.base_model_prefix + "."))
    return None if match is None else int(match["j"]) + 1


def _is_extra_norm_key(key: str) -> bool:
    return _extra_norm_block(key) is not None


def _check_weights_cover_config(directory: Path, encoder_parameters: int) -> None:
    """Refuse a config.json that describes far more parameters than the directory's weight files can hold
    (at 16 bits each, the smallest dtype saved), before a model of that size is built."""
    stored = weight_file_bytes(directory)
    needed = 2 * encoder_parameters  # a missing head may be initialised fresh
    if stored is not None and needed > stored + 2**20:
        raise CheckpointError(
            f"'{directory / CONFIG_NAME}' describes {needed // 2:,} encoder parameters, but the weight files "
            f"of '{directory}' hold only {stored:,} bytes: the config does not belong to these weights"
        )


class BackboneMixin:
    """transformers' backbone contract (`transformers.backbone_utils.BackboneMixin`), so that a Swin V2
    backbone drops into its detection and segmentation heads (`UperNetForSemanticSegmentation`, ...).

    `out_features` and `out_indices` live in the config and stay aligned: setting either sets both,
    None means the last stage. The class using it sets `num_features` (channels of every stage name).
    """

    config: Swinv2Config
    num_features: list[int]
    backbone_type = BackboneType.TRANSFORMERS
    has_attentions = True

    @property
    def stage_names(self) -> list[str]:
        """`stem`, `stage1`, ... `stageN`."""
        return self.config.stage_names

    @property
    def out_features(self) -> list[str]:
        """Names of the returned feature maps."""
        return list(self.config.out_features or [])

    @out_features.setter
    def out_features(self, out_features: Sequence[str] | None) -> None:
        self._set_out(out_features=None if out_features is None else list(out_features), out_indices=None)

    @property
    def out_indices(self) -> list[int]:
        """Indices into `stage_names` of the returned feature maps."""
        return list(self.config.out_indices or [])

    @out_indices.setter
    def out_indices(self, out_indices: Sequence[int] | None) -> None:
        self._set_out(out_features=None, out_indices=None if out_indices is None else list(out_indices))

    def _set_out(self, out_features: list[str] | None, out_indices: list[int] | None) -> None:
        aligned = self.config.replace(out_features=out_features, out_indices=out_indices)  # validates
        # in place, as transformers: the config stays the one the caller holds
        self.config.out_features, self.config.out_indices = aligned.out_features, aligned.out_indices

    @property
    def out_feature_channels(self) -> dict[str, int]:
        """Channels of every stage name's map."""
        return dict(zip(self.stage_names, self.num_features, strict=True))

    @property
    def channels(self) -> list[int]:
        """Channels of each returned feature map."""
        return [self.out_feature_channels[name] for name in self.out_features]

    def forward_with_filtered_kwargs(self, *args: Any, **kwargs: Any) -> Any:
        """Call the backbone, dropping `output_attentions` when it has no attentions (transformers' hook)."""
        if not self.has_attentions:
            kwargs.pop("output_attentions", None)
        return self(*args, **kwargs)  # type: ignore[operator]
