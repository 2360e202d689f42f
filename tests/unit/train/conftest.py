"""What the training tests share: a tiny classifier directory to start runs from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from swinv2 import Swinv2Config, Swinv2ForImageClassification


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ten-class classifier directory at 32 px (no stochastic depth: runs are compared exactly)."""
    torch.manual_seed(0)
    config = Swinv2Config(
        image_size=32,
        patch_size=4,
        embed_dim=16,
        depths=(1, 1),
        num_heads=(1, 2),
        window_size=4,
        num_labels=10,
        drop_path_rate=0.0,
    )
    directory = tmp_path_factory.mktemp("source") / "tiny"
    Swinv2ForImageClassification(config).save_pretrained(directory)
    return directory
