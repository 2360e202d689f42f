"""`swinv2 plan` through the real entry point: a table, a JSON object, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import tiny_config

COMMAND = [sys.executable, "-m", "swinv2.cli", "plan"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run_cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *map(str, args)], capture_output=True, text=True, timeout=300, check=False, env=ENV
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("plan") / "model"
    tiny_config().save_pretrained(directory)
    return directory


def test_json_plan_of_a_model_directory(model_dir: Path) -> None:
    done = run_cli(model_dir, "--batch-size", 2, "--fsdp", "--world-size", 4, "--precision", "bf16", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["parameters"] > 0 and plan["flops_per_image"] > 0
    assert plan["peak_bytes"] > plan["parameter_bytes"] > 0
    assert plan["settings"] == {
        "image_size": 64,
        "window_size": 4,
        "batch_size": 2,
        "precision": "bf16",
        "world_size": 4,
        "fsdp": True,
        "activation_checkpointing": False,
        "optimizer": "adamw",
    }


def test_table_of_a_variant_at_another_size() -> None:
    done = run_cli("swinv2_tiny_window8_256", "--image-size", 64, "--window-size", 4, "--activation-checkpointing")
    assert done.returncode == 0, done.stderr
    assert "64 px, window 4, batch 1 per process, fp32, no FSDP, activation checkpointing" in done.stdout
    assert "peak per process" in done.stdout


@pytest.mark.parametrize(
    ("args", "status", "phrase"),
    [
        (("not-a-model",), 1, "unknown Swin V2 variant 'not-a-model'"),
        (("swinv2_tiny_window8_256", "--batch-size", "0"), 2, "--batch-size: expected a positive integer"),
        (("swinv2_tiny_window8_256", "--precision", "fp8"), 2, "--precision: invalid choice"),
    ],
)
def test_bad_input_is_one_line(args: tuple[str, ...], status: int, phrase: str) -> None:
    done = run_cli(*args)
    assert done.returncode == status, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("swinv2 plan: error: ") and phrase in last, done.stderr
    if status == 1:
        assert len(done.stderr.strip().splitlines()) == 1


def test_a_directory_without_config_is_one_line(tmp_path: Path) -> None:
    done = run_cli(tmp_path)
    assert done.returncode == 1, (done.stdout, done.stderr)
    (line,) = done.stderr.strip().splitlines()
    assert line == f"swinv2 plan: error: '{tmp_path}' is a directory without config.json: a model directory needs one"
