"""Hostile configs: wrong types and sizes in `Swinv2Config`, config.json and preprocessor_config.json.

Each test protects against one way a config (built in Python or read from a file someone else wrote)
could crash the library with an unrelated exception (TypeError, RecursionError, OverflowError, the
4300-digit int limit), build a wrong model silently, or allocate tens of gigabytes before any check.
Every refusal must be a `ConfigError` / `LimitError` whose message names the field (and the file, when
it came from one), the offending value and what would be accepted.
"""

from __future__ import annotations

import json
import re
import resource
from pathlib import Path
from typing import Any

import pytest

import swinv2.io.jsonfile as jsonfile
import swinv2.io.limits as limits
from swinv2 import Swinv2Config, Swinv2ForImageClassification, Swinv2Model
from swinv2.io.errors import ConfigError, InputError, LimitError
from swinv2.io.jsonfile import read_json_object
from swinv2.preprocess import PREPROCESSOR_NAME, Swinv2ImageProcessor

TINY: dict[str, Any] = dict(
    image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, num_labels=3
)


def _config(**changes: Any) -> Swinv2Config:
    return Swinv2Config(**{**TINY, **changes})


def _write_config(directory: Path, text: str | bytes) -> Path:
    path = directory / "config.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _json_with(raw_field: str) -> str:
    """The tiny config's JSON with one more key written verbatim (`"name": literal`)."""
    return json.dumps(TINY)[:-1] + ", " + raw_field + "}"


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


@pytest.fixture
def memory_limit_2gb(monkeypatch: pytest.MonkeyPatch) -> None:
    """`SWINV2_MEMORY_LIMIT=2GB`, with no Python-side override left by another test."""
    monkeypatch.setattr(limits, "_override", None)
    monkeypatch.setattr(limits, "_unlimited", False)
    monkeypatch.setenv(limits.ENV_VAR, "2GB")


# ------------------------------------------------------------------------- label maps of the wrong type
@pytest.mark.parametrize("value", [["cat", "dog", "emu"], "cat,dog,emu", 3, 2.5], ids=["list", "str", "int", "float"])
def test_id2label_that_is_not_a_mapping_is_refused(value: Any) -> None:
    """A list, string or number as `id2label` must not be iterated as if it were a dict."""
    with pytest.raises(ConfigError) as info:
        _config(id2label=value)
    message = str(info.value)
    assert "id2label must be a mapping of class index to name" in message
    assert repr(value) in message


@pytest.mark.parametrize("value", [["cat", "dog", "emu"], "cat", 3], ids=["list", "str", "int"])
def test_label2id_that_is_not_a_mapping_is_refused(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        _config(label2id=value)
    message = str(info.value)
    assert "label2id must map class names to class indices (str to int)" in message
    assert repr(value) in message


@pytest.mark.parametrize(
    ("key", "value", "phrase"),
    [
        (
            "id2label",
            ["cat", "dog", "emu"],
            "id2label must be a mapping of class index to name; got ['cat', 'dog', 'emu']",
        ),
        ("id2label", "cat", "id2label must be a mapping of class index to name; got 'cat'"),
        ("id2label", {"zero": "cat"}, "id2label keys must be ints (or int strings); got ['zero']"),
        ("id2label", {"0": 7}, "id2label names must be strings; got 7 for class 0"),
        ("label2id", 3, "label2id must map class names to class indices (str to int); got 3"),
        ("label2id", {"cat": "zero"}, "label2id must map class names to class indices"),
    ],
)
def test_label_maps_of_the_wrong_type_in_config_json_name_the_file(
    tmp_path: Path, key: str, value: Any, phrase: str
) -> None:
    path = _write_config(tmp_path, json.dumps({**TINY, key: value}))
    with pytest.raises(ConfigError) as info:
        Swinv2Config.from_pretrained(tmp_path)
    message = str(info.value)
    assert f"'{path}'" in message
    assert phrase in message


# ------------------------------------------------------------------------------ numbers out of range
def test_mlp_ratio_1e999_in_config_json_is_refused(tmp_path: Path) -> None:
    """`1e999` parses to inf; a model with an infinite MLP width must never be sized or built."""
    path = _write_config(tmp_path, _json_with('"mlp_ratio": 1e999'))
    with pytest.raises(ConfigError) as info:
        Swinv2Config.from_pretrained(tmp_path)
    message = str(info.value)
    assert f"'{path}'" in message
    assert "mlp_ratio" in message
    assert "inf" in message or "1e999" in message


def test_json_reader_refuses_an_overflowing_float(tmp_path: Path) -> None:
    """`read_json_object`'s docstring promises it refuses a number that cannot be a real value,
    naming `1e999` (which Python's parser turns into inf) as one."""
    path = tmp_path / "numbers.json"
    path.write_text('{"x": 1e999}', encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"cannot read test file '{path}'")):
        read_json_object(path, "test file")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", '{"__float__": "Infinity"}'])
def test_non_finite_mlp_ratio_spellings_are_refused(tmp_path: Path, literal: str) -> None:
    path = _write_config(tmp_path, _json_with(f'"mlp_ratio": {literal}'))
    with pytest.raises(
        ConfigError, match=re.escape(f"invalid config '{path}': mlp_ratio must be a finite number; got")
    ):
        Swinv2Config.from_pretrained(tmp_path)


def test_five_thousand_digit_integer_in_config_json(tmp_path: Path) -> None:
    """Python refuses to convert ints of more than 4300 digits to text (a ValueError that would escape
    with an unrelated message); the reader refuses the literal itself, naming the file."""
    path = _write_config(tmp_path, _json_with('"embed_dim": ' + "9" * 5000))
    with pytest.raises(ConfigError) as info:
        Swinv2Config.from_pretrained(tmp_path)
    message = str(info.value)
    assert message.startswith(f"cannot read config file '{path}'")
    assert "an integer of 5000 digits" in message
    assert "9" * 100 not in message


def test_huge_int_given_in_python_is_described_not_printed() -> None:
    with pytest.raises(ConfigError) as info:
        _config(embed_dim=10**5000)
    message = str(info.value)
    assert f"embed_dim must be at most {2**24}" in message
    assert "<an int of about 5001 digits>" in message


def test_patch_size_as_a_float_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        _config(patch_size=1e9)
    assert "patch_size must be an int or a (height, width) pair of ints; got 1000000000.0" in str(info.value)


def test_patch_size_beyond_the_largest_size_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        _config(patch_size=10**9)
    assert f"patch_size must be at most {2**24}; got 1000000000" in str(info.value)


def test_patch_size_larger_than_the_image_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        _config(patch_size=10**6)
    assert "patch_size 1000000 must not exceed image_size 32" in str(info.value)


def test_patch_size_1e9_in_config_json_names_the_file(tmp_path: Path) -> None:
    path = _write_config(tmp_path, json.dumps({**TINY, "patch_size": 1e9}))
    with pytest.raises(ConfigError) as info:
        Swinv2Config.from_pretrained(tmp_path)
    assert str(info.value).startswith(f"invalid config '{path}': patch_size must be an int")


# ------------------------------------------------------------------- sizes that would need tens of GB
@pytest.mark.parametrize(
    ("changes", "cls"),
    [
        (dict(embed_dim=2**20), Swinv2ForImageClassification),
        (dict(embed_dim=2**14, mlp_ratio=1000.0), Swinv2Model),
        (dict(num_channels=2**24), Swinv2ForImageClassification),
    ],
    ids=["embed_dim", "embed_dim-and-mlp_ratio", "num_channels"],
)
def test_huge_model_is_refused_before_allocating(memory_limit_2gb: None, changes: dict[str, Any], cls: type) -> None:
    """A valid config whose model needs tens of GB: LimitError from the size arithmetic, no allocation."""
    config = _config(**changes)
    before = _peak_rss_bytes()
    with pytest.raises(LimitError) as info:
        cls(config)
    assert _peak_rss_bytes() - before < 300 * 2**20, "the model was (partly) allocated before the check"
    message = str(info.value)
    assert f"building {cls.__name__} (" in message
    assert "more than the limit of 2 GB" in message
    assert "SWINV2_MEMORY_LIMIT" in message


def test_huge_config_json_is_refused_by_from_pretrained_before_allocating(
    memory_limit_2gb: None, tmp_path: Path
) -> None:
    _write_config(tmp_path, json.dumps({**TINY, "embed_dim": 2**20}))
    before = _peak_rss_bytes()
    with pytest.raises(LimitError, match=r"building Swinv2ForImageClassification \(.* parameters\) needs about"):
        Swinv2ForImageClassification.from_pretrained(tmp_path)
    assert _peak_rss_bytes() - before < 300 * 2**20


# --------------------------------------------------------------------------- wrong-typed fields from a file
@pytest.mark.parametrize(
    ("key", "value", "phrase"),
    [
        ("embed_dim", "16", "embed_dim must be a positive int; got '16'"),
        ("window_size", {"a": 1}, "window_size must be a positive int; got {'a': 1}"),
        ("depths", None, "depths must be a list of positive ints; got None"),
        ("num_heads", "12", "num_heads must be a list of positive ints; got '12'"),
        ("hidden_act", ["gelu"], "hidden_act ['gelu'] is not supported; choose one of ['gelu'"),
        ("layer_norm_eps", "1e-5", "layer_norm_eps must be positive; got '1e-5'"),
        ("encoder_stride", 1.5, "encoder_stride must be a positive int; got 1.5"),
        ("num_labels", "3", "num_labels must be a non-negative int; got '3'"),
        ("out_features", "stage1", "out_features must be a list of stage names"),
        ("pretrained_window_sizes", None, "pretrained_window_sizes must be a list of non-negative ints; got None"),
        ("problem_type", 5, "problem_type 5 is not one of ['regression'"),
        ("dtype", ["float32"], "dtype ['float32'] is not a parameter dtype name"),
        ("return_dict", "yes", "return_dict must be True or False; got 'yes'"),
    ],
)
def test_wrong_typed_field_in_config_json_names_file_field_and_value(
    tmp_path: Path, key: str, value: Any, phrase: str
) -> None:
    path = _write_config(tmp_path, json.dumps({**TINY, key: value}))
    with pytest.raises(ConfigError) as info:
        Swinv2Config.from_pretrained(tmp_path)
    message = str(info.value)
    assert message.startswith(f"invalid config '{path}': "), message
    assert phrase in message
    with pytest.raises(ConfigError, match=re.escape(f"'{path}'")):
        Swinv2Config.from_json_file(path)


@pytest.mark.parametrize(
    ("key", "value"),
    [("qkv_bias", "no"), ("use_absolute_embeddings", "false"), ("use_absolute_embeddings", None)],
)
def test_boolean_model_fields_refuse_strings_and_null(tmp_path: Path, key: str, value: Any) -> None:
    """`"no"` and `"false"` are truthy: without a type check they silently build a model with q/v
    biases or an absolute position table the file did not ask for."""
    path = _write_config(tmp_path, json.dumps({**TINY, key: value}))
    with pytest.raises(ConfigError) as info:
        Swinv2Config.from_pretrained(tmp_path)
    message = str(info.value)
    assert f"'{path}'" in message
    assert f"{key} must be True or False; got {value!r}" in message


# ------------------------------------------------------------------------------------ hostile JSON
def test_deeply_nested_config_json_is_refused_without_recursion_error(tmp_path: Path) -> None:
    path = _write_config(tmp_path, '{"extra_key": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ConfigError) as info:
        Swinv2Config.from_pretrained(tmp_path)
    assert str(info.value) == f"cannot read config file '{path}': nested 100001 levels deep; at most 32 accepted"


def test_deeply_nested_preprocessor_config_is_refused_without_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / PREPROCESSOR_NAME
    path.write_text('{"size": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        Swinv2ImageProcessor.from_pretrained(tmp_path)
    message = str(info.value)
    assert message.startswith(f"cannot read {PREPROCESSOR_NAME} '{path}': nested ")
    assert "at most 32 accepted" in message


@pytest.mark.parametrize(("text", "kind"), [("[1, 2, 3]", "array"), ('"size"', "string"), ("7", "number")])
def test_preprocessor_config_that_is_not_an_object(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / PREPROCESSOR_NAME
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        Swinv2ImageProcessor.from_pretrained(tmp_path)
    assert str(info.value) == (f"cannot read {PREPROCESSOR_NAME} '{path}': expected a JSON object, got a JSON {kind}")


@pytest.mark.parametrize(
    ("fields", "phrase"),
    [
        ({"size": {"height": "256", "width": 256}}, "size must be {'height': H, 'width': W} with ints from 1 to"),
        ({"image_mean": "0.5"}, "image_mean must be 3 finite numbers; got '0.5'"),
        ({"resample": None}, "resample must be one of [0, 2, 3] (PIL codes); got None"),
        ({"do_resize": "false"}, "do_resize must be true or false; got 'false'"),
    ],
)
def test_wrong_typed_preprocessor_field_names_the_file(tmp_path: Path, fields: dict[str, Any], phrase: str) -> None:
    path = tmp_path / PREPROCESSOR_NAME
    path.write_text(json.dumps(fields), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        Swinv2ImageProcessor.from_pretrained(tmp_path)
    message = str(info.value)
    assert message.startswith(f"invalid '{path}': ")
    assert phrase in message


def test_config_json_that_is_an_array(tmp_path: Path) -> None:
    path = _write_config(tmp_path, json.dumps([TINY]))
    with pytest.raises(ConfigError) as info:
        Swinv2Config.from_pretrained(tmp_path)
    assert str(info.value) == f"cannot read config file '{path}': expected a JSON object, got a JSON array"


def test_non_utf8_config_json(tmp_path: Path) -> None:
    path = _write_config(tmp_path, b'{"hidden_act": "gel\xff\xfe"}')
    with pytest.raises(ConfigError) as info:
        Swinv2Config.from_pretrained(tmp_path)
    assert str(info.value) == f"cannot read config file '{path}': not UTF-8 text (byte 19)"


def test_config_json_larger_than_the_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonfile, "MAX_JSON_BYTES", 256)
    path = _write_config(tmp_path, json.dumps(TINY) + " " * 300)
    size = path.stat().st_size
    with pytest.raises(ConfigError) as info:
        Swinv2Config.from_pretrained(tmp_path)
    assert str(info.value) == f"cannot read config file '{path}': {size} bytes is more than the 256 accepted"


def test_config_errors_are_input_errors_and_value_errors(tmp_path: Path) -> None:
    """Callers catch `InputError` or `ValueError` once for every bad config."""
    _write_config(tmp_path, "[]")
    with pytest.raises(InputError):
        Swinv2Config.from_pretrained(tmp_path)
    with pytest.raises(ValueError):
        _config(embed_dim="16")


@pytest.mark.parametrize("architectures", ["Swinv2ForImageClassification", {"0": "x"}, 7, [3]])
def test_architectures_of_the_wrong_type_are_named(tmp_path: Path, architectures: object) -> None:
    """`architectures` picks the model class; anything but a list of names is refused by name, not indexed."""
    from swinv2.io.checkpoints import CheckpointError
    from swinv2.loading import model_class_for

    config = Swinv2Config(image_size=32, patch_size=4, embed_dim=16, depths=(1,), num_heads=(1,), window_size=4)
    config.extra["architectures"] = architectures
    with pytest.raises(CheckpointError, match=re.escape(f"'{tmp_path}': config.json's \"architectures\" must be")):
        model_class_for(config, tmp_path)
