"""`swinv2 info`: what a model is, on one screen (class, parameters, FLOPs, shape, preprocessing, labels).

Describing a model reads no weights: the model is built from the config (a variant's, or a directory's
config.json) only to count its parameters and FLOPs. `--config` prints the full config JSON instead.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from swinv2.config import Swinv2Config
from swinv2.io.checkpoints import PICKLE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME
from swinv2.io.errors import InputError, LimitError
from swinv2.io.limits import ENV_VAR
from swinv2.loading import model_class_for, resolve_model_source
from swinv2.models import (
    Swinv2Backbone,
    Swinv2ForImageClassification,
    Swinv2ForMaskedImageModeling,
    Swinv2PreTrainedModel,
)
from swinv2.pipeline import default_processor
from swinv2.preprocess import PREPROCESSOR_NAME, Swinv2ImageProcessor
from swinv2.zoo import Variant, get_variant

LABELS_SHOWN = 5
VARIANT_PREPROCESSING = "the variant's"  # where a variant's preprocessing comes from
_RESAMPLE_NAMES = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def count_flops_without_data(model: Swinv2PreTrainedModel, height: int, width: int) -> int:
    """FLOPs of one forward pass at `height` x `width`, counted on fake tensors (shapes only, no arithmetic).

    The model's cached terms are cleared afterwards (they would hold fake tensors). Where the fake
    pass fails, the count falls back to a real forward pass on zeros.
    """
    from swinv2.cli.bench import count_flops

    pixel_values = torch.zeros(1, model.config.num_channels, height, width)
    try:
        from torch._subclasses.fake_tensor import FakeTensorMode

        with FakeTensorMode(allow_non_fake_inputs=True):
            return count_flops(model, pixel_values)
    except Exception:  # any op without a fake implementation: count for real
        model.clear_caches()
        return count_flops(model, pixel_values)
    finally:
        model.clear_caches()


def _joined(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _origin(variant: Variant | None, directory: Path | None) -> str:
    if variant is not None and not variant.released:
        return (
            f"variant {variant.name} (the Swin V2 paper's model: no weights were released, no timm model); "
            "random weights only"
        )
    if variant is not None:
        if variant.imagenet_top1 is None:
            accuracy = "ImageNet-22K pre-training (no ImageNet-1K top-1)"
        else:
            accuracy = f"ImageNet-1K top-1 {variant.imagenet_top1}%"
        return (
            f"variant {variant.name} (timm: {variant.timm_name}), {accuracy}; "
            "no weights ship with swinv2 (see `swinv2 convert`)"
        )
    assert directory is not None
    for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, PICKLE_WEIGHTS_NAME):
        if (directory / name).is_file():
            size = "" if name == SAFE_WEIGHTS_INDEX_NAME else f", {(directory / name).stat().st_size / 1e6:.1f} MB"
            return f"directory '{directory}' (weights: {name}{size})"
    return f"directory '{directory}' (no weights: {SAFE_WEIGHTS_NAME}, {PICKLE_WEIGHTS_NAME} missing)"


def _shape(config: Swinv2Config) -> str:
    height, width = config.image_hw
    parts = [
        f"image {height}x{width}",
        f"patch {config.patch_size}",
        f"window {config.window_size}",
    ]
    pretrained = tuple(config.pretrained_window_sizes)[: config.num_layers]
    if any(pretrained):
        parts.append(f"pre-training windows ({_joined(pretrained)})")
    parts += [
        f"embed dim {config.embed_dim}",
        f"depths ({_joined(config.depths)})",
        f"heads ({_joined(config.num_heads)})",
    ]
    if config.extra_norm_period:
        parts.append(f"extra main-branch norm every {config.extra_norm_period} blocks")
    return ", ".join(parts)


def _preprocessing(processor: Swinv2ImageProcessor, origin: str) -> str:
    size = f"{processor.size['height']}x{processor.size['width']}" if processor.do_resize else "no resize"
    resample = _RESAMPLE_NAMES.get(processor.resample, str(processor.resample))
    normalise = f"mean {processor.image_mean}, std {processor.image_std}" if processor.do_normalize else "no normalise"
    return f"preprocessing ({origin}): resize to {size} {resample}, {normalise}"


def _head(model: Swinv2PreTrainedModel) -> str:
    config = model.config
    if isinstance(model, Swinv2ForImageClassification):
        labels = config.id2label or {}
        shown = ", ".join(f"{i}: {labels[i]}" for i in sorted(labels)[:LABELS_SHOWN])
        return f"labels ({len(labels)}): {shown}" + (" ..." if len(labels) > LABELS_SHOWN else "")
    if isinstance(model, Swinv2Backbone):
        return f"feature maps: {_joined(config.out_features or [])} (channels {_joined(model.channels)})"
    if isinstance(model, Swinv2ForMaskedImageModeling):
        return f"SimMIM reconstruction (encoder stride {config.encoder_stride})"
    return f"encoder only: hidden size {config.hidden_size}"


def _describe(reference: str) -> tuple[Swinv2Config, type[Swinv2PreTrainedModel], Swinv2ImageProcessor, str, str]:
    """(config, model class, processor, where the preprocessing comes from, origin line) without weights."""
    try:
        source = resolve_model_source(reference)
    except FileNotFoundError as err:
        try:
            get_variant(reference)
        except KeyError as unknown:
            if "did you mean" in unknown.args[0]:  # a near miss of a variant name, most likely a typo
                raise FileNotFoundError(
                    f"{unknown.args[0]}; nor is it a model directory or a reachable Hub id"
                ) from None
        raise FileNotFoundError(" ".join(str(err).split())) from None  # the Hub's messages span lines
    if source.variant is not None:
        variant = source.variant
        processor = Swinv2ImageProcessor.from_variant(variant.name)
        origin = _origin(variant, None)
        return variant.config, Swinv2ForImageClassification, processor, VARIANT_PREPROCESSING, origin
    assert source.directory is not None  # a source is a variant or a directory
    config = Swinv2Config.from_pretrained(source.directory)
    cls = model_class_for(config, source.directory)
    if (source.directory / PREPROCESSOR_NAME).is_file():
        processor, where = Swinv2ImageProcessor.from_pretrained(source.directory), PREPROCESSOR_NAME
    else:
        processor, where = default_processor(config), f"no {PREPROCESSOR_NAME}: ImageNet defaults at the image size"
    return config, cls, processor, where, _origin(None, source.directory)


def info_command(args: argparse.Namespace) -> str:
    """One screen about the model (no weights read), or with --config its full config JSON."""
    config, cls, processor, where, origin = _describe(args.model)
    if args.config:
        return config.to_json_string(use_diff=False).rstrip("\n")  # full: defaults included; strict JSON
    height, width = config.image_hw
    try:
        model = cls(config).eval()
    except LimitError as err:
        if where != VARIANT_PREPROCESSING:
            raise type(err)(f"'{args.model}': {err}") from None
        # A known variant too large for this machine (giant, say): its parameters counted on the meta
        # device, which allocates nothing. Not for a config.json, which could name any size.
        with torch.device("meta"):
            model = cls(config).eval()
        needed = cls.config_size(config).total_bytes / 1e9
        cost = f"FLOPs not counted (building it needs about {needed:.3g} GB, above the memory limit; see {ENV_VAR})"
    except InputError as err:  # a config that builds no model: name where it came from
        raise type(err)(f"'{args.model}': {err}") from None
    else:
        flops = count_flops_without_data(model, height, width)
        cost = f"{flops / 1e9:.2f} GFLOPs ({flops / 2e9:.2f} G multiply-adds) per {height}x{width} image"
    return "\n".join(
        [
            f"{cls.__name__}: {model.num_parameters() / 1e6:.2f} M parameters, {cost}",
            origin,
            _shape(config),
            _preprocessing(processor, where),
            _head(model),
        ]
    )


def register(commands: Any) -> None:
    """Add `info` to the `swinv2` subcommands."""
    about = commands.add_parser(
        "info",
        help="one-screen summary of a model: class, parameters, FLOPs, shape, preprocessing, labels",
        description=(
            "Describe MODEL without reading weights: its class, parameter count, FLOPs at its input size, "
            "shape, preprocessing and labels (for a variant also its ImageNet top-1 and timm name). "
            "--config prints the full config JSON instead."
        ),
    )
    about.add_argument("model", metavar="MODEL", help="model directory, Hub id or variant name")
    about.add_argument("--config", action="store_true", help="print the full config JSON instead of the summary")
    # accepted for old command lines; describing a variant needs no weights
    about.add_argument("--random-weights", action="store_true", help=argparse.SUPPRESS)
    about.set_defaults(run=info_command)
