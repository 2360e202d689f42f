"""`swinv2.io.swin2sr_keys`: the original Swin2SR release's names <-> transformers', each rule used, and the
config fields read from a release state dict."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from swinv2 import Swin2SRConfig, Swin2SRForImageSuperResolution
from swinv2.io.keymaps import SWIN2SR_ORIGINAL, compile_template, to_transformers
from swinv2.io.swin2sr_keys import (
    BODY_NAME_PAIRS,
    head_name_pairs,
    infer_original_fields,
    original_to_transformers,
    transformers_to_original,
)
from swinv2.loading import to_swin2sr_original

# (upsampler, upscale): every head, and every pixel-shuffle depth (x2, x3, x4, x8)
HEADS = [
    ("pixelshuffle", 2),
    ("pixelshuffle", 3),
    ("pixelshuffle", 8),
    ("pixelshuffle_aux", 4),
    ("pixelshuffledirect", 2),
    ("pixelshuffledirect", 3),
    ("nearest+conv", 4),
    ("", 1),
]


def _model(upsampler: str, upscale: int, **fields: Any) -> Swin2SRForImageSuperResolution:
    base = dict(image_size=16, embed_dim=8, depths=(2, 1), num_heads=(2, 4), window_size=4, mlp_ratio=1.5)
    config = Swin2SRConfig(**{**base, "upsampler": upsampler, "upscale": upscale, **fields})
    return Swin2SRForImageSuperResolution(config)


@pytest.mark.parametrize("resi_connection", ["1conv", "3conv"])
@pytest.mark.parametrize(("upsampler", "upscale"), HEADS)
def test_both_ways_exact_and_every_rule_used(upsampler: str, upscale: int, resi_connection: str) -> None:
    state = _model(upsampler, upscale, resi_connection=resi_connection).state_dict()
    release = transformers_to_original(state, upsampler, upscale)
    assert release.unmatched == []
    back = original_to_transformers(release.tensors, upsampler, upscale)
    assert back.unmatched == []
    assert set(back.tensors) == set(state)
    for key, tensor in state.items():
        assert torch.equal(back.tensors[key], tensor), key
    stage_conv = (
        "swin2sr.encoder.stages.{i}.conv.{p}"
        if resi_connection == "3conv"
        else "swin2sr.encoder.stages.{i}.conv.{k}.{p}"
    )
    for hf, original in (*BODY_NAME_PAIRS, *head_name_pairs(upsampler, upscale)):
        if hf == stage_conv:
            continue  # the other residual connection's rule
        assert any(compile_template(hf).match(k) for k in state), hf
        assert any(compile_template(original).match(k) for k in release.tensors), original


@pytest.mark.parametrize(("upsampler", "upscale"), HEADS)
def test_fields_read_from_the_tensors(upsampler: str, upscale: int) -> None:
    model = _model(upsampler, upscale, resi_connection="3conv", qkv_bias=False)
    fields = infer_original_fields(to_swin2sr_original(model), "x.pth")
    config = model.config
    for name, value in fields.items():
        assert value == getattr(config, name), name
    assert set(fields) >= {"embed_dim", "depths", "num_heads", "window_size", "image_size", "mlp_ratio", "upscale"}


def test_derived_buffers_are_dropped_and_keymaps_delegates() -> None:
    release = to_swin2sr_original(_model("pixelshuffle", 2))
    assert any(k.endswith("attn_mask") for k in release)
    converted = to_transformers(release, SWIN2SR_ORIGINAL)
    assert converted.unmatched == []
    assert not any("relative_" in k or "attn_mask" in k for k in converted.tensors)


def test_unknown_keys_are_returned_as_named_in_the_file() -> None:
    release = to_swin2sr_original(_model("", 1), buffers=False)
    release["conv_last.extra"] = torch.zeros(1)
    release["absolute_pos_embed"] = torch.zeros(1, 4, 8)
    assert sorted(original_to_transformers(release, "", 1).unmatched) == ["absolute_pos_embed", "conv_last.extra"]
