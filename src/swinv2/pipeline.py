"""Pipelines: classify images and extract features with any Swin V2 model, and upscale images with a
Swin2SR model, batched.

A model is given as a model object, a transformers-format directory, a Hub id, or a named variant
(random weights, only when `random_weights=True` says so: no weights ship with the library).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image

from swinv2.config import Swinv2Config
from swinv2.loading import resolve_model_source
from swinv2.models import Swinv2ForImageClassification, Swinv2Model, Swinv2PreTrainedModel
from swinv2.preprocess import PREPROCESSOR_NAME, ImageInput, Swinv2ImageProcessor, image_list

ModelSpec = Swinv2PreTrainedModel | str | os.PathLike[str]


def load_model(
    model: ModelSpec,
    cls: type[Swinv2PreTrainedModel] = Swinv2ForImageClassification,
    *,
    random_weights: bool = False,
    device: str | torch.device | None = None,
) -> tuple[Swinv2PreTrainedModel, Swinv2ImageProcessor]:
    """The model (eval mode) and the processor that goes with it, both built from one resolved source.

    A directory's own `preprocessor_config.json` wins; without one, the processor resizes to the
    model's `image_size` with ImageNet statistics. A variant brings the preprocessing it was trained with.

    Raises:
        ValueError: a variant name without `random_weights=True`.
        FileNotFoundError: neither a directory, a variant nor a Hub id.
    """
    if isinstance(model, Swinv2PreTrainedModel):
        return model.eval().to(device) if device else model.eval(), default_processor(model)
    source = resolve_model_source(model)
    if source.variant is not None:
        if not random_weights:
            raise ValueError(
                f"'{model}' is a variant name and no weights ship with swinv2: pass a checkpoint directory "
                "(see `swinv2 convert`), or ask for random weights explicitly (random_weights=True, --random-weights)"
            )
        built = cls(source.variant.config)
        processor = Swinv2ImageProcessor.from_variant(source.variant.name)
        return built.eval().to(device) if device else built.eval(), processor
    assert source.directory is not None  # a source is a variant or a directory
    loaded = cast(Swinv2PreTrainedModel, cls.from_pretrained(source.directory, device=device))  # no loading info
    if (source.directory / PREPROCESSOR_NAME).is_file():
        return loaded, Swinv2ImageProcessor.from_pretrained(source.directory)
    return loaded, default_processor(loaded)


def default_processor(model: Swinv2PreTrainedModel | Swinv2Config) -> Swinv2ImageProcessor:
    """The preprocessing of a model (or config) that names none: resize to its `image_size`, ImageNet statistics."""
    config = model if isinstance(model, Swinv2Config) else model.config
    height, width = config.image_hw
    return Swinv2ImageProcessor(size={"height": height, "width": width})


def _batches(items: Sequence[ImageInput], size: int) -> Iterator[Sequence[ImageInput]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _autocast(device: torch.device, dtype: torch.dtype | str | None) -> Any:
    if dtype is None or dtype in (torch.float32, "float32"):
        return nullcontext()
    resolved = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if resolved not in (torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16 or float16; got {dtype!r}")
    return torch.autocast(device.type, dtype=resolved)


def classify(
    images: ImageInput | Sequence[ImageInput],
    model: ModelSpec,
    top_k: int = 5,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    random_weights: bool = False,
    processor: Swinv2ImageProcessor | None = None,
) -> list[list[dict[str, Any]]]:
    """Top-k labels and probabilities for each image: `[[{"label": ..., "score": ...}, ...], ...]`.

    `processor` overrides the model's own preprocessing (the directory's preprocessor_config.json,
    or the ImageNet defaults at the model's input size for a model object).

    Example:
        >>> classify(["cat.jpg"], "path/to/model", top_k=3)
        [[{'label': 'tabby', 'score': 0.81}, ...]]
    """
    batch = image_list(images)
    net, default_processor = load_model(
        model, Swinv2ForImageClassification, random_weights=random_weights, device=device
    )
    processor = processor or default_processor
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1; got {top_k}")
    dev = net.device
    results: list[list[dict[str, Any]]] = []
    for chunk in _batches(batch, batch_size):
        pixel_values = processor(list(chunk)).pixel_values.to(dev)
        with torch.no_grad(), _autocast(dev, dtype):
            logits = net(pixel_values).logits.float()
        top = logits.softmax(-1).topk(min(top_k, logits.shape[-1]))
        id2label = net.config.id2label or {}
        for scores, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            results.append(
                [{"label": id2label.get(i, str(i)), "score": s} for s, i in zip(scores, indices, strict=True)]
            )
    return results


def extract_features(
    images: ImageInput | Sequence[ImageInput],
    model: ModelSpec,
    *,
    pooled: bool = True,
    stages: Sequence[str] | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    random_weights: bool = False,
    processor: Swinv2ImageProcessor | None = None,
) -> dict[str, torch.Tensor]:
    """Features of each image, on the CPU in float32.

    Returns:
        `{"pooled": (N, C)}` when `pooled`, plus `{stage: (N, C_i, H_i, W_i)}` for each name in
        `stages` (`stem`, `stage1`, ...: each stage's output before its patch merging, no final norm).
    """
    batch = image_list(images)
    net, default_processor = load_model(model, Swinv2Model, random_weights=random_weights, device=device)
    processor = processor or default_processor
    encoder = net if isinstance(net, Swinv2Model) else cast(Swinv2Model, net.swinv2)  # a head model's encoder
    names = list(stages or [])
    unknown = [s for s in names if s not in encoder.config.stage_names]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; choose from {encoder.config.stage_names}")
    collected: dict[str, list[torch.Tensor]] = {key: [] for key in (["pooled"] if pooled else []) + names}
    for chunk in _batches(batch, batch_size):
        pixel_values = processor(list(chunk)).pixel_values.to(encoder.device)
        with torch.no_grad(), _autocast(encoder.device, dtype):
            if pooled:
                collected["pooled"].append(encoder(pixel_values).pooler_output.float().cpu())
            if names:
                trace = encoder.encoder(*encoder.embeddings(pixel_values))
                _, maps = trace.hidden_states(before_merge=True)
                for name in names:
                    collected[name].append(maps[encoder.config.stage_names.index(name)].float().cpu())
    return {key: torch.cat(parts) for key, parts in collected.items()}


# ------------------------------------------------------------------------------ super-resolution
def load_sr_model(model: Any, device: str | torch.device | None = None) -> Any:
    """A Swin2SR model (eval mode) from a model object, a transformers-format directory, a Hub id, or a
    weight file `load_checkpoint` reads (the original release's .pth files included)."""
    from swinv2.loading import load_checkpoint
    from swinv2.models import Swin2SRForImageSuperResolution

    if not isinstance(model, torch.nn.Module) and Path(model).is_file():
        model = load_checkpoint(model)
    if isinstance(model, Swin2SRForImageSuperResolution):
        return model.eval().to(device) if device else model.eval()
    if isinstance(model, torch.nn.Module):
        raise TypeError(f"upscaling needs a Swin2SRForImageSuperResolution; got a {type(model).__name__}")
    loaded = cast(Swin2SRForImageSuperResolution, Swin2SRForImageSuperResolution.from_pretrained(model, device=device))
    return loaded.eval()


def _same_size_runs(images: Sequence[Any], batch_size: int) -> Iterator[list[int]]:
    """Indices of consecutive images of one size, at most `batch_size` at a time."""
    run: list[int] = []
    for index, image in enumerate(images):
        if run and (len(run) == batch_size or images[run[0]].rgb.shape != image.rgb.shape):
            yield run
            run = []
        run.append(index)
    if run:
        yield run


def upscale(
    images: ImageInput | Sequence[ImageInput],
    model: Any,
    *,
    tile: int | None = None,
    overlap: int = 32,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> list[Image.Image]:
    """Super-resolve images with a Swin2SR model: PIL images `config.upscale` times larger.

    Images may be paths, PIL images, arrays or tensors of any size. Alpha is upscaled apart from the
    colour (bicubic) and put back; greyscale stays greyscale, 16-bit greyscale stays 16-bit. `tile`
    (pixels) runs the model tile by tile with `overlap` (see `swinv2.superres`), for images larger than
    memory allows; images of one size are batched `batch_size` at a time. `dtype` (bfloat16, float16)
    runs under autocast.

    Example:
        >>> upscale(["photo.png"], "path/to/swin2sr", tile=256)[0].save("photo_x2.png")
    """
    from swinv2.superres import Tiling, read_image, to_pil, upscale_alpha, upscale_pixels

    net = load_sr_model(model, device)
    config = net.config
    scale = config.upscale if config.upsampler else 1
    inputs = image_list(images)
    loaded = [
        read_image(image, f"'{image}'" if isinstance(image, (str, os.PathLike)) else f"image {i}")
        for i, image in enumerate(inputs)
    ]

    def run(pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), _autocast(pixels.device, dtype):
            return net(pixels).reconstruction

    results: list[Image.Image | None] = [None] * len(loaded)
    for indices in _same_size_runs(loaded, batch_size):
        pixels = torch.stack([loaded[i].rgb for i in indices])  # (b, 3, H, W)
        if config.num_channels == 1:
            pixels = pixels.mean(1, keepdim=True)
        out = upscale_pixels(
            run,
            pixels,
            scale=scale,
            window=config.window_size,
            tiling=Tiling(tile, overlap) if tile else None,
            device=net.device,
            on_tile=on_tile,
        )
        for row, index in enumerate(indices):
            source = loaded[index]
            colour = out[row] if out.shape[1] == 3 else out[row].expand(3, -1, -1)
            alpha = None if source.alpha is None else upscale_alpha(source.alpha, scale)
            results[index] = to_pil(colour, alpha, source.bits, source.grey)
    return [r for r in results if r is not None]
