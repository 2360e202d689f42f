"""The original Swin2SR release's layout (github.com/mv-lab/swin2sr) into our Swin2SR, config read from the weights.

Each file is made from a perturbed transformers `Swin2SRForImageSuperResolution`, renamed into the release's
names by `release_layout` below (written here from the release's module tree, not with the library's table),
with the derived buffers the release stores, saved as a `.pth` (plain, or under BasicSR's "params_ema"), then
loaded with `load_checkpoint` and no config; reconstructions agree with transformers at fp32 atol 1e-5.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from helpers import hf_swin2sr_twins, perturb_
from swinv2 import CheckpointError, ConfigError, Swin2SRConfig, Swin2SRForImageSuperResolution, load_checkpoint
from swinv2.io.checkpoints import read_state_dict
from swinv2.io.keymaps import MICROSOFT, SWIN2SR_ORIGINAL, TRANSFORMERS
from swinv2.io.layouts import detect_layout
from swinv2.loading import save_swin2sr_original, to_swin2sr_original

ATOL = 1e-5
WINDOW = 4
IMAGE = 16  # the training image size; its shift masks have (16 / 4)**2 = 16 windows
UPSAMPLERS = [("pixelshuffle", 4), ("pixelshuffle_aux", 3), ("pixelshuffledirect", 3), ("nearest+conv", 4), ("", 1)]
#: Fields the inferred config must share with the source's.
COMPARED = (
    "embed_dim",
    "depths",
    "num_heads",
    "window_size",
    "image_size",
    "mlp_ratio",
    "qkv_bias",
    "num_channels",
    "num_channels_out",
    "resi_connection",
    "upsampler",
    "upscale",
    "img_range",
)

# transformers' names inside a block -> the release's (WindowAttention, Mlp, the two norms).
_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "attention.output.dense": "attn.proj",
    "attention.self.continuous_position_bias_mlp": "attn.cpb_mlp",
    "attention.self.logit_scale": "attn.logit_scale",
    "attention.self.query.bias": "attn.q_bias",
    "attention.self.value.bias": "attn.v_bias",
}
# transformers' upsampler modules that keep their name in the release, at its top level.
_SAME_HEAD = ("conv_bicubic", "conv_aux", "conv_after_aux.0", "conv_up1", "conv_up2", "conv_hr")


def _release_name(key: str) -> str | None:
    """The release's name of one transformers tensor (None for a q/k/v weight, fused separately)."""
    if re.search(r"\.attention\.self\.(query|key|value)\.weight$", key):
        return None
    simple = {
        "swin2sr.first_convolution.": "conv_first.",
        "swin2sr.embeddings.patch_embeddings.projection.": "patch_embed.proj.",
        "swin2sr.embeddings.patch_embeddings.layernorm.": "patch_embed.norm.",
        "swin2sr.layernorm.": "norm.",
        "swin2sr.conv_after_body.": "conv_after_body.",
        "upsample.conv_before_upsample.": "conv_before_upsample.0.",
        "upsample.final_convolution.": "conv_last.",
        "final_convolution.": "conv_last.",
        "upsample.conv.": "upsample.0.",  # pixelshuffledirect's one conv
        "upsample.upsample.convolution.": "upsample.0.",  # the 3x pixel shuffle
        **{f"upsample.{name}.": f"{name}." for name in _SAME_HEAD},
    }
    for prefix, release in simple.items():
        if key.startswith(prefix):
            return release + key[len(prefix) :]
    if m := re.fullmatch(r"upsample\.upsample\.convolution_(\d+)\.(weight|bias)", key):
        return f"upsample.{2 * int(m[1])}.{m[2]}"  # nn.Sequential(conv, shuffle, conv, shuffle, ...)
    if m := re.fullmatch(r"swin2sr\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(.+)", key):
        rest = m[3]
        for ours, release in _BLOCK.items():
            if rest.startswith(ours):
                return f"layers.{m[1]}.residual_group.blocks.{m[2]}.{release}{rest[len(ours) :]}"
        raise AssertionError(f"no release name for {key}")
    if m := re.fullmatch(r"swin2sr\.encoder\.stages\.(\d+)\.conv\.(.+)", key):
        return f"layers.{m[1]}.conv.{m[2]}"
    if m := re.fullmatch(r"swin2sr\.encoder\.stages\.(\d+)\.patch_embed\.projection\.(.+)", key):
        return f"layers.{m[1]}.patch_embed.proj.{m[2]}"
    raise AssertionError(f"no release name for {key}")


def release_layout(hf_state: dict[str, torch.Tensor], depths: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """transformers' Swin2SR tensors under the release's names, with its derived buffers (values must not matter)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in hf_state.items():
        name = _release_name(key)
        if name is not None:
            out[name] = tensor.clone()
    for i, depth in enumerate(depths):
        for j in range(depth):
            hf, release = f"swin2sr.encoder.stages.{i}.layers.{j}.", f"layers.{i}.residual_group.blocks.{j}."
            parts = [hf_state[f"{hf}attention.self.{p}.weight"] for p in ("query", "key", "value")]
            out[release + "attn.qkv.weight"] = torch.cat(parts, dim=0)  # rows q, k, v
            out[release + "attn.relative_position_index"] = torch.zeros(WINDOW**2, WINDOW**2, dtype=torch.long)
            out[release + "attn.relative_coords_table"] = torch.full((1, 2 * WINDOW - 1, 2 * WINDOW - 1, 2), 3.0)
            if j % 2:
                out[release + "attn_mask"] = torch.full(((IMAGE // WINDOW) ** 2, WINDOW**2, WINDOW**2), 7.0)
    return out


def _config(**fields: Any) -> Swin2SRConfig:
    base = dict(image_size=IMAGE, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=WINDOW, drop_path_rate=0.0)
    return Swin2SRConfig(**{**base, **fields})


def _pixels(channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(2, channels, 16, 12, generator=torch.Generator().manual_seed(seed))


def _release_file(tmp_path: Path, config: Swin2SRConfig, wrapper: str | None = None) -> tuple[Path, torch.nn.Module]:
    theirs, _ = hf_swin2sr_twins("Swin2SRForImageSuperResolution", config)
    state = release_layout(theirs.state_dict(), config.depths)
    path = tmp_path / "Swin2SR_release.pth"
    torch.save(state if wrapper is None else {wrapper: state}, path)
    return path, theirs


@pytest.mark.parametrize("resi_connection", ["1conv", "3conv"])
@pytest.mark.parametrize(("upsampler", "upscale"), UPSAMPLERS, ids=[u or "none" for u, _ in UPSAMPLERS])
def test_release_files_load_without_config_and_agree(
    upsampler: str, upscale: int, resi_connection: str, tmp_path: Path
) -> None:
    config = _config(upsampler=upsampler, upscale=upscale, resi_connection=resi_connection)
    wrapper = "params_ema" if resi_connection == "3conv" else None  # BasicSR's wrapper on half the cases
    path, theirs = _release_file(tmp_path, config, wrapper)
    assert detect_layout(read_state_dict(path)) == SWIN2SR_ORIGINAL
    ours = load_checkpoint(path)
    assert isinstance(ours, Swin2SRForImageSuperResolution)
    assert {f: getattr(ours.config, f) for f in COMPARED} == {f: getattr(config, f) for f in COMPARED}
    x = _pixels()
    with torch.no_grad():
        torch.testing.assert_close(ours(x).reconstruction, theirs(x).reconstruction, atol=ATOL, rtol=0)


def test_grayscale_jpeg_model_with_img_range_given(tmp_path: Path) -> None:
    """The release's JPEG artefact models: one channel, no upsampler, img_range 255 (not in the weights: passed)."""
    config = _config(num_channels=1, upsampler="", upscale=1, img_range=255.0)
    path, theirs = _release_file(tmp_path, config)
    ours = load_checkpoint(path, img_range=255.0)
    assert {f: getattr(ours.config, f) for f in COMPARED} == {f: getattr(config, f) for f in COMPARED}
    x = _pixels(channels=1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).reconstruction, theirs(x).reconstruction, atol=ATOL, rtol=0)


def test_params_ema_is_preferred_over_params(tmp_path: Path) -> None:
    config = _config(upsampler="pixelshuffledirect", upscale=2)
    theirs, _ = hf_swin2sr_twins("Swin2SRForImageSuperResolution", config)
    ema = release_layout(theirs.state_dict(), config.depths)
    other = {k: v + 1.0 if v.is_floating_point() else v for k, v in ema.items()}
    torch.save({"params": other, "params_ema": ema}, tmp_path / "both.pth")
    ours = load_checkpoint(tmp_path / "both.pth")
    x = _pixels()
    with torch.no_grad():
        torch.testing.assert_close(ours(x).reconstruction, theirs(x).reconstruction, atol=ATOL, rtol=0)


def test_explicit_config_and_overrides_win(tmp_path: Path) -> None:
    config = _config(upsampler="nearest+conv", upscale=4)
    path, _ = _release_file(tmp_path, config)
    assert load_checkpoint(path, image_size=32).config.image_size == 32
    given = config.replace(img_range=2.0)
    assert load_checkpoint(path, config=given).config.img_range == 2.0


def test_a_file_without_buffers_needs_the_window(tmp_path: Path) -> None:
    config = _config(upsampler="pixelshuffle", upscale=2)
    theirs, _ = hf_swin2sr_twins("Swin2SRForImageSuperResolution", config)
    state = release_layout(theirs.state_dict(), config.depths)
    save_file(
        {k: v for k, v in state.items() if "relative_" not in k and "attn_mask" not in k}, tmp_path / "w.safetensors"
    )
    with pytest.raises(ConfigError, match=r"'.*w\.safetensors' keeps no relative_position_index.*window_size=\.\.\."):
        load_checkpoint(tmp_path / "w.safetensors")
    ours = load_checkpoint(tmp_path / "w.safetensors", window_size=WINDOW)
    x = _pixels()
    with torch.no_grad():
        torch.testing.assert_close(ours(x).reconstruction, theirs(x).reconstruction, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("upsampler", "upscale"), UPSAMPLERS, ids=[u or "none" for u, _ in UPSAMPLERS])
def test_ours_to_release_file_and_back(upsampler: str, upscale: int, tmp_path: Path) -> None:
    """Writing: the release's names (as `release_layout` names them) and buffers; read back, the same model."""
    config = _config(upsampler=upsampler, upscale=upscale, resi_connection="3conv")
    theirs, ours = hf_swin2sr_twins("Swin2SRForImageSuperResolution", config)
    written = to_swin2sr_original(ours)
    expected = release_layout(theirs.state_dict(), config.depths)
    assert set(written) == set(expected)
    for key, tensor in written.items():
        if not re.search(r"(relative_\w+|attn_mask)$", key):
            torch.testing.assert_close(tensor, expected[key], atol=0, rtol=0)
        else:
            assert tensor.shape == expected[key].shape, key
    for name, wrapper in (("back.pth", "params"), ("back.safetensors", None)):
        save_swin2sr_original(ours, tmp_path / name, wrapper=wrapper)
        back = load_checkpoint(tmp_path / name)
        assert {f: getattr(back.config, f) for f in COMPARED} == {f: getattr(config, f) for f in COMPARED}
        for key, tensor in back.state_dict().items():
            torch.testing.assert_close(tensor, ours.state_dict()[key], atol=0, rtol=0)


def test_written_buffers_are_the_releases() -> None:
    """The stored tables and mask are the release's: its -100 mask on the shifted blocks, log-spaced coordinates."""
    written = to_swin2sr_original(Swin2SRForImageSuperResolution(_config()))
    mask = written["layers.0.residual_group.blocks.1.attn_mask"]
    assert mask.shape == (16, 16, 16) and set(mask.unique().tolist()) == {-100.0, 0.0}
    assert "layers.0.residual_group.blocks.0.attn_mask" not in written  # unshifted blocks store none
    table = written["layers.1.residual_group.blocks.0.attn.relative_coords_table"]
    corner = -math.log2(9) / math.log2(8)  # offset -(ws-1), normalised to -8, then sign * log2(|v| + 1) / log2(8)
    assert table.shape == (1, 7, 7, 2)
    torch.testing.assert_close(table[0, 0, 0], torch.tensor([corner, corner]))
    index = written["layers.1.residual_group.blocks.0.attn.relative_position_index"]
    assert index.shape == (16, 16) and index.diagonal().unique().tolist() == [24]  # (ws-1)*(2ws-1) + (ws-1)


def test_transformers_swin2sr_directory_and_file_load(tmp_path: Path) -> None:
    config = _config(upsampler="pixelshuffle", upscale=2)
    theirs, _ = hf_swin2sr_twins("Swin2SRForImageSuperResolution", config)
    theirs.save_pretrained(tmp_path / "dir")
    save_file(theirs.state_dict(), tmp_path / "bare.safetensors")
    x = _pixels()
    with torch.no_grad():
        expected = theirs(x).reconstruction
        for loaded in (
            load_checkpoint(tmp_path / "dir"),
            load_checkpoint(tmp_path / "bare.safetensors", config=config),
        ):
            assert isinstance(loaded, Swin2SRForImageSuperResolution)
            torch.testing.assert_close(loaded(x).reconstruction, expected, atol=ATOL, rtol=0)
    with pytest.raises(ConfigError, match=r"'.*bare\.safetensors' carries no config"):
        load_checkpoint(tmp_path / "bare.safetensors")


def test_detection_tells_swin2sr_from_classification_releases() -> None:
    config = _config()
    release = to_swin2sr_original(perturb_(Swin2SRForImageSuperResolution(config)))
    assert detect_layout(release) == SWIN2SR_ORIGINAL
    assert detect_layout({k: v for k, v in release.items() if "relative_" not in k}) == SWIN2SR_ORIGINAL
    # the same blocks without the residual group are a Microsoft classifier's
    flat = {k.replace(".residual_group.blocks.", ".blocks."): v for k, v in release.items() if k.startswith("layers.")}
    assert detect_layout(flat) == MICROSOFT
    hf = Swin2SRForImageSuperResolution(config).state_dict()
    assert detect_layout(hf) == TRANSFORMERS
    swinir = {
        "conv_first.weight": torch.zeros(1),
        "layers.0.residual_group.blocks.0.attn.relative_position_bias_table": torch.zeros(1),
    }
    with pytest.raises(CheckpointError, match=re.escape("'x.pth' is a SwinIR checkpoint")):
        detect_layout(swinir, "x.pth")


# ------------------------------------------------------------------------------------------------ refusals
def _edited(tmp_path: Path, edit: Any, **fields: Any) -> Path:
    config = _config(**fields)
    state = to_swin2sr_original(perturb_(Swin2SRForImageSuperResolution(config)))
    edit(state)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    return path


def _set(key: str, value: torch.Tensor) -> Any:
    return lambda state: state.__setitem__(key, value)


REFUSALS = {
    "truncated": (lambda s: s.pop("conv_first.weight"), {}, "'conv_first.weight'"),
    "logit_scale": (
        _set("layers.1.residual_group.blocks.1.attn.logit_scale", torch.zeros(4, 1)),
        {},
        "'layers.1.residual_group.blocks.1.attn.logit_scale' has shape [4, 1]",
    ),
    "logit_scale_heads": (
        _set("layers.1.residual_group.blocks.1.attn.logit_scale", torch.zeros(2, 1, 1)),
        {},
        "'layers.1.residual_group.blocks.1.attn.logit_scale' has shape [2, 1, 1]; expected (4, 1, 1)",
    ),
    "upsample_shape": (
        _set("upsample.0.weight", torch.zeros(5 * 64, 64, 3, 3)),
        dict(upsampler="pixelshuffle", upscale=2),
        "'upsample.0.weight' has shape [320, 64, 3, 3]",
    ),
    "direct_shape": (
        _set("upsample.0.weight", torch.zeros(10, 16, 3, 3)),
        dict(upsampler="pixelshuffledirect", upscale=2),
        "'upsample.0.weight' has shape [10, 16, 3, 3]",
    ),
    "stage_gap": (
        lambda s: [s.pop(k) for k in list(s) if k.startswith("layers.0.residual_group.blocks.0.")],
        {},
        "'layers.0.residual_group.blocks.0'",
    ),
    "3conv_body": (
        lambda s: s.update({"conv_after_body.0.weight": s.pop("conv_after_body.weight")}),
        {},
        "'conv_after_body.0.weight'",
    ),
    "buffers_disagree": (
        _set("layers.1.residual_group.blocks.0.attn.relative_position_index", torch.zeros(9, 9, dtype=torch.long)),
        {},
        "'layers.1.residual_group.blocks.0.attn.relative_position_index' is for 3",
    ),
    "pixelshuffle_hf": (_set("conv_first_hf.0.weight", torch.zeros(1)), {}, "'conv_first_hf.0.weight'"),
    "no_conv_last": (lambda s: s.pop("conv_last.weight"), {}, "'conv_last.weight'"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_name_the_file_and_key(case: str, tmp_path: Path) -> None:
    edit, fields, key = REFUSALS[case]
    path = _edited(tmp_path, edit, **fields)
    with pytest.raises(CheckpointError, match=rf"'.*edited\.pth'.*{re.escape(key)}"):
        load_checkpoint(path)
