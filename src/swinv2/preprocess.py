"""`Swinv2ImageProcessor`: images in, `pixel_values` out, with transformers' conventions.

Resize to the model size (no crop), rescale by 1/255, normalise with the checkpoint's mean and std.
It reads and writes `preprocessor_config.json` as transformers' `ViTImageProcessor` does and gives the
same values (resizing works on uint8 with the same antialiased kernels, so the rounding matches too).
Images may be paths, PIL images, numpy arrays (H, W) / (H, W, C) or tensors (C, H, W) / (H, W).
"""

from __future__ import annotations

import json
import math
import os
import platform
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from swinv2.io.errors import ConfigError, InputError, quote
from swinv2.io.files import atomic_write_text
from swinv2.io.jsonfile import read_json_object
from swinv2.io.limits import check_memory
from swinv2.zoo import IMAGENET_MEAN, IMAGENET_STD, get_variant

PREPROCESSOR_NAME = "preprocessor_config.json"
# PIL's resampling codes, as transformers stores them, and the matching interpolate modes
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}

ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray | torch.Tensor


#: Largest side a processor resizes to (a model input; images themselves are bounded by the memory limit).
MAX_SIDE = 2**16


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def image_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """A list or tuple of images as a list; anything else (a path string included) as one image."""
    if isinstance(images, (list, tuple)):
        return list(images)
    return [cast(ImageInput, images)]  # not a list or tuple: one image, whatever other sequence it may be


def write_processor_config(directory: str | os.PathLike[str], content: dict[str, Any]) -> Path:
    """Write `content` as `directory/preprocessor_config.json` (atomically, sorted keys); returns its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / PREPROCESSOR_NAME
    atomic_write_text(target, json.dumps(content, indent=2, sort_keys=True) + "\n")
    return target


class ImageError(InputError):
    """An input that is not a usable image; the message names the input and the reason."""


class PixelBatch(dict[str, torch.Tensor]):
    """`{"pixel_values": tensor}` that, like transformers' `BatchFeature`, moves with `.to(...)`."""

    def to(self, *args: Any, **kwargs: Any) -> PixelBatch:
        """Move (or cast) every tensor; returns self."""
        for key, value in self.items():
            self[key] = value.to(*args, **kwargs)
        return self

    @property
    def pixel_values(self) -> torch.Tensor:
        """(B, 3, H, W) float32."""
        return self["pixel_values"]


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open and fully decode an image file, or raise `ImageError` saying why it cannot be used."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageError(f"cannot read image '{path}': the file is empty")
        with warnings.catch_warnings():  # PIL warns above its pixel count; the memory check below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        width, height = image.size
        bands = len(image.getbands())
        # the decoded image, its RGB copy and the float copy processing makes, before decoding anything
        check_memory(width * height * (bands + 3 + 3 * 4), f"decoding image '{path}' ({width} x {height} pixels)")
        image.load()  # decode now: truncated files fail here, not later
        return image
    except FileNotFoundError:
        raise ImageError(f"cannot read image '{path}': no such file") from None
    except IsADirectoryError:
        raise ImageError(f"cannot read image '{path}': it is a directory") from None
    except UnidentifiedImageError:
        raise ImageError(f"cannot read image '{path}': not an image file") from None
    except Image.DecompressionBombError as err:
        raise ImageError(f"cannot read image '{path}': too large to decode safely ({err})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as err:
        if isinstance(err, InputError):
            raise
        raise ImageError(f"cannot read image '{path}': truncated or corrupt ({err})") from None


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """RGB uint8 (H, W, 3): transparency composited onto white, other modes converted by PIL (as transformers)."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))


def array_as_chw(image: np.ndarray | torch.Tensor | Any, name: str) -> torch.Tensor:
    """An array (H, W) / (H, W, C) or a tensor (H, W) / (C, H, W), C in 1, 3, 4, as a (C, H, W) tensor of
    its own dtype; anything else is an `ImageError` naming `name`."""
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):
            raise ImageError(
                f"cannot use {name}: arrays must be (H, W) or (H, W, C) with C in 1, 3, 4; got {image.shape}"
            )
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[0] not in (1, 3, 4)):
            raise ImageError(
                f"cannot use {name}: tensors must be (H, W) or (C, H, W) with C in 1, 3, 4; got {tuple(image.shape)}"
            )
        tensor = image[None] if image.ndim == 2 else image
    else:
        raise ImageError(
            f"cannot use {name}: expected a path, PIL image, numpy array or tensor; got {type(image).__name__}"
        )
    return tensor


def _as_chw_tensor(image: ImageInput, name: str) -> torch.Tensor:
    """Any accepted input as a (3, H, W) tensor, uint8 for 8-bit sources, float otherwise."""
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image)
    if isinstance(image, Image.Image):
        return torch.from_numpy(_pil_to_rgb(image).copy()).permute(2, 0, 1)
    tensor = array_as_chw(image, name)
    if tensor.dtype != torch.uint8 and not tensor.is_floating_point():
        raise ImageError(f"cannot use {name}: pixel type must be uint8 or floating point in [0, 1]; got {tensor.dtype}")
    if min(tensor.shape[-2:]) == 0:
        raise ImageError(f"cannot use {name}: the image is empty ({tuple(tensor.shape)})")
    if tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    elif tensor.shape[0] == 4:  # RGBA without a PIL mode: composite onto white
        rgb, alpha = tensor[:3].float(), tensor[3:].float()
        scale = 255.0 if tensor.dtype == torch.uint8 else 1.0
        composite = rgb * (alpha / scale) + scale * (1 - alpha / scale)
        tensor = composite.round().to(torch.uint8) if tensor.dtype == torch.uint8 else composite
    return tensor.contiguous()


def _native_uint8(mode: str) -> bool:
    """Whether torch resizes uint8 directly for `mode` here (torchvision's rule; otherwise float + round)."""
    if mode == "bilinear":
        return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in (
            "aarch64",
            "arm64",
        )
    return mode == "bicubic"


#: How much larger than the input or the output (whichever is larger) the intermediate of a resize may be
#: before the two passes are run in the other order (only extreme aspect ratios get near it).
_INTERMEDIATE_RATIO = 16


def _resize_once(batch: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """One `interpolate` call on (1, C, H, W); uint8 stays uint8, rounded exactly as torchvision does."""
    smooth = mode in ("bilinear", "bicubic")
    kwargs: dict[str, Any] = {"align_corners": False, "antialias": True} if smooth else {}
    if batch.dtype == torch.uint8 and not (smooth and _native_uint8(mode)) and mode != "nearest":
        return F.interpolate(batch.float(), size=size, mode=mode, **kwargs).clamp_(0, 255).round_().to(torch.uint8)
    return F.interpolate(batch, size=size, mode=mode, **kwargs)


def resize(image: torch.Tensor, size: tuple[int, int], mode: str, name: str = "the image") -> torch.Tensor:
    """Resize (C, H, W) to `size` with antialiasing; uint8 stays uint8, rounded exactly as torchvision does.

    torch resizes the width first, holding an (H, out_W) intermediate: for a 16-million-pixel-tall
    strip resized to 256 x 256 that is billions of values. Where the intermediate would be far larger
    than both the input and the output, the height is resized first instead (one call per axis), and
    the work is checked against the memory limit before it starts.

    Raises:
        LimitError: the resize would need more memory than the limit allows (`name` says what image).
    """
    (height, width), (out_h, out_w) = image.shape[-2:], size
    if (height, width) == (out_h, out_w):
        return image
    ends = max(height * width, out_h * out_w)
    height_first = height * out_w > _INTERMEDIATE_RATIO * ends and out_h * width < height * out_w
    intermediate = out_h * width if height_first else height * out_w
    channels = image.shape[0]
    check_memory(4 * channels * (ends + 2 * intermediate), f"resizing {name} ({width} x {height} pixels)")
    batch = image[None]  # (1, C, H, W)
    if height_first:
        batch = _resize_once(batch, (out_h, width), mode)
    return _resize_once(batch, size, mode)[0]


@dataclass
class Swinv2ImageProcessor:
    """Prepare images for a Swin V2 model: resize (no crop), rescale, normalise.

    Args:
        size: {"height": H, "width": W} of the model input.
        resample: PIL code of the resize filter: 3 bicubic (the checkpoints'), 2 bilinear, 0 nearest.
        do_resize / do_rescale / do_normalize: Steps to run.
        rescale_factor: Multiplier taking 8-bit values to [0, 1].
        image_mean / image_std: Per-channel normalisation.
        do_convert_rgb: Convert inputs to RGB (transparency composited onto white).

    Example:
        >>> processor = Swinv2ImageProcessor.from_variant("swinv2-tiny-patch4-window8-256")
        >>> processor(["cat.jpg", "dog.png"]).pixel_values.shape
        torch.Size([2, 3, 256, 256])
    """

    size: dict[str, int] = field(default_factory=lambda: {"height": 256, "width": 256})
    resample: int = 3
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    do_convert_rgb: bool = True

    def __post_init__(self) -> None:
        errors = []
        if not (_is_int(self.resample) and self.resample in _RESAMPLE):
            errors.append(f"resample must be one of {sorted(_RESAMPLE)} (PIL codes); got {quote(self.resample)}")
        size = self.size
        if not (
            isinstance(size, dict)
            and set(size) == {"height", "width"}
            and all(_is_int(v) and 0 < v <= MAX_SIDE for v in size.values())
        ):
            errors.append(f"size must be {{'height': H, 'width': W}} with ints from 1 to {MAX_SIDE}; got {quote(size)}")
        for name in ("image_mean", "image_std"):
            values = getattr(self, name)
            if not (isinstance(values, (list, tuple)) and len(values) == 3 and all(map(_is_finite, values))):
                errors.append(f"{name} must be 3 finite numbers; got {quote(values)}")
            elif name == "image_std" and min(values) <= 0:
                errors.append(f"image_std must be positive; got {quote(values)}")
        if not (_is_finite(self.rescale_factor) and self.rescale_factor > 0):
            errors.append(f"rescale_factor must be a positive number; got {quote(self.rescale_factor)}")
        for name in ("do_resize", "do_rescale", "do_normalize", "do_convert_rgb"):
            if not isinstance(getattr(self, name), bool):
                errors.append(f"{name} must be true or false; got {quote(getattr(self, name))}")
        if errors:
            raise ConfigError("invalid Swinv2ImageProcessor: " + "; ".join(errors))
        self.image_mean, self.image_std = list(self.image_mean), list(self.image_std)

    @classmethod
    def from_variant(cls, name: str) -> Swinv2ImageProcessor:
        """The preprocessing a named variant was trained with."""
        prep = get_variant(name).preprocessing
        return cls(size={"height": prep.size, "width": prep.size}, image_mean=list(prep.mean), image_std=list(prep.std))

    def __call__(
        self, images: ImageInput | Sequence[ImageInput], return_tensors: str | None = "pt", device: Any = None
    ) -> PixelBatch:
        """Process one image or a list: returns `{"pixel_values": (B, 3, H, W) float32}`."""
        if return_tensors not in (None, "pt"):
            raise ValueError(f"only PyTorch tensors are returned (return_tensors='pt'); got {return_tensors!r}")
        batch = image_list(images)
        if not batch:
            raise ImageError("no images given")
        height, width = self.size["height"], self.size["width"]
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        processed = []
        for index, image in enumerate(batch):
            name = f"'{image}'" if isinstance(image, (str, os.PathLike)) else f"image {index}"
            tensor = _as_chw_tensor(image, name)
            if self.do_resize:
                tensor = resize(tensor, (height, width), _RESAMPLE[self.resample], name)
            pixels = tensor.float()
            if self.do_rescale and tensor.dtype == torch.uint8:
                pixels = pixels * self.rescale_factor
            if self.do_normalize:
                pixels = (pixels - mean) / std
            processed.append(pixels)
        shapes = {tuple(p.shape) for p in processed}
        if len(shapes) > 1:
            raise ImageError(f"images of different sizes cannot be batched without resizing: {sorted(shapes)}")
        pixel_values = torch.stack(processed)
        return PixelBatch(pixel_values=pixel_values if device is None else pixel_values.to(device))

    # --------------------------------------------------------------------------------- config
    def to_dict(self) -> dict[str, Any]:
        """transformers' preprocessor_config.json content."""
        return {**asdict(self), "image_processor_type": "ViTImageProcessor"}

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write `preprocessor_config.json` into `directory`."""
        return write_processor_config(directory, self.to_dict())

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str]) -> Swinv2ImageProcessor:
        """Read `preprocessor_config.json` from a directory (or the file itself); unknown keys are ignored."""
        from swinv2.io.hub import resolve_model_dir

        path = Path(name_or_path)
        file = path if path.is_file() else resolve_model_dir(name_or_path) / PREPROCESSOR_NAME
        data = read_json_object(file, PREPROCESSOR_NAME)
        known = {f for f in cls.__dataclass_fields__}
        fields = {k: v for k, v in data.items() if k in known}
        size = fields.get("size")
        if isinstance(size, dict) and "shortest_edge" in size:
            raise ConfigError(f"'{file}' resizes by shortest edge; this processor resizes to a fixed height and width")
        try:
            return cls(**fields)
        except ConfigError as err:
            raise ConfigError(f"invalid '{file}': {str(err).removeprefix('invalid Swinv2ImageProcessor: ')}") from None
