"""Seeded mutators for the fuzzer: hostile JSON values, JSON edits, generic byte edits, safetensors header
edits and image header edits.

Everything here is plain Python on bytes and parsed JSON (no torch), driven by a `random.Random`, so a
case is reproduced from its seed alone. Each mutator returns the new content and a short description of
what it did; the description goes into the report so an engineer can redo the mutation by hand.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from typing import Any

# ------------------------------------------------------------------------------------------- hostile values

#: Raw JSON text that `json.dumps` cannot produce (non-standard literals, numbers Python cannot hold as
#: floats, ints beyond Python's 4300-digit str limit). Inserted textually through a placeholder.
RAW_LITERALS = {
    "1e999": "1e999",
    "-1e999": "-1e999",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "int5000": "9" * 5000,
    "int60": "1" + "0" * 60,
    "float-long": "0." + "1" * 400,
    "tiny-float": "1e-400",
}

#: Values a JSON field can hold, of every type, chosen to hit bounds and type checks.
HOSTILE_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    3,
    2**31,
    2**63,
    10**9,
    10**6,
    10**12,
    0.0,
    -0.0,
    0.5,
    1e9,
    1e-9,
    1e300,
    "",
    "a",
    "swinv2",
    "1",
    "x" * 5000,
    "\u0000",
    "\udcff",
    [],
    [0],
    [1, 2],
    [1, 2, 3, 4, 5, 6, 7, 8],
    [None],
    ["a", "b"],
    [[1, 2]],
    [10**9, 10**9],
    {},
    {"a": 1},
    {"0": "a", "x": "b"},
    {"0": ["nested"]},
    {"0": {"deep": 1}},
    {"-1": "neg"},
    {"1e999": "k"},
]

#: Values aimed at one field (the issue's findings and their neighbours): memory bombs, wrong shapes.
FIELD_VALUES: dict[str, list[Any]] = {
    "id2label": [[], ["a", "b", "c"], "cat", 3, {"a": "b"}, {"0": 1}, {"0": None}, {"0": ["x"]}, {"99999999999": "x"}],
    "label2id": [[], ["a"], "cat", 3, {"a": "b"}, {"a": None}, {"a": [1]}, {"a": 1.5}, {"a": 10**30}],
    "mlp_ratio": [1e6, 1e9, 0.0, -1.0, 1e-30, 10**5, "4"],
    "patch_size": [10**9, 1e9, 0, -4, [4, 4, 4], [0, 4], [10**9, 1], "4", 3],
    "embed_dim": [10**6, 10**5, 65536, 0, -16, 1.5, 10**12, "16"],
    "num_channels": [10**5, 10**7, 0, -3, 2**31],
    "image_size": [10**9, 10**5, 0, -32, [32], [32, 32, 32], [10**6, 10**6], 7, 1e9],
    "window_size": [10**6, 0, -1, 3, 10**9, [4, 4]],
    "depths": [[10**6, 1], [0, 0], [], [1] * 64, [-1, 1], [1.5, 1], "11", [10**9]],
    "num_heads": [[10**6, 2], [0, 1], [3, 5], [], [1, 2, 4, 8], [-1, -1]],
    "pretrained_window_sizes": [[10**9, 0], [-1, -1], [0], "x", [0, 0, 0, 0, 0, 0]],
    "hidden_act": ["nope", "", 1, None, ["gelu"]],
    "architectures": [[], ["Foo"], "Swinv2ForImageClassification", [1], [["x"]], {"a": 1}, [None], 3],
    "model_type": ["swin", "", None, 1, ["swinv2"]],
    "encoder_stride": [0, 10**9, -32, 3],
    "out_features": [["stage9"], "stage1", [1], [None], ["stage2", "stage1"]],
    "out_indices": [[99], [-99], "1", [1.5], [0, 0]],
    "drop_path_rate": [1e999, -1.0, 2.0, "0.1"],
    "layer_norm_eps": [0.0, -1.0, 1e300, "1e-5"],
    "initializer_range": [-1.0, 1e300],
    "num_labels": [-1, 10**9, 10**6, 0, 1.5, "3"],
    "dtype": ["int8", "float128", "torch.float32", 1],
    "torch_dtype": ["int8", "complex64"],
    # preprocessor_config.json
    "size": [
        {"height": 10**6, "width": 10**6},
        {"height": 0, "width": 1},
        {"shortest_edge": 224},
        224,
        [224, 224],
        {"height": 1, "width": 16777216},
        {"height": "32", "width": 32},
        {"height": 1e999, "width": 1},
    ],
    "resample": [1, 4, 99, -1, "bicubic", None, 2.0],
    "image_mean": [[], [0.5], [0.5, 0.5, 0.5, 0.5], ["a", "b", "c"], [None, None, None], 0.5],
    "image_std": [[0, 0, 0], [-1, 1, 1], [1e-300, 1, 1], [], "1", [1e999, 1, 1]],
    "rescale_factor": [0, -1, "1/255", None, 1e300],
    "do_resize": [0, "yes", None, [True]],
    "do_normalize": ["no", 2],
    "do_rescale": [None, "false"],
    "do_convert_rgb": ["x", 5],
    # shard index
    "weight_map": [[], "model-00001-of-00002.safetensors", 3, {"a": 1}, {"a": None}, {"a": ["x"]}, {}],
    "metadata": [[], "x", {"total_size": -1}, {"total_size": 10**30}],
}


def placeholder(name: str) -> str:
    """A string standing for RAW_LITERALS[name] until `render` swaps in the raw text."""
    return f"@@RAW:{name}@@"


def render(data: Any, indent: int | None = 2) -> str:
    """JSON text of `data` with placeholders replaced by their raw literals."""
    text = json.dumps(data, indent=indent, allow_nan=True, ensure_ascii=False)
    for name, raw in RAW_LITERALS.items():
        text = text.replace(json.dumps(placeholder(name)), raw)
    return text


def describe_value(value: Any) -> str:
    """A short repr for reports."""
    if isinstance(value, str) and value.startswith("@@RAW:"):
        return value[6:-2]
    text = repr(value)
    return text if len(text) <= 60 else text[:40] + f"...({len(text)} chars)"


def hostile_value(rng: random.Random, key: str | None = None) -> Any:
    """A value for `key`: its aimed values half the time when it has some, else any hostile value."""
    roll = rng.random()
    if key in FIELD_VALUES and roll < 0.55:
        return rng.choice(FIELD_VALUES[key])
    if roll < 0.75:
        return placeholder(rng.choice(list(RAW_LITERALS)))
    return rng.choice(HOSTILE_VALUES)


def nested(depth: int, leaf: Any = 1) -> str:
    """JSON text of `depth` nested arrays or objects around `leaf` (raw text, too deep for json.dumps)."""
    return "[" * depth + json.dumps(leaf) + "]" * depth


# ----------------------------------------------------------------------------------------------- JSON edits


def _paths(data: Any, prefix: tuple[Any, ...] = (), limit: int = 3) -> list[tuple[Any, ...]]:
    """Paths (key tuples) to every value down to `limit` levels, for picking a field to edit."""
    found = []
    if len(prefix) >= limit:
        return found
    if isinstance(data, dict):
        for key, value in data.items():
            found.append((*prefix, key))
            found += _paths(value, (*prefix, key), limit)
    elif isinstance(data, list):
        for index, value in enumerate(data[:8]):
            found.append((*prefix, index))
            found += _paths(value, (*prefix, index), limit)
    return found


def _set(data: Any, path: tuple[Any, ...], value: Any) -> None:
    target = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


def _delete(data: Any, path: tuple[Any, ...]) -> None:
    target = data
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]


def mutate_json(rng: random.Random, data: dict[str, Any], extra_keys: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """One structured edit of a JSON object, returned as file bytes and a description.

    Edits: replace a field (existing, or one of `extra_keys`) with a hostile value; delete a field;
    duplicate a key textually; nest a field deeply; replace the whole document with another JSON type;
    several field replacements at once; then, sometimes, a text-level edit on top.
    """
    data = json.loads(json.dumps(data))
    paths = _paths(data)
    op = rng.choice(["replace", "replace", "replace", "add", "delete", "multi", "dupkey", "deep", "toplevel"])
    raw: str | None = None
    if op == "replace" and paths:
        path = rng.choice(paths)
        value = hostile_value(rng, str(path[-1]) if len(path) == 1 else None)
        _set(data, path, value)
        what = f"set {'.'.join(map(str, path))} = {describe_value(value)}"
    elif op in ("add", "replace"):
        key = rng.choice(list(extra_keys) or list(FIELD_VALUES))
        value = hostile_value(rng, key)
        data[key] = value
        what = f"set {key} = {describe_value(value)}"
    elif op == "delete" and data:
        key = rng.choice(list(data))
        del data[key]
        what = f"delete key {key!r}"
    elif op == "multi":
        changes = []
        for _ in range(rng.randint(2, 5)):
            key = (
                rng.choice(list(extra_keys) or list(FIELD_VALUES))
                if rng.random() < 0.5 or not data
                else rng.choice(list(data))
            )
            value = hostile_value(rng, key)
            data[key] = value
            changes.append(f"{key} = {describe_value(value)}")
        what = "set " + ", ".join(changes)
    elif op == "dupkey" and data:
        key = rng.choice(list(data))
        value = hostile_value(rng, key)
        text = render(data)
        raw = text[:-1].rstrip() + f",\n  {json.dumps(key)}: {render(value, None)}\n}}"
        what = f"duplicate key {key!r} (second value {describe_value(value)})"
    elif op == "deep":
        key = rng.choice(list(data) or ["x"])
        depth = rng.choice([40, 1000, 100_000, 1_000_000])
        data[key] = placeholder("int60")  # marker, replaced textually below
        raw = render(data).replace(RAW_LITERALS["int60"], nested(depth), 1)
        what = f"nest {key!r} {depth} arrays deep"
    else:  # toplevel
        choice = rng.choice(["array", "string", "number", "null", "deep-array", "deep-object", "empty"])
        raw = {
            "array": lambda: render([data]),
            "string": lambda: json.dumps("config"),
            "number": lambda: "42",
            "null": lambda: "null",
            "deep-array": lambda: nested(rng.choice([100, 50_000, 500_000])),
            "deep-object": lambda: '{"a":' * 20_000 + "1" + "}" * 20_000,
            "empty": lambda: "",
        }[choice]()
        what = f"whole document replaced by {choice}"
    text = render(data) if raw is None else raw
    blob = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.15:
        blob, more = mutate_bytes(rng, blob)
        what += f"; then {more}"
    return blob, what


# ----------------------------------------------------------------------------------------------- byte edits


def mutate_bytes(rng: random.Random, blob: bytes) -> tuple[bytes, str]:
    """A generic byte-level edit: flips, truncation, insertion, duplication, zeroing, a BOM, invalid UTF-8."""
    data = bytearray(blob)
    op = rng.choice(["flip", "flip", "truncate", "insert", "dup", "zero", "bom", "badutf8", "empty"])
    if not data:
        op = "insert"
    if op == "flip":
        count = rng.randint(1, 8)
        for _ in range(count):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data), f"{count} bit flips"
    if op == "truncate":
        cut = rng.randrange(len(data))
        return bytes(data[:cut]), f"truncated to {cut} of {len(data)} bytes"
    if op == "insert":
        at = rng.randrange(len(data) + 1)
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        return bytes(data[:at] + junk + data[at:]), f"{len(junk)} random bytes inserted at {at}"
    if op == "dup":
        start = rng.randrange(len(data))
        chunk = data[start : start + rng.randint(1, 256)]
        return bytes(data[:start] + chunk + data[start:]), f"{len(chunk)} bytes at {start} duplicated"
    if op == "zero":
        start = rng.randrange(len(data))
        size = rng.randint(1, 256)
        data[start : start + size] = bytes(len(data[start : start + size]))
        return bytes(data), f"{size} bytes zeroed at {start}"
    if op == "bom":
        return b"\xef\xbb\xbf" + bytes(data), "UTF-8 BOM prepended"
    if op == "badutf8":
        at = rng.randrange(len(data) + 1)
        return bytes(data[:at] + b"\xff\xfe\xc3" + data[at:]), f"invalid UTF-8 inserted at {at}"
    return b"", "emptied"


# ---------------------------------------------------------------------------------------- safetensors edits


def split_safetensors(blob: bytes) -> tuple[dict[str, Any], bytes]:
    """(header dict, data bytes) of a valid safetensors file."""
    (length,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + length]), blob[8 + length :]


def join_safetensors(header_text: bytes, data: bytes, length: int | None = None) -> bytes:
    """A safetensors file from header text and data; `length` overrides the declared header length."""
    return struct.pack("<Q", len(header_text) if length is None else length) + header_text + data


def mutate_safetensors(rng: random.Random, blob: bytes) -> tuple[bytes, str]:
    """One edit of a safetensors file's framing or header (tensor-level edits are the torch side's)."""
    header, data = split_safetensors(blob)
    names = [k for k in header if k != "__metadata__"]
    op = rng.choice(
        [
            "length",
            "length",
            "dtype",
            "shape",
            "shape",
            "offsets",
            "offsets",
            "metadata",
            "header-json",
            "bytes",
            "truncate-data",
            "drop-entry",
            "alias",
        ]
    )
    if op == "length":
        length = rng.choice([0, 1, 7, len(blob), 2**32, 2**40, 2**63, 2**64 - 1, 100_000_001])
        text = json.dumps(header).encode()
        return join_safetensors(text, data, length), f"header length field set to {length}"
    name = rng.choice(names)
    entry = header[name]
    if op == "dtype":
        entry["dtype"] = rng.choice(["F8_E4M3", "I64", "BOOL", "C64", "X", "", 5, None, "F4", "U64"])
        what = f"{name}: dtype set to {entry['dtype']!r}"
    elif op == "shape":
        entry["shape"] = rng.choice(
            [[], [0], [-1], [2**40], [2**62, 2**62], [1.5], ["3"], None, [10**30], [1] * 70, [65536, 65536]]
        )
        what = f"{name}: shape set to {describe_value(entry['shape'])}"
    elif op == "offsets":
        begin, end = entry["data_offsets"]
        entry["data_offsets"] = rng.choice(
            [
                [end, begin],
                [0, 2**63],
                [begin, end + 4],
                [-1, end],
                [begin],
                [begin, end, 0],
                None,
                ["0", "4"],
                [0, len(data) + 10**9],
            ]
        )
        what = f"{name}: data_offsets set to {describe_value(entry['data_offsets'])}"
    elif op == "metadata":
        header["__metadata__"] = rng.choice([{"format": 1}, [], "pt", {"format": None}, {"x": {"y": "z"}}])
        what = f"__metadata__ set to {describe_value(header['__metadata__'])}"
    elif op == "header-json":
        text, what = mutate_json(rng, header)
        return join_safetensors(text, data), f"header JSON: {what}"
    elif op == "bytes":
        out, what = mutate_bytes(rng, blob)
        return out, what
    elif op == "truncate-data":
        cut = rng.randrange(len(data) + 1)
        return join_safetensors(json.dumps(header).encode(), data[:cut]), f"data truncated to {cut} bytes"
    elif op == "drop-entry":
        del header[name]
        what = f"header entry {name} removed (its bytes left as a hole)"
    else:  # alias: two entries on the same bytes
        other = rng.choice(names)
        entry["data_offsets"] = list(header[other]["data_offsets"])
        entry["shape"], entry["dtype"] = header[other]["shape"], header[other]["dtype"]
        what = f"{name} made to alias {other}'s bytes"
    return join_safetensors(json.dumps(header).encode(), data), what


# --------------------------------------------------------------------------------------------- image edits


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, color_type: int = 0, fill: int = 0) -> bytes:
    """A valid 8-bit PNG of any size whose rows are all `fill` (compresses to little for huge sizes)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row = b"\x00" + bytes([fill]) * (width * channels)
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row) for _ in range(height)] if height <= 4096 else []
    if height > 4096:  # many identical rows: compress in blocks
        block = row * 4096
        for _ in range(height // 4096):
            chunks.append(compressor.compress(block))
        chunks.append(compressor.compress(row * (height % 4096)))
    chunks.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(chunks)) + png_chunk(b"IEND", b"")
    )


def rewrite_png_size(blob: bytes, width: int, height: int) -> bytes:
    """`blob` (a PNG) with IHDR's width and height replaced and its CRC recomputed (pixel data unchanged)."""
    assert blob[12:16] == b"IHDR"
    body = bytearray(blob[16:29])
    body[0:8] = struct.pack(">II", width, height)
    return blob[:8] + png_chunk(b"IHDR", bytes(body)) + blob[33:]


def mutate_image(rng: random.Random, blob: bytes, fmt: str) -> tuple[bytes, str]:
    """One edit of an image file: header dimensions (with valid checksums for PNG), or generic bytes."""
    op = rng.choice(["dims", "dims", "bytes", "bytes", "truncate", "header-bytes"])
    if op == "dims":
        width, height = rng.choice(
            [
                (1, 16_777_216),
                (16_777_216, 1),
                (0, 10),
                (65535, 65535),
                (2**31 - 1, 1),
                (40000, 40000),
                (1, 1),
                (100_000, 3),
            ]
        )
        if fmt == "PNG":
            return rewrite_png_size(blob, width, height), f"PNG IHDR set to {width}x{height} (CRC fixed)"
        data = bytearray(blob)
        if fmt == "BMP":
            data[18:26] = struct.pack("<ii", width, height)
        elif fmt == "GIF":
            data[6:10] = struct.pack("<HH", width & 0xFFFF, height & 0xFFFF)
        elif fmt == "JPEG":
            at = blob.find(b"\xff\xc0")
            if at < 0:
                at = blob.find(b"\xff\xc2")
            if at >= 0:
                data[at + 5 : at + 9] = struct.pack(">HH", height & 0xFFFF, width & 0xFFFF)
        elif fmt == "TIFF":
            return mutate_bytes(rng, blob)
        elif fmt == "WEBP":
            at = blob.find(b"VP8L")
            if at >= 0:
                bits = ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14)
                data[at + 9 : at + 13] = struct.pack("<I", bits)
        return bytes(data), f"{fmt} header size set to {width}x{height}"
    if op == "truncate":
        cut = rng.randrange(1, len(blob))
        return blob[:cut], f"truncated to {cut} of {len(blob)} bytes"
    if op == "header-bytes":
        data = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(min(len(data), 64))] = rng.randrange(256)
        return bytes(data), "random bytes in the first 64"
    return mutate_bytes(rng, blob)
