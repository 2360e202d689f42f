"""Hostile weight files: checkpoints that do not fit, carry exotic tensors, run code, or escape the
model directory.

Each group protects against one failure a user would otherwise hit as an unrelated exception (an
IndexError from tensor surgery, a RuntimeError from `copy_`), as silently wrong weights, as code run by
unpickling, or as files read from outside the model directory. Every refusal is a `CheckpointError`
(or FileNotFoundError) whose message names the file, the tensor and the shapes or reason.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from swinv2 import Swinv2Config, Swinv2ForImageClassification
from swinv2.io.checkpoints import CheckpointError, read_state_dict
from swinv2.io.errors import quote
from swinv2.loading import load_checkpoint, save_timm, to_microsoft

CONFIG = Swinv2Config(
    image_size=32,
    patch_size=4,
    embed_dim=16,
    depths=(1, 1),
    num_heads=(1, 2),
    window_size=4,
    num_labels=3,
    use_absolute_embeddings=True,
)
QUERY = "swinv2.encoder.layers.0.blocks.0.attention.self.query.weight"
LOGIT_SCALE = "swinv2.encoder.layers.0.blocks.0.attention.self.logit_scale"
POSITION_TABLE = "swinv2.embeddings.position_embeddings"


@pytest.fixture(scope="module")
def model() -> Swinv2ForImageClassification:
    torch.manual_seed(0)
    return Swinv2ForImageClassification(CONFIG).eval()


@pytest.fixture(scope="module")
def official(model: Swinv2ForImageClassification, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The model's tensors under timm's and Microsoft's names."""
    path = tmp_path_factory.mktemp("timm") / "timm.pth"
    save_timm(model, path)
    return {"timm": torch.load(path, weights_only=True), "microsoft": to_microsoft(model)}


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    return path


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=key)


# ------------------------------------------------------------- official files missing keys or wrapped
@pytest.mark.parametrize("layout", ["timm", "microsoft"])
def test_official_file_without_absolute_position_table_is_reported(
    official: dict[str, dict], tmp_path: Path, layout: str
) -> None:
    """A config with use_absolute_embeddings=True and a file without `absolute_pos_embed`: a report, not a
    model whose position table stays random."""
    state = {k: v for k, v in official[layout].items() if k != "absolute_pos_embed"}
    path = _save(state, tmp_path / f"{layout}.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, config=CONFIG)
    assert info.value.report is not None
    assert info.value.report.missing == [POSITION_TABLE]
    message = str(info.value)
    assert message.startswith(f"checkpoint '{path}' ({layout} layout, read as the given config) does not fit")
    assert f"1 missing: {POSITION_TABLE}" in message


@pytest.mark.parametrize("layout", ["timm", "microsoft"])
@pytest.mark.parametrize("wrapper", [None, "model"])
def test_ddp_module_prefix_is_stripped(
    model: Swinv2ForImageClassification, official: dict[str, dict], tmp_path: Path, layout: str, wrapper: str | None
) -> None:
    """A state dict saved from a DistributedDataParallel wrapper (every key `module.`-prefixed) loads."""
    state: Any = {"module." + k: v for k, v in official[layout].items()}
    if wrapper is not None:
        state = {wrapper: state, "epoch": 3}  # as training scripts save it
    path = tmp_path / f"{layout}.pth"
    torch.save(state, path)
    _same_weights(load_checkpoint(path, config=CONFIG), model)


def test_ddp_module_prefix_in_transformers_layout_loads(model: Swinv2ForImageClassification, tmp_path: Path) -> None:
    path = _save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "weights.safetensors")
    _same_weights(load_checkpoint(path, config=CONFIG), model)


# ----------------------------------------------------------------------------- tensors of the wrong shape
@pytest.mark.parametrize(
    ("key", "shape", "model_shape"),
    [(QUERY, (8, 16), (16, 16)), (LOGIT_SCALE, (2, 1, 1), (1, 1, 1)), (POSITION_TABLE, (1, 10, 16), (1, 65, 16))],
    ids=["query", "logit_scale", "position-table"],
)
def test_wrong_shape_in_transformers_layout_names_key_and_both_shapes(
    model: Swinv2ForImageClassification, tmp_path: Path, key: str, shape: tuple[int, ...], model_shape: tuple
) -> None:
    state = {**model.state_dict(), key: torch.zeros(shape)}
    path = _save(state, tmp_path / "weights.safetensors")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, config=CONFIG)
    assert info.value.report.mismatched == [(key, shape, model_shape)]
    assert f"1 with the wrong shape: {key} (checkpoint {list(shape)}, model {list(model_shape)})" in str(info.value)
    assert f"checkpoint '{path}'" in str(info.value)


def test_wrong_shaped_fused_qkv_in_timm_layout_is_reported(official: dict[str, dict], tmp_path: Path) -> None:
    """The fused weight is split in three; a (3C, C/2) one must give a report, not a crash."""
    key = "layers.0.blocks.0.attn.qkv.weight"
    path = _save({**official["timm"], key: torch.zeros(48, 8)}, tmp_path / "timm.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, config=CONFIG)
    message = str(info.value)
    assert "(timm layout, read as the given config)" in message
    assert "3 with the wrong shape" in message
    assert f"{QUERY} (checkpoint [16, 8], model [16, 16])" in message


def test_qkv_whose_rows_do_not_split_in_three_reports_the_file_tensor(
    official: dict[str, dict], tmp_path: Path
) -> None:
    """A (47, 16) `qkv.weight` splits unevenly (16, 16, 15): the report must describe the tensor the file
    holds (its name or its shape), not only a derived 15-row `value.weight` the file does not have."""
    key = "layers.0.blocks.0.attn.qkv.weight"
    path = _save({**official["timm"], key: torch.zeros(47, 16)}, tmp_path / "timm.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, config=CONFIG)
    message = str(info.value)
    assert "qkv.weight" in message or "[47, 16]" in message, message


@pytest.mark.parametrize(
    ("key", "shape"),
    [
        ("layers.0.blocks.0.attn.qkv.weight", ()),
        ("absolute_pos_embed", (16,)),
        ("absolute_pos_embed", ()),
    ],
    ids=["qkv-scalar", "position-table-1d", "position-table-scalar"],
)
def test_tensor_of_too_few_dimensions_in_timm_layout_gives_a_report(
    official: dict[str, dict], tmp_path: Path, key: str, shape: tuple[int, ...]
) -> None:
    """The q/k/v split and the position-table row surgery must not crash (RuntimeError, IndexError) on
    a tensor of the wrong rank: a CheckpointError naming the file and the tensor."""
    path = _save({**official["timm"], key: torch.zeros(shape)}, tmp_path / "timm.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, config=CONFIG)
    message = str(info.value)
    assert f"'{path}'" in message
    assert key in message or "position_embeddings" in message or "query.weight" in message, message


def test_wrong_shaped_derived_index_in_timm_layout_is_ignored(
    model: Swinv2ForImageClassification, official: dict[str, dict], tmp_path: Path
) -> None:
    """`relative_position_index` is rebuilt from the config: a garbage one in the file changes nothing."""
    index = torch.full((3, 3), 10**6, dtype=torch.long)
    path = _save({**official["timm"], "layers.0.blocks.0.attn.relative_position_index": index}, tmp_path / "t.pth")
    loaded = load_checkpoint(path, config=CONFIG)
    _same_weights(loaded, model)
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).logits, model(pixels).logits)


# ---------------------------------------------------------------------------------- exotic tensors
def _quantized() -> torch.Tensor:
    return torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: torch.ones(4, device="meta"), "a meta tensor (it holds no values)"),
        (lambda: torch.eye(3).to_sparse(), "a sparse_coo tensor (only dense tensors load)"),
        (lambda: torch.eye(3).to_sparse_csr(), "a sparse_csr tensor (only dense tensors load)"),
        (_quantized, "a quantized tensor (qint8)"),
        (lambda: torch.ones(2, dtype=torch.complex64), "a complex64 tensor"),
    ],
    ids=["meta", "sparse-coo", "sparse-csr", "quantized", "complex"],
)
@pytest.mark.filterwarnings("ignore")
def test_exotic_tensor_in_pth_is_refused_by_name(tmp_path: Path, make: Any, reason: str) -> None:
    path = tmp_path / "weights.pth"
    torch.save({"fine": torch.ones(2), "patch_embed.proj.weight": make()}, path)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    assert str(info.value) == f"cannot load '{path}': tensor 'patch_embed.proj.weight' is {reason}"


# ------------------------------------------------------------------------------------- shard indexes
def _index(directory: Path, weight_map: Any) -> Path:
    path = directory / "model.safetensors.index.json"
    path.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}), encoding="utf-8")
    return path


def test_shard_index_pointing_at_itself_is_refused(tmp_path: Path) -> None:
    """A shard that is the index itself would recurse forever; only weight files may be shards."""
    index = _index(tmp_path, {"a": "model.safetensors.index.json"})
    with pytest.raises(CheckpointError) as info:
        read_state_dict(tmp_path)
    assert str(info.value) == (
        f"cannot read shard index '{index}': shard 'model.safetensors.index.json' is not a weight file "
        "(.safetensors, .bin, .pt or .pth)"
    )


def test_two_indexes_naming_each_other_are_refused(tmp_path: Path) -> None:
    _index(tmp_path, {"a": "other.index.json"})
    (tmp_path / "other.index.json").write_text(json.dumps({"weight_map": {"a": "model.safetensors.index.json"}}))
    with pytest.raises(CheckpointError, match=re.escape("shard 'other.index.json' is not a weight file")):
        read_state_dict(tmp_path)


def test_shard_index_that_is_not_utf8(tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    index.write_bytes(b'{"weight_map": {"a": "\xff\xfe.safetensors"}}')
    with pytest.raises(CheckpointError) as info:
        read_state_dict(tmp_path)
    assert str(info.value) == f"cannot read shard index '{index}': not UTF-8 text (byte 22)"


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_shard_outside_the_model_directory_is_refused(tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    save_file({"a": torch.ones(2)}, outside / "x.safetensors")
    model_dir = tmp_path / "models" / "m"
    model_dir.mkdir(parents=True)
    name = {
        "dotdot": "../../outside/x.safetensors",
        "absolute": str(outside / "x.safetensors"),
        "symlink": "link.safetensors",
    }[kind]
    if kind == "symlink":
        os.symlink(outside / "x.safetensors", model_dir / "link.safetensors")
    index = _index(model_dir, {"a": name})
    with pytest.raises(CheckpointError) as info:
        read_state_dict(model_dir)
    assert str(info.value) == f"refusing shard index '{index}': shard {quote(name)} is outside '{model_dir}'"


def test_same_tensor_in_two_shards_is_refused(tmp_path: Path) -> None:
    save_file({"a": torch.ones(2)}, tmp_path / "s1.safetensors")
    save_file({"a": torch.zeros(2), "b": torch.ones(1)}, tmp_path / "s2.safetensors")
    index = _index(tmp_path, {"a": "s1.safetensors", "b": "s2.safetensors"})
    with pytest.raises(CheckpointError) as info:
        read_state_dict(tmp_path)
    assert str(info.value) == (
        f"cannot read shard index '{index}': tensor 'a' is in both 's1.safetensors' and 's2.safetensors'"
    )


def test_missing_shard_is_named(tmp_path: Path) -> None:
    index = _index(tmp_path, {"a": "absent.safetensors"})
    with pytest.raises(FileNotFoundError) as info:
        read_state_dict(tmp_path)
    assert str(info.value) == f"no weight file at '{tmp_path / 'absent.safetensors'}' (a shard named by '{index}')"


# ------------------------------------------------------------------------------ corrupt safetensors
@pytest.mark.parametrize(
    ("make", "detail"),
    [
        (lambda body: struct.pack("<Q", 10**12) + body, "header too large"),
        (lambda body: struct.pack("<Q", len(body) + 100) + body, "invalid header length"),
        (lambda body: struct.pack("<Q", 20) + b"{not json at all!!!}", "invalid JSON in header"),
    ],
    ids=["length-far-beyond-file", "length-beyond-file", "garbage-header"],
)
def test_safetensors_with_corrupt_header(tmp_path: Path, make: Any, detail: str) -> None:
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.ones(4)}, good)
    path = tmp_path / "model.safetensors"
    path.write_bytes(make(good.read_bytes()[8:]))
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert message.startswith(f"cannot read '{path}': not a valid safetensors file (")
    assert detail in message


def test_safetensors_header_claiming_a_huge_tensor(tmp_path: Path) -> None:
    """A header describing a 10^12-element tensor over 16 bytes of data: refused, nothing allocated."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 16]}}).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    with pytest.raises(CheckpointError, match=re.escape(f"cannot read '{path}': not a valid safetensors file")):
        read_state_dict(path)


# --------------------------------------------------------------------------------- code in pickles
class RunsCode:
    """Unpickling this calls `open(marker, "w")`: the loader must refuse before anything runs."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("container", ["raw-pickle.bin", "torch-zip.pth", "torch-legacy.bin"])
def test_pickle_that_would_run_code_is_refused(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "marker"
    payload = {"w": torch.ones(2), "evil": RunsCode(str(marker))}
    path = tmp_path / container
    if container.startswith("raw"):
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=container.startswith("torch-zip"))
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert message.startswith(f"refusing to load '{path}': it is corrupt or needs code beyond plain tensors")
    assert "re-save it as safetensors where you trust it" in message
    assert not marker.exists(), "unpickling ran the file's code"
    with pytest.raises(CheckpointError):
        load_checkpoint(path, config=CONFIG)
    assert not marker.exists()


# -------------------------------------------------------------------- config.json and weights disagree
def test_config_describing_far_more_parameters_than_the_weights_is_refused_before_building(
    model: Swinv2ForImageClassification, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data.update(embed_dim=256, num_heads=[8, 16])  # ~190x the parameters of the saved weights
    (tmp_path / "config.json").write_text(json.dumps(data))

    def never_built(self: Any, config: Any) -> None:
        raise AssertionError("the model was built before the config was checked against the weights")

    monkeypatch.setattr(Swinv2ForImageClassification, "__init__", never_built)
    with pytest.raises(CheckpointError) as info:
        Swinv2ForImageClassification.from_pretrained(tmp_path)
    message = str(info.value)
    assert message.startswith(f"'{tmp_path / 'config.json'}' describes ")
    assert f"but the weight files of '{tmp_path}' hold only" in message
    assert "the config does not belong to these weights" in message
