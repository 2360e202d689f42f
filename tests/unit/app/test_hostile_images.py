"""Hostile images: extreme aspect ratios, headers that lie about the size, truncated and empty files.

Each test protects against an image that would otherwise exhaust memory (a 16-million-pixel strip
resized width-first holds billions of values; a 60000 x 60000 header asks for gigabytes before one
byte is decoded) or crash with a decoder's own exception. Refusals are `ImageError` / `LimitError`
naming the file.
"""

from __future__ import annotations

import re
import resource
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import swinv2.io.limits as limits
from swinv2.io.errors import InputError, LimitError
from swinv2.preprocess import ImageError, Swinv2ImageProcessor, open_image

STRIP = 2**24  # 16,777,216 pixels in one row or one column


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


@pytest.fixture
def limit(monkeypatch: pytest.MonkeyPatch):
    """Set `SWINV2_MEMORY_LIMIT` for one test (no Python-side override left by another test)."""
    monkeypatch.setattr(limits, "_override", None)
    monkeypatch.setattr(limits, "_unlimited", False)
    return lambda value: monkeypatch.setenv(limits.ENV_VAR, value)


@pytest.fixture(scope="module")
def strips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("strips")
    paths = {"1 x 16777216": root / "wide.png", "16777216 x 1": root / "tall.png"}
    Image.fromarray(np.zeros((1, STRIP), dtype=np.uint8)).save(paths["1 x 16777216"])
    Image.fromarray(np.zeros((STRIP, 1), dtype=np.uint8)).save(paths["16777216 x 1"])
    return paths


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid 4 x 4 PNG whose IHDR is rewritten to `width` x `height`, with a correct CRC."""
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(self: ImageFile.ImageFile) -> None:
        raise AssertionError("the image was decoded before its size was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


# ----------------------------------------------------------------------------------- extreme strips
@pytest.mark.parametrize("shape", ["1 x 16777216", "16777216 x 1"])
def test_one_pixel_strip_is_processed_in_bounded_memory(strips: dict[str, Path], shape: str) -> None:
    """Width-first resizing of a 16M-pixel-tall strip would hold a (16M, 32) intermediate per channel;
    the result is a normal batch (or a LimitError), and peak memory stays under 2 GB more."""
    processor = Swinv2ImageProcessor(size={"height": 32, "width": 32})
    before = _peak_rss_bytes()
    try:
        pixel_values = processor(strips[shape]).pixel_values
    except LimitError as err:
        assert f"'{strips[shape]}'" in str(err)
    else:
        assert tuple(pixel_values.shape) == (1, 3, 32, 32)
        assert bool(pixel_values.isfinite().all())
    assert _peak_rss_bytes() - before < 2 * 10**9


def test_strip_resize_beyond_the_limit_is_refused_before_resizing(limit) -> None:
    """An in-memory strip (no file): the resize's own memory check names the input."""
    limit("50MB")
    strip = np.zeros((STRIP, 1, 3), dtype=np.uint8)
    with pytest.raises(LimitError) as info:
        Swinv2ImageProcessor(size={"height": 32, "width": 32})(strip)
    message = str(info.value)
    assert message.startswith("resizing image 0 (1 x 16777216 pixels) needs about ")
    assert "more than the limit of 0.05 GB" in message
    assert "SWINV2_MEMORY_LIMIT" in message


# ------------------------------------------------------------------------------- headers that lie
def test_header_claiming_a_large_size_is_refused_before_decoding(
    tmp_path: Path, limit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10000 x 10000 (below PIL's bomb threshold): the memory check refuses before `load()` runs."""
    path = _png_claiming(tmp_path / "liar.png", 10_000, 10_000)
    limit("100MB")
    _no_decoding(monkeypatch)
    with pytest.raises(LimitError) as info:
        open_image(path)
    message = str(info.value)
    assert message.startswith(f"decoding image '{path}' (10000 x 10000 pixels) needs about ")
    assert "more than the limit of 0.1 GB" in message
    assert 'SWINV2_MEMORY_LIMIT="2GB"' in message


def test_header_claiming_60000_squared_is_refused_naming_the_file(
    tmp_path: Path, limit, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _png_claiming(tmp_path / "bomb.png", 60_000, 60_000)
    limit("100MB")
    _no_decoding(monkeypatch)
    with pytest.raises((LimitError, ImageError)) as info:
        open_image(path)
    message = str(info.value)
    assert f"'{path}'" in message
    assert "60000 x 60000" in message or "3600000000 pixels" in message
    with pytest.raises(InputError, match=re.escape(f"'{path}'")):
        Swinv2ImageProcessor(size={"height": 32, "width": 32})(path)


# ---------------------------------------------------------------------------------- broken files
def test_truncated_png_names_the_file(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    full = tmp_path / "full.png"
    Image.fromarray(noise).save(full)
    path = tmp_path / "cut.png"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageError) as info:
        Swinv2ImageProcessor(size={"height": 32, "width": 32})(path)
    assert str(info.value).startswith(f"cannot read image '{path}': truncated or corrupt (")


@pytest.mark.parametrize("keep", [8, 20], ids=["signature-only", "half-a-header"])
def test_png_cut_inside_its_header(tmp_path: Path, keep: int) -> None:
    full = _png_claiming(tmp_path / "full.png", 4, 4)
    path = tmp_path / "stub.png"
    path.write_bytes(full.read_bytes()[:keep])
    with pytest.raises(ImageError) as info:
        open_image(path)
    message = str(info.value)
    assert message.startswith(f"cannot read image '{path}': ")
    assert "not an image file" in message or "truncated or corrupt" in message


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as info:
        Swinv2ImageProcessor(size={"height": 32, "width": 32})(path)
    assert str(info.value) == f"cannot read image '{path}': the file is empty"
