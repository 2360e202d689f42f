"""`upscale()`: images of every kind in, the same kind out (alpha, greyscale, 16 bits kept), values equal to
running the model by hand, batched and tiled runs equal to single whole ones, and models refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image

from helpers import perturb_, tiny_config
from swinv2 import Swin2SRConfig, Swin2SRForImageSuperResolution, Swinv2ForImageClassification
from swinv2.pipeline import upscale

# natural content (a photo crop), small enough for a tiny model: 30 x 37, not multiples of the window
PHOTO = skimage.data.astronaut()[100:130, 180:217]


@pytest.fixture(scope="module")
def model() -> Swin2SRForImageSuperResolution:
    config = Swin2SRConfig(
        embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, upscale=2, upsampler="pixelshuffle", image_size=16
    )
    torch.manual_seed(0)
    return perturb_(Swin2SRForImageSuperResolution(config)).eval()


def by_hand(model: Swin2SRForImageSuperResolution, rgb: np.ndarray) -> torch.Tensor:
    """The model's (3, 2H, 2W) output in [0, 1] for (H, W, 3) values in [0, 1]."""
    pixels = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    with torch.no_grad():
        return model(pixels).reconstruction[0].clamp(0, 1)


def levels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int64)


def test_rgb_equals_the_model_by_hand(model: Swin2SRForImageSuperResolution) -> None:
    (result,) = upscale([Image.fromarray(PHOTO)], model)
    assert result.mode == "RGB" and result.size == (2 * 37, 2 * 30)
    expected = (by_hand(model, PHOTO / 255.0) * 255).round().permute(1, 2, 0).numpy()
    assert np.abs(levels(result) - expected).max() <= 1  # rounding of float sums only


def test_alpha_is_kept_and_upscaled_bicubic_apart_from_the_colour(model: Swin2SRForImageSuperResolution) -> None:
    alpha = np.tile(np.linspace(0, 255, 37).astype(np.uint8), (30, 1))
    alpha[10:20, 5:9] = 0  # fully transparent pixels keep their colour: nothing is composited
    (result,) = upscale(Image.fromarray(np.dstack([PHOTO, alpha]), "RGBA"), model)
    (opaque,) = upscale(Image.fromarray(PHOTO), model)
    assert result.mode == "RGBA" and result.size == (74, 60)
    assert np.array_equal(levels(result)[..., :3], levels(opaque))
    source = torch.from_numpy(alpha).float()[None, None] / 255  # (1, 1, H, W)
    bicubic = F.interpolate(source, size=(60, 74), mode="bicubic", align_corners=False)[0, 0].clamp(0, 1)
    assert np.abs(levels(result)[..., 3] - (bicubic * 255).round().numpy()).max() <= 1


def test_greyscale_stays_greyscale(model: Swin2SRForImageSuperResolution) -> None:
    grey = skimage.data.camera()[200:230, 240:277]
    (result,) = upscale(Image.fromarray(grey), model)
    assert result.mode == "L" and result.size == (74, 60)
    expected = by_hand(model, np.repeat(grey[..., None], 3, axis=2) / 255.0).mean(0)
    assert np.abs(levels(result) - (expected * 255).round().numpy()).max() <= 1
    (with_alpha,) = upscale(Image.fromarray(grey).convert("LA"), model)
    assert with_alpha.mode == "LA"


def test_16_bit_greyscale_stays_16_bit(model: Swin2SRForImageSuperResolution) -> None:
    deep = (skimage.data.camera()[200:230, 240:277].astype(np.uint16) * 257 + 101).astype(np.uint16)
    image = Image.fromarray(deep)
    assert image.mode == "I;16"
    (result,) = upscale(image, model)
    assert result.mode == "I;16" and result.size == (74, 60)
    expected = by_hand(model, np.repeat(deep[..., None], 3, axis=2) / 65535.0).mean(0) * 65535
    values = levels(result)
    assert np.abs(values - expected.round().numpy()).max() <= 1
    assert np.any(values % 257 != 0)  # 16 bits of output, not 8 bits scaled


def test_16_bit_colour_keeps_its_colour(model: Swin2SRForImageSuperResolution) -> None:
    # Pillow has no 16-bit colour mode: 8-bit colour, not 16-bit grey (the colour was lost before the fix)
    (result,) = upscale(PHOTO.astype(np.uint16) * 257, model)
    assert result.mode == "RGB"
    (eight,) = upscale(PHOTO, model)
    assert np.abs(levels(result) - levels(eight)).max() <= 1


def test_paths_arrays_and_tensors_give_the_same_image(model: Swin2SRForImageSuperResolution, tmp_path: Path) -> None:
    Image.fromarray(PHOTO).save(tmp_path / "photo.png")
    tensor_uint8 = torch.from_numpy(PHOTO).permute(2, 0, 1)
    results = upscale(
        [tmp_path / "photo.png", str(tmp_path / "photo.png"), PHOTO, tensor_uint8, tensor_uint8.float() / 255], model
    )
    first = levels(results[0])
    assert all(r.mode == "RGB" for r in results)
    for other in results[1:]:
        assert np.abs(levels(other) - first).max() <= 1
    (grey,) = upscale(torch.rand(1, 12, 9), model)  # a one-channel tensor is greyscale
    assert grey.mode == "L" and grey.size == (18, 24)


def test_a_batch_equals_one_by_one(model: Swin2SRForImageSuperResolution) -> None:
    images = [skimage.data.astronaut()[r : r + 30, 100:137] for r in (0, 50, 100)] + [PHOTO[:20]]
    batched = upscale(images, model, batch_size=3)
    single = [upscale(image, model)[0] for image in images]
    assert [r.size for r in batched] == [(74, 60)] * 3 + [(74, 40)]
    for one, other in zip(batched, single, strict=True):
        assert np.abs(levels(one) - levels(other)).max() <= 1


def test_tiled_equals_untiled_within_one_grey_level(model: Swin2SRForImageSuperResolution) -> None:
    photo = skimage.data.astronaut()[60:160, 150:240]  # 100 x 90
    calls: list[tuple[int, int]] = []
    # the default overlap (32): the model (reach 11) sees past overlap / 4, so not exact, but the seams fade
    (tiled,) = upscale(photo, model, tile=64, on_tile=lambda done, total: calls.append((done, total)))
    (whole,) = upscale(photo, model)
    assert calls[-1] == (6, 6)  # 3 rows x 2 columns
    assert tiled.size == whole.size == (180, 200)
    assert np.abs(levels(tiled) - levels(whole)).max() <= 1


def test_bf16_autocast(model: Swin2SRForImageSuperResolution) -> None:
    (low,) = upscale(PHOTO, model, dtype="bfloat16")
    (exact,) = upscale(PHOTO, model)
    # bf16 rounds to 8 significant bits (see test_tiling.py: 0.008 at most, about 2 grey levels)
    assert np.abs(levels(low) - levels(exact)).max() <= 8
    with pytest.raises(ValueError, match="dtype must be float32, bfloat16 or float16; got 'int8'"):
        upscale(PHOTO, model, dtype="int8")


def test_a_one_channel_model(model: Swin2SRForImageSuperResolution) -> None:
    config = Swin2SRConfig(
        num_channels=1, embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, upscale=3, image_size=16
    )
    grey_model = perturb_(Swin2SRForImageSuperResolution(config)).eval()
    (result,) = upscale(Image.fromarray(PHOTO).convert("L"), grey_model)
    assert result.mode == "L" and result.size == (111, 90)


def test_other_models_and_bad_arguments_are_refused(model: Swin2SRForImageSuperResolution, tmp_path: Path) -> None:
    classifier = Swinv2ForImageClassification(tiny_config())
    with pytest.raises(TypeError, match="upscaling needs a Swin2SRForImageSuperResolution; got a Swinv2ForImage"):
        upscale(PHOTO, classifier)
    classifier.save_pretrained(tmp_path / "classifier")
    with pytest.raises(ValueError, match="config is for model_type 'swinv2', not 'swin2sr'"):
        upscale(PHOTO, tmp_path / "classifier")
    with pytest.raises(FileNotFoundError, match="no model directory at"):
        upscale(PHOTO, tmp_path / "missing")
    with pytest.raises(ValueError, match=r"the overlap \(9 px, 12 in whole windows of 4\) must be smaller"):
        upscale(PHOTO, model, tile=10, overlap=9)
    with pytest.raises(ValueError, match="cannot use image 0: the image is empty"):
        upscale(np.zeros((0, 4, 3), np.uint8), model)
