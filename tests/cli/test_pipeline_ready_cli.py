"""Directories the CLI writes are pipeline-ready: `transformers.pipeline("image-classification", model=DIR)`
loads them as they are and agrees with `swinv2.pipeline.classify`.

`swinv2 convert` runs through the real entry point in a subprocess; the demo's way of saving
(`model.save_pretrained` + `processor.save_pretrained`) is reproduced here on a tiny model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import skimage.data
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file

from helpers import perturb_, timm_model, tiny_config
from swinv2 import Swinv2ForImageClassification, Swinv2ImageProcessor, get_variant
from swinv2.pipeline import classify
from swinv2.preprocess import PREPROCESSOR_NAME

COMMAND = [sys.executable, "-m", "swinv2.cli"]
LABELS = {0: "cat", 1: "dog", 2: "emu", 3: "fox", 4: "gnu"}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
PIPELINE_READY = ["config.json", "model.safetensors", PREPROCESSOR_NAME]


def run_cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("images")
    paths = [root / "astronaut.png", root / "coffee.png", root / "chelsea.png"]
    for path, array in zip(
        paths, (skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()), strict=True
    ):
        Image.fromarray(array).save(path)
    return paths


def _preprocessor(directory: Path) -> dict[str, object]:
    return json.loads((directory / PREPROCESSOR_NAME).read_text(encoding="utf-8"))


def assert_transformers_pipeline_agrees(directory: Path, images: list[Path]) -> None:
    """transformers' own pipeline loads `directory` with no help and has our top label for every image."""
    assert sorted(p.name for p in directory.iterdir()) == PIPELINE_READY
    classifier = transformers.pipeline("image-classification", model=str(directory), device="cpu")
    theirs = classifier([str(p) for p in images], top_k=len(LABELS))
    ours = classify(images, directory, top_k=len(LABELS))
    for path, their_top, our_top in zip(images, theirs, ours, strict=True):
        assert their_top[0]["label"] == our_top[0]["label"], path
        assert their_top[0]["label"] in LABELS.values()
        scores = {p["label"]: p["score"] for p in our_top}
        for prediction in their_top:  # and the same probabilities: the same preprocessing, the same arithmetic
            assert prediction["score"] == pytest.approx(scores[prediction["label"]], abs=1e-5), path
        assert their_top[0]["score"] > their_top[-1]["score"] + 1e-3  # the model does tell the labels apart


def test_a_timm_checkpoint_converted_with_a_config_is_pipeline_ready(tmp_path, images):
    config = tiny_config(id2label=LABELS)
    (tmp_path / "config").mkdir()
    config_file = config.save_pretrained(tmp_path / "config")
    source = tmp_path / "timm.pth"
    torch.save(timm_model(config, seed=3).state_dict(), source)
    dst = tmp_path / "hf"

    done = run_cli("convert", source, dst, "--config", config_file)

    assert done.returncode == 0, done.stderr
    written = _preprocessor(dst)  # no variant: the model's image size with ImageNet statistics
    assert written["size"] == {"height": 64, "width": 64}
    assert written["image_mean"] == pytest.approx(IMAGENET_MEAN)
    assert written["image_std"] == pytest.approx(IMAGENET_STD)
    assert written["image_processor_type"] == "ViTImageProcessor"
    assert_transformers_pipeline_agrees(dst, images)


def test_a_directory_saved_as_the_demo_saves_is_pipeline_ready(tmp_path, images):
    torch.manual_seed(0)
    model = perturb_(Swinv2ForImageClassification(tiny_config(id2label=LABELS)), seed=4, scale=0.1).eval()
    processor = Swinv2ImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    assert_transformers_pipeline_agrees(tmp_path / "model", images)


def test_converting_with_a_variant_writes_the_variants_preprocessing(tmp_path):
    """A variant's shapes (Swin V2-T, timm's name) give its own preprocessing, not only the size."""
    variant = get_variant("swinv2_tiny_window8_256")
    model = perturb_(timm_model(variant.config), scale=0.02)
    source = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, source)
    done = run_cli("convert", source, tmp_path / "hf", "--variant", variant.timm_name)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == PIPELINE_READY
    written = Swinv2ImageProcessor.from_pretrained(tmp_path / "hf")
    assert written == Swinv2ImageProcessor.from_variant(variant.name)
    assert transformers.AutoImageProcessor.from_pretrained(tmp_path / "hf").size == {"height": 256, "width": 256}


def test_a_transformers_directory_keeps_its_own_preprocessing(tmp_path):
    torch.manual_seed(0)
    perturb_(Swinv2ForImageClassification(tiny_config(id2label=LABELS))).save_pretrained(tmp_path / "src")
    own = Swinv2ImageProcessor(size={"height": 72, "width": 64}, resample=2, image_mean=[0.5] * 3, image_std=[0.25] * 3)
    own.save_pretrained(tmp_path / "src")
    done = run_cli("convert", tmp_path / "src", tmp_path / "dst")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "dst" / PREPROCESSOR_NAME).read_bytes() == (tmp_path / "src" / PREPROCESSOR_NAME).read_bytes()


def test_a_timm_file_gets_no_preprocessor_file_beside_it(tmp_path):
    torch.manual_seed(0)
    perturb_(Swinv2ForImageClassification(tiny_config(id2label=LABELS))).save_pretrained(tmp_path / "src")
    (tmp_path / "out").mkdir()
    done = run_cli("convert", tmp_path / "src", tmp_path / "out" / "timm.safetensors", "--to", "timm")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["timm.safetensors"]
