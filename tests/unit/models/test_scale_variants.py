"""SwinV2-H and SwinV2-G: the paper-only variants (`swinv2-huge`, `swinv2-giant`), their parameter counts
(pinned on the meta device, which allocates nothing), the extra main-branch norms of `extra_norm_period`,
and loading that refuses weights saved with another `extra_norm_period`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import image_batch, perturb_, tiny_config
from swinv2 import (
    Swinv2Backbone,
    Swinv2Config,
    Swinv2ForImageClassification,
    Swinv2Model,
    get_variant,
    list_variants,
)
from swinv2.io.checkpoints import CheckpointError
from swinv2.io.errors import InputError

# Exact counts of the built models (the paper: SwinV2-H 658 M, SwinV2-G 3.0 B; see `swinv2.zoo`).
COUNTS = {
    #                 1000-class classifier, encoder (Swinv2Model), extra-norm parameters
    "swinv2-huge": (658_036_370, 655_219_370, 3 * 2 * 1408),
    "swinv2-giant": (3_001_940_680, 2_997_843_680, 7 * 2 * 2048),
}
# (stage, block) of every extra norm: blocks 6, 12, ... (counted from 1) of each stage.
EXTRA_NORMS = {
    "swinv2-huge": [(2, 5), (2, 11), (2, 17)],
    "swinv2-giant": [(2, j) for j in (5, 11, 17, 23, 29, 35, 41)],  # stage 4 has 4 blocks: none
}


def _extra_norm_keys(model: nn.Module) -> list[str]:
    return [k for k in model.state_dict() if ".extra_norm." in k]


# ----------------------------------------------------------------------------------- variants


@pytest.mark.parametrize("name", ["swinv2-huge", "swinv2-giant"])
def test_paper_variants_pin_their_parameter_counts_on_the_meta_device(name):
    classifier, encoder, extra = COUNTS[name]
    config = get_variant(name).config
    with torch.device("meta"):
        model = Swinv2ForImageClassification(config)
        bare = Swinv2Model(config)
        without_norms = Swinv2Model(config.replace(extra_norm_period=0))
    assert model.num_parameters() == classifier
    assert bare.num_parameters() == encoder
    assert model.num_parameters() - bare.num_parameters() == config.hidden_size * 1000 + 1000
    assert bare.num_parameters() - without_norms.num_parameters() == extra
    keys = _extra_norm_keys(bare)
    assert keys == [
        f"encoder.layers.{i}.blocks.{j}.extra_norm.{p}" for i, j in EXTRA_NORMS[name] for p in ("weight", "bias")
    ]
    assert all(k.startswith("swinv2.") for k in _extra_norm_keys(model))
    # the size computed from the config alone (memory limits, `swinv2 info`) counts the norms too
    assert Swinv2ForImageClassification.config_size(config).parameters == classifier


@pytest.mark.parametrize(
    ("name", "embed_dim", "depths", "heads"),
    [
        ("swinv2-huge", 352, (2, 2, 18, 2), (11, 22, 44, 88)),
        ("swinv2-giant", 512, (2, 2, 42, 4), (16, 32, 64, 128)),
    ],
)
def test_paper_variants_have_the_papers_shape_and_no_weights(name, embed_dim, depths, heads):
    variant = get_variant(name)
    config = variant.config
    assert (config.embed_dim, config.depths, config.num_heads) == (embed_dim, depths, heads)
    assert {config.embed_dim * 2**i // h for i, h in enumerate(config.num_heads)} == {32}  # as every release
    assert (config.image_size, config.window_size, config.extra_norm_period, config.num_labels) == (192, 12, 6, 1000)
    assert variant.preprocessing.size == 192
    assert variant.imagenet_top1 is None and variant.hub_id is None and variant.timm_model is None
    assert not variant.released
    with pytest.raises(InputError, match=f"variant '{name}' has no timm model"):
        _ = variant.timm_name
    assert name not in list_variants()  # the released checkpoints only, each with a Hub id and timm name
    assert list_variants(include_unreleased=True)[-2:] == ["swinv2-huge", "swinv2-giant"]
    assert all(get_variant(n).hub_id == f"microsoft/{n}" for n in list_variants())
    assert get_variant(f"  {name}\n") is variant


def test_released_variants_have_no_extra_norms():
    for name in list_variants():
        config = get_variant(name).config
        assert config.extra_norm_period == 0
        assert "extra_norm_period" not in config.to_dict()
    with torch.device("meta"):
        model = Swinv2ForImageClassification(get_variant("swinv2-base-patch4-window12-192-22k").config)
    assert _extra_norm_keys(model) == []
    assert all(block.extra_norm is None for stage in model.swinv2.encoder.layers for block in stage.blocks)


# --------------------------------------------------------------------------------- the norms


def _pair(period: int, seed: int = 0) -> tuple[Swinv2Model, Swinv2Model]:
    """A model with extra norms every `period` blocks and one without, sharing every other weight."""
    torch.manual_seed(seed)
    with_norms = perturb_(Swinv2Model(tiny_config(depths=(2, 4), extra_norm_period=period)), seed=seed).eval()
    plain = Swinv2Model(tiny_config(depths=(2, 4))).eval()
    shared = {k: v for k, v in with_norms.state_dict().items() if ".extra_norm." not in k}
    plain.load_state_dict(shared, strict=True)
    return with_norms, plain


def test_extra_norms_end_blocks_k_2k_of_every_stage():
    model, _ = _pair(period=2)
    placed = [[block.extra_norm is not None for block in stage.blocks] for stage in model.encoder.layers]
    assert placed == [[False, True], [False, True, False, True]]
    assert _extra_norm_keys(model) == [
        f"encoder.layers.{i}.blocks.{j}.extra_norm.{p}" for i, j in ((0, 1), (1, 1), (1, 3)) for p in ("weight", "bias")
    ]
    # a period longer than any stage adds nothing: the model is the period-0 one
    assert _extra_norm_keys(Swinv2Model(tiny_config(depths=(2, 4), extra_norm_period=5))) == []


def test_the_extra_norms_are_the_only_difference():
    """Same shared weights: the outputs differ, and replacing every extra norm by an identity gives the
    period-0 model's outputs bit for bit."""
    model, plain = _pair(period=2)
    pixels = image_batch(2, 64, 64)
    calls: list[tuple[int, ...]] = []
    hooks = [
        block.extra_norm.register_forward_hook(lambda m, args, out: calls.append(tuple(out.shape)))
        for stage in model.encoder.layers
        for block in stage.blocks
        if block.extra_norm is not None
    ]
    with torch.no_grad():
        normed = model(pixels).last_hidden_state
        expected = plain(pixels).last_hidden_state
    for hook in hooks:
        hook.remove()
    assert calls == [(2, 256, 16), (2, 64, 32), (2, 64, 32)]  # each once, on the main branch (B, L, C)
    assert not torch.allclose(normed, expected, atol=1e-3)
    for stage in model.encoder.layers:
        for block in stage.blocks:
            if block.extra_norm is not None:
                block.extra_norm = nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(model(pixels).last_hidden_state, expected, atol=0, rtol=0)


def test_an_extra_norm_normalises_the_main_branch():
    """Right after a block with an extra norm, every token has mean bias and std weight (as a LayerNorm)."""
    model, _ = _pair(period=2)
    block = model.encoder.layers[1].blocks[3]
    seen: list[torch.Tensor] = []
    handle = block.register_forward_hook(lambda m, args, out: seen.append(out[0]))
    with torch.no_grad():
        model(image_batch(1, 64, 64))
    handle.remove()
    norm = block.extra_norm
    standardised = (seen[0] - norm.bias) / norm.weight  # (B, L, C)
    torch.testing.assert_close(standardised.mean(-1), torch.zeros(1, 64), atol=1e-4, rtol=0)
    torch.testing.assert_close(standardised.var(-1, unbiased=False), torch.ones(1, 64), atol=1e-3, rtol=0)


def test_extra_norms_train_and_checkpoint():
    model = Swinv2ForImageClassification(tiny_config(depths=(2, 4), extra_norm_period=2, num_labels=3)).train()
    model.gradient_checkpointing_enable()
    loss = model(image_batch(2, 64, 64), labels=torch.tensor([0, 2])).loss
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if ".extra_norm." in n]
    assert len(grads) == 6 and all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


# ---------------------------------------------------------------------------- save and load


def _saved(tmp_path: Path, period: int) -> tuple[Path, Swinv2ForImageClassification]:
    torch.manual_seed(0)
    model = perturb_(Swinv2ForImageClassification(tiny_config(depths=(2, 4), extra_norm_period=period))).eval()
    directory = tmp_path / "model"
    model.save_pretrained(directory)
    return directory, model


def test_round_trip_keeps_the_period_and_the_norms(tmp_path):
    directory, model = _saved(tmp_path, period=2)
    assert json.loads((directory / "config.json").read_text())["extra_norm_period"] == 2
    loaded = Swinv2ForImageClassification.from_pretrained(directory)
    assert loaded.config.extra_norm_period == 2
    assert _extra_norm_keys(loaded) == _extra_norm_keys(model)
    pixels = image_batch(1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).logits, model(pixels).logits, atol=0, rtol=0)
    backbone = Swinv2Backbone.from_pretrained(directory)  # the encoder under another class
    assert len(_extra_norm_keys(backbone)) == 6


def test_weights_with_extra_norms_refuse_a_model_without(tmp_path):
    directory, _ = _saved(tmp_path, period=2)
    config_file = directory / "config.json"
    data = json.loads(config_file.read_text())
    del data["extra_norm_period"]  # a config.json that lost the field: the default 0
    config_file.write_text(json.dumps(data))
    for strict in (None, True):
        with pytest.raises(CheckpointError) as info:
            Swinv2ForImageClassification.from_pretrained(directory, strict=strict)
        message = str(info.value)
        assert f"checkpoint '{directory}'" in message
        assert "6 unexpected: swinv2.encoder.layers.0.blocks.1.extra_norm.bias" in message
        assert (
            "the model was built with extra_norm_period=0, but the weights have these main-branch norms every 2 "
            f"blocks (extra_norm_period=2); set extra_norm_period=2 in '{config_file}' to load them"
        ) in message
        report = info.value.report
        assert report is not None and not report.missing and len(report.unexpected) == 6
        assert all(".extra_norm." in k for k in report.unexpected)
    # an override of the field is refused the same way
    with pytest.raises(CheckpointError, match="set extra_norm_period=2 in"):
        Swinv2Model.from_pretrained(directory, extra_norm_period=0)
    # strict=False loads the rest, but reports the norms as unexpected (not as merely unused)
    _, info = Swinv2ForImageClassification.from_pretrained(directory, strict=False, output_loading_info=True)
    assert len(info.unexpected) == 6 and not info.unused
    assert all(".extra_norm." in k for k in info["unexpected_keys"])


def test_weights_without_extra_norms_refuse_a_model_with(tmp_path):
    directory, _ = _saved(tmp_path, period=0)
    assert "extra_norm_period" not in json.loads((directory / "config.json").read_text())
    with pytest.raises(CheckpointError) as info:
        Swinv2ForImageClassification.from_pretrained(directory, extra_norm_period=2)
    message = str(info.value)
    assert "6 missing: swinv2.encoder.layers.0.blocks.1.extra_norm.weight" in message
    assert (
        "the model was built with extra_norm_period=2, but the weights have these main-branch norms nowhere "
        f"(extra_norm_period=0); set extra_norm_period=0 in '{directory / 'config.json'}' to load them"
    ) in message
    # the same through load_hf_state_dict, with the source named
    model = Swinv2ForImageClassification(tiny_config(depths=(2, 4), extra_norm_period=2))
    state = Swinv2ForImageClassification(tiny_config(depths=(2, 4))).state_dict()
    with pytest.raises(CheckpointError, match=r"checkpoint 'weights\.safetensors'.*set extra_norm_period=0 in the"):
        model.load_hf_state_dict(state, source="weights.safetensors")


def test_other_problems_keep_their_message(tmp_path):
    directory, _ = _saved(tmp_path, period=2)
    with pytest.raises(CheckpointError) as info:
        Swinv2ForImageClassification.from_pretrained(directory, embed_dim=32, num_heads=(2, 4))
    assert "extra_norm_period" not in str(info.value)


def test_a_transformers_state_dict_loads_unchanged():
    transformers = pytest.importorskip("transformers")
    from helpers import hf_config

    config = tiny_config()
    torch.manual_seed(0)
    reference = perturb_(transformers.Swinv2ForImageClassification(hf_config(config))).eval()
    model, info = Swinv2ForImageClassification.from_pretrained(
        None, config=config, state_dict=reference.state_dict(), strict=True, output_loading_info=True
    )
    assert info.ok and config.extra_norm_period == 0
    pixels = image_batch(2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels).logits, reference(pixels).logits, atol=1e-5, rtol=0)


def test_saved_extra_norm_config_is_read_by_transformers(tmp_path):
    """transformers keeps the unknown field as an attribute (its model has no such norms, and refuses the keys)."""
    transformers = pytest.importorskip("transformers")
    directory, _ = _saved(tmp_path, period=2)
    assert transformers.Swinv2Config.from_pretrained(directory).extra_norm_period == 2
    assert Swinv2Config.from_pretrained(directory).extra_norm_period == 2
