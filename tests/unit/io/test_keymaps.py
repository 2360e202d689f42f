"""`swinv2.io.keymaps`: the official (timm, Microsoft) names <-> transformers' names, and the tensor surgery
between them: q/k/v split and fuse, the position table's leading row, timm's patch-merging index, derived
buffers, and keys no rule knows."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

from helpers import perturb_, timm_model, tiny_config
from swinv2 import Swinv2Config, Swinv2ForImageClassification, Swinv2ForMaskedImageModeling
from swinv2.io.keymaps import (
    ENCODER_NAME_PAIRS,
    LAYOUTS,
    MICROSOFT,
    MICROSOFT_SIMMIM,
    QKV_PARTS,
    TIMM,
    TRANSFORMERS,
    from_transformers,
    official_encoder_to_transformers,
    to_transformers,
    transformers_encoder_to_official,
)

# Three stages, so that patch merging happens twice (timm: layers.1 and layers.2; Microsoft: layers.0 and layers.1).
FIELDS: dict[str, Any] = dict(depths=(2, 1, 2), num_heads=(2, 4, 8), num_labels=3, encoder_stride=16)
NUM_LAYERS = 3

# The rules' placeholders, compiled here independently of keymaps' own compiler.
PLACEHOLDERS = {"i": r"\d+", "j": r"\d+", "k": r"\d+", "p": r"weight|bias", "m": r"reduction|norm"}
RULE_IDS = [hf for hf, _ in ENCODER_NAME_PAIRS]
ONLY_IN_OURS = ("embeddings.mask_token", "embeddings.position_embeddings")  # timm has no mask token, no table
DERIVED = {
    "layers.0.blocks.0.attn.relative_position_index": torch.zeros(16, 16, dtype=torch.long),
    "layers.0.blocks.0.attn.relative_coords_table": torch.full((1, 7, 7, 2), 3.0),
    "layers.0.blocks.1.attn_mask": torch.full((16, 16, 16), 7.0),
    "layers.1.blocks.0.attn.k_bias": torch.zeros(32),
}


def _pattern(template: str) -> re.Pattern[str]:
    regex = re.escape(template)
    for name, value in PLACEHOLDERS.items():
        regex = regex.replace(re.escape("{" + name + "}"), f"(?P<{name}>{value})")
    return re.compile(regex + "$")


def _config(**changes: Any) -> Swinv2Config:
    return tiny_config(**{**FIELDS, **changes})


def _assert_same(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(expected)
    for key, tensor in expected.items():
        assert got[key].dtype == tensor.dtype, key
        torch.testing.assert_close(got[key], tensor, atol=0, rtol=0, msg=key)


def _microsoft_from_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The release's names, by the documented rules: merging one stage earlier than timm's, `head` for `head.fc`."""
    out = {}
    for key, tensor in state.items():
        merge = re.fullmatch(r"layers\.(\d+)\.downsample\.(.+)", key)
        if merge:
            key = f"layers.{int(merge[1]) - 1}.downsample.{merge[2]}"
        out[key.replace("head.fc.", "head.", 1)] = tensor
    return out


@pytest.fixture(scope="module")
def timm_state() -> dict[str, torch.Tensor]:
    """A perturbed tiny timm SwinTransformerV2's state dict (official names, timm's merging and head)."""
    return dict(timm_model(_config()).state_dict())


@pytest.fixture(scope="module")
def ours_state() -> dict[str, torch.Tensor]:
    """Our perturbed SimMIM model with an absolute position table: every encoder rule has a tensor here."""
    torch.manual_seed(0)
    model = perturb_(Swinv2ForMaskedImageModeling(_config(use_absolute_embeddings=True)), seed=1)
    return dict(model.state_dict())


@pytest.fixture(scope="module")
def ours_encoder(ours_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our encoder's tensors, transformers' names without the `swinv2.` prefix."""
    return {k.removeprefix("swinv2."): v for k, v in ours_state.items() if k.startswith("swinv2.")}


# ------------------------------------------------------------------------------------ every rule


@pytest.mark.parametrize(("hf", "official"), ENCODER_NAME_PAIRS, ids=RULE_IDS)
def test_every_rule_round_trips_on_our_model(hf: str, official: str, ours_encoder: dict[str, torch.Tensor]) -> None:
    """transformers -> official -> transformers and official -> transformers -> official: same keys, same tensors,
    and each official name is the rule's template filled with the transformers name's placeholders."""
    official_state = transformers_encoder_to_official(ours_encoder)
    assert official_state.unmatched == []
    hf_re, official_re = _pattern(hf), _pattern(official)
    matched = [k for k in ours_encoder if hf_re.match(k)]
    assert matched, f"no tensor of our model exercises {hf!r}"
    for key in matched:
        name = official.format(**hf_re.match(key).groupdict())  # type: ignore[union-attr]
        assert name in official_state.tensors, (key, name)
        expected = ours_encoder[key][:, 1:] if hf == "embeddings.position_embeddings" else ours_encoder[key]
        torch.testing.assert_close(official_state.tensors[name], expected, atol=0, rtol=0)
    assert len([k for k in official_state.tensors if official_re.match(k)]) == len(matched)

    back = official_encoder_to_transformers(official_state.tensors)
    assert back.unmatched == []
    for key in matched:
        if hf == "embeddings.position_embeddings":  # transformers' unused row 0 comes back as zeros
            assert not back.tensors[key][:, :1].any()
            torch.testing.assert_close(back.tensors[key][:, 1:], ours_encoder[key][:, 1:], atol=0, rtol=0)
        else:
            torch.testing.assert_close(back.tensors[key], ours_encoder[key], atol=0, rtol=0)

    again = transformers_encoder_to_official(back.tensors)  # official -> transformers -> official
    assert again.unmatched == []
    for name in [k for k in official_state.tensors if official_re.match(k)]:
        torch.testing.assert_close(again.tensors[name], official_state.tensors[name], atol=0, rtol=0)


def test_whole_encoder_of_our_model_round_trips(ours_encoder: dict[str, torch.Tensor]) -> None:
    official = transformers_encoder_to_official(ours_encoder)
    assert official.unmatched == []
    assert not any(k.startswith(("encoder.", "embeddings.")) for k in official.tensors)  # all renamed
    back = official_encoder_to_transformers(official.tensors)
    assert back.unmatched == []
    table = ours_encoder["embeddings.position_embeddings"]
    expected = ours_encoder | {
        "embeddings.position_embeddings": torch.cat([torch.zeros_like(table[:, :1]), table[:, 1:]], 1)
    }
    _assert_same(back.tensors, expected)
    again = transformers_encoder_to_official(back.tensors)
    assert again.unmatched == []
    _assert_same(again.tensors, official.tensors)  # official -> transformers -> official: the same keys and tensors


@pytest.mark.parametrize(("hf", "official"), ENCODER_NAME_PAIRS, ids=RULE_IDS)
def test_every_rule_round_trips_on_a_timm_model(hf: str, official: str, timm_state: dict[str, torch.Tensor]) -> None:
    """official (timm) -> transformers -> official gives the same keys and tensors, rule by rule."""
    official_re, hf_re = _pattern(official), _pattern(hf)
    matched = [k for k in timm_state if official_re.match(k)]
    if hf in ONLY_IN_OURS:
        assert matched == []  # covered by our model's test
        return
    assert matched, f"no tensor of timm's model exercises {official!r}"
    there = to_transformers(timm_state, TIMM)
    assert there.unmatched == []
    hf_keys = [k for k in there.tensors if k.startswith("swinv2.") and hf_re.match(k.removeprefix("swinv2."))]
    assert len(hf_keys) == len(matched)
    back = from_transformers(there.tensors, TIMM)
    assert back.unmatched == []
    for key in matched:
        assert back.tensors[key].dtype == timm_state[key].dtype
        torch.testing.assert_close(back.tensors[key], timm_state[key], atol=0, rtol=0)


def test_our_model_exercises_every_rule_and_timm_all_but_two(
    timm_state: dict[str, torch.Tensor], ours_encoder: dict[str, torch.Tensor]
) -> None:
    unused_by_us = [hf for hf, _ in ENCODER_NAME_PAIRS if not any(_pattern(hf).match(k) for k in ours_encoder)]
    assert unused_by_us == []
    unused_by_timm = [o for _, o in ENCODER_NAME_PAIRS if not any(_pattern(o).match(k) for k in timm_state)]
    assert unused_by_timm == ["mask_token", "absolute_pos_embed"]


def test_whole_timm_checkpoint_round_trips(timm_state: dict[str, torch.Tensor]) -> None:
    there = to_transformers(timm_state, TIMM)
    assert there.unmatched == []
    back = from_transformers(there.tensors, TIMM)
    assert back.unmatched == []
    _assert_same(back.tensors, timm_state)


def test_whole_microsoft_checkpoint_round_trips(timm_state: dict[str, torch.Tensor]) -> None:
    microsoft = _microsoft_from_timm(timm_state)
    there = to_transformers(microsoft, MICROSOFT)
    assert there.unmatched == []
    _assert_same(there.tensors, to_transformers(timm_state, TIMM).tensors)  # the same model, the same names
    back = from_transformers(there.tensors, MICROSOFT)
    assert back.unmatched == []
    _assert_same(back.tensors, microsoft)


def test_converted_timm_checkpoint_loads_into_our_classifier_strictly(timm_state: dict[str, torch.Tensor]) -> None:
    model = Swinv2ForImageClassification(_config())
    model.load_state_dict(to_transformers(timm_state, TIMM).tensors, strict=True)
    back = from_transformers(model.state_dict(), TIMM)
    assert back.unmatched == []
    _assert_same(back.tensors, timm_state)


def test_simmim_layout_keeps_the_encoder_under_encoder_and_the_decoder_as_it_is(
    ours_state: dict[str, torch.Tensor], ours_encoder: dict[str, torch.Tensor]
) -> None:
    official = transformers_encoder_to_official(ours_encoder).tensors
    simmim = {"encoder." + k: v for k, v in official.items()}
    simmim |= {k: v for k, v in ours_state.items() if k.startswith("decoder.")}
    simmim["encoder.layers.0.blocks.1.attn_mask"] = torch.zeros(16, 16, 16)  # derived: dropped
    there = to_transformers(simmim, MICROSOFT_SIMMIM)
    assert there.unmatched == []
    expected = dict(ours_state)
    expected["swinv2.embeddings.position_embeddings"] = torch.cat(
        [
            torch.zeros_like(ours_state["swinv2.embeddings.position_embeddings"][:, :1]),
            ours_state["swinv2.embeddings.position_embeddings"][:, 1:],
        ],
        dim=1,
    )  # the release has no unused row: it comes back as zeros
    _assert_same(there.tensors, expected)


# --------------------------------------------------------------------------------------- q/k/v


def test_fused_qkv_splits_into_query_key_value_rows_and_fuses_back() -> None:
    assert QKV_PARTS == ("query", "key", "value")
    C = 4
    fused = torch.arange(3 * C * C, dtype=torch.float32).reshape(3 * C, C)  # rows: q, then k, then v
    there = official_encoder_to_transformers({"layers.1.blocks.0.attn.qkv.weight": fused})
    assert there.unmatched == []
    block = "encoder.layers.1.blocks.0.attention.self."
    assert sorted(there.tensors) == sorted(f"{block}{part}.weight" for part in ("query", "key", "value"))
    for n, part in enumerate(("query", "key", "value")):
        torch.testing.assert_close(there.tensors[f"{block}{part}.weight"], fused[n * C : (n + 1) * C], atol=0, rtol=0)
    # fused in query, key, value order whatever order the parts come in
    shuffled = {f"{block}{part}.weight": there.tensors[f"{block}{part}.weight"] for part in ("value", "query", "key")}
    back = transformers_encoder_to_official(shuffled)
    assert back.unmatched == []
    assert list(back.tensors) == ["layers.1.blocks.0.attn.qkv.weight"]
    torch.testing.assert_close(back.tensors["layers.1.blocks.0.attn.qkv.weight"], fused, atol=0, rtol=0)


def test_qkv_of_a_timm_model_splits_row_for_row(timm_state: dict[str, torch.Tensor]) -> None:
    there = to_transformers(timm_state, TIMM).tensors
    for key, fused in timm_state.items():
        match = re.fullmatch(r"layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.weight", key)
        if not match:
            continue
        C = fused.shape[1]
        assert fused.shape[0] == 3 * C
        block = f"swinv2.encoder.layers.{match[1]}.blocks.{match[2]}.attention.self."
        for n, part in enumerate(QKV_PARTS):
            torch.testing.assert_close(there[f"{block}{part}.weight"], fused[n * C : (n + 1) * C], atol=0, rtol=0)
        prefix = key.removesuffix("qkv.weight")
        torch.testing.assert_close(there[f"{block}query.bias"], timm_state[prefix + "q_bias"], atol=0, rtol=0)
        torch.testing.assert_close(there[f"{block}value.bias"], timm_state[prefix + "v_bias"], atol=0, rtol=0)
        assert f"{block}key.bias" not in there  # keys have no bias


def test_a_projection_without_its_siblings_is_unmatched() -> None:
    block = "encoder.layers.0.blocks.1.attention.self."
    state = {f"{block}query.weight": torch.ones(4, 4), f"{block}value.weight": torch.ones(4, 4)}
    out = transformers_encoder_to_official(state)
    assert out.tensors == {}
    assert sorted(out.unmatched) == sorted(state)


# ------------------------------------------------------------------------------ position table


def test_official_position_table_gets_a_leading_zero_row() -> None:
    table = torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(0))  # (1, L, C)
    there = official_encoder_to_transformers({"absolute_pos_embed": table})
    assert there.unmatched == []
    (name,) = there.tensors
    assert name == "embeddings.position_embeddings"
    converted = there.tensors[name]
    assert converted.shape == (1, 17, 8)  # (1, L+1, C), transformers' shape
    assert not converted[:, :1].any()
    torch.testing.assert_close(converted[:, 1:], table, atol=0, rtol=0)


def test_transformers_position_table_loses_its_leading_row() -> None:
    table = torch.randn(1, 17, 8, generator=torch.Generator().manual_seed(1))  # row 0 not zero: dropped anyway
    out = transformers_encoder_to_official({"embeddings.position_embeddings": table})
    assert out.unmatched == []
    back = out.tensors
    assert list(back) == ["absolute_pos_embed"]
    assert back["absolute_pos_embed"].shape == (1, 16, 8)
    torch.testing.assert_close(back["absolute_pos_embed"], table[:, 1:], atol=0, rtol=0)


def test_our_position_table_uses_rows_one_to_l(ours_encoder: dict[str, torch.Tensor]) -> None:
    table = ours_encoder["embeddings.position_embeddings"]
    grid = _config().patch_grid
    assert table.shape == (1, grid[0] * grid[1] + 1, 16)
    official = transformers_encoder_to_official(ours_encoder).tensors["absolute_pos_embed"]
    assert official.shape == (1, grid[0] * grid[1], 16)
    torch.testing.assert_close(official, table[:, 1:], atol=0, rtol=0)


# --------------------------------------------------------------------------------- patch merging


def test_timm_merging_index_is_one_stage_later(timm_state: dict[str, torch.Tensor]) -> None:
    merges = sorted({int(m[1]) for k in timm_state if (m := re.match(r"layers\.(\d+)\.downsample\.", k))})
    assert merges == list(range(1, NUM_LAYERS))  # timm merges at the start of stages 1..n-1
    there = to_transformers(timm_state, TIMM).tensors
    ours = sorted({int(m[1]) for k in there if (m := re.match(r"swinv2\.encoder\.layers\.(\d+)\.downsample\.", k))})
    assert ours == list(range(NUM_LAYERS - 1))  # transformers at the end of stages 0..n-2
    for i in range(NUM_LAYERS - 1):
        for rest in ("reduction.weight", "norm.weight", "norm.bias"):
            torch.testing.assert_close(
                there[f"swinv2.encoder.layers.{i}.downsample.{rest}"],
                timm_state[f"layers.{i + 1}.downsample.{rest}"],
                atol=0,
                rtol=0,
            )
    back = from_transformers(there, TIMM).tensors
    assert sorted(k for k in back if ".downsample." in k) == sorted(k for k in timm_state if ".downsample." in k)


def test_microsoft_merging_index_is_kept(timm_state: dict[str, torch.Tensor]) -> None:
    microsoft = _microsoft_from_timm(timm_state)
    there = to_transformers(microsoft, MICROSOFT).tensors
    for i in range(NUM_LAYERS - 1):
        torch.testing.assert_close(
            there[f"swinv2.encoder.layers.{i}.downsample.reduction.weight"],
            microsoft[f"layers.{i}.downsample.reduction.weight"],
            atol=0,
            rtol=0,
        )
    back = from_transformers(there, MICROSOFT).tensors
    assert sorted(k for k in back if ".downsample." in k) == sorted(k for k in microsoft if ".downsample." in k)


@pytest.mark.parametrize(
    ("shift", "official"), [(0, "layers.1.downsample.norm.bias"), (-1, "layers.2.downsample.norm.bias")]
)
def test_merge_shift_of_the_encoder_functions(shift: int, official: str) -> None:
    tensor = torch.arange(4.0)
    there = official_encoder_to_transformers({official: tensor}, merge_shift=shift)
    assert list(there.tensors) == ["encoder.layers.1.downsample.norm.bias"]
    back = transformers_encoder_to_official(there.tensors, merge_shift=shift)
    assert list(back.tensors) == [official]
    torch.testing.assert_close(back.tensors[official], tensor, atol=0, rtol=0)


# ----------------------------------------------------------------------------------- heads


def test_heads_become_the_classifier(timm_state: dict[str, torch.Tensor]) -> None:
    timm_names = to_transformers(timm_state, TIMM).tensors
    torch.testing.assert_close(timm_names["classifier.weight"], timm_state["head.fc.weight"], atol=0, rtol=0)
    torch.testing.assert_close(timm_names["classifier.bias"], timm_state["head.fc.bias"], atol=0, rtol=0)
    microsoft = _microsoft_from_timm(timm_state)
    microsoft_names = to_transformers(microsoft, MICROSOFT).tensors
    torch.testing.assert_close(microsoft_names["classifier.weight"], microsoft["head.weight"], atol=0, rtol=0)
    assert not any(k.startswith("head") for k in [*timm_names, *microsoft_names])


# --------------------------------------------------------------------------------- derived buffers


@pytest.mark.parametrize("layout", [TIMM, MICROSOFT, MICROSOFT_SIMMIM])
def test_derived_buffers_are_dropped(layout: str, timm_state: dict[str, torch.Tensor]) -> None:
    state = timm_state if layout == TIMM else _microsoft_from_timm(timm_state)
    if layout == MICROSOFT_SIMMIM:
        state = {"encoder." + k: v for k, v in state.items() if not k.startswith("head.")}
        derived = {"encoder." + k: v for k, v in DERIVED.items()}
    else:
        derived = DERIVED
    clean = to_transformers(state, layout)
    with_buffers = to_transformers({**state, **derived}, layout)
    assert with_buffers.unmatched == clean.unmatched == []
    _assert_same(with_buffers.tensors, clean.tensors)


def test_derived_buffers_are_dropped_by_the_encoder_function() -> None:
    out = official_encoder_to_transformers(DERIVED)
    assert (out.tensors, out.unmatched) == ({}, [])


# ----------------------------------------------------------------------------------- unknown keys


def test_unknown_official_key_is_unmatched(timm_state: dict[str, torch.Tensor]) -> None:
    strange = "layers.0.blocks.0.attn.mystery"
    out = to_transformers({**timm_state, strange: torch.ones(2)}, TIMM)
    assert out.unmatched == [strange]
    _assert_same(out.tensors, to_transformers(timm_state, TIMM).tensors)  # the rest converts as before
    out = official_encoder_to_transformers({"patch_embed.proj.bias": torch.ones(2), "extra.weight": torch.ones(2)})
    assert out.unmatched == ["extra.weight"]
    assert list(out.tensors) == ["embeddings.patch_embeddings.projection.bias"]
    out = to_transformers({**_microsoft_from_timm(timm_state), strange: torch.ones(2)}, MICROSOFT)
    assert out.unmatched == [strange]


def test_unknown_transformers_key_is_unmatched(ours_encoder: dict[str, torch.Tensor]) -> None:
    strange = "encoder.layers.0.blocks.0.attention.self.mystery"
    out = transformers_encoder_to_official({**ours_encoder, strange: torch.ones(2)})
    assert out.unmatched == [strange]
    _assert_same(out.tensors, transformers_encoder_to_official(ours_encoder).tensors)


def test_from_transformers_reports_keys_outside_encoder_and_classifier(timm_state: dict[str, torch.Tensor]) -> None:
    state = to_transformers(timm_state, TIMM).tensors
    out = from_transformers({**state, "decoder.0.weight": torch.ones(2)}, TIMM)
    assert out.unmatched == ["decoder.0.weight"]
    _assert_same(out.tensors, timm_state)


@pytest.mark.parametrize("case", ["simmim-encoder", "transformers-swinv2"])
def test_unknown_key_under_a_prefix_is_reported_by_its_name_in_the_file(
    case: str, timm_state: dict[str, torch.Tensor]
) -> None:
    if case == "simmim-encoder":
        state = {"encoder." + k: v for k, v in timm_state.items() if not k.startswith("head.")}
        strange = "encoder.layers.0.blocks.0.attn.mystery"
        out = to_transformers({**state, strange: torch.ones(2)}, MICROSOFT_SIMMIM)
    else:
        strange = "swinv2.encoder.layers.0.blocks.0.attention.self.mystery"
        out = from_transformers({**to_transformers(timm_state, TIMM).tensors, strange: torch.ones(2)}, TIMM)
    assert out.unmatched == [strange]


# ---------------------------------------------------------------------------------------- layouts


def test_transformers_layout_passes_unchanged(ours_state: dict[str, torch.Tensor]) -> None:
    assert TRANSFORMERS in LAYOUTS
    out = to_transformers(ours_state, TRANSFORMERS)
    assert out.unmatched == []
    _assert_same(out.tensors, ours_state)


def test_unknown_layouts_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown checkpoint layout 'onnx'"):
        to_transformers({}, "onnx")
    with pytest.raises(ValueError, match="only classifiers convert"):
        from_transformers({}, MICROSOFT_SIMMIM)
    with pytest.raises(ValueError, match="only classifiers convert"):
        from_transformers({}, TRANSFORMERS)
