"""Reading JSON files that may be hostile: size, depth, encoding and top-level type checked, every
failure one `ConfigError` naming the file."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from swinv2.io.errors import ConfigError

#: Largest JSON file read (a config is a few KB; a shard index of a 3-billion-parameter model ~100 KB).
MAX_JSON_BYTES = 32 * 2**20
#: Deepest nesting accepted (configs nest three levels; Python's parser recurses until it crashes).
MAX_JSON_DEPTH = 32
#: Longest number literal accepted (a float needs 17 digits; ints beyond this only ever come from damage).
MAX_NUMBER_DIGITS = 40

_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _nesting_depth(text: str) -> int:
    """How deep `[`/`{` nest in JSON `text` (brackets inside strings do not count)."""
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def _parse_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise ValueError(f"an integer of {len(literal)} digits")
    return int(literal)


def _parse_float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_DIGITS + 10:
        raise ValueError(f"a number of {len(literal)} characters")
    value = float(literal)
    if not math.isfinite(value):  # 1e999: no float holds it (NaN and Infinity literals are read as such)
        raise ValueError(f"the number {literal} is too large for a float")
    return value


def read_json_object(path: str | os.PathLike[str], what: str = "JSON file") -> dict[str, Any]:
    """The JSON object in `path` (a dict), read within the size, depth and number limits above.

    Args:
        path: The file.
        what: What the file is, for messages ("config", "shard index").

    Raises:
        FileNotFoundError: no file at `path` (the message names it).
        ConfigError: anything else wrong: too large, not UTF-8, not JSON, nested too deep, a number
            that cannot be a real value (overflowing floats count: `1e999`), or not a JSON object.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError
        if not path.exists():
            raise FileNotFoundError
        if not path.is_file():
            raise ConfigError(f"cannot read {what} '{path}': not a regular file (a device, a pipe or a socket)")
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ConfigError(f"cannot read {what} '{path}': {size} bytes is more than the {MAX_JSON_BYTES} accepted")
        with path.open("rb") as handle:  # at most the limit, should the file grow meanwhile
            raw = handle.read(MAX_JSON_BYTES + 1)
        if len(raw) > MAX_JSON_BYTES:
            raise ConfigError(f"cannot read {what} '{path}': more than the {MAX_JSON_BYTES} bytes accepted")
    except FileNotFoundError:
        raise FileNotFoundError(f"no {what} at '{path}'") from None
    except IsADirectoryError:
        raise ConfigError(f"cannot read {what} '{path}': it is a directory") from None
    except OSError as err:
        raise ConfigError(f"cannot read {what} '{path}': {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"cannot read {what} '{path}': not UTF-8 text (byte {err.start})") from None
    depth = _nesting_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ConfigError(f"cannot read {what} '{path}': nested {depth} levels deep; at most {MAX_JSON_DEPTH} accepted")
    try:
        data = json.loads(text, parse_int=_parse_int, parse_float=_parse_float)
    except json.JSONDecodeError as err:
        raise ConfigError(f"cannot read {what} '{path}': not valid JSON ({err.msg} at line {err.lineno})") from None
    except (ValueError, RecursionError) as err:
        raise ConfigError(f"cannot read {what} '{path}': not usable JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"cannot read {what} '{path}': expected a JSON object, got a JSON {_json_kind(data)}")
    return data


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool) or value is None:
        return "literal"
    return "number" if isinstance(value, (int, float)) and not math.isnan(value) else "value"


def json_safe(value: Any) -> tuple[Any, list[str]]:
    """`value` with every non-finite float replaced by None, and the paths where that happened.

    Strict JSON has no NaN or Infinity; output meant for other programs (`--json`) uses this so a
    reader never fails, and reports the paths as a warning field.
    """
    replaced: list[str] = []

    def walk(item: Any, where: str) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            replaced.append(where or "$")
            return None
        if isinstance(item, dict):
            return {k: walk(v, f"{where}.{k}") for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(item)]
        return item

    return walk(value, ""), replaced
