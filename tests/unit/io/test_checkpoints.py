"""Weight files: reading (safe formats only), atomic writing, strict loading with a full report, from_pretrained."""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import swinv2.io.checkpoints as checkpoints
from helpers import image_batch, perturb_, tiny_config
from swinv2 import (
    CheckpointError,
    LoadReport,
    Swinv2Backbone,
    Swinv2ForImageClassification,
    Swinv2Model,
)
from swinv2.io.checkpoints import (
    load_into_model,
    parse_shard_size,
    read_state_dict,
    split_into_shards,
    write_safetensors,
)

# --------------------------------------------------------------------------------- read_state_dict


def _tensors() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.arange(12.0).reshape(3, 4), "b.bias": torch.tensor([1, 2, 3], dtype=torch.int64)}


def _assert_same_tensors(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(expected)
    for key, tensor in expected.items():
        torch.testing.assert_close(got[key], tensor, rtol=0, atol=0)


def test_read_safetensors_file_and_directory(tmp_path):
    save_file(_tensors(), tmp_path / "model.safetensors")
    _assert_same_tensors(read_state_dict(tmp_path / "model.safetensors"), _tensors())
    _assert_same_tensors(read_state_dict(tmp_path), _tensors())


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth"])
def test_read_pickle_file(tmp_path, suffix):
    torch.save(_tensors(), tmp_path / f"weights{suffix}")
    _assert_same_tensors(read_state_dict(tmp_path / f"weights{suffix}"), _tensors())


def test_directory_prefers_safetensors_then_bin(tmp_path):
    torch.save({"only.in.bin": torch.ones(1)}, tmp_path / "pytorch_model.bin")
    assert list(read_state_dict(tmp_path)) == ["only.in.bin"]
    save_file(_tensors(), tmp_path / "model.safetensors")
    _assert_same_tensors(read_state_dict(tmp_path), _tensors())


def test_missing_file(tmp_path):
    path = tmp_path / "absent.safetensors"
    with pytest.raises(FileNotFoundError, match=re.escape(f"no weight file at '{path}'")):
        read_state_dict(path)


def test_empty_directory_names_expected_files(tmp_path):
    pattern = re.escape(
        f"no weights in '{tmp_path}': expected model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )
    with pytest.raises(FileNotFoundError, match=pattern):
        read_state_dict(tmp_path)


def test_text_file_named_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_text("this is not a weight file\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match=re.escape(f"cannot read '{path}': not a valid safetensors file")):
        read_state_dict(path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 5], ids=["half", "most", "5-bytes"])
def test_truncated_safetensors(tmp_path, keep):
    full = tmp_path / "full.safetensors"
    save_file({"w": torch.arange(1000.0)}, full)
    data = full.read_bytes()
    cut = tmp_path / "model.safetensors"
    cut.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(CheckpointError, match=re.escape(f"cannot read '{cut}': not a valid safetensors file")):
        read_state_dict(cut)
    with pytest.raises(CheckpointError, match=re.escape(f"cannot read '{cut}'")):
        read_state_dict(tmp_path)  # the directory finds the same file


def test_zero_byte_bin(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=re.escape(f"cannot read '{path}': the file is empty")):
        read_state_dict(path)


def test_truncated_bin(tmp_path):
    full = tmp_path / "full.bin"
    torch.save({"w": torch.arange(1000.0)}, full)
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(full.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=re.escape(f"cannot read '{path}': not a PyTorch checkpoint")):
        read_state_dict(path)


class CustomPayload:
    """A class only this module defines: unpickling it would need to import and run our code."""


class StateDictSubclass(collections.OrderedDict):
    """An OrderedDict subclass, as some training scripts save."""


MARKER_FILE = "pwned.txt"


class RunsCode:
    """Unpickling this would call a function (here `open(target, "w")`): the loader must refuse first."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("kind", ["custom-class", "ordereddict-subclass", "reduce-call"])
def test_pickle_needing_code_is_refused(tmp_path, kind):
    path = tmp_path / "pytorch_model.bin"
    marker = tmp_path / MARKER_FILE
    payload = {
        "custom-class": lambda: {"w": torch.ones(2), "extra": CustomPayload()},
        "ordereddict-subclass": lambda: StateDictSubclass(w=torch.ones(2)),
        "reduce-call": lambda: {"w": torch.ones(2), "evil": RunsCode(str(marker))},
    }[kind]()
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=re.escape(f"refusing to load '{path}'")) as info:
        read_state_dict(path)
    assert "re-save it as safetensors" in str(info.value)
    assert not marker.exists(), "the pickle's code ran"


@pytest.mark.parametrize(
    "payload",
    [{"w": torch.ones(2), "step": 3}, {"w": torch.ones(2), "nested": {"x": torch.ones(1)}}, [torch.ones(2)]],
    ids=["int-value", "nested-dict", "list"],
)
def test_pickle_with_non_tensor_values(tmp_path, payload):
    path = tmp_path / "weights.pt"
    torch.save(payload, path)
    expected = f"cannot read '{path}': expected a mapping of names to tensors"
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        read_state_dict(path)


@pytest.mark.parametrize("wrapper", ["model", "state_dict", "model_ema"])
def test_training_checkpoint_wrappers_are_unwrapped(tmp_path, wrapper):
    path = tmp_path / "checkpoint.pth"
    torch.save({wrapper: _tensors(), "epoch": 7, "max_accuracy": 81.5}, path)
    _assert_same_tensors(read_state_dict(path), _tensors())


@pytest.mark.parametrize("name", ["weights.txt", "weights.npz", "weights"])
def test_unknown_suffix(tmp_path, name):
    path = tmp_path / name
    torch.save(_tensors(), path)
    with pytest.raises(CheckpointError, match=re.escape(f"cannot read '{path}': unknown weight file type")):
        read_state_dict(path)


def _write_shards(directory) -> dict[str, torch.Tensor]:
    first = {"a.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.tensor([0.5, -0.5])}
    second = {"b.weight": torch.full((4,), 7.0), "c.table": torch.arange(5, dtype=torch.int32)}
    save_file(first, directory / "model-00001-of-00002.safetensors")
    save_file(second, directory / "model-00002-of-00002.safetensors")
    weight_map = {k: "model-00001-of-00002.safetensors" for k in first}
    weight_map |= {k: "model-00002-of-00002.safetensors" for k in second}
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    return first | second


def test_sharded_safetensors_index(tmp_path):
    expected = _write_shards(tmp_path)
    _assert_same_tensors(read_state_dict(tmp_path), expected)
    _assert_same_tensors(read_state_dict(tmp_path / "model.safetensors.index.json"), expected)


def test_sharded_index_without_weight_map(tmp_path):
    path = tmp_path / "model.safetensors.index.json"
    path.write_text(json.dumps({"metadata": {}}), encoding="utf-8")
    with pytest.raises(CheckpointError, match=re.escape(f"cannot read shard index '{path}'")):
        read_state_dict(tmp_path)


def test_sharded_index_invalid_json(tmp_path):
    path = tmp_path / "model.safetensors.index.json"
    path.write_text("{", encoding="utf-8")
    with pytest.raises(CheckpointError, match=re.escape(f"cannot read shard index '{path}'")):
        read_state_dict(path)


def test_sharded_index_with_missing_shard(tmp_path):
    _write_shards(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    missing = tmp_path / "model-00002-of-00002.safetensors"
    with pytest.raises(FileNotFoundError, match=re.escape(f"no weight file at '{missing}'")):
        read_state_dict(tmp_path)


# ------------------------------------------------------------------------------- write_safetensors


def test_write_safetensors_round_trip_and_metadata(tmp_path):
    path = tmp_path / "out.safetensors"
    source = {"t": torch.arange(12.0).reshape(3, 4).t()}  # non-contiguous on purpose
    write_safetensors(path, source)
    _assert_same_tensors(read_state_dict(path), {"t": source["t"].contiguous()})
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"]


def test_write_safetensors_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {"old": torch.ones(3)})
    before = path.read_bytes()

    def failing_save(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")  # a partial write, then the crash
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_safetensors(path, {"new": torch.zeros(3)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"], "temporary files were left behind"
    monkeypatch.undo()
    _assert_same_tensors(read_state_dict(path), {"old": torch.ones(3)})


def test_write_safetensors_atomic_when_target_absent(tmp_path, monkeypatch):
    def failing_save(tensors, filename, metadata=None):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(checkpoints, "save_file", failing_save)
    with pytest.raises(RuntimeError, match="interrupted"):
        write_safetensors(tmp_path / "model.safetensors", {"w": torch.ones(1)})
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------- load_into_model


def test_load_into_model_reports_all_problems():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    state = {"0.weight": torch.ones(3, 2), "0.bias": torch.ones(4), "2.weight": torch.ones(1)}
    with pytest.raises(CheckpointError) as info:
        load_into_model(model, state, source="memory")
    message = str(info.value)
    assert message.startswith("checkpoint 'memory' does not fit the model: ")
    assert "2 missing: 1.weight, 1.bias" in message
    assert "1 unexpected: 2.weight" in message
    assert "1 with the wrong shape: 0.bias (checkpoint [4], model [3])" in message
    assert "pass strict=False" in message
    # The failed strict load changed nothing.
    assert not torch.equal(model[0].weight, torch.ones(3, 2))

    report = load_into_model(model, state, source="memory", strict=False)
    assert report.missing == ["1.weight", "1.bias"]
    assert report.unexpected == ["2.weight"]
    assert report.mismatched == [("0.bias", (4,), (3,))]
    assert not report.ok
    torch.testing.assert_close(model[0].weight, torch.ones(3, 2))  # the good key was loaded


def test_load_into_model_ignore_mismatched_sizes():
    model = torch.nn.Linear(2, 3)
    original_bias = model.bias.detach().clone()
    report = load_into_model(
        model, {"weight": torch.full((3, 2), 2.0), "bias": torch.ones(5)}, source="m", ignore_mismatched_sizes=True
    )
    assert report.ok
    assert report.reinitialized == ["bias"]
    torch.testing.assert_close(model.weight, torch.full((3, 2), 2.0))
    torch.testing.assert_close(model.bias, original_bias)


# ---------------------------------------------------------------------------- models on disk


@pytest.fixture(scope="module")
def saved_classifier(tmp_path_factory):
    """A perturbed 5-label classifier saved in transformers format; returns (model, directory)."""
    torch.manual_seed(0)
    model = perturb_(Swinv2ForImageClassification(tiny_config(num_labels=5))).eval()
    directory = tmp_path_factory.mktemp("classifier")
    model.save_pretrained(directory)
    return model, directory


def _copy_dir(source, target):
    target.mkdir()
    for name in ("config.json", "model.safetensors"):
        (target / name).write_bytes((source / name).read_bytes())
    return target


def _assert_state_equal(got: torch.nn.Module, expected: torch.nn.Module) -> None:
    _assert_same_tensors(dict(got.state_dict()), dict(expected.state_dict()))


def test_save_and_load_round_trip(saved_classifier):
    model, directory = saved_classifier
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    loaded, report = Swinv2ForImageClassification.from_pretrained(directory, output_loading_info=True)
    assert isinstance(report, LoadReport)
    assert report.ok
    assert (report.missing, report.unexpected, report.mismatched, report.unused) == ([], [], [], [])
    assert not loaded.training
    _assert_state_equal(loaded, model)
    x = image_batch(2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)


def test_strict_load_lists_every_problem_at_once(saved_classifier, tmp_path):
    _, source = saved_classifier
    directory = _copy_dir(source, tmp_path / "broken")
    state = load_file(directory / "model.safetensors")
    del state["swinv2.embeddings.norm.weight"]  # (a) missing
    state["swinv2.encoder.layers.0.blocks.0.unknown.weight"] = torch.ones(2)  # (b) unexpected
    state["swinv2.encoder.layers.1.blocks.0.layernorm_after.bias"] = torch.ones(7)  # (c) wrong shape (32)
    save_file(state, directory / "model.safetensors")

    with pytest.raises(CheckpointError) as info:
        Swinv2ForImageClassification.from_pretrained(directory)
    message = str(info.value)
    assert message.startswith(f"checkpoint '{directory}' does not fit the model: ")
    assert "1 missing: swinv2.embeddings.norm.weight" in message
    assert "1 unexpected: swinv2.encoder.layers.0.blocks.0.unknown.weight" in message
    wrong = "1 with the wrong shape: swinv2.encoder.layers.1.blocks.0.layernorm_after.bias (checkpoint [7], model [32])"
    assert wrong in message

    model, report = Swinv2ForImageClassification.from_pretrained(directory, strict=False, output_loading_info=True)
    assert report.missing == ["swinv2.embeddings.norm.weight"]
    assert report.unexpected == ["swinv2.encoder.layers.0.blocks.0.unknown.weight"]
    assert report.mismatched == [("swinv2.encoder.layers.1.blocks.0.layernorm_after.bias", (7,), (32,))]
    assert not report.ok
    # Everything else was loaded.
    saved, _ = saved_classifier
    torch.testing.assert_close(model.classifier.weight, saved.classifier.weight, rtol=0, atol=0)
    torch.testing.assert_close(
        model.swinv2.encoder.layers[1].blocks[0].layernorm_after.weight,
        saved.swinv2.encoder.layers[1].blocks[0].layernorm_after.weight,
    )


@pytest.mark.parametrize("problem", ["missing", "unexpected", "mismatched"])
def test_strict_load_each_problem_alone(saved_classifier, tmp_path, problem):
    _, source = saved_classifier
    directory = _copy_dir(source, tmp_path / problem)
    state = load_file(directory / "model.safetensors")
    if problem == "missing":
        del state["classifier.bias"]
        expected = "1 missing: classifier.bias"
    elif problem == "unexpected":
        state["swinv2.extra_thing"] = torch.zeros(1)
        expected = "1 unexpected: swinv2.extra_thing"
    else:
        state["classifier.weight"] = torch.zeros(5, 31)
        expected = "1 with the wrong shape: classifier.weight (checkpoint [5, 31], model [5, 32])"
    save_file(state, directory / "model.safetensors")
    with pytest.raises(CheckpointError, match=re.escape(expected)) as info:
        Swinv2ForImageClassification.from_pretrained(directory, strict=True)
    assert (
        str(info.value).count(" missing: ")
        + str(info.value).count(" unexpected: ")
        + str(info.value).count(" with the wrong shape: ")
        == 1
    )


def test_strict_load_missing_qkv_part(saved_classifier, tmp_path):
    _, source = saved_classifier
    directory = _copy_dir(source, tmp_path / "qkv")
    state = load_file(directory / "model.safetensors")
    del state["swinv2.encoder.layers.0.blocks.1.attention.self.key.weight"]
    save_file(state, directory / "model.safetensors")
    with pytest.raises(CheckpointError) as info:
        Swinv2ForImageClassification.from_pretrained(directory)
    message = str(info.value)
    block = "swinv2.encoder.layers.0.blocks.1.attention.self."
    # The projections are separate parameters (transformers' names): the one absent is missing, by its name.
    assert f"1 missing: {block}key.weight" in message
    # Its siblings in the file have a place in the model: nothing is unexpected.
    assert " unexpected: " not in message


def test_new_num_labels_needs_ignore_mismatched_sizes(saved_classifier):
    saved, directory = saved_classifier
    pattern = re.escape("classifier.weight (checkpoint [5, 32], model [7, 32])")
    with pytest.raises(CheckpointError, match=pattern):
        Swinv2ForImageClassification.from_pretrained(directory, num_labels=7)

    model, report = Swinv2ForImageClassification.from_pretrained(
        directory, num_labels=7, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert report.ok
    assert sorted(report.reinitialized) == ["classifier.bias", "classifier.weight"]
    assert model.config.num_labels == 7
    assert model.config.id2label == {i: f"LABEL_{i}" for i in range(7)}
    assert model.classifier.weight.shape == (7, 32)
    _assert_state_equal(model.swinv2, saved.swinv2)
    # The new head is a fresh initialisation: zero bias, small weights, not a copy of the old rows.
    torch.testing.assert_close(model.classifier.bias, torch.zeros(7))
    assert 0 < model.classifier.weight.std() < 0.05
    assert not torch.allclose(model.classifier.weight[:5], saved.classifier.weight)


def test_classification_checkpoint_into_base_model(saved_classifier):
    saved, directory = saved_classifier
    model, report = Swinv2Model.from_pretrained(directory, output_loading_info=True)
    assert report.ok
    assert sorted(report.unused) == ["classifier.bias", "classifier.weight"]
    _assert_state_equal(model, saved.swinv2)
    x = image_batch(1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x).pooler_output, saved.swinv2(x).pooler_output, rtol=0, atol=0)


def test_classification_checkpoint_into_backbone(saved_classifier):
    saved, directory = saved_classifier
    model, report = Swinv2Backbone.from_pretrained(
        directory, out_features=["stage1", "stage2"], output_loading_info=True
    )
    assert report.ok
    # named as in the file: transformers calls the final norm `layernorm`
    assert sorted(report.unused) == [
        "classifier.bias",
        "classifier.weight",
        "swinv2.layernorm.bias",
        "swinv2.layernorm.weight",
    ]
    expected = {k: v for k, v in saved.swinv2.state_dict().items() if not k.startswith("layernorm.")}
    _assert_same_tensors(dict(model.state_dict()), expected)
    x = image_batch(2, 64, 64)
    with torch.no_grad():
        maps = model(x).feature_maps
        reference = saved.swinv2(x, output_hidden_states=True).reshaped_hidden_states
    assert [tuple(m.shape) for m in maps] == [(2, 16, 16, 16), (2, 32, 8, 8)]
    torch.testing.assert_close(maps[1], reference[-1], rtol=0, atol=0)  # the last stage, before the final norm


def test_base_checkpoint_into_classifier_strict_lists_classifier(tmp_path):
    torch.manual_seed(0)
    base = perturb_(Swinv2Model(tiny_config(num_labels=5)))
    base.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=re.escape("2 missing: classifier.weight, classifier.bias")):
        Swinv2ForImageClassification.from_pretrained(tmp_path, strict=True)
    model, report = Swinv2ForImageClassification.from_pretrained(tmp_path, strict=False, output_loading_info=True)
    assert report.missing == ["classifier.weight", "classifier.bias"]
    assert (report.unexpected, report.mismatched) == ([], [])
    _assert_state_equal(model.swinv2, base)


def test_base_checkpoint_into_classifier_by_default_gets_a_fresh_head_and_a_warning(tmp_path, caplog):
    torch.manual_seed(0)
    base = perturb_(Swinv2Model(tiny_config(num_labels=5)))
    base.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        model = Swinv2ForImageClassification.from_pretrained(tmp_path)
    assert "classifier.weight" in caplog.text and "classifier.bias" in caplog.text
    _assert_state_equal(model.swinv2, base)
    assert model.classifier.weight.shape == (5, base.num_features)


def test_pickle_checkpoint_directory_loads(saved_classifier, tmp_path):
    saved, source = saved_classifier
    (tmp_path / "config.json").write_bytes((source / "config.json").read_bytes())
    torch.save(saved.state_dict(), tmp_path / "pytorch_model.bin")
    model = Swinv2ForImageClassification.from_pretrained(tmp_path)
    _assert_state_equal(model, saved)


def test_sharded_checkpoint_directory_loads(saved_classifier, tmp_path):
    saved, source = saved_classifier
    (tmp_path / "config.json").write_bytes((source / "config.json").read_bytes())
    state = saved.state_dict()
    keys = sorted(state)
    halves = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    weight_map = {}
    for shard, names in halves.items():
        save_file({k: state[k].contiguous() for k in names}, tmp_path / shard)
        weight_map |= dict.fromkeys(names, shard)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}), encoding="utf-8")
    _assert_state_equal(Swinv2ForImageClassification.from_pretrained(tmp_path), saved)


# ------------------------------------------------------------------------------ from_pretrained paths


def test_nonexistent_local_path(tmp_path):
    path = tmp_path / "no" / "such" / "model"
    pattern = re.escape(f"no model directory at '{path}'; pass a local directory holding config.json")
    with pytest.raises(FileNotFoundError, match=pattern):
        Swinv2ForImageClassification.from_pretrained(path)


def test_file_instead_of_directory(saved_classifier):
    _, directory = saved_classifier
    path = directory / "model.safetensors"
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"'{path}' is a file; from_pretrained expects a model directory")
    ):
        Swinv2Model.from_pretrained(path)


def test_hub_id_without_huggingface_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so that "someone/swinv2-tiny" is not a local directory
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(FileNotFoundError) as info:
        Swinv2ForImageClassification.from_pretrained("someone/swinv2-tiny")
    message = str(info.value)
    assert "'someone/swinv2-tiny' is not a local directory, and huggingface_hub is not installed" in message
    assert "pass a local directory holding config.json and model.safetensors" in message


def test_hub_download_failure_is_one_error(tmp_path, monkeypatch):
    import types

    def snapshot_download(repo_id, allow_patterns):
        raise ConnectionError("offline")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=snapshot_download))
    pattern = re.escape("cannot fetch 'someone/swinv2-tiny' from the Hugging Face Hub (ConnectionError: offline)")
    with pytest.raises(FileNotFoundError, match=pattern) as info:
        Swinv2Model.from_pretrained("someone/swinv2-tiny")
    assert "pass a local directory" in str(info.value)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [(torch.float64, torch.float64), ("bfloat16", torch.bfloat16), ("torch.float16", torch.float16)],
)
def test_from_pretrained_dtype(saved_classifier, dtype, expected):
    saved, directory = saved_classifier
    model = Swinv2ForImageClassification.from_pretrained(directory, dtype=dtype, device="cpu")
    assert model.dtype == expected
    assert all(p.dtype == expected for p in model.parameters())
    assert model.device == torch.device("cpu")
    for key, tensor in saved.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], tensor.to(expected), rtol=0, atol=0)


def test_from_pretrained_torch_dtype_alias_and_auto(saved_classifier):
    _, directory = saved_classifier
    assert Swinv2Model.from_pretrained(directory, torch_dtype=torch.float64).dtype == torch.float64
    assert Swinv2Model.from_pretrained(directory, dtype="auto").dtype == torch.float32  # saved as float32


def test_from_pretrained_float64_runs(saved_classifier):
    saved, directory = saved_classifier
    model = Swinv2ForImageClassification.from_pretrained(directory, dtype=torch.float64)
    x = image_batch(1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x.double()).logits, saved(x).logits.double(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", ["int8", "long", "not_a_dtype", "auto_"])
def test_from_pretrained_bad_dtype(saved_classifier, dtype):
    _, directory = saved_classifier
    with pytest.raises(ValueError, match=re.escape(f"dtype must be a floating torch dtype or its name; got {dtype!r}")):
        Swinv2Model.from_pretrained(directory, dtype=dtype)


def test_from_pretrained_config_override_keeps_weights(saved_classifier):
    saved, directory = saved_classifier
    model = Swinv2ForImageClassification.from_pretrained(directory, config=saved.config.replace(window_size=2))
    assert model.config.window_size == 2
    _assert_state_equal(model, saved)


def test_save_pretrained_writes_transformers_names(saved_classifier):
    saved, directory = saved_classifier
    state = load_file(directory / "model.safetensors")
    assert "swinv2.encoder.layers.0.blocks.0.attention.self.query.weight" in state
    assert not any(".qkv." in k for k in state)
    config = json.loads((directory / "config.json").read_text())
    assert config["architectures"] == ["Swinv2ForImageClassification"]
    assert config["dtype"] == "float32"
    assert os.path.getsize(directory / "model.safetensors") > 0
    torch.testing.assert_close(state["classifier.weight"], saved.classifier.weight.detach(), rtol=0, atol=0)


def test_text_file_named_bin(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"hello world, definitely not a checkpoint")
    with pytest.raises(CheckpointError, match=re.escape(f"cannot read '{path}': ")):
        read_state_dict(path)


def test_unknown_top_level_key_is_reported_by_its_file_name(saved_classifier, tmp_path):
    _, source = saved_classifier
    directory = _copy_dir(source, tmp_path / "extra-top-level")
    state = load_file(directory / "model.safetensors")
    state["toplevel.weight"] = torch.zeros(2)
    save_file(state, directory / "model.safetensors")
    with pytest.raises(CheckpointError, match=re.escape("1 unexpected: toplevel.weight")):
        Swinv2ForImageClassification.from_pretrained(directory)


@pytest.mark.parametrize(
    ("size", "expected"), [(123, 123), ("5GB", 5 * 10**9), ("200MB", 200 * 10**6), ("1.5KB", 1500)]
)
def test_shard_sizes_read_as_huggingface_hub_reads_them(size, expected):
    assert parse_shard_size(size) == expected


@pytest.mark.parametrize("size", [0, -3, True, "5GiB", "MB", "lots"])
def test_bad_shard_sizes_are_refused_with_the_value(size):
    with pytest.raises(ValueError, match=re.escape(repr(size))):
        parse_shard_size(size)


def test_shards_fill_in_key_order_and_a_large_tensor_gets_its_own_at_once():
    # as huggingface_hub's split_torch_state_dict_into_shards: an oversized tensor's shard is closed as
    # soon as it is met, while the shard being filled stays open
    state = {"a": torch.zeros(2), "b": torch.zeros(2), "big": torch.zeros(10), "c": torch.zeros(3), "d": torch.zeros(1)}
    assert split_into_shards(state, max_bytes=16) == [["big"], ["a", "b"], ["c", "d"]]
