"""Swinv2Config's transformers surface: output flags, dtype, num_labels setter, diff dicts, JSON files,
subfolders, unknown keys. Where transformers has the behaviour, the same check runs on its config too."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest

from helpers import tiny_config
from swinv2 import Swinv2Config
from swinv2.config import LEGACY_TRANSFORMERS_KEYS, TRANSFORMERS_KEYS, unknown_keys

LOGGER = "swinv2.config"


@pytest.fixture(scope="module")
def transformers_module() -> Any:
    return pytest.importorskip("transformers")


@pytest.fixture(params=["ours", "transformers"])
def config_class(request: pytest.FixtureRequest) -> Any:
    """Our Swinv2Config, and transformers' (skipped where transformers is not installed)."""
    if request.param == "ours":
        return Swinv2Config
    return request.getfixturevalue("transformers_module").Swinv2Config


def _dtype_str(value: Any) -> Any:
    return None if value is None else str(value).removeprefix("torch.")


def _unknown_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


# ----------------------------------------------------------------------------- output flags


def test_output_flag_defaults(config_class):
    config = config_class()
    assert config.return_dict is True
    assert config.output_hidden_states is False
    assert config.output_attentions is False
    assert config.dtype is None
    assert config.problem_type is None


def test_output_flags_are_kept(config_class):
    config = config_class(return_dict=False, output_hidden_states=True, problem_type="regression")
    assert (config.return_dict, config.output_hidden_states, config.problem_type) == (False, True, "regression")


def test_output_attentions_is_kept():
    # transformers' setter also switches its attention implementation to eager; ours is a plain flag.
    assert Swinv2Config(output_attentions=True).output_attentions is True


@pytest.mark.parametrize("return_dict", [True, False])
def test_use_return_dict_follows_return_dict(config_class, return_dict):
    assert config_class(return_dict=return_dict).use_return_dict is return_dict


def test_torchscript_turns_use_return_dict_off():
    config = Swinv2Config(torchscript=True)
    assert config.torchscript is True
    assert config.use_return_dict is False
    assert Swinv2Config().torchscript is False
    config.torchscript = False
    assert config.use_return_dict is True


@pytest.mark.parametrize("name", ["return_dict", "output_hidden_states", "output_attentions", "torchscript"])
@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bool_flags_must_be_bools(name, value):
    with pytest.raises(ValueError, match=re.escape(f"{name} must be True or False; got {value!r}")):
        tiny_config(**{name: value})


def test_flag_errors_are_collected_with_the_others():
    with pytest.raises(ValueError) as info:
        tiny_config(return_dict="no", window_size=0, dtype="int8")
    message = str(info.value)
    assert message.startswith("invalid Swinv2Config: ")
    for part in ("return_dict must be True or False; got 'no'", "window_size must be a positive int", "'int8'"):
        assert part in message


# ------------------------------------------------------------------------------------ dtype


@pytest.mark.parametrize("name", ["float32", "float16", "bfloat16", "float64"])
def test_dtype_by_name(config_class, name):
    assert _dtype_str(config_class(dtype=name).dtype) == name
    assert config_class(dtype=name).to_dict()["dtype"] == name


def test_torch_dtype_is_the_old_name_of_dtype(config_class):
    assert _dtype_str(config_class(torch_dtype="float16").dtype) == "float16"
    assert _dtype_str(config_class(dtype="float32", torch_dtype="float16").dtype) == "float32"  # dtype wins
    data = config_class(torch_dtype="bfloat16").to_dict()
    assert data["dtype"] == "bfloat16"
    assert "torch_dtype" not in data


def test_torch_dtype_objects_are_stored_by_name():
    torch = pytest.importorskip("torch")
    assert Swinv2Config(dtype=torch.bfloat16).dtype == "bfloat16"
    assert Swinv2Config(torch_dtype=torch.float16).dtype == "float16"
    assert Swinv2Config(dtype="torch.float64").dtype == "float64"
    config = Swinv2Config()
    config.dtype = torch.float16
    assert config.dtype == "float16"
    assert config.torch_dtype == "float16"
    config.torch_dtype = "bfloat16"
    assert config.dtype == "bfloat16"


@pytest.mark.parametrize("value", ["int8", "auto", "fp16", 16])
def test_bad_dtype(value):
    with pytest.raises(ValueError, match=re.escape(f"dtype {value!r} is not a parameter dtype name; choose one of")):
        tiny_config(dtype=value)
    with pytest.raises(ValueError, match=re.escape(f"dtype {value!r} is not a parameter dtype name")):
        tiny_config(torch_dtype=value)


def test_dtype_round_trips_and_old_files_load(tmp_path):
    config = tiny_config(dtype="bfloat16")
    assert Swinv2Config.from_dict(config.to_dict()) == config
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**tiny_config().to_dict(), "torch_dtype": "float16"}), encoding="utf-8")
    loaded = Swinv2Config.from_json_file(path)
    assert loaded.dtype == "float16"
    assert "torch_dtype" not in loaded.extra
    assert loaded.to_dict()["dtype"] == "float16"


def test_replace_with_torch_dtype_changes_dtype():
    assert tiny_config(dtype="float32").replace(torch_dtype="float16").dtype == "float16"
    assert tiny_config(dtype="float32").replace(dtype="bfloat16").dtype == "bfloat16"


def test_dtype_recorded_in_extra_is_written():
    # Code that records the saved dtype in `extra` after construction (as model saving did) still works.
    config = tiny_config()
    config.extra["dtype"] = "bfloat16"
    assert config.to_dict()["dtype"] == "bfloat16"
    assert Swinv2Config(extra={"torch_dtype": "float16"}).dtype == "float16"


# ------------------------------------------------------------------------ to_dict / to_diff_dict


def test_to_dict_writes_the_common_keys_as_transformers(transformers_module):
    theirs = transformers_module.Swinv2Config().to_dict()
    ours = Swinv2Config().to_dict()
    for key in ("return_dict", "output_hidden_states", "output_attentions", "dtype", "problem_type"):
        assert key in ours
        assert ours[key] == theirs[key], key
    assert "torchscript" not in theirs
    assert "torchscript" not in ours  # written only when set


def test_torchscript_written_only_when_true(transformers_module):
    assert transformers_module.Swinv2Config(torchscript=True).to_diff_dict()["torchscript"] is True
    config = tiny_config(torchscript=True)
    assert config.to_dict()["torchscript"] is True
    assert config.to_diff_dict()["torchscript"] is True
    again = Swinv2Config.from_dict(config.to_dict())
    assert again.torchscript is True
    assert again == config
    assert again != tiny_config()


DIFF_CASES = [
    {},
    {"embed_dim": 48, "window_size": 8},
    {"return_dict": False, "output_hidden_states": True, "dtype": "bfloat16"},
    {"problem_type": "regression", "num_labels": 3},
    {"num_labels": 2},
    {"id2label": {0: "cat", 1: "dog"}, "label2id": {"cat": 0, "dog": 1}},  # transformers keeps label2id=None alone
    {"out_features": ["stage1", "stage3"], "drop_path_rate": 0.2},
]


@pytest.mark.parametrize("fields", DIFF_CASES)
def test_to_diff_dict_keeps_the_keys_transformers_keeps(transformers_module, fields):
    theirs = transformers_module.Swinv2Config(**fields).to_diff_dict()
    theirs.pop("transformers_version")
    if "id2label" in theirs:
        theirs["id2label"] = {str(k): v for k, v in theirs["id2label"].items()}
    ours = Swinv2Config(**fields).to_diff_dict()
    assert sorted(ours) == sorted(theirs)
    assert ours == theirs


def test_to_diff_dict_leaves_out_defaults_only():
    config = tiny_config(output_hidden_states=True)
    diff, full = config.to_diff_dict(), config.to_dict()
    assert diff["output_hidden_states"] is True
    assert diff["model_type"] == "swinv2"
    for key in ("return_dict", "output_attentions", "dtype", "problem_type", "id2label", "label2id"):
        assert key not in diff
        assert key in full
    assert {k: v for k, v in full.items() if k in diff} == diff
    assert Swinv2Config.from_dict(diff) == config


def test_to_diff_dict_drops_default_unmodelled_keys():
    config = tiny_config(extra={"_name_or_path": "x", "architectures": None, "is_encoder_decoder": False, "a": 1})
    diff = config.to_diff_dict()
    assert "a" in diff
    for key in ("_name_or_path", "architectures", "is_encoder_decoder"):
        assert key not in diff
    assert tiny_config(extra={"architectures": ["Swinv2Model"]}).to_diff_dict()["architectures"] == ["Swinv2Model"]


# -------------------------------------------------------------------------------- num_labels


def test_setting_num_labels_recreates_label_maps(config_class):
    config = config_class(id2label={0: "cat", 1: "dog"})
    config.num_labels = 3
    assert config.num_labels == 3
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert config.label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}


def test_setting_the_same_num_labels_keeps_names(config_class):
    config = config_class(id2label={0: "cat", 1: "dog"})
    config.num_labels = 2
    assert config.id2label == {0: "cat", 1: "dog"}


def test_setting_id2label_updates_num_labels(config_class):
    config = config_class()
    config.id2label = {0: "a", 1: "b", 2: "c", 3: "d"}
    assert config.num_labels == 4


def test_setting_id2label_normalises_and_rebuilds_label2id():
    config = tiny_config()
    config.id2label = {"0": "cat", "1": "dog", "2": "bird"}
    assert config.id2label == {0: "cat", 1: "dog", 2: "bird"}
    assert config.label2id == {"cat": 0, "dog": 1, "bird": 2}
    assert config.to_dict()["id2label"] == {"0": "cat", "1": "dog", "2": "bird"}


def test_set_num_labels_round_trips():
    config = tiny_config()
    config.num_labels = 5
    again = Swinv2Config.from_dict(config.to_dict())
    assert again.num_labels == 5
    assert again == config


@pytest.mark.parametrize("value", [-1, True, 2.0, "3"])
def test_setting_bad_num_labels(value):
    config = tiny_config()
    with pytest.raises(ValueError, match=re.escape(f"num_labels must be a non-negative int; got {value!r}")):
        config.num_labels = value
    assert config.num_labels == 2


def test_bad_id2label():
    with pytest.raises(ValueError, match=re.escape("id2label keys must be ints (or int strings); got ['a']")):
        tiny_config(id2label={"a": "cat"})
    config = tiny_config()
    with pytest.raises(ValueError, match=re.escape("id2label must be a mapping of class index to name; got ['cat']")):
        config.id2label = ["cat"]


def test_replace_num_labels_still_rebuilds():
    changed = tiny_config(id2label={0: "cat", 1: "dog"}).replace(num_labels=2)
    assert changed.id2label == {0: "LABEL_0", 1: "LABEL_1"}


def test_single_label_classification_needs_two_labels(transformers_module):
    with pytest.raises(ValueError, match="single_label_classification"):
        transformers_module.Swinv2Config(problem_type="single_label_classification", num_labels=1)
    with pytest.raises(
        ValueError, match=re.escape("problem_type 'single_label_classification' needs num_labels > 1; got num_labels=1")
    ):
        tiny_config(problem_type="single_label_classification", num_labels=1)


# ------------------------------------------------------------------------------------ JSON files


@pytest.mark.parametrize("use_diff", [True, False])
def test_to_json_string_and_file(tmp_path, use_diff):
    config = tiny_config(output_hidden_states=True, extra={"architectures": ["Swinv2Model"]})
    text = config.to_json_string(use_diff=use_diff)
    expected = config.to_diff_dict() if use_diff else config.to_dict()
    assert json.loads(text) == expected
    assert text == json.dumps(expected, indent=2, sort_keys=True) + "\n"
    path = config.to_json_file(tmp_path / "config.json", use_diff=use_diff)
    assert path.read_text(encoding="utf-8") == text
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # written atomically, no temp file left
    assert Swinv2Config.from_json_file(path) == config


def test_to_json_defaults_to_the_diff(tmp_path):
    config = tiny_config()
    assert config.to_json_string() == config.to_json_string(use_diff=True)
    config.to_json_file(tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text()) == config.to_diff_dict()
    assert repr(config) == f"Swinv2Config {config.to_json_string()}"


def test_to_json_file_uses_atomic_write(tmp_path, monkeypatch):
    import swinv2.config.common as module

    written: list[Any] = []
    monkeypatch.setattr(module, "atomic_write_text", lambda path, text: written.append((path, text)))
    tiny_config().to_json_file(tmp_path / "c.json")
    assert written == [(tmp_path / "c.json", tiny_config().to_json_string())]


def test_transformers_reads_our_diff_file(transformers_module, tmp_path):
    config = tiny_config(num_labels=4, output_hidden_states=True, dtype="bfloat16", out_features=["stage1"])
    config.to_json_file(tmp_path / "config.json")
    theirs = transformers_module.Swinv2Config.from_pretrained(tmp_path)
    assert theirs.num_labels == 4
    assert theirs.output_hidden_states is True
    assert _dtype_str(theirs.dtype) == "bfloat16"
    assert theirs.out_features == ["stage1"]
    assert (theirs.embed_dim, list(theirs.depths), theirs.window_size) == (16, [2, 2], 4)


def test_their_saved_flags_load_here(transformers_module, tmp_path):
    reference = transformers_module.Swinv2Config(
        return_dict=False, output_hidden_states=True, dtype="float16", problem_type="multi_label_classification"
    )
    reference.save_pretrained(tmp_path)
    config = Swinv2Config.from_pretrained(tmp_path)
    assert (config.return_dict, config.output_hidden_states, config.dtype) == (False, True, "float16")
    assert config.problem_type == "multi_label_classification"
    theirs = json.loads((tmp_path / "config.json").read_text())
    ours = config.to_diff_dict()
    assert set(theirs) - set(ours) <= {"transformers_version"} | set(config.extra)
    assert {k: ours[k] for k in theirs if k in ours} == {k: theirs[k] for k in theirs if k in ours}


def test_special_floats_as_transformers_writes_them(transformers_module, tmp_path):
    # no field of ours may be infinite, so an unmodelled key carries the special value
    theirs = json.loads(transformers_module.Swinv2Config(best_loss=float("inf")).to_json_string())
    ours = json.loads(tiny_config(extra={"best_loss": float("inf")}).to_json_string())
    assert ours["best_loss"] == theirs["best_loss"] == {"__float__": "Infinity"}
    tiny_config(extra={"best_loss": float("inf")}).to_json_file(tmp_path / "config.json")
    assert Swinv2Config.from_pretrained(tmp_path).extra["best_loss"] == float("inf")


def test_save_pretrained_still_writes_the_full_dict(tmp_path):
    config = tiny_config()
    path = config.save_pretrained(tmp_path)
    assert json.loads(path.read_text()) == config.to_dict()


# ------------------------------------------------------------------------------ from_pretrained


def test_from_pretrained_subfolder(tmp_path):
    config = tiny_config(num_labels=3)
    config.save_pretrained(tmp_path / "repo" / "image_encoder")
    assert Swinv2Config.from_pretrained(tmp_path / "repo", subfolder="image_encoder") == config
    assert (
        Swinv2Config.from_pretrained(str(tmp_path / "repo"), subfolder="image_encoder", window_size=2).window_size == 2
    )


def test_from_pretrained_subfolder_as_transformers(transformers_module, tmp_path):
    transformers_module.Swinv2Config(embed_dim=48, num_labels=7).save_pretrained(tmp_path / "sub")
    theirs = transformers_module.Swinv2Config.from_pretrained(tmp_path, subfolder="sub")
    ours = Swinv2Config.from_pretrained(tmp_path, subfolder="sub")
    assert (ours.embed_dim, ours.num_labels) == (theirs.embed_dim, theirs.num_labels) == (48, 7)


def test_from_pretrained_missing_subfolder(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    target = tmp_path / "absent" / "config.json"
    with pytest.raises(FileNotFoundError, match=re.escape(f"no config file at '{target}'")):
        Swinv2Config.from_pretrained(tmp_path, subfolder="absent")


def test_from_pretrained_overrides_label_count(tmp_path):
    tiny_config(id2label={0: "cat", 1: "dog"}).save_pretrained(tmp_path)
    config = Swinv2Config.from_pretrained(tmp_path, num_labels=5, output_hidden_states=True)
    assert config.num_labels == 5
    assert config.output_hidden_states is True


def test_from_pretrained_bad_value_raises(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "swinv2", "return_dict": "yes"}))
    with pytest.raises(ValueError, match=re.escape("return_dict must be True or False; got 'yes'")):
        Swinv2Config.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------------- unknown keys


def test_transformers_keys_are_benign(transformers_module):
    """Every key transformers writes for a default config is modelled, derived, or known to be benign."""
    theirs = set(transformers_module.Swinv2Config().to_dict())
    assert unknown_keys(theirs) == []
    # ... and the benign list is exactly what transformers writes that we do not.
    assert set(TRANSFORMERS_KEYS) == theirs - set(Swinv2Config().to_dict())


def test_generation_keys_transformers_drops_are_benign(transformers_module):
    from transformers import GenerationConfig

    assert set(GenerationConfig._get_default_generation_params()) <= set(LEGACY_TRANSFORMERS_KEYS)


def test_transformers_full_dict_loads_without_warning(transformers_module, caplog):
    data = transformers_module.Swinv2Config(num_labels=3, architectures=["Swinv2Model"]).to_dict()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        config = Swinv2Config.from_dict(data)
    assert _unknown_warnings(caplog) == []
    assert config.num_labels == 3
    assert config.extra["architectures"] == ["Swinv2Model"]
    assert config.extra["transformers_version"] == transformers_module.__version__


def test_transformers_saved_file_loads_without_warning(transformers_module, tmp_path, caplog):
    transformers_module.Swinv2Config(image_size=64, window_size=4).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        Swinv2Config.from_pretrained(tmp_path)
    assert _unknown_warnings(caplog) == []


def test_legacy_transformers_keys_do_not_warn(tmp_path, caplog):
    data = {"model_type": "swinv2", "torch_dtype": "float32", "path_norm": True, "use_bfloat16": False}
    data |= {"_name_or_path": "x", "transformers_version": "4.30.0", "pruned_heads": {}, "max_length": 20}
    (tmp_path / "config.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        config = Swinv2Config.from_pretrained(tmp_path)
    assert _unknown_warnings(caplog) == []
    assert config.extra["path_norm"] is True
    assert config.dtype == "float32"


def test_unknown_keys_warn_once_with_suggestions(tmp_path, caplog):
    data = {**tiny_config().to_dict(), "windw_size": 8, "output_hiden_states": True, "brand_new_option": [1, 2]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        config = Swinv2Config.from_pretrained(tmp_path)
    records = _unknown_warnings(caplog)
    assert len(records) == 1
    message = records[0].getMessage()
    assert f"'{path}'" in message
    assert "'windw_size' (did you mean 'window_size'?)" in message
    assert "'output_hiden_states' (did you mean 'output_hidden_states'?)" in message
    assert "'brand_new_option'" in message
    assert "'brand_new_option' (did you mean" not in message
    assert "kept in `extra`" in message
    # kept and written back, never applied
    assert config.window_size == 4
    assert config.extra == {"windw_size": 8, "output_hiden_states": True, "brand_new_option": [1, 2]}
    out = tmp_path / "out"
    config.save_pretrained(out)
    assert json.loads((out / "config.json").read_text())["brand_new_option"] == [1, 2]
    assert config.to_diff_dict()["windw_size"] == 8


def test_unknown_keys_warn_from_dict_and_json_file(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        Swinv2Config.from_dict({"embed_dimm": 48})
    assert len(_unknown_warnings(caplog)) == 1
    assert "'embed_dimm' (did you mean 'embed_dim'?)" in caplog.records[-1].getMessage()
    caplog.clear()
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model_type": "swinv2", "zzz": 1}))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert Swinv2Config.from_json_file(path).extra == {"zzz": 1}
    assert len(_unknown_warnings(caplog)) == 1


def test_one_warning_for_file_and_overrides(tmp_path, caplog):
    data = {**tiny_config().to_dict(), "zzz": 1}
    (tmp_path / "config.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        config = Swinv2Config.from_pretrained(tmp_path, num_labl=3)
    records = _unknown_warnings(caplog)
    assert len(records) == 1
    assert "'zzz'" in records[0].getMessage()
    assert "'num_labl' (did you mean 'num_labels'?)" in records[0].getMessage()
    assert config.extra == {"zzz": 1, "num_labl": 3}


def test_replace_and_round_trips_do_not_warn_again(caplog):
    config = tiny_config(extra={"zzz": 1})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        changed = config.replace(window_size=2)
        Swinv2Config(**{"extra": {"zzz": 1}})
    assert _unknown_warnings(caplog) == []
    assert changed.extra == {"zzz": 1}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        config.replace(windowsize=2)
    assert "'windowsize' (did you mean 'window_size'?)" in _unknown_warnings(caplog)[0].getMessage()


def test_unknown_key_with_bad_known_value_still_raises(tmp_path, caplog):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "swinv2", "embed_dim": 97, "zzz": 1}))
    with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(ValueError, match=re.escape("(97)")):
        Swinv2Config.from_pretrained(tmp_path)
    assert len(_unknown_warnings(caplog)) == 1


def test_warning_goes_to_logging_not_stdout(tmp_path, capsys, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        Swinv2Config.from_dict({"zzz": 1})
    captured = capsys.readouterr()
    assert captured.out == ""
    assert _unknown_warnings(caplog)[0].name == "swinv2.config"
