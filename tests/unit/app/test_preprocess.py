"""The image processor: parity with transformers' ViTImageProcessor on real photos, every bad-input rule."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import transformers
from PIL import Image

from swinv2.preprocess import ImageError, Swinv2ImageProcessor, open_image

ATOL = 1e-5


def _photos() -> dict[str, Image.Image]:
    astronaut = Image.fromarray(skimage.data.astronaut())
    camera = Image.fromarray(skimage.data.camera())
    rgba = astronaut.copy()
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 512, dtype=np.uint8), (512, 1))))
    return {
        "RGB astronaut": astronaut,
        "L camera": camera,
        "RGB coffee (non-square)": Image.fromarray(skimage.data.coffee()),
        "RGB chelsea (non-square)": Image.fromarray(skimage.data.chelsea()),
        "RGBA": rgba,
        "LA": camera.convert("LA"),
        "P (palette)": astronaut.convert("P"),
        "I;16 (16-bit)": Image.fromarray(skimage.data.camera().astype(np.uint16) * 257),
        "CMYK": astronaut.convert("CMYK"),
    }


PHOTOS = _photos()


@pytest.fixture(scope="module")
def pair() -> tuple[Swinv2ImageProcessor, transformers.ViTImageProcessor]:
    ours = Swinv2ImageProcessor.from_variant("swinv2-tiny-patch4-window8-256")
    theirs = transformers.ViTImageProcessor(
        size={"height": 256, "width": 256},
        resample=3,
        image_mean=ours.image_mean,
        image_std=ours.image_std,
        do_convert_rgb=True,
    )
    return ours, theirs


@pytest.mark.parametrize("name", list(PHOTOS))
def test_photos_of_every_mode_match_transformers(pair, name: str) -> None:
    ours, theirs = pair
    image = PHOTOS[name]
    expected = theirs(image, return_tensors="pt")["pixel_values"]
    actual = ours(image).pixel_values
    assert actual.shape == (1, 3, 256, 256)
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


def test_paths_arrays_tensors_and_lists_match_transformers(pair, tmp_path: Path) -> None:
    ours, theirs = pair
    coffee = skimage.data.coffee()
    Image.fromarray(coffee).save(tmp_path / "coffee.png")
    gray = skimage.data.camera()[:, :, None]
    chw = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1).contiguous()
    inputs = [coffee, gray, chw]
    expected = torch.cat([theirs(i, return_tensors="pt")["pixel_values"] for i in inputs])
    torch.testing.assert_close(ours(inputs).pixel_values, expected, atol=ATOL, rtol=0)
    from_path = ours(str(tmp_path / "coffee.png")).pixel_values
    torch.testing.assert_close(from_path, expected[:1], atol=ATOL, rtol=0)


def test_preprocessor_config_round_trips_and_loads_in_transformers(pair, tmp_path: Path) -> None:
    ours, _ = pair
    ours.save_pretrained(tmp_path)
    assert Swinv2ImageProcessor.from_pretrained(tmp_path) == ours
    loaded = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    image = PHOTOS["RGB astronaut"]
    torch.testing.assert_close(
        loaded(image, return_tensors="pt")["pixel_values"], ours(image).pixel_values, atol=ATOL, rtol=0
    )


def test_batch_moves_like_batch_feature(pair) -> None:
    ours, _ = pair
    batch = ours(PHOTOS["L camera"]).to(torch.float64)
    assert batch["pixel_values"].dtype == torch.float64


# ------------------------------------------------------------------------------------ bad input
def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("not a picture\n")
    with pytest.raises(ImageError, match=re.escape(f"cannot read image '{path}': not an image file")):
        open_image(path)


def test_truncated_jpeg(tmp_path: Path) -> None:
    full = tmp_path / "full.jpg"
    Image.fromarray(skimage.data.astronaut()).save(full, quality=90)
    path = tmp_path / "truncated.jpg"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageError, match=re.escape(f"cannot read image '{path}': truncated or corrupt")):
        open_image(path)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=re.escape(f"cannot read image '{path}': the file is empty")):
        Swinv2ImageProcessor()(path)


def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (400, 400)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # Pillow raises beyond 2x this
    with pytest.raises(ImageError, match=re.escape(f"cannot read image '{path}': too large to decode safely")):
        open_image(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        open_image(tmp_path / "absent.png")


@pytest.mark.parametrize(
    ("array", "phrase"),
    [
        (
            np.zeros((2, 8, 8, 3), dtype=np.uint8),
            "arrays must be (H, W) or (H, W, C) with C in 1, 3, 4; got (2, 8, 8, 3)",
        ),
        (np.zeros((8, 8, 2), dtype=np.uint8), "got (8, 8, 2)"),
        (np.zeros((8, 8, 3), dtype=np.int32), "pixel type must be uint8 or floating point in [0, 1]; got torch.int32"),
        (torch.zeros(5, 8, 8), "tensors must be (H, W) or (C, H, W) with C in 1, 3, 4; got (5, 8, 8)"),
        (np.zeros((0, 8, 3), dtype=np.uint8), "the image is empty"),
        ([1, 2, 3], "expected a path, PIL image, numpy array or tensor; got int"),
    ],
)
def test_bad_arrays_name_the_input_and_the_reason(array: object, phrase: str) -> None:
    with pytest.raises(ImageError, match="cannot use image 0: .*" + re.escape(phrase)):
        Swinv2ImageProcessor()(array)


def test_invalid_settings() -> None:
    with pytest.raises(ValueError, match="resample must be one of"):
        Swinv2ImageProcessor(resample=7)
    with pytest.raises(ValueError, match="size must be"):
        Swinv2ImageProcessor(size={"shortest_edge": 256})
