"""Super-resolution around the model: Swin2SR's image processor, images in and out with their alpha channel
and bit depth, and tiled inference for images larger than memory allows.

Tiling: the image is cut into tiles of `tile` pixels that overlap by `overlap` pixels, both rounded up to
whole windows, with every tile starting on a window boundary, so a tile's windows are the whole image's
windows. Each tile's output is weighted by a ramp that is 0 within `overlap / 4` of an edge shared with
another tile and rises to 1 at `3 * overlap / 4`, and the weights are normalised to sum to 1. So a pixel
never takes a value from near a tile's cut edge, where the tile's view of the image ends: where the model
sees no farther than `overlap / 4` beyond a pixel, the tiled output equals the untiled one, and where it
sees farther, the seams fade over half the overlap instead of showing as edges. Only one tile's
activations are alive at a time: peak memory grows with the tile size, not with the image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from swinv2.config.common import is_int
from swinv2.io.errors import ConfigError, quote
from swinv2.io.jsonfile import read_json_object
from swinv2.io.limits import check_memory
from swinv2.preprocess import (
    PREPROCESSOR_NAME,
    ImageError,
    ImageInput,
    PixelBatch,
    array_as_chw,
    image_list,
    open_image,
    write_processor_config,
)

PROCESSOR_TYPE = "Swin2SRImageProcessor"
PAD_MODES = ("transformers", "minimal")
MAX_DIVISOR = 2**12


# ------------------------------------------------------------------------------------ padding
def symmetric_pad(pixels: torch.Tensor, bottom: int, right: int) -> torch.Tensor:
    """Pad (..., H, W) at the bottom and right by mirroring with the edge repeated ("symmetric", as numpy
    and torchvision name it: a b c | c b a), any amount (the mirror repeats past the image's own size)."""
    for dim, amount in ((-2, bottom), (-1, right)):
        if amount > 0 and pixels.shape[dim] == 0:
            raise ValueError(f"cannot pad an empty image ({tuple(pixels.shape)}) by mirroring")
        while amount > 0:
            step = min(amount, pixels.shape[dim])
            pixels = torch.cat([pixels, pixels.flip(dim).narrow(dim, 0, step)], dim=dim)
            amount -= step
    return pixels


@dataclass
class Swin2SRImageProcessor:
    """Prepare images for Swin2SR: rescale to [0, 1], then pad (symmetric) to a multiple of `size_divisor`.

    Args:
        do_rescale / rescale_factor: Multiply 8-bit values by this (16-bit images by 1/65535).
        do_pad / size_divisor: Pad at the bottom and right to a multiple of `size_divisor` (the window).
        pad_mode: "transformers" pads as transformers' processor does, one whole extra block even when the
            size is already a multiple (its issue #46697); "minimal" pads only what is needed.

    The model itself accepts any size (it pads inside and crops), so the padding only matters for
    equality with transformers' pipeline: its output covers the padded image, and `crop` takes it back.
    """

    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_pad: bool = True
    size_divisor: int = 8
    pad_mode: str = "transformers"

    def __post_init__(self) -> None:
        errors = []
        if not (isinstance(self.rescale_factor, (int, float)) and math.isfinite(self.rescale_factor)) or not (
            self.rescale_factor > 0
        ):
            errors.append(f"rescale_factor must be a positive number; got {quote(self.rescale_factor)}")
        if not (is_int(self.size_divisor) and 1 <= self.size_divisor <= MAX_DIVISOR):
            errors.append(f"size_divisor must be an int from 1 to {MAX_DIVISOR}; got {quote(self.size_divisor)}")
        if self.pad_mode not in PAD_MODES:
            errors.append(f"pad_mode must be one of {list(PAD_MODES)}; got {quote(self.pad_mode)}")
        for name in ("do_rescale", "do_pad"):
            if not isinstance(getattr(self, name), bool):
                errors.append(f"{name} must be true or false; got {quote(getattr(self, name))}")
        if errors:
            raise ConfigError(f"invalid {PROCESSOR_TYPE}: " + "; ".join(errors))

    def padding(self, height: int, width: int) -> tuple[int, int]:
        """(bottom, right) padding of an image of this size."""
        if not self.do_pad:
            return 0, 0
        d = self.size_divisor
        if self.pad_mode == "transformers":
            return (height // d + 1) * d - height, (width // d + 1) * d - width
        return -height % d, -width % d

    def __call__(self, images: ImageInput | Sequence[ImageInput], return_tensors: str | None = "pt") -> PixelBatch:
        """One image or a list of the same size: `{"pixel_values": (B, 3, H', W') float32}` (alpha dropped)."""
        if return_tensors not in (None, "pt"):
            raise ValueError(f"only PyTorch tensors are returned (return_tensors='pt'); got {return_tensors!r}")
        batch = image_list(images)
        if not batch:
            raise ImageError("no images given")
        pixels = [
            read_image(image, _name(image, i), self.rescale_factor if self.do_rescale else None).rgb
            for i, image in enumerate(batch)
        ]
        shapes = {tuple(p.shape) for p in pixels}
        if len(shapes) > 1:
            raise ImageError(f"images of different sizes cannot be batched: {sorted(shapes)}")
        stacked = torch.stack(pixels)  # (B, C, H, W)
        bottom, right = self.padding(*stacked.shape[-2:])
        return PixelBatch(pixel_values=symmetric_pad(stacked, bottom, right))

    # --------------------------------------------------------------------------------- config
    def to_dict(self) -> dict[str, Any]:
        """transformers' preprocessor_config.json content (`pad_mode` is ours; transformers ignores it)."""
        return {**asdict(self), "image_processor_type": PROCESSOR_TYPE}

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write `preprocessor_config.json` into `directory`."""
        return write_processor_config(directory, self.to_dict())

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str]) -> Swin2SRImageProcessor:
        """Read `preprocessor_config.json` from a directory (or the file itself); `pad_size` (the older
        name of `size_divisor`) is understood, other unknown keys ignored."""
        from swinv2.io.hub import resolve_model_dir

        path = Path(name_or_path)
        file = path if path.is_file() else resolve_model_dir(name_or_path) / PREPROCESSOR_NAME
        data = read_json_object(file, PREPROCESSOR_NAME)
        if "size_divisor" not in data and data.get("pad_size") is not None:  # as transformers reads it
            data["size_divisor"] = data["pad_size"]
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**fields)
        except ConfigError as err:
            raise ConfigError(f"invalid '{file}': {str(err).removeprefix(f'invalid {PROCESSOR_TYPE}: ')}") from None


# ------------------------------------------------------------------------------ images in/out
@dataclass
class SRImage:
    """An image as super-resolution sees it: colour (or grey) in [0, 1], alpha apart, and its bit depth."""

    rgb: torch.Tensor  # (3, H, W) float32 in [0, 1]
    alpha: torch.Tensor | None  # (1, H, W) float32 in [0, 1], None without transparency
    bits: int  # 8 or 16: the depth written back
    grey: bool  # written back as greyscale


def _name(image: ImageInput, index: int) -> str:
    return f"'{image}'" if isinstance(image, (str, os.PathLike)) else f"image {index}"


def _from_pil(image: Image.Image, rescale: float | None) -> SRImage:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit greyscale (PNG, TIFF)
        values = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).clamp(0, 65535)
        levels = values[None] / 65535.0 if rescale is not None else values[None]
        return SRImage(levels.expand(3, -1, -1).contiguous(), None, 16, True)
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    grey = mode in ("1", "L", "LA") or (mode == "P" and _palette_is_grey(image))
    converted = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    tensor = torch.from_numpy(converted.copy()).permute(2, 0, 1).float()  # (3 or 4, H, W)
    scale = rescale if rescale is not None else 1.0
    rgb, alpha = tensor[:3] * scale, (tensor[3:] / 255.0 if has_alpha else None)
    return SRImage(rgb.contiguous(), alpha, 8, grey)


def _palette_is_grey(image: Image.Image) -> bool:
    palette = image.getpalette() or []
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))


def read_image(image: ImageInput, name: str, rescale: float | None = 1 / 255) -> SRImage:
    """A path, PIL image, array (H, W) / (H, W, C) or tensor (C, H, W) as an `SRImage`; 8-bit values are
    multiplied by `rescale` (None: kept as they are), 16-bit ones taken to [0, 1]; float input is
    taken as already in [0, 1]."""
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image)
    if isinstance(image, Image.Image):
        if min(image.size) == 0:
            raise ImageError(f"cannot use {name}: the image is empty ({image.width} x {image.height})")
        return _from_pil(image, rescale)
    tensor = array_as_chw(image, name)
    if min(tensor.shape[-2:]) == 0:
        raise ImageError(f"cannot use {name}: the image is empty ({tuple(tensor.shape)})")
    if tensor.dtype == torch.uint8:
        bits, natural = 8, 1 / 255.0
    elif tensor.dtype in (torch.uint16, torch.int16, torch.int32):
        bits, natural = 16, 1 / 65535.0
    elif tensor.is_floating_point():
        bits, natural = 8, 1.0  # already in [0, 1]
    else:
        raise ImageError(f"cannot use {name}: pixel type must be uint8, uint16 or floating point; got {tensor.dtype}")
    values = tensor.float()
    scale = natural if bits == 16 or natural == 1.0 else (rescale if rescale is not None else 1.0)
    alpha = values[3:] * natural if tensor.shape[0] == 4 else None  # alpha always in [0, 1]
    colour = values[:3] if tensor.shape[0] >= 3 else values.expand(3, -1, -1)
    return SRImage((colour * scale).contiguous(), alpha, bits, tensor.shape[0] == 1)


def to_pil(rgb: torch.Tensor, alpha: torch.Tensor | None, bits: int, grey: bool) -> Image.Image:
    """(3, H, W) values in [0, 1] (clipped) and an optional (1, H, W) alpha as a PIL image of `bits` depth
    (16 bits only for greyscale without alpha: Pillow has no 16-bit colour or grey-and-alpha mode, so
    those are written with 8 bits rather than lose their colour or alpha)."""
    values = rgb.detach().float().clamp(0, 1)
    if grey:
        values = values.mean(0, keepdim=True)
    if bits == 16 and grey and alpha is None:
        grey16 = (values.mean(0) * 65535.0).round().to(torch.int32).numpy().astype(np.uint16)
        return Image.fromarray(grey16)  # 16-bit output is greyscale (Pillow writes no 16-bit colour)
    channels = [values] if alpha is None else [values, alpha.detach().float().clamp(0, 1)]
    array = (torch.cat(channels) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if array.shape[-1] == 1:
        return Image.fromarray(array[..., 0], "L")
    return Image.fromarray(array, {2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[-1]])


# ------------------------------------------------------------------------------------ tiling
def tile_spans(length: int, tile: int, overlap: int, align: int) -> list[tuple[int, int]]:
    """(start, end) of the tiles covering [0, length): a start every `tile - overlap` pixels, every start a
    multiple of `align` (`tile` and `overlap` are multiples of it); the last tile starts at the multiple of
    `align` that lets it reach the end, so it may be up to `align - 1` pixels longer than `tile`."""
    if tile >= length:
        return [(0, length)]
    starts = list(range(0, length - tile, tile - overlap))
    last = (length - tile) // align * align
    if last > starts[-1]:
        starts.append(last)
    return [(start, start + tile) for start in starts[:-1]] + [(starts[-1], length)]


def blend_weights(length: int, spans: Sequence[tuple[int, int]], overlap: int, scale: int) -> list[torch.Tensor]:
    """Per tile, its weights over its own output span (`scale` times its input span), which sum to 1 over
    the tiles at every output pixel (see the module docstring for the ramp)."""
    out_length = length * scale
    ramp_start, ramp_width = overlap * scale / 4, overlap * scale / 2
    full = torch.zeros(len(spans), out_length, dtype=torch.float64)
    for i, (start, end) in enumerate(spans):
        begin, finish = start * scale, end * scale
        centres = torch.arange(begin, finish, dtype=torch.float64) + 0.5
        distance = torch.full_like(centres, math.inf)
        if begin > 0:
            distance = torch.minimum(distance, centres - begin)
        if finish < out_length:
            distance = torch.minimum(distance, finish - centres)
        weight = torch.ones_like(centres) if overlap == 0 else ((distance - ramp_start) / ramp_width).clamp(0, 1)
        full[i, begin:finish] = weight
    full = full / full.sum(0, keepdim=True)  # > 0 everywhere: some tile is overlap / 2 or more from its cut edges
    return [full[i, start * scale : end * scale].float() for i, (start, end) in enumerate(spans)]


@dataclass(frozen=True)
class Tiling:
    """How to cut an image for the model: `tile` and `overlap` in input pixels (rounded up to windows)."""

    tile: int
    overlap: int = 32

    def __post_init__(self) -> None:
        if not (is_int(self.tile) and self.tile >= 1 and is_int(self.overlap) and self.overlap >= 0):
            raise ValueError(
                f"the tile must be an int of at least 1 and the overlap one of at least 0; got tile "
                f"{quote(self.tile)}, overlap {quote(self.overlap)}"
            )

    def aligned(self, window: int) -> tuple[int, int]:
        tile = math.ceil(self.tile / window) * window
        overlap = math.ceil(self.overlap / window) * window
        if overlap >= tile:
            raise ValueError(
                f"the overlap ({self.overlap} px, {overlap} in whole windows of {window}) must be smaller than the "
                f"tile ({self.tile} px, {tile} in windows)"
            )
        return tile, overlap


def upscale_pixels(
    model: Callable[[torch.Tensor], torch.Tensor],
    pixels: torch.Tensor,
    *,
    scale: int,
    window: int,
    tiling: Tiling | None = None,
    device: torch.device | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run `model` ((b, C, h, w) on `device` -> (b, C', scale*h, scale*w)) over `pixels` (B, C, H, W) on the
    CPU, whole or tile by tile; returns (B, C', scale*H, scale*W) float32 on the CPU.

    `on_tile(done, total)` is called after each tile (a progress display).
    """
    B, _, H, W = pixels.shape
    device = device or pixels.device
    if tiling is None:
        whole = model(pixels.to(device)).float().cpu()
        if on_tile is not None:
            on_tile(1, 1)
        return whole
    tile, overlap = tiling.aligned(window)
    rows, columns = tile_spans(H, tile, overlap, window), tile_spans(W, tile, overlap, window)
    row_weights, column_weights = blend_weights(H, rows, overlap, scale), blend_weights(W, columns, overlap, scale)
    out: torch.Tensor | None = None
    total, done = len(rows) * len(columns), 0
    for (top, bottom), row_weight in zip(rows, row_weights, strict=True):
        for (left, right), column_weight in zip(columns, column_weights, strict=True):
            result = model(pixels[:, :, top:bottom, left:right].to(device)).float().cpu()  # (B, C', s*h, s*w)
            if out is None:
                check_memory(B * result.shape[1] * H * W * scale * scale * 4, f"the {scale}x output of {H} x {W}")
                out = torch.zeros(B, result.shape[1], H * scale, W * scale)
            weight = row_weight[:, None] * column_weight[None, :]  # (s*h, s*w)
            out[:, :, top * scale : bottom * scale, left * scale : right * scale].add_(result * weight)
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    assert out is not None
    return out


def upscale_alpha(alpha: torch.Tensor, scale: int) -> torch.Tensor:
    """An alpha channel (1, H, W) upscaled apart from the colour: bicubic, clipped to [0, 1]."""
    if scale == 1:
        return alpha
    return F.interpolate(alpha[None], scale_factor=scale, mode="bicubic", align_corners=False)[0].clamp(0, 1)
