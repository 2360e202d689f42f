"""Swin2SR: config validation and files, transformers-format directories both ways, stochastic depth in
training, gradients and the L1 loss, any input size, and the exact parameter count."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers

from helpers import hf_swin2sr_config, perturb_
from swinv2 import (
    ConfigError,
    Swin2SRConfig,
    Swin2SRForImageSuperResolution,
    Swin2SRModel,
    Swinv2Config,
)
from swinv2.io.errors import LimitError
from swinv2.io.limits import ENV_VAR
from swinv2.models.size import swin2sr_size
from swinv2.models.swin2sr import reflect_pad

TINY = dict(image_size=16, embed_dim=16, depths=(2, 2), num_heads=(2, 2), window_size=4)


def _config(**fields: Any) -> Swin2SRConfig:
    return Swin2SRConfig(**{**TINY, "drop_path_rate": 0.0, **fields})


def _pixels(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------ config
def test_defaults_are_transformers() -> None:
    ours, theirs = Swin2SRConfig().to_dict(), transformers.Swin2SRConfig().to_dict()
    for key, value in ours.items():
        assert theirs[key] == value, key
    assert Swin2SRConfig.model_type == theirs["model_type"] == "swin2sr"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(upsampler="nearest+conv", upscale=2), "upsampler 'nearest+conv' upsamples 4x only; got upscale=2"),
        (dict(upsampler="pixelshuffle", upscale=5), "upsampler 'pixelshuffle' needs upscale a power of 2 or 3"),
        (dict(upsampler="pixelshuffle_aux", upscale=6), "upsampler 'pixelshuffle_aux' needs upscale a power of 2"),
        (dict(resi_connection="2conv"), "resi_connection '2conv' is not one of ['1conv', '3conv']"),
        (dict(upsampler="bicubic"), "upsampler 'bicubic' is not one of ['pixelshuffle', 'pixelshuffle_aux'"),
        (dict(upsampler="", upscale=2), "upsampler '' (none) keeps the input size; got upscale=2 (set upscale=1)"),
        (dict(upsampler="", upscale=1, num_channels_out=1), "num_channels_out (1) must equal num_channels (3)"),
        (dict(depths=(2, 2), num_heads=(2,)), "len(depths) (2) must equal len(num_heads) (1)"),
        (dict(embed_dim=18, num_heads=(4, 2)), "embed_dim (18) must be divisible by num_heads[0] (4)"),
        (dict(patch_size=2), "patch_size must be 1"),
        (dict(use_absolute_embeddings=True), "use_absolute_embeddings=True is not supported"),
        (dict(upscale=0), "upscale must be a positive int; got 0"),
        (dict(window_size=2**25), "window_size must be at most 16777216"),
        (dict(img_range=-1.0), "img_range must be positive; got -1.0"),
        (dict(resi_connection="3conv", embed_dim=2, num_heads=(1, 1)), "resi_connection '3conv' needs embed_dim >= 4"),
    ],
)
def test_invalid_configs_name_the_field_and_value(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config(**fields)
    assert message in str(info.value)
    assert str(info.value).startswith("invalid Swin2SRConfig: ")


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        _config(upsampler="nearest+conv", upscale=2, resi_connection="x", mlp_ratio=-1)
    text = str(info.value)
    assert "upscale=2" in text and "resi_connection 'x'" in text and "mlp_ratio must be positive" in text


def test_json_round_trip(tmp_path: Path) -> None:
    config = _config(upsampler="pixelshuffle_aux", upscale=3, resi_connection="3conv", num_channels_out=3)
    config.to_json_file(tmp_path / "c.json")
    assert Swin2SRConfig.from_json_file(tmp_path / "c.json") == config
    config.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["model_type"] == "swin2sr" and written["num_layers"] == 2
    assert "attn_implementation" not in written
    assert Swin2SRConfig.from_pretrained(tmp_path) == config
    assert Swin2SRConfig.from_dict(config.to_dict()) == config
    assert config.replace(upscale=2).upscale == 2


def test_transformers_config_files_both_ways(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    theirs = transformers.Swin2SRConfig(embed_dim=24, depths=[2], num_heads=[3], upscale=4, upsampler="nearest+conv")
    theirs.save_pretrained(tmp_path / "theirs")
    with caplog.at_level(logging.WARNING, logger="swinv2.config"):
        ours = Swin2SRConfig.from_pretrained(tmp_path / "theirs")
    assert not caplog.records  # every key transformers writes is known
    assert (ours.embed_dim, ours.depths, ours.upscale, ours.upsampler) == (24, (2,), 4, "nearest+conv")
    ours.replace(resi_connection="3conv").save_pretrained(tmp_path / "ours")
    back = transformers.Swin2SRConfig.from_pretrained(tmp_path / "ours")
    assert (back.embed_dim, list(back.depths), back.upscale, back.resi_connection) == (24, [2], 4, "3conv")


def test_another_model_type_is_refused_with_the_class_to_use(tmp_path: Path) -> None:
    Swinv2Config().save_pretrained(tmp_path / "v2")
    with pytest.raises(ConfigError, match="model_type 'swinv2', not 'swin2sr'; load it with Swinv2Config"):
        Swin2SRConfig.from_pretrained(tmp_path / "v2")
    Swin2SRConfig().save_pretrained(tmp_path / "sr")
    with pytest.raises(ConfigError, match="model_type 'swin2sr', not 'swinv2'; load it with Swin2SRConfig"):
        Swinv2Config.from_pretrained(tmp_path / "sr")


# ---------------------------------------------------------------------------- directories
def test_our_directory_loads_in_transformers_with_equal_outputs(tmp_path: Path) -> None:
    config = _config(upsampler="pixelshuffle", upscale=2, resi_connection="3conv")
    ours = perturb_(Swin2SRForImageSuperResolution(config), seed=1).eval()
    ours.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["model_type"] == "swin2sr"
    assert written["architectures"] == ["Swin2SRForImageSuperResolution"]
    theirs = transformers.Swin2SRForImageSuperResolution.from_pretrained(tmp_path).eval()
    x = _pixels(1, 12, 8)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).reconstruction, theirs(x).reconstruction, atol=1e-5, rtol=0)


def test_transformers_directory_loads_here_with_equal_outputs(tmp_path: Path) -> None:
    config = _config(upsampler="pixelshuffledirect", upscale=3)
    torch.manual_seed(0)
    theirs = perturb_(transformers.Swin2SRForImageSuperResolution(hf_swin2sr_config(config)), seed=2).eval()
    theirs.save_pretrained(tmp_path)
    ours, info = Swin2SRForImageSuperResolution.from_pretrained(tmp_path, output_loading_info=True)
    assert not info.missing and not info.unexpected and not info.mismatched
    x = _pixels(1, 8, 12, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).reconstruction, theirs(x).reconstruction, atol=1e-5, rtol=0)
    # the encoder alone, from the head's directory (the `swin2sr.` prefix is dropped, the upsampler unused)
    base = Swin2SRModel.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(base(x).last_hidden_state, theirs.swin2sr(x).last_hidden_state, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------- training
def test_drop_path_is_applied_in_training_only() -> None:
    x = _pixels(4, 8, 8)
    with_rate = Swin2SRForImageSuperResolution(_config(drop_path_rate=0.5))
    rates = [layer.drop_path.rate for stage in with_rate.swin2sr.encoder.stages for layer in stage.layers]
    assert rates == pytest.approx([0.0, 0.5 / 3, 1.0 / 3, 0.5])  # linear over the blocks, as configured
    torch.manual_seed(0)
    assert not torch.allclose(with_rate.train()(x).reconstruction, with_rate.eval()(x).reconstruction)

    without = Swin2SRForImageSuperResolution(_config(drop_path_rate=0.0))
    torch.testing.assert_close(without.train()(x).reconstruction, without.eval()(x).reconstruction, atol=0, rtol=0)


def test_l1_loss_and_gradients_reach_every_parameter() -> None:
    model = Swin2SRForImageSuperResolution(_config(upsampler="pixelshuffle_aux", upscale=2)).train()
    x, labels = _pixels(2, 7, 9), _pixels(2, 14, 18, seed=1)
    out = model(x, labels=labels)
    torch.testing.assert_close(out.loss, (out.reconstruction - labels).abs().mean())
    out.loss.backward()
    without_grad = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # the auxiliary image's own branch feeds the reconstruction, so every tensor gets a gradient
    assert without_grad == []
    with pytest.raises(ValueError, match=r"labels must be the high-resolution images, shaped like the reconstruction"):
        model(x, labels=labels[:, :, :7])


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    config = _config(resi_connection="3conv")
    model = perturb_(Swin2SRForImageSuperResolution(config)).train()
    x, labels = _pixels(1, 8, 8), _pixels(1, 16, 16, seed=1)
    model(x, labels=labels).loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    model(x, labels=labels).loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- any size
@pytest.mark.parametrize(("height", "width"), [(1, 1), (3, 5), (2, 11), (9, 4)])
def test_any_input_size_is_upscaled_exactly(height: int, width: int) -> None:
    model = Swin2SRForImageSuperResolution(_config(window_size=8, upscale=2)).eval()
    with torch.no_grad():
        out = model(_pixels(1, height, width)).reconstruction
    assert out.shape == (1, 3, 2 * height, 2 * width)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("side", [1, 2, 3, 5])
def test_reflect_pad_mirrors_as_numpy_for_any_pad(side: int) -> None:
    """Pads longer than the side are mirrored again and again (numpy's `reflect`); one pixel is repeated."""
    x = torch.arange(side * (side + 1), dtype=torch.float32).view(1, 1, side, side + 1)
    padded = reflect_pad(x, 8)
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (0, -side % 8), (0, -(side + 1) % 8)), mode="reflect")
    np.testing.assert_array_equal(padded.numpy(), expected)


def test_bad_pixel_values_are_refused() -> None:
    model = Swin2SRModel(_config())
    with pytest.raises(ValueError, match=r"pixel_values must be \(B, 3, H, W\) floating point; got 1 channels"):
        model(torch.rand(1, 1, 8, 8))


# ---------------------------------------------------------------------------------- size
SIZE_CASES = [
    dict(upsampler="pixelshuffle", upscale=4),
    dict(upsampler="pixelshuffle", upscale=3, resi_connection="3conv"),
    dict(upsampler="pixelshuffle_aux", upscale=2, resi_connection="3conv", num_channels=1),
    dict(upsampler="pixelshuffledirect", upscale=3, num_channels_out=1, qkv_bias=False, mlp_ratio=3.0),
    dict(upsampler="nearest+conv", upscale=4, resi_connection="3conv"),
    dict(upsampler="", upscale=1, embed_dim=12, num_heads=(3, 2)),
]


@pytest.mark.parametrize("fields", SIZE_CASES, ids=[f"{c['upsampler'] or 'none'}-{c['upscale']}" for c in SIZE_CASES])
def test_parameter_count_is_exact(fields: dict[str, Any]) -> None:
    config = _config(**fields)
    assert swin2sr_size(config, "upsampler").parameters == Swin2SRForImageSuperResolution(config).num_parameters()
    assert swin2sr_size(config, "none").parameters == Swin2SRModel(config).num_parameters()


def test_a_config_beyond_the_limit_is_refused_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "1GB")
    huge = Swin2SRConfig(image_size=64, embed_dim=2**13, depths=(1,), num_heads=(1,))
    parameters = swin2sr_size(huge).parameters
    with pytest.raises(LimitError, match=rf"building Swin2SRForImageSuperResolution \({parameters:,} parameters\)"):
        Swin2SRForImageSuperResolution(huge)


# ------------------------------------------------------------------------------ backends
@pytest.mark.parametrize("implementation", ["sdpa", "auto"])
def test_attention_implementations_agree_with_eager(implementation: str) -> None:
    model = perturb_(Swin2SRForImageSuperResolution(_config(attn_implementation="eager"))).eval()
    x = _pixels(1, 11, 13)
    with torch.no_grad():
        expected = model(x).reconstruction
        model.set_attn_implementation(implementation)
        assert model.config.attn_implementation == implementation
        torch.testing.assert_close(model(x).reconstruction, expected, atol=1e-5, rtol=0)
