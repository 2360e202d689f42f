"""`Swinv2Config.extra_norm_period`: validated, written to config.json only when set, read back unchanged."""

from __future__ import annotations

import json

import pytest

from swinv2 import Swinv2Config
from swinv2.config.common import MAX_DEPTH
from swinv2.io.errors import ConfigError


def test_default_is_zero_and_not_written():
    config = Swinv2Config()
    assert config.extra_norm_period == 0
    assert "extra_norm_period" not in config.to_dict()
    assert "extra_norm_period" not in json.loads(config.to_json_string(use_diff=False))


@pytest.mark.parametrize("period", [1, 6, MAX_DEPTH])
def test_a_period_round_trips_through_config_json(tmp_path, period):
    config = Swinv2Config(extra_norm_period=period)
    assert config.to_dict()["extra_norm_period"] == period
    assert config.to_diff_dict()["extra_norm_period"] == period
    path = config.save_pretrained(tmp_path)
    assert json.loads(path.read_text())["extra_norm_period"] == period
    loaded = Swinv2Config.from_pretrained(tmp_path)
    assert loaded.extra_norm_period == period
    assert loaded == config
    assert "extra_norm_period" not in loaded.extra
    assert Swinv2Config.from_dict(config.to_dict()) == config
    assert config.replace(extra_norm_period=0).to_dict().get("extra_norm_period") is None


def test_a_config_json_without_the_field_reads_as_zero(tmp_path):
    data = Swinv2Config(extra_norm_period=6).to_dict()
    del data["extra_norm_period"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    assert Swinv2Config.from_pretrained(tmp_path).extra_norm_period == 0
    assert Swinv2Config.from_pretrained(tmp_path, extra_norm_period=6).extra_norm_period == 6


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "extra_norm_period must be a non-negative int; got -1"),
        (1.5, "extra_norm_period must be a non-negative int; got 1.5"),
        (True, "extra_norm_period must be a non-negative int; got True"),
        ("6", "extra_norm_period must be a non-negative int; got '6'"),
        (None, "extra_norm_period must be a non-negative int; got None"),
        (MAX_DEPTH + 1, f"extra_norm_period must be at most {MAX_DEPTH}; got {MAX_DEPTH + 1}"),
    ],
)
def test_bad_values_are_refused_quoting_them(value, message):
    with pytest.raises(ValueError) as info:
        Swinv2Config(extra_norm_period=value)
    assert isinstance(info.value, ConfigError)
    assert message in str(info.value)


def test_a_bad_value_in_a_file_names_the_file(tmp_path):
    data = Swinv2Config().to_dict() | {"extra_norm_period": -6}
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        Swinv2Config.from_pretrained(tmp_path)
    assert str(info.value) == (
        f"invalid config '{tmp_path / 'config.json'}': extra_norm_period must be a non-negative int; got -6"
    )
