"""`model_size` counts every parameter exactly, before anything is built, and models refuse configs above
the memory limit before allocating."""

from __future__ import annotations

import pytest
import torch

from swinv2 import Swinv2Backbone, Swinv2Config, Swinv2ForImageClassification, Swinv2ForMaskedImageModeling, Swinv2Model
from swinv2.io.errors import LimitError
from swinv2.io.limits import ENV_VAR, set_memory_limit
from swinv2.models.size import model_size

CONFIGS = [
    dict(image_size=32, patch_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=4, num_labels=3),
    dict(
        image_size=(40, 24),
        patch_size=(4, 2),
        embed_dim=12,
        depths=(2, 1, 1),
        num_heads=(2, 2, 4),
        window_size=3,
        use_absolute_embeddings=True,
        qkv_bias=False,
        mlp_ratio=2.5,
        num_labels=7,
        num_channels=1,
    ),
    dict(
        image_size=64,
        patch_size=2,
        embed_dim=8,
        depths=(1, 2),
        num_heads=(1, 1),
        window_size=5,
        num_labels=0,
        encoder_stride=4,
    ),
]


@pytest.mark.parametrize("fields", CONFIGS)
def test_parameter_count_is_exact_for_every_model_class(fields: dict) -> None:
    config = Swinv2Config(**fields)
    assert model_size(config, "classifier").parameters == Swinv2ForImageClassification(config).num_parameters()
    assert model_size(config, "none").parameters == Swinv2Model(config).num_parameters()
    assert (
        model_size(config, "none", mask_token=True).parameters
        == Swinv2Model(config, use_mask_token=True).num_parameters()
    )
    assert model_size(config, "none", final_norm=False).parameters == Swinv2Backbone(config).num_parameters()
    stride = config.patch_hw[0] * 2 ** (config.num_layers - 1)
    if config.patch_hw[0] == config.patch_hw[1] and config.encoder_stride == stride:
        mim = Swinv2ForMaskedImageModeling(config)
        assert model_size(config, "decoder", mask_token=True, final_norm=True).parameters == mim.num_parameters()


def test_the_paper_scales_are_counted_without_building() -> None:
    # SwinV2-G: embed_dim 512, depths (2, 2, 42, 4), heads (16, 32, 64, 128): about 3 billion parameters
    giant = Swinv2Config(
        image_size=640,
        embed_dim=512,
        depths=(2, 2, 42, 4),
        num_heads=(16, 32, 64, 128),
        window_size=40,
        num_labels=1000,
    )
    assert 2.5e9 < model_size(giant).parameters < 3.5e9


def test_a_config_beyond_the_limit_is_refused_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "1GB")
    huge = Swinv2Config(image_size=32, patch_size=4, embed_dim=2**14, depths=(1,), num_heads=(1,), window_size=4)
    expected = r"building Swinv2ForImageClassification \(3,222,325,251 parameters\) needs about 12.9 GB .* raise"
    with pytest.raises(LimitError, match=expected + f" the limit with {ENV_VAR}"):
        Swinv2ForImageClassification(huge)
    monkeypatch.setenv(ENV_VAR, "none")
    with torch.device("meta"):  # and a meta-device build is never refused: it allocates nothing
        monkeypatch.setenv(ENV_VAR, "1KB")
        assert Swinv2ForImageClassification(huge).num_parameters() == model_size(huge).parameters


def test_set_memory_limit_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "1KB")
    config = Swinv2Config(**CONFIGS[0])
    with pytest.raises(LimitError):
        Swinv2Model(config)
    set_memory_limit("none")
    try:
        Swinv2Model(config)
    finally:
        set_memory_limit(None)
