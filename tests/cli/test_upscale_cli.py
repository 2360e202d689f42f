"""`swinv2 upscale` through the real entry point in a subprocess: a directory of images of every kind in,
the same names, sizes and modes out; bad files reported one per line while the others are written;
misuse and a missing model as one line, never a traceback (these in-process through `swinv2.cli.main`,
the same code minus the interpreter start)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from helpers import perturb_
from swinv2 import Swin2SRConfig, Swin2SRForImageSuperResolution
from swinv2.cli import main
from swinv2.pipeline import upscale

COMMAND = [sys.executable, "-m", "swinv2"]


def run_cli(*args: object) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("SWINV2_DEBUG", "SWINV2_MEMORY_LIMIT")}
    environment.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [*COMMAND, "upscale", *map(str, args)], capture_output=True, text=True, timeout=300, env=environment
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("upscale")
    config = Swin2SRConfig(
        embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, upscale=2, upsampler="pixelshuffle", image_size=16
    )
    torch.manual_seed(0)
    perturb_(Swin2SRForImageSuperResolution(config)).save_pretrained(root / "model")
    images = root / "images"
    (images / "nested").mkdir(parents=True)
    photo = skimage.data.astronaut()[100:130, 180:217]  # 30 x 37
    Image.fromarray(photo).save(images / "photo.png")
    Image.fromarray(skimage.data.coffee()[50:82, 100:140]).save(images / "nested" / "coffee.jpg", quality=95)
    alpha = np.tile(np.linspace(0, 255, 37).astype(np.uint8), (30, 1))
    Image.fromarray(np.dstack([photo, alpha]), "RGBA").save(images / "logo.png")
    deep = skimage.data.camera()[200:220, 240:265].astype(np.uint16) * 257
    Image.fromarray(deep).save(images / "depth.png")
    Image.fromarray(skimage.data.camera()[:24, :28]).save(images / "grey.tif")
    good = (images / "photo.png").read_bytes()
    (images / "corrupt.png").write_bytes(good[: len(good) // 2])
    (images / "empty.jpg").write_bytes(b"")
    (images / "notes.png").write_text("not an image\n")
    return root


def test_a_directory_is_upscaled_and_each_bad_file_reported(workspace: Path, tmp_path: Path) -> None:
    done = run_cli(workspace / "images", "--model", workspace / "model", "--out", tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 3, done.stderr  # one per bad file (the count is not repeated)
    assert any("corrupt.png': truncated or corrupt" in e for e in errors)
    assert any("empty.jpg': the file is empty" in e for e in errors)
    assert any("notes.png': not an image file" in e for e in errors)
    assert all(e.startswith("swinv2 upscale: error: cannot read image '") for e in errors)
    written = {p.name: Image.open(p) for p in tmp_path.iterdir()}
    assert sorted(written) == ["coffee.jpg", "depth.png", "grey.tif", "logo.png", "photo.png"]
    assert {name: (image.mode, image.size) for name, image in written.items()} == {
        "photo.png": ("RGB", (74, 60)),
        "coffee.jpg": ("RGB", (80, 64)),
        "logo.png": ("RGBA", (74, 60)),
        "depth.png": ("I;16", (50, 40)),
        "grey.tif": ("L", (56, 48)),
    }
    (expected,) = upscale(workspace / "images" / "photo.png", workspace / "model")
    assert np.array_equal(np.asarray(written["photo.png"]), np.asarray(expected))


def test_tiled(workspace: Path, tmp_path: Path) -> None:
    source = workspace / "images" / "photo.png"
    done = run_cli(
        source, "--model", workspace / "model", "--out", tmp_path, "--tile", "24", "--overlap", "12", "--dtype",
        "float32",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote 1 image(s) to '{tmp_path}'" and done.stderr == ""
    (whole,) = upscale(source, workspace / "model")
    tiled = np.asarray(Image.open(tmp_path / "photo.png")).astype(int)
    assert np.abs(tiled - np.asarray(whole).astype(int)).max() <= 1


def test_bf16(workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = workspace / "images" / "logo.png"
    assert (
        main(
            ["upscale", str(source), "--model", str(workspace / "model"), "--out", str(tmp_path), "--dtype", "bfloat16"]
        )
        == 0
    )
    assert capsys.readouterr().err == ""
    assert Image.open(tmp_path / "logo.png").mode == "RGBA"


@pytest.mark.parametrize(
    ("tile", "overlap", "message"),
    [
        ("16", "16", "--overlap (16) must be smaller than --tile (16)"),
        # smaller as given, but both round up to whole windows (4): 12 and 12
        (
            "10",
            "9",
            "--tile 10 --overlap 9: the overlap (9 px, 12 in whole windows of 4) must be smaller than the tile",
        ),
    ],
)
def test_an_overlap_not_below_the_tile_is_one_line(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], tile: str, overlap: str, message: str
) -> None:
    source, model = workspace / "images" / "photo.png", workspace / "model"
    status = main(
        ["upscale", str(source), "--model", str(model), "--out", str(tmp_path), "--tile", tile, "--overlap", overlap]
    )
    assert status == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("swinv2 upscale: error: ") and message in line
    assert not any(tmp_path.iterdir())


def test_a_missing_model_is_one_line(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = workspace / "images" / "photo.png"
    assert main(["upscale", str(source), "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"swinv2 upscale: error: no model directory at '{tmp_path / 'nothing'}'")
    assert not (tmp_path / "out").exists()
