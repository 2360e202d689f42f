"""`swinv2 info` through the real entry point: a one-screen summary of a variant or a directory, read
without weights; `--config` for the full config JSON; one-line errors for bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import perturb_, tiny_config
from swinv2 import (
    Swinv2Backbone,
    Swinv2Config,
    Swinv2ForImageClassification,
    Swinv2ImageProcessor,
    get_variant,
)
from swinv2.cli.bench import count_flops

COMMAND = [sys.executable, "-m", "swinv2.cli"]
ERROR = "swinv2 info: error: "
ONE_SCREEN = 24  # lines


ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}  # a name that is no variant must not reach the network


def run_cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, "info", *map(str, args)], capture_output=True, text=True, timeout=300, check=False, env=ENV
    )


def summary(*args: object) -> list[str]:
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.strip().splitlines()
    assert 0 < len(lines) <= ONE_SCREEN and max(map(len, lines)) < 240, done.stdout
    return lines


def assert_one_line_error(done: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(ERROR), line
    assert "Traceback" not in line
    for phrase in phrases:
        assert phrase in line, line


def gflops(lines: list[str]) -> float:
    match = re.search(r"([0-9.]+) GFLOPs \(([0-9.]+) G multiply-adds\) per (\d+)x(\d+) image", lines[0])
    assert match is not None, lines[0]
    assert float(match[2]) == pytest.approx(float(match[1]) / 2, abs=0.01)
    return float(match[1])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("info") / "model"
    torch.manual_seed(0)
    labels = {i: f"class-{i}" for i in range(12)}
    perturb_(Swinv2ForImageClassification(tiny_config(id2label=labels))).save_pretrained(root)
    Swinv2ImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        root
    )
    return root


# --------------------------------------------------------------------------------- variants


def test_a_variant_is_described_without_weights_on_one_screen():
    lines = summary("swinv2-tiny-patch4-window8-256")  # no --random-weights: nothing is loaded
    text = "\n".join(lines)
    assert lines[0].startswith("Swinv2ForImageClassification: 28.35 M parameters, ")
    assert "per 256x256 image" in lines[0]
    assert gflops(lines) == pytest.approx(11.84, abs=0.01)  # 5.92 G multiply-adds: the release's "5.9G FLOPs"
    assert "timm: swinv2_tiny_window8_256" in text
    assert "ImageNet-1K top-1 81.8%" in text
    assert "image 256x256, patch 4, window 8, embed dim 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24)" in text
    assert "resize to 256x256 bicubic, mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]" in text
    assert "labels (1000): 0: LABEL_0, 1: LABEL_1, 2: LABEL_2, 3: LABEL_3, 4: LABEL_4 ..." in text
    assert "LABEL_999" not in text


def test_variant_aliases_the_22k_pretraining_and_the_old_flag():
    lines = summary("swinv2_base_window12to24_192to384.ms_in1k", "--random-weights")  # still accepted
    text = "\n".join(lines)
    assert "variant swinv2-base-patch4-window12to24-192to384-22kto1k-ft" in text
    assert "window 24, pre-training windows (12, 12, 12, 6)" in text
    assert "ImageNet-1K top-1 87.1%" in text
    pretraining = "\n".join(summary("microsoft/swinv2-base-patch4-window12-192-22k"))
    assert "ImageNet-22K pre-training (no ImageNet-1K top-1)" in pretraining
    assert "labels (21841): " in pretraining


def test_config_prints_the_variants_full_config_json():
    done = run_cli("swinv2_tiny_window8_256", "--config")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed == get_variant("swinv2_tiny_window8_256").config.to_dict()
    assert len(printed["id2label"]) == 1000  # the full config, labels included


# ------------------------------------------------------------------------------ directories


def test_a_directory_is_described_from_its_own_files(model_dir):
    lines = summary(model_dir)
    text = "\n".join(lines)
    model = Swinv2ForImageClassification.from_pretrained(model_dir)
    assert f"{model.num_parameters() / 1e6:.2f} M parameters" in lines[0]
    expected = count_flops(model, torch.zeros(1, 3, 64, 64))  # counted on real data, for comparison
    assert gflops(lines) == pytest.approx(round(expected / 1e9, 2))
    assert f"directory '{model_dir}' (weights: model.safetensors, " in text
    assert "preprocessing (preprocessor_config.json): resize to 64x64 bicubic, mean [0.5, 0.5, 0.5]" in text
    assert "labels (12): 0: class-0, 1: class-1, 2: class-2, 3: class-3, 4: class-4 ..." in text
    assert "class-11" not in text


def test_config_prints_the_directorys_full_config_json(model_dir):
    done = run_cli(model_dir, "--config")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == Swinv2Config.from_pretrained(model_dir).to_dict()


def test_a_directory_without_weights_or_preprocessing_is_still_described(tmp_path):
    """Describing reads the config only: no weights needed, and the default preprocessing is named."""
    tiny_config(num_labels=3).save_pretrained(tmp_path)
    text = "\n".join(summary(tmp_path))
    assert "(no weights: model.safetensors, pytorch_model.bin missing)" in text
    assert "no preprocessor_config.json: ImageNet defaults at the image size" in text
    assert "resize to 64x64 bicubic, mean [0.485, 0.456, 0.406]" in text


def test_a_backbone_directory_lists_its_feature_maps(tmp_path):
    Swinv2Backbone(tiny_config(out_features=["stage1", "stage2"])).save_pretrained(tmp_path)
    lines = summary(tmp_path)
    assert lines[0].startswith("Swinv2Backbone: ")
    assert "feature maps: stage1, stage2 (channels 16, 32)" in lines


# -------------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_cli(empty), f"no config file at '{empty / 'config.json'}'")

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    assert_one_line_error(run_cli(broken), "not valid JSON")

    other = tmp_path / "other"
    other.mkdir()
    data = tiny_config().to_dict() | {"architectures": ["ViTForImageClassification"]}
    (other / "config.json").write_text(json.dumps(data), encoding="utf-8")
    assert_one_line_error(run_cli(other), f"'{other}' holds a 'ViTForImageClassification', not a Swin V2 model")

    assert_one_line_error(run_cli(tmp_path / "absent" / "dir"), "no model directory at")
    assert_one_line_error(
        run_cli("swinv2-tiny-patch4-window8-265"),
        "unknown Swin V2 variant 'swinv2-tiny-patch4-window8-265'; did you mean 'swinv2-tiny-patch4-window8-256'",
    )


def test_misuse_exits_2():
    done = subprocess.run([*COMMAND, "info"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2
    assert "the following arguments are required: MODEL" in done.stderr
