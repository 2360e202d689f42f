"""Super-resolution training data and evaluation: random crops of high-resolution images, their low-resolution
versions made on the fly, and PSNR against bicubic upscaling.

A training sample is a crop of `crop * scale` high-resolution pixels at a random place, flipped and
rotated by multiples of 90 degrees, and its bicubic (antialiased) down-scaling by `scale`, quantised to
8 bits like a real low-resolution image. Like the classifier's augmentation, everything random is drawn
from (seed, epoch, index), so resumed and multi-process runs see the same samples. The data are an image
folder (`DATA/train/*`, `DATA/val/*`, or a folder split with the seed) or "photos", the colour photos that
ship inside scikit-image (no download), with the cat and the coffee cup held out.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from swinv2.io.errors import InputError, quote
from swinv2.models import Swin2SRForImageSuperResolution
from swinv2.preprocess import open_image
from swinv2.superres import read_image
from swinv2.train.data import DataError, _check_image, _permutation, sample_generator, stable_seed

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
#: scikit-image's bundled colour photos (no download): trained on, and held out.
PHOTOS = ("astronaut", "rocket", "immunohistochemistry", "hubble_deep_field")
HELD_OUT_PHOTOS = ("chelsea", "coffee")


def downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """(..., 3, H, W) in [0, 1] -> (..., 3, H/scale, W/scale): antialiased bicubic, clipped and quantised to 8 bits."""
    if scale == 1:
        return hr
    batch = hr.reshape(-1, *hr.shape[-3:])
    size = (hr.shape[-2] // scale, hr.shape[-1] // scale)
    low = F.interpolate(batch, size=size, mode="bicubic", antialias=True, align_corners=False)
    return (low.clamp(0, 1) * 255).round().div(255).reshape(*hr.shape[:-2], *size)


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The baseline a super-resolution model must beat: (B, 3, h, w) -> (B, 3, h*scale, w*scale), clipped."""
    if scale == 1:
        return lr
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)


def psnr(estimate: torch.Tensor, target: torch.Tensor, border: int = 0) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1] (B, C, H, W), `border` pixels left out on every
    side (the usual convention: the scale factor), over the whole batch."""
    if border:
        estimate, target = estimate[..., border:-border, border:-border], target[..., border:-border, border:-border]
    mse = float(((estimate.clamp(0, 1) - target) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


# --------------------------------------------------------------------------------- sources
def photo(name: str) -> np.ndarray:
    """One of scikit-image's bundled photos as (H, W, 3) uint8."""
    try:
        import skimage.data
    except ImportError:
        raise DataError("'photos' are scikit-image's bundled photos: pip install 'swinv2[photos]'") from None
    image = getattr(skimage.data, name)()
    return np.ascontiguousarray(image[..., :3])


def _image_files(folder: Path) -> list[Path]:
    found = (p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass
class SRSources:
    """The high-resolution images of a run: training and held-out, each a path or an in-memory array."""

    train: list[Path | np.ndarray]
    val: list[Path | np.ndarray]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def sr_sources(source: str | os.PathLike[str], seed: int = 0, val_fraction: float = 0.1) -> SRSources:
    """The images of "photos" or of a folder (`train/` and `val/`, or all of it split with `seed`);
    unreadable files are skipped and listed.

    Raises:
        DataError: no readable image, or nothing left to train on.
    """
    if str(source) == "photos":
        return SRSources([photo(n) for n in PHOTOS], [photo(n) for n in HELD_OUT_PHOTOS])
    root = Path(source)
    if not root.is_dir():
        raise DataError(f"'{root}' is not a folder of images (or 'photos', scikit-image's bundled photos)")
    skipped: list[tuple[Path, str]] = []

    def readable(files: list[Path]) -> list[Path]:
        good = []
        for path in files:
            reason = _check_image(path)
            if reason is None:
                good.append(path)
            else:
                skipped.append((path, reason))
        return good

    if (root / "train").is_dir():
        train = readable(_image_files(root / "train"))
        val = readable(_image_files(root / "val")) if (root / "val").is_dir() else []
    else:
        every = readable(_image_files(root))
        order = _permutation(len(every), stable_seed("split", seed))
        held = max(1, round(len(every) * val_fraction)) if len(every) > 1 else 0
        val = [every[i] for i in sorted(order[:held])]
        train = [every[i] for i in sorted(order[held:])]
    if not train:
        raise DataError(
            f"'{root}' has no readable training images (accepted suffixes: {', '.join(IMAGE_SUFFIXES)}; "
            f"{len(skipped)} unreadable)"
        )
    return SRSources(list(train), list(val), skipped)


def _load(source: Path | np.ndarray, name: str) -> torch.Tensor:
    """(3, H, W) float in [0, 1]."""
    image = open_image(source) if isinstance(source, Path) else source
    return read_image(image, name).rgb


# -------------------------------------------------------------------------------- datasets
class SRCrops(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Random training pairs: item i is `(low (3, crop, crop), high (3, crop*scale, crop*scale))` in [0, 1].

    Each image gives `repeats` samples an epoch (index i is image i % len(images)), cropped, flipped and
    rotated with the generator of (seed, epoch, index). Images smaller than the crop are refused when
    loaded (the message names the image and both sizes).
    """

    def __init__(
        self, sources: Sequence[Path | np.ndarray], *, scale: int, crop: int, repeats: int = 16, seed: int = 0
    ) -> None:
        if not sources:
            raise DataError("no training images")
        self.sources, self.scale, self.crop, self.repeats, self.seed = list(sources), scale, crop, repeats, seed
        self.epoch = 0
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.sources) * self.repeats

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _image(self, which: int) -> torch.Tensor:
        if which not in self._cache:  # decoded once per process; the crops are cheap
            source = self.sources[which]
            name = f"'{source}'" if isinstance(source, Path) else f"photo {which}"
            image = _load(source, name)
            side = self.crop * self.scale
            if min(image.shape[-2:]) < side:
                raise DataError(
                    f"{name} is {image.shape[-1]} x {image.shape[-2]} pixels, smaller than one training crop of "
                    f"{side} x {side} (--crop {self.crop} x scale {self.scale}); lower --crop or remove the image"
                )
            self._cache[which] = image
        return self._cache[which]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        image = self._image(index % len(self.sources))
        generator = sample_generator(self.seed, epoch, index)
        side = self.crop * self.scale
        top = int(torch.randint(0, image.shape[-2] - side + 1, (1,), generator=generator))
        left = int(torch.randint(0, image.shape[-1] - side + 1, (1,), generator=generator))
        flip, turns = torch.randint(0, 2, (1,), generator=generator), torch.randint(0, 4, (1,), generator=generator)
        high = image[:, top : top + side, left : left + side]
        if int(flip):
            high = high.flip(-1)
        high = torch.rot90(high, int(turns), dims=(-2, -1)).contiguous()
        return downscale(high, self.scale), high


class SRHeldOut(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Held-out pairs: the centre `size * scale` pixels of each image (whole images are kept when smaller)
    and their down-scaling; no randomness."""

    def __init__(self, sources: Sequence[Path | np.ndarray], *, scale: int, size: int = 96) -> None:
        self.sources, self.scale, self.size = list(sources), scale, size

    def __len__(self) -> int:
        return len(self.sources)

    def set_epoch(self, epoch: int) -> None:
        pass

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        source = self.sources[index]
        image = _load(source, f"'{source}'" if isinstance(source, Path) else f"held-out photo {index}")
        side_h = min(image.shape[-2], self.size * self.scale) // self.scale * self.scale
        side_w = min(image.shape[-1], self.size * self.scale) // self.scale * self.scale
        top, left = (image.shape[-2] - side_h) // 2, (image.shape[-1] - side_w) // 2
        high = image[:, top : top + side_h, left : left + side_w].contiguous()
        return downscale(high, self.scale), high


@dataclass(frozen=True)
class SREvaluation:
    """Held-out quality: the model's PSNR and bicubic upscaling's, in dB, over all `images` held-out images
    (their pixels pooled) and per image, and the mean L1 loss."""

    psnr: float
    bicubic_psnr: float
    loss: float
    images: int
    psnr_each: list[float] = field(default_factory=list)
    bicubic_psnr_each: list[float] = field(default_factory=list)

    def summary(self) -> str:
        gain = self.psnr - self.bicubic_psnr
        return (
            f"PSNR {self.psnr:.2f} dB (bicubic {self.bicubic_psnr:.2f} dB, {gain:+.2f} dB), "
            f"L1 {self.loss:.4f} on {self.images} held-out image(s)"
        )


@torch.no_grad()
def evaluate_sr(
    model: torch.nn.Module, dataset: SRHeldOut, device: torch.device, autocast_dtype: torch.dtype | None = None
) -> SREvaluation:
    """PSNR (leaving out a border of `scale` pixels), L1 loss and the bicubic baseline over the held-out
    images, one at a time."""
    was_training = model.training
    model.eval()
    scale = dataset.scale
    inner = (slice(None), slice(None), slice(scale, -scale or None), slice(scale, -scale or None))
    totals = {"model": 0.0, "bicubic": 0.0}
    each: dict[str, list[float]] = {"model": [], "bicubic": []}
    pixels, loss = 0, 0.0
    for index in range(len(dataset)):
        low, high = dataset[index]
        context = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else _no_autocast()
        with context:
            estimate = model(low[None].to(device)).reconstruction.float().cpu()  # (1, 3, s*h, s*w)
        target = high[None][inner]
        for name, output in (("model", estimate), ("bicubic", bicubic_upscale(low[None], scale))):
            squared = float(((output[inner].clamp(0, 1) - target) ** 2).sum())
            totals[name] += squared
            each[name].append(_decibels(squared, target.numel()))
        pixels += target.numel()
        loss += float((estimate - high[None]).abs().mean())
    model.train(was_training)
    return SREvaluation(
        _decibels(totals["model"], pixels),
        _decibels(totals["bicubic"], pixels),
        loss / max(len(dataset), 1),
        len(dataset),
        each["model"],
        each["bicubic"],
    )


def _decibels(squared_error: float, count: int) -> float:
    """PSNR of a summed squared error over `count` values in [0, 1]."""
    return math.inf if squared_error == 0 else 10 * math.log10(count / squared_error)


def _no_autocast() -> torch.autocast:
    return torch.autocast("cpu", enabled=False)


def check_sr_model(model: torch.nn.Module, source: str) -> Swin2SRForImageSuperResolution:
    """The model a super-resolution run trains, or a clear error for another kind of model."""
    if not isinstance(model, Swin2SRForImageSuperResolution):
        raise InputError(
            f"'{source}' holds a {type(model).__name__}; super-resolution training needs a Swin2SR model "
            "(a Swin2SRForImageSuperResolution directory or an original Swin2SR .pth file)"
        )
    if model.config.upsampler == "" and model.config.upscale != 1:
        raise InputError(f"'{source}': a model without an upsampler cannot upscale by {quote(model.config.upscale)}")
    return model
