"""`swinv2 classify`, `features` and `info` through the real entry point in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from safetensors import safe_open

from helpers import perturb_, tiny_config
from swinv2 import Swinv2ForImageClassification, Swinv2ImageProcessor
from swinv2.pipeline import extract_features

COMMAND = [sys.executable, "-m", "swinv2.cli"]


def run_cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("use")
    torch.manual_seed(0)
    model = perturb_(Swinv2ForImageClassification(tiny_config(id2label={0: "cat", 1: "dog", 2: "emu"})))
    model.save_pretrained(root / "model")
    # preprocessing of its own, which the commands must take from the directory (not ImageNet defaults)
    Swinv2ImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        root / "model"
    )
    images = root / "images"
    (images / "nested").mkdir(parents=True)
    Image.fromarray(skimage.data.astronaut()).save(images / "astronaut.jpg")
    Image.fromarray(skimage.data.coffee()).save(images / "nested" / "coffee.png")
    (images / "notes.jpg").write_text("this is text\n")
    good = (images / "astronaut.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (images / "empty.png").write_bytes(b"")
    (images / "readme.txt").write_text("not an image suffix: skipped\n")
    return root


def _expected_top(model_dir: Path, image_path: Path, k: int) -> list[tuple[str, float]]:
    model = Swinv2ForImageClassification.from_pretrained(model_dir)
    processor = Swinv2ImageProcessor.from_pretrained(model_dir)
    assert processor.image_mean == [0.5] * 3
    with torch.no_grad():
        probs = model(processor(image_path).pixel_values).logits.softmax(-1)[0]
    top = probs.topk(k)
    return [(model.config.id2label[i], s) for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]


def test_classify_a_directory_reports_each_bad_file_and_exits_1(workspace: Path) -> None:
    done = run_cli("classify", workspace / "images", "--model", workspace / "model", "--top-k", "2")
    assert done.returncode == 1
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 3, done.stderr
    assert any("notes.jpg': not an image file" in e for e in errors)
    assert any("truncated.jpg': truncated or corrupt" in e for e in errors)
    assert any("empty.png': the file is empty" in e for e in errors)
    lines = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        str(workspace / "images" / "astronaut.jpg"),
        str(workspace / "images" / "nested" / "coffee.png"),
    ]
    (label, score), _ = _expected_top(workspace / "model", workspace / "images" / "astronaut.jpg", 2)
    assert lines[0].split(": ")[1].startswith(f"{label} {score:.3f}")


def test_classify_json_lines_parse_and_match_the_model(workspace: Path) -> None:
    image = workspace / "images" / "astronaut.jpg"
    done = run_cli("classify", image, "--model", workspace / "model", "--json", "--top-k", "3")
    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert record["path"] == str(image)
    expected = _expected_top(workspace / "model", image, 3)
    assert [p["label"] for p in record["predictions"]] == [label for label, _ in expected]
    np.testing.assert_allclose([p["score"] for p in record["predictions"]], [s for _, s in expected], atol=1e-6)


def test_classify_globs(workspace: Path) -> None:
    done = run_cli("classify", "images/*.jpg", "--model", "model", "--json", cwd=workspace)
    assert done.returncode == 1  # notes.jpg and truncated.jpg match the glob and fail
    assert [json.loads(line)["path"] for line in done.stdout.splitlines()] == ["images/astronaut.jpg"]


def test_features_file_matches_the_library(workspace: Path, tmp_path: Path) -> None:
    images = [workspace / "images" / "astronaut.jpg", workspace / "images" / "nested" / "coffee.png"]
    out = tmp_path / "features.safetensors"
    done = run_cli("features", *images, "--model", workspace / "model", "--out", out, "--stages", "stem,stage2")
    assert done.returncode == 0, done.stderr
    expected = extract_features(images, workspace / "model", stages=["stem", "stage2"])
    with safe_open(str(out), "pt") as f:
        assert json.loads(f.metadata()["paths"]) == [str(p) for p in images]
        for key in ("pooled", "stem", "stage2"):
            torch.testing.assert_close(f.get_tensor(key), expected[key], atol=1e-5, rtol=0)
    npy = tmp_path / "pooled.npy"
    assert run_cli("features", *images, "--model", workspace / "model", "--out", npy).returncode == 0
    np.testing.assert_allclose(np.load(npy), expected["pooled"].numpy(), atol=1e-5)


def test_info_reports_parameters_and_labels(workspace: Path) -> None:
    done = run_cli("info", workspace / "model")
    assert done.returncode == 0, done.stderr
    parameters = Swinv2ForImageClassification.from_pretrained(workspace / "model").num_parameters()
    assert f"{parameters / 1e6:.2f} M parameters" in done.stdout
    assert "labels (3): 0: cat, 1: dog, 2: emu" in done.stdout


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (("classify",), "the following arguments are required"),
        (("classify", "x.jpg"), "--model"),
        (("features", "x.jpg", "--model", "m"), "--out"),
        (("classify", "x.jpg", "--model", "m", "--top-k", "many"), "expected a positive integer"),
    ],
)
def test_misuse_exits_2(args: tuple[str, ...], phrase: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 2
    assert phrase in done.stderr


def test_variant_name_needs_random_weights(workspace: Path) -> None:
    image = workspace / "images" / "astronaut.jpg"
    refused = run_cli("classify", image, "--model", "swinv2-tiny-patch4-window8-256")
    assert refused.returncode == 1
    assert "no weights ship with swinv2" in refused.stderr
