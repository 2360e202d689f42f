"""The I/O tier's rules for hostile input: quoting values, bounded JSON, the memory limit, wrapper prefixes."""

from __future__ import annotations

import json
import math
import resource

import pytest
import torch

from swinv2.io import jsonfile
from swinv2.io.checkpoints import strip_wrapper_prefixes
from swinv2.io.errors import ConfigError, InputError, LimitError, quote
from swinv2.io.jsonfile import json_safe, read_json_object
from swinv2.io.limits import ENV_VAR, check_memory, memory_limit, parse_bytes, set_memory_limit


# ------------------------------------------------------------------------------------------ quote
def test_quote_keeps_short_values_and_shortens_long_ones() -> None:
    assert quote("gelu") == "'gelu'"
    long = quote("x" * 10_000)
    assert len(long) < 120 and long.endswith("(10002 characters)")


def test_quote_describes_ints_python_refuses_to_print() -> None:
    assert quote(10**5000) == "<an int of about 5001 digits>"


def test_quote_survives_a_failing_repr() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert quote(Hostile()) == "<Hostile>"


# ------------------------------------------------------------------------------------------- JSON
@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested 100000 levels deep; at most 32"),
        (b'{"a": ' + b"9" * 5000 + b"}", "an integer of 5000 digits"),
        (b"\xff\xfe{}", "not UTF-8 text (byte 0)"),
        (b"[1, 2]", "expected a JSON object, got a JSON array"),
        (b'"text"', "expected a JSON object, got a JSON string"),
        (b"{'single': 1}", "not valid JSON"),
        (b"", "not valid JSON"),
    ],
)
def test_hostile_json_is_one_error_naming_the_file(tmp_path, content: bytes, phrase: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        read_json_object(path, "config file")
    message = str(caught.value)
    assert message.startswith(f"cannot read config file '{path}'") and phrase in message and "\n" not in message


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"label": "[" * 1000, "escaped": '\\"[[[[', "n": [[1]]}))
    assert read_json_object(path)["n"] == [[1]]


def test_json_larger_than_the_limit_is_refused_before_reading(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonfile, "MAX_JSON_BYTES", 100)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"k": "v" * 200}))
    with pytest.raises(ConfigError, match="bytes is more than the 100 accepted"):
        read_json_object(path)


def test_missing_json_is_file_not_found_naming_it(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no shard index at '.*absent\.json'"):
        read_json_object(tmp_path / "absent.json", "shard index")


def test_json_safe_replaces_non_finite_numbers_and_says_where() -> None:
    safe, replaced = json_safe({"scores": [0.5, math.nan], "top": {"loss": -math.inf}, "n": 3})
    assert safe == {"scores": [0.5, None], "top": {"loss": None}, "n": 3}
    assert replaced == [".scores[1]", ".top.loss"]
    json.dumps(safe, allow_nan=False)


# ------------------------------------------------------------------------------------------ limit
def test_parse_bytes_reads_units_and_refuses_the_rest() -> None:
    assert parse_bytes("2GB", "x") == 2 * 10**9 and parse_bytes(" 1.5kb ", "x") == 1500 and parse_bytes(7, "x") == 7
    for bad in (0, -1, True, "1e999GB", "GB", "5 parsecs", "nanGB"):
        with pytest.raises(InputError, match=r"^x must be"):
            parse_bytes(bad, "x")  # type: ignore[arg-type]


def test_the_default_limit_is_no_more_than_the_address_space_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    default = memory_limit()
    assert default is not None and default > 0
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        assert default <= soft


def test_environment_variable_sets_the_limit_and_a_bad_one_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "3GB")
    assert memory_limit() == 3 * 10**9
    monkeypatch.setenv(ENV_VAR, "none")
    assert memory_limit() is None
    check_memory(10**18, "anything")  # no limit, no error
    monkeypatch.setenv(ENV_VAR, "lots")
    with pytest.raises(LimitError, match=f"environment variable {ENV_VAR} must be bytes"):
        memory_limit()


def test_check_memory_names_the_work_and_the_way_to_raise_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "1GB")
    with pytest.raises(LimitError) as caught:
        check_memory(5 * 10**9, "decoding image 'x.png'")
    message = str(caught.value)
    assert message.startswith("decoding image 'x.png' needs about 5 GB of memory, more than the limit of 1 GB")
    assert f'{ENV_VAR}="6GB"' in message and "swinv2.set_memory_limit" in message
    set_memory_limit("10GB")
    try:
        check_memory(5 * 10**9, "the same work")
    finally:
        set_memory_limit(None)


# ----------------------------------------------------------------------------- wrapper prefixes
def test_wrapper_prefixes_are_removed_only_when_every_key_has_them() -> None:
    tensor = torch.zeros(1)
    assert list(strip_wrapper_prefixes({"module._orig_mod.a.w": tensor, "module._orig_mod.b": tensor}, "f")) == [
        "a.w",
        "b",
    ]
    mixed = {"module.a": tensor, "b": tensor}
    assert strip_wrapper_prefixes(mixed, "f") == mixed
    assert strip_wrapper_prefixes({}, "f") == {}
