"""The model a training run starts from: any source the library reads, turned into a classifier for the
run's classes, at the run's resolution and window, with the run's stochastic depth."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch

from swinv2.config import CONFIG_NAME
from swinv2.loading import load_checkpoint, resolve_model_source
from swinv2.models import (
    Swin2SRForImageSuperResolution,
    Swinv2ForImageClassification,
    Swinv2ForMaskedImageModeling,
    Swinv2Model,
    Swinv2PreTrainedModel,
)
from swinv2.pipeline import default_processor
from swinv2.preprocess import PREPROCESSOR_NAME, Swinv2ImageProcessor
from swinv2.rewindow import rewindow
from swinv2.superres import Swin2SRImageProcessor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelChoice:
    """Where the weights come from and what to change about the model before training."""

    source: str  # a model directory, a weight file, a variant name (with random_weights) or a Hub id
    variant: str | None = None  # the shapes of a weight file without a config.json
    random_weights: bool = False
    image_size: int | None = None
    window_size: int | None = None
    drop_path: float | None = None


def load_source(choice: ModelChoice) -> tuple[Swinv2PreTrainedModel, Swinv2ImageProcessor | None]:
    """The source's model as stored, and its own preprocessing where it names one."""
    path = Path(choice.source)
    if path.is_file():
        model = load_checkpoint(path, variant=choice.variant)
        processor = Swinv2ImageProcessor.from_variant(choice.variant) if choice.variant else None
        return model, processor
    if path.is_dir() and not (path / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"'{path}' is a directory without {CONFIG_NAME}; is it a model directory?")
    resolved = resolve_model_source(choice.source)
    if resolved.variant is not None:
        if not choice.random_weights:
            raise ValueError(
                f"'{choice.source}' is a variant name and no weights ship with swinv2: pass a checkpoint, or "
                "--random-weights to train from scratch"
            )
        return Swinv2ForImageClassification(resolved.variant.config), Swinv2ImageProcessor.from_variant(
            resolved.variant.name
        )
    assert resolved.directory is not None
    model = load_checkpoint(resolved.directory)
    own = resolved.directory / PREPROCESSOR_NAME
    return model, Swinv2ImageProcessor.from_pretrained(own) if own.is_file() else None


def _encoder_state(model: Swinv2PreTrainedModel) -> dict[str, torch.Tensor]:
    """The encoder's tensors under a classifier's names (`swinv2.`...), from any model class."""
    if isinstance(model, (Swinv2ForImageClassification, Swinv2ForMaskedImageModeling)):
        encoder: torch.nn.Module = model.swinv2
    elif isinstance(model, Swinv2Model):
        encoder = model
    else:
        raise ValueError(f"cannot fine-tune a {type(model).__name__} as a classifier; give its checkpoint directory")
    return {f"swinv2.{k}": v for k, v in encoder.state_dict().items() if not k.startswith("embeddings.mask_token")}


def prepare_classifier(
    choice: ModelChoice, class_names: list[str]
) -> tuple[Swinv2ForImageClassification, Swinv2ImageProcessor]:
    """A classifier for `class_names` with the source's weights, and the processor that feeds it.

    The source's head is kept when it has the run's classes under the same names; otherwise it is
    initialised fresh (one log line says so). A SimMIM or bare-encoder source contributes its encoder.
    A new image size or window re-windows the weights (`swinv2.rewindow`), so `pretrained_window_sizes`
    records the windows the source was trained with.
    """
    source, processor = load_source(choice)
    id2label = dict(enumerate(class_names))
    config = source.config.replace(id2label=id2label, architectures=["Swinv2ForImageClassification"])
    if choice.drop_path is not None:
        config = config.replace(drop_path_rate=choice.drop_path)
    model = Swinv2ForImageClassification(config)
    state = _encoder_state(source)
    same_head = isinstance(source, Swinv2ForImageClassification) and source.config.id2label == id2label
    if same_head:
        state.update({k: v for k, v in source.state_dict().items() if k.startswith("classifier.")})
    elif isinstance(source, Swinv2ForImageClassification) and not choice.random_weights:
        names = list((source.config.id2label or {}).values())
        logger.info(
            "the source's head (%d classes: %s) is not the data's (%d classes: %s): it is initialised fresh",
            len(names),
            ", ".join(names[:5]) + (" ..." if len(names) > 5 else ""),
            len(class_names),
            ", ".join(class_names[:5]) + (" ..." if len(class_names) > 5 else ""),
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("classifier.") for k in missing):
        raise ValueError(f"the source's encoder does not fit: missing {missing}, unexpected {unexpected}")
    if choice.image_size is not None or choice.window_size is not None:
        model = rewindow(
            model,
            image_size=choice.image_size or config.image_size,
            window_size=choice.window_size or config.window_size,
        )
    return model, resize_processor(processor, model)


def resize_processor(processor: Swinv2ImageProcessor | None, model: Swinv2PreTrainedModel) -> Swinv2ImageProcessor:
    """The source's preprocessing (else ImageNet statistics) resizing to the model's image size."""
    if processor is None:
        return default_processor(model)
    height, width = model.config.image_hw
    return Swinv2ImageProcessor(
        size={"height": height, "width": width},
        resample=processor.resample,
        image_mean=list(processor.image_mean),
        image_std=list(processor.image_std),
    )


def prepare_sr_model(choice: ModelChoice) -> tuple[Swin2SRForImageSuperResolution, Swin2SRImageProcessor]:
    """A Swin2SR model to train, and the processor saved beside it.

    The source is a Swin2SR directory (transformers' or ours; with `random_weights`, only its config is
    used), or a weight file `load_checkpoint` reads. Swin2SR takes any input size, so there is no image
    size or window to change.
    """
    from swinv2.config import Swin2SRConfig
    from swinv2.io.errors import InputError
    from swinv2.train.sr import check_sr_model

    if choice.image_size is not None or choice.window_size is not None:
        raise InputError("--image-size and --window-size re-window classifiers; Swin2SR takes any input size")
    path = Path(choice.source)
    directory: Path | None = None
    source: torch.nn.Module
    if path.is_file():
        source = load_checkpoint(path, variant=choice.variant)
    else:
        resolved = resolve_model_source(choice.source)
        if resolved.directory is None:
            raise InputError(f"'{choice.source}' is a Swin V2 variant name; super-resolution needs a Swin2SR directory")
        directory = resolved.directory
        if choice.random_weights:
            source = Swin2SRForImageSuperResolution(Swin2SRConfig.from_pretrained(directory))
        else:
            source = cast(Swin2SRForImageSuperResolution, Swin2SRForImageSuperResolution.from_pretrained(directory))
    model = check_sr_model(source, choice.source)
    if choice.drop_path is not None:
        state = model.state_dict()
        model = Swin2SRForImageSuperResolution(model.config.replace(drop_path_rate=choice.drop_path))
        model.load_state_dict(state)
    processor = Swin2SRImageProcessor(size_divisor=model.config.window_size)
    own = None if directory is None else directory / PREPROCESSOR_NAME
    if own is not None and own.is_file() and '"Swin2SRImageProcessor"' in own.read_text(errors="replace"):
        processor = Swin2SRImageProcessor.from_pretrained(own)
    return model, processor
