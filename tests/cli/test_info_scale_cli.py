"""`swinv2 info` on the paper-only variants (`swinv2-huge`, `swinv2-giant`), through the real entry point.

Above the memory limit a named variant is still described: its parameters are counted on the meta device
and the FLOPs are left out (a config.json that large is refused as before)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from swinv2 import Swinv2Config

COMMAND = [sys.executable, "-m", "swinv2.cli", "info"]


def run_info(*args: object, limit: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SWINV2_MEMORY_LIMIT": limit}
    return subprocess.run(
        [*COMMAND, *map(str, args)], capture_output=True, text=True, timeout=300, check=False, env=env
    )


@pytest.mark.parametrize(
    ("name", "millions", "shape"),
    [
        ("swinv2-huge", "658.04", "embed dim 352, depths (2, 2, 18, 2), heads (11, 22, 44, 88)"),
        ("swinv2-giant", "3001.94", "embed dim 512, depths (2, 2, 42, 4), heads (16, 32, 64, 128)"),
    ],
)
def test_a_paper_variant_above_the_limit_is_described_from_the_meta_device(name, millions, shape):
    done = run_info(name, limit="1GB")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith(f"Swinv2ForImageClassification: {millions} M parameters, FLOPs not counted (building")
    assert "above the memory limit; see SWINV2_MEMORY_LIMIT)" in lines[0]
    assert lines[1] == (
        f"variant {name} (the Swin V2 paper's model: no weights were released, no timm model); random weights only"
    )
    assert lines[2] == f"image 192x192, patch 4, window 12, {shape}, extra main-branch norm every 6 blocks"
    assert max(map(len, lines)) < 240


def test_a_config_json_above_the_limit_is_still_refused(tmp_path):
    Swinv2Config(embed_dim=512, depths=(2, 2, 42, 4), num_heads=(16, 32, 64, 128)).save_pretrained(tmp_path)
    done = run_info(tmp_path, limit="1GB")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"swinv2 info: error: '{tmp_path}': building Swinv2ForImageClassification")
    assert "more than the limit of 1 GB" in line


def test_config_flag_prints_the_period():
    done = run_info("swinv2-huge", "--config", limit="1GB")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["extra_norm_period"] == 6
