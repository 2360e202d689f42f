"""Swinv2Config: every validation rule (type and message), derived fields, JSON round trips, stage geometry."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from helpers import tiny_config
from swinv2 import Swinv2Config
from swinv2.models.swinv2 import stage_windows

# ------------------------------------------------------------------------------ validation rules


def test_depths_and_num_heads_lengths_must_match():
    with pytest.raises(ValueError, match=re.escape("len(depths) (2) must equal len(num_heads) (3)")):
        tiny_config(depths=(2, 2), num_heads=(2, 4, 8))


def test_stage_width_must_divide_by_heads_and_message_quotes_values():
    with pytest.raises(ValueError, match=re.escape("embed_dim * 2**0 (97) must be divisible by num_heads[0] (3)")):
        Swinv2Config(embed_dim=97)
    # A later stage: width 16 * 2**1 = 32 is not divisible by 5.
    with pytest.raises(ValueError, match=re.escape("embed_dim * 2**1 (32) must be divisible by num_heads[1] (5)")):
        tiny_config(num_heads=(2, 5))


@pytest.mark.parametrize("value", [0, -64, (64, 0)])
def test_image_size_must_be_positive(value):
    with pytest.raises(ValueError, match=re.escape(f"image_size must be positive; got {value!r}")):
        tiny_config(image_size=value)


@pytest.mark.parametrize("value", [0, -4, (4, 0)])
def test_patch_size_must_be_positive(value):
    with pytest.raises(ValueError, match=re.escape(f"patch_size must be positive; got {value!r}")):
        tiny_config(patch_size=value)


@pytest.mark.parametrize("value", [True, (4, 4, 4), "4", 4.0])
def test_image_size_must_be_int_or_pair(value):
    with pytest.raises(ValueError, match="image_size must be an int or a"):
        tiny_config(image_size=value)


@pytest.mark.parametrize("name", ["num_channels", "embed_dim", "window_size", "encoder_stride"])
@pytest.mark.parametrize("value", [0, -1])
def test_positive_int_fields(name, value):
    with pytest.raises(ValueError, match=re.escape(f"{name} must be a positive int; got {value}")):
        tiny_config(**{name: value})


@pytest.mark.parametrize("name", ["num_channels", "embed_dim", "window_size", "encoder_stride"])
def test_positive_int_fields_reject_floats_and_bools(name):
    with pytest.raises(ValueError, match=re.escape(f"{name} must be a positive int; got 4.5")):
        tiny_config(**{name: 4.5})
    with pytest.raises(ValueError, match=re.escape(f"{name} must be a positive int; got True")):
        tiny_config(**{name: True})


def test_depths_must_not_be_empty():
    with pytest.raises(ValueError, match=re.escape("depths must name at least one stage")):
        tiny_config(depths=(), num_heads=())


@pytest.mark.parametrize("depths", [(2, 0), (-1, 2)])
def test_depths_must_be_positive(depths):
    with pytest.raises(ValueError, match=re.escape(f"depths must be positive ints; got {list(depths)}")):
        tiny_config(depths=depths)


@pytest.mark.parametrize("heads", [(2, 0), (-2, 4)])
def test_num_heads_must_be_positive(heads):
    with pytest.raises(ValueError, match=re.escape(f"num_heads must be positive ints; got {list(heads)}")):
        tiny_config(num_heads=heads)


def test_pretrained_window_sizes_too_short():
    with pytest.raises(ValueError, match=re.escape("pretrained_window_sizes needs one entry per stage (2); got [0]")):
        tiny_config(pretrained_window_sizes=(0,))


def test_pretrained_window_sizes_longer_with_nonzero_extra_entries():
    with pytest.raises(
        ValueError, match=re.escape("pretrained_window_sizes needs one entry per stage (2); got [4, 4, 4, 0]")
    ):
        tiny_config(pretrained_window_sizes=(4, 4, 4, 0))


def test_pretrained_window_sizes_negative():
    with pytest.raises(ValueError, match=re.escape("pretrained_window_sizes must be non-negative ints; got [0, -1]")):
        tiny_config(pretrained_window_sizes=(0, -1))


def test_transformers_default_pretrained_window_sizes_accepted_for_two_stages():
    config = tiny_config(pretrained_window_sizes=(0, 0, 0, 0))
    assert config.num_layers == 2
    assert config.pretrained_window_sizes == (0, 0, 0, 0)
    # Trailing zeros are ignored but the stage entries are used.
    assert tiny_config(pretrained_window_sizes=(8, 4, 0, 0)).pretrained_window_sizes[:2] == (8, 4)


@pytest.mark.parametrize("value", [0, -1.0, 0.0])
def test_mlp_ratio_must_be_positive(value):
    with pytest.raises(ValueError, match=re.escape(f"mlp_ratio must be positive; got {value!r}")):
        tiny_config(mlp_ratio=value)


@pytest.mark.parametrize("name", ["hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"])
@pytest.mark.parametrize("value", [1.0, -0.1])
def test_probabilities_must_be_in_unit_interval(name, value):
    with pytest.raises(ValueError, match=re.escape(f"{name} must be in [0, 1); got {value!r}")):
        tiny_config(**{name: value})


@pytest.mark.parametrize("name", ["hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"])
def test_probabilities_accept_bounds_inside_interval(name):
    assert getattr(tiny_config(**{name: 0.0}), name) == 0.0
    assert getattr(tiny_config(**{name: 0.99}), name) == 0.99


def test_unknown_hidden_act():
    with pytest.raises(ValueError, match=re.escape("hidden_act 'gelu2' is not supported; choose one of")):
        tiny_config(hidden_act="gelu2")


@pytest.mark.parametrize("value", [0, -1e-5])
def test_layer_norm_eps_must_be_positive(value):
    with pytest.raises(ValueError, match=re.escape(f"layer_norm_eps must be positive; got {value!r}")):
        tiny_config(layer_norm_eps=value)


def test_initializer_range_must_be_non_negative():
    with pytest.raises(ValueError, match=re.escape("initializer_range must be non-negative; got -0.02")):
        tiny_config(initializer_range=-0.02)


def test_bad_problem_type():
    with pytest.raises(ValueError, match=re.escape("problem_type 'ranking' is not one of")):
        tiny_config(problem_type="ranking")


@pytest.mark.parametrize("problem", ["regression", "single_label_classification", "multi_label_classification"])
def test_good_problem_types(problem):
    assert tiny_config(problem_type=problem).problem_type == problem


def test_all_errors_reported_at_once():
    with pytest.raises(ValueError) as info:
        tiny_config(window_size=0, mlp_ratio=-1.0, hidden_act="nope")
    message = str(info.value)
    assert message.startswith("invalid Swinv2Config: ")
    for part in ("window_size must be a positive int", "mlp_ratio must be positive", "hidden_act 'nope'"):
        assert part in message


# --------------------------------------------------------------------------- out_features / indices


def test_unknown_out_features():
    with pytest.raises(ValueError, match=re.escape("out_features ['stage3'] are not stage names; choose from")):
        tiny_config(out_features=["stage1", "stage3"])


@pytest.mark.parametrize("features", [["stage2", "stage1"], ["stage1", "stage1"]])
def test_out_features_order_and_duplicates(features):
    pattern = re.escape(f"out_features must be unique and in stage order ['stem', 'stage1', 'stage2']; got {features}")
    with pytest.raises(ValueError, match=pattern):
        tiny_config(out_features=features)


@pytest.mark.parametrize(("indices", "bad"), [([3], [3]), ([1, 7], [7]), ([-4], [-4])])
def test_out_indices_out_of_range(indices, bad):
    with pytest.raises(ValueError, match=re.escape(f"out_indices {bad} are out of range for 3 stage names")):
        tiny_config(out_indices=indices)


@pytest.mark.parametrize("indices", [[2, 1], [1, 1]])
def test_out_indices_must_increase(indices):
    with pytest.raises(ValueError, match=re.escape(f"out_indices must be unique and increasing; got {indices}")):
        tiny_config(out_indices=indices)


def test_out_features_and_out_indices_must_agree():
    with pytest.raises(
        ValueError, match=re.escape("out_features ['stage1'] and out_indices [2] name different stages")
    ):
        tiny_config(out_features=["stage1"], out_indices=[2])


def test_out_features_and_out_indices_consistent_pair_accepted():
    config = tiny_config(out_features=["stem", "stage2"], out_indices=[0, 2])
    assert (config.out_features, config.out_indices) == (["stem", "stage2"], [0, 2])


def test_negative_out_indices_are_normalised():
    config = tiny_config(out_indices=[-2, -1])
    assert config.out_indices == [1, 2]
    assert config.out_features == ["stage1", "stage2"]


def test_out_indices_derive_out_features_and_back():
    assert tiny_config(out_indices=[0, 2]).out_features == ["stem", "stage2"]
    assert tiny_config(out_features=["stem", "stage1"]).out_indices == [0, 1]


def test_default_out_features_is_last_stage():
    config = tiny_config()
    assert config.out_features == ["stage2"]
    assert config.out_indices == [2]
    default = Swinv2Config()
    assert default.out_features == ["stage4"]
    assert default.out_indices == [4]


# ----------------------------------------------------------------------------------------- labels


def test_num_labels_must_match_id2label():
    with pytest.raises(ValueError, match=re.escape("num_labels (3) does not match id2label, which has 2 entries")):
        tiny_config(num_labels=3, id2label={0: "cat", 1: "dog"})


@pytest.mark.parametrize("value", [-1, True, 2.0])
def test_num_labels_must_be_non_negative_int(value):
    with pytest.raises(ValueError, match=re.escape(f"num_labels must be a non-negative int; got {value!r}")):
        tiny_config(num_labels=value)


def test_num_labels_builds_label_maps():
    config = tiny_config(num_labels=3)
    assert config.num_labels == 3
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert config.label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}


def test_default_is_two_labels_and_zero_is_allowed():
    assert tiny_config().id2label == {0: "LABEL_0", 1: "LABEL_1"}
    empty = tiny_config(num_labels=0)
    assert (empty.num_labels, empty.id2label, empty.label2id) == (0, {}, {})


def test_id2label_with_string_keys_is_normalised():
    config = tiny_config(id2label={"0": "cat", "1": "dog"})
    assert config.id2label == {0: "cat", 1: "dog"}
    assert config.label2id == {"cat": 0, "dog": 1}
    assert config.num_labels == 2


def test_inconsistent_label2id_is_rebuilt_from_id2label():
    config = tiny_config(id2label={0: "cat", 1: "dog"}, label2id={"x": 5})
    assert config.label2id == {"cat": 0, "dog": 1}


# ----------------------------------------------------------------------------------- derived fields


def test_derived_fields():
    config = tiny_config()
    assert config.hidden_size == 32
    assert config.num_layers == 2
    assert config.stage_names == ["stem", "stage1", "stage2"]
    assert config.patch_grid == (16, 16)
    default = Swinv2Config()
    assert default.hidden_size == 768
    assert default.num_layers == 4
    assert default.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]


def test_non_square_sizes():
    config = tiny_config(image_size=(64, 32), patch_size=[4, 2])
    assert config.image_hw == (64, 32)
    assert config.patch_hw == (4, 2)
    assert config.patch_grid == (16, 16)


def test_defaults_equal_transformers_defaults():
    import transformers

    theirs = transformers.Swinv2Config()
    ours = Swinv2Config()
    runtime_only = {"extra", "attn_implementation", "extra_norm_period"}  # not transformers config fields
    shared = [f.name for f in dataclasses.fields(Swinv2Config) if f.name not in runtime_only]
    for name in shared:
        mine, reference = getattr(ours, name), getattr(theirs, name)
        if isinstance(mine, tuple):
            mine = list(mine)
        if isinstance(reference, tuple):
            reference = list(reference)
        assert mine == reference, f"default of {name}: ours {mine!r}, transformers {reference!r}"
    for name in ("hidden_size", "num_layers", "stage_names"):
        assert getattr(ours, name) == getattr(theirs, name), name


# ------------------------------------------------------------------------------------- round trips


def _unusual_config() -> Swinv2Config:
    return tiny_config(
        image_size=(64, 48),
        id2label={0: "cat", 1: "dog", 2: "bird"},
        out_features=["stem", "stage2"],
        pretrained_window_sizes=(8, 4),
        problem_type="multi_label_classification",
        hidden_act="silu",
        use_absolute_embeddings=True,
        extra={"architectures": ["Swinv2ForImageClassification"], "custom": {"a": [1, 2]}},
    )


def test_to_dict_from_dict_round_trip():
    config = _unusual_config()
    data = config.to_dict()
    assert data["model_type"] == "swinv2"
    assert data["id2label"] == {"0": "cat", "1": "dog", "2": "bird"}
    assert data["custom"] == {"a": [1, 2]}
    assert "num_labels" not in data
    assert "extra" not in data
    again = Swinv2Config.from_dict(data)
    assert again == config
    assert again.to_dict() == data


def test_json_file_round_trip(tmp_path):
    config = _unusual_config()
    path = config.save_pretrained(tmp_path / "nested" / "dir")
    assert path == tmp_path / "nested" / "dir" / "config.json"
    assert Swinv2Config.from_json_file(path) == config
    assert Swinv2Config.from_pretrained(path.parent) == config
    assert Swinv2Config.from_pretrained(path) == config  # a file path works too
    assert json.loads(path.read_text()) == config.to_dict()
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp files left


def test_transformers_config_json_round_trip_keeps_every_key(tmp_path):
    import transformers

    theirs_dir, ours_dir = tmp_path / "theirs", tmp_path / "ours"
    reference = transformers.Swinv2Config(
        image_size=64,
        embed_dim=16,
        depths=[2, 2],
        num_heads=[2, 4],
        window_size=4,
        num_labels=5,
        out_features=["stage1", "stage2"],
        architectures=["Swinv2ForImageClassification"],
        some_unknown_key={"nested": [1, 2, 3]},
    )
    reference.save_pretrained(theirs_dir)
    theirs = json.loads((theirs_dir / "config.json").read_text())
    assert theirs["some_unknown_key"] == {"nested": [1, 2, 3]}  # the fixture has what we test for

    config = Swinv2Config.from_pretrained(theirs_dir)
    assert config.num_labels == 5
    assert config.depths == (2, 2)
    assert config.pretrained_window_sizes == (0, 0, 0, 0)
    assert config.out_indices == [1, 2]
    config.save_pretrained(ours_dir)
    ours = json.loads((ours_dir / "config.json").read_text())
    missing = sorted(set(theirs) - set(ours))
    assert not missing, f"keys lost on the round trip: {missing}"
    different = {k: (theirs[k], ours[k]) for k in theirs if theirs[k] != ours[k]}
    assert not different, f"values changed on the round trip: {different}"

    # ... and transformers reads our file back to an equal config.
    back = transformers.Swinv2Config.from_pretrained(ours_dir)
    assert back.to_dict()["id2label"] == reference.to_dict()["id2label"]
    assert back.out_features == reference.out_features
    assert back.some_unknown_key == {"nested": [1, 2, 3]}


def test_replace_rebuilds_label_maps():
    config = tiny_config(id2label={0: "cat", 1: "dog"})
    changed = config.replace(num_labels=4)
    assert changed.num_labels == 4
    assert changed.id2label == {i: f"LABEL_{i}" for i in range(4)}
    assert changed.label2id == {f"LABEL_{i}": i for i in range(4)}
    assert config.id2label == {0: "cat", 1: "dog"}  # the original is untouched
    assert changed.embed_dim == config.embed_dim


def test_replace_validates_and_resets_out_features():
    config = tiny_config(out_features=["stage1"])
    assert config.replace(window_size=2).out_features == ["stage1"]
    deeper = config.replace(depths=(2, 2, 2), num_heads=(2, 4, 8))
    assert deeper.out_features == ["stage3"]
    with pytest.raises(ValueError, match=re.escape("window_size must be a positive int; got 0")):
        config.replace(window_size=0)


def test_from_json_file_invalid_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"cannot read config file '{path}': not valid JSON")):
        Swinv2Config.from_json_file(path)


def test_from_json_file_non_object(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("[1, 2, 3]", encoding="utf-8")
    expected = f"cannot read config file '{path}': expected a JSON object, got a JSON array"
    with pytest.raises(ValueError, match=re.escape(expected)):
        Swinv2Config.from_json_file(path)


def test_from_json_file_missing(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(FileNotFoundError, match=re.escape(f"no config file at '{path}'")):
        Swinv2Config.from_json_file(path)


def test_from_json_file_not_utf8(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match=re.escape(f"cannot read config file '{path}': not UTF-8")):
        Swinv2Config.from_json_file(path)


def test_from_json_file_invalid_values_raise_validation_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "swinv2", "embed_dim": 97}), encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape("(97) must be divisible by num_heads[0] (3)")):
        Swinv2Config.from_json_file(path)


@pytest.mark.parametrize("model_type", ["swin", "vit"])
def test_other_model_type_rejected(model_type, tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"config is for model_type '{model_type}', not 'swinv2'")):
        Swinv2Config.from_dict({"model_type": model_type})
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": model_type}), encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"model_type '{model_type}'")):
        Swinv2Config.from_json_file(path)


def test_from_dict_without_model_type_and_derived_keys_ignored():
    config = Swinv2Config.from_dict({"embed_dim": 48, "hidden_size": 12345, "num_layers": 9, "stage_names": ["x"]})
    assert config.embed_dim == 48
    assert config.hidden_size == 384  # recomputed, not read
    assert config.num_layers == 4
    assert config.extra == {}


# ---------------------------------------------------------------------------------- stage windows


def test_stage_windows_window16_at_256():
    config = Swinv2Config(image_size=256, patch_size=4, window_size=16)
    # Grids 64, 32, 16, 8: a stage whose grid is not larger than the window does not shift (16 -> 16
    # is such a stage), and the last stage's window is clamped to its grid of 8.
    assert [stage_windows(config, i) for i in range(4)] == [(16, 8), (16, 8), (16, 0), (8, 0)]


def test_stage_windows_window8_at_256():
    config = Swinv2Config(image_size=256, patch_size=4, window_size=8)
    assert [stage_windows(config, i) for i in range(4)] == [(8, 4), (8, 4), (8, 4), (8, 0)]


def test_stage_windows_tiny_and_clamp_to_one():
    assert [stage_windows(tiny_config(), i) for i in range(2)] == [(4, 2), (4, 2)]
    small = Swinv2Config(image_size=8, patch_size=4, window_size=7)  # grid 2, 1, 0, 0
    assert [stage_windows(small, i) for i in range(4)] == [(2, 0), (1, 0), (1, 0), (1, 0)]


@pytest.mark.parametrize(("image_size", "window_size"), [(256, 16), (256, 8), (192, 12), (224, 7)])
def test_stage_windows_matches_transformers(image_size, window_size):
    import transformers

    reference = transformers.Swinv2Model(
        transformers.Swinv2Config(
            image_size=image_size, window_size=window_size, embed_dim=4, depths=[2, 2, 2, 2], num_heads=[1, 1, 1, 1]
        )
    )
    expected = [(layer.blocks[1].window_size, layer.blocks[1].shift_size) for layer in reference.encoder.layers]
    config = Swinv2Config(image_size=image_size, window_size=window_size)
    assert [stage_windows(config, i) for i in range(4)] == expected
