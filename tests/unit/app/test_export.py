"""Export: ONNX files that onnxruntime runs with PyTorch's outputs (dynamic batch included), torch.export
programs that reload, the `swinv2 export` command and `swinv2 classify --onnx` without the model code."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from swinv2 import (
    Swin2SRConfig,
    Swin2SRForImageSuperResolution,
    Swinv2Backbone,
    Swinv2Config,
    Swinv2ForImageClassification,
    Swinv2ImageProcessor,
)
from swinv2.export import RELATIVE_TOLERANCE, ExportError, save_onnx, save_program, settings_for, verify_onnx
from swinv2.io.errors import InputError
from swinv2.runtime import OnnxClassifier, read_metadata

onnxruntime = pytest.importorskip("onnxruntime")
PYTHON = sys.executable
TINY = dict(image_size=32, patch_size=4, window_size=4, embed_dim=8, depths=(2, 1), num_heads=(1, 2))


def _classifier() -> Swinv2ForImageClassification:
    torch.manual_seed(0)
    labels = {0: "cat", 1: "dog", 2: "fox"}
    return Swinv2ForImageClassification(Swinv2Config(**TINY, id2label=labels)).eval()


def test_a_backbone_exports_every_feature_map_and_runs_at_any_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Swinv2Backbone(Swinv2Config(**TINY, out_features=["stage1", "stage2"])).eval()
    settings = settings_for(model)
    path = save_onnx(model, tmp_path / "backbone.onnx", settings)  # checks batch 1 and 4 itself
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["stage1", "stage2"]
    assert verify_onnx(path, model, settings, batches=(3, 7))[0] < 1e-5
    assert read_metadata(path)["class"] == "Swinv2Backbone"


@pytest.mark.long  # an export takes 10-40 s; the default suite exports a backbone and a classifier
def test_a_super_resolution_model_exports_at_a_fixed_size_and_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = Swin2SRConfig(embed_dim=8, depths=(2,), num_heads=(2,), window_size=4, upscale=2, image_size=16)
    model = Swin2SRForImageSuperResolution(config).eval()
    settings = settings_for(model, (12, 20), batch_size=2, dynamic_batch=False)
    path = save_onnx(model, tmp_path / "sr.onnx", settings)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pixels = torch.rand(2, 3, 12, 20)
    (got,) = session.run(None, {"pixel_values": pixels.numpy()})
    with torch.no_grad():
        expected = model(pixels).reconstruction
    assert got.shape == (2, 3, 24, 40)
    assert np.abs(got - expected.numpy()).max() < 1e-5
    with pytest.raises(Exception, match=r"(?i)dimension|shape"):  # the batch is fixed in this graph
        session.run(None, {"pixel_values": torch.rand(3, 3, 12, 20).numpy()})


@pytest.mark.long  # tests/unit/models/test_outputs.py saves and reloads programs in the default suite
def test_an_exported_program_reloads_and_agrees_with_eager(tmp_path: Path) -> None:
    model = _classifier()
    path = save_program(model, tmp_path / "model.pt2", settings_for(model))
    program = torch.export.load(str(path))
    pixels = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        (logits,) = program.module()(pixels)
        torch.testing.assert_close(logits, model(pixels).logits, atol=1e-5, rtol=0)


def test_settings_are_checked() -> None:
    model = _classifier()
    with pytest.raises(ExportError, match=r"opset must be from 17 to 23 \(what PyTorch.s exporter writes\); got 9"):
        settings_for(model, opset=9)
    with pytest.raises(ExportError, match="must be positive"):
        settings_for(model, (0, 32))


def test_export_and_classify_with_onnx_on_the_command_line(tmp_path: Path) -> None:
    """`swinv2 export --dynamic-batch` writes a checked file; `swinv2 classify --onnx` gives the labels and
    scores `swinv2 classify --model` gives, from the file's own labels and preprocessing."""
    model_dir = tmp_path / "model"
    _classifier().save_pretrained(model_dir, image_processor=Swinv2ImageProcessor(size={"height": 32, "width": 32}))
    onnx_file = tmp_path / "model.onnx"
    done = subprocess.run(
        [PYTHON, "-m", "swinv2", "export", str(model_dir), "--out", str(onnx_file), "--dynamic-batch"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "checked in onnxruntime at batch 1 and 4" in done.stdout
    rng = np.random.default_rng(0)
    images = []
    for i in range(3):
        images.append(tmp_path / f"image{i}.png")
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(images[-1])
    runs = {}
    for option in (["--model", str(model_dir)], ["--onnx", str(onnx_file)]):
        result = subprocess.run(
            [PYTHON, "-m", "swinv2", "classify", *map(str, images), *option, "--json", "--top-k", "3"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        runs[option[0]] = [json.loads(line) for line in result.stdout.splitlines()]
    for ours, onnx in zip(runs["--model"], runs["--onnx"], strict=True):
        assert [p["label"] for p in ours["predictions"]] == [p["label"] for p in onnx["predictions"]]
        scores = [p["score"] for p in ours["predictions"]], [p["score"] for p in onnx["predictions"]]
        np.testing.assert_allclose(*scores, atol=1e-5)
    again = subprocess.run(
        [PYTHON, "-m", "swinv2", "export", str(model_dir), "--out", str(onnx_file)], capture_output=True, text=True
    )
    assert again.returncode == 1 and again.stderr.strip().endswith("exists; pass --overwrite to replace it")


def test_bad_requests_are_one_line(tmp_path: Path) -> None:
    not_onnx = tmp_path / "fake.onnx"
    not_onnx.write_bytes(b"not a protobuf at all")
    with pytest.raises(InputError, match="cannot read ONNX file"):
        OnnxClassifier(not_onnx)
    done = subprocess.run(
        [PYTHON, "-m", "swinv2", "export", str(tmp_path), "--out", str(tmp_path / "x.onnx"), "--dynamic-size"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "--dynamic-size is not supported" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_graph_is_the_fast_layout(tmp_path: Path) -> None:
    """Per block: one q/k/v product, the output projection, two MLP products and the two attention
    products; the position bias (its MLP's ReLU and sigmoid) and the shift masks are folded into
    constants; no pad, roll or expand at run time."""
    import onnx

    model = _classifier()
    path = save_onnx(model, tmp_path / "model.onnx", settings_for(model))
    ops = Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    blocks, merges, heads = sum(TINY["depths"]), len(TINY["depths"]) - 1, 1
    assert ops["MatMul"] + ops["Gemm"] == 6 * blocks + merges + heads, ops
    assert not {"Relu", "Sigmoid", "Pad", "Expand", "ScatterND", "Erf"} & set(ops), ops
    assert ops["Gelu"] == blocks


@pytest.mark.parametrize(("precision", "weight_type"), [("fp16", "FLOAT16"), ("int8", "INT8")])
def test_reduced_precision_files_hold_their_stated_accuracy(tmp_path: Path, precision: str, weight_type: str) -> None:
    import onnx

    model = _classifier()
    path = save_onnx(model, tmp_path / f"{precision}.onnx", settings_for(model, precision=precision))
    graph = onnx.load(str(path)).graph
    weights = [t for t in graph.initializer if t.name.endswith("weight") or "quantized" in t.name]
    stored = {onnx.TensorProto.DataType.Name(t.data_type) for t in graph.initializer if len(t.dims) == 2}
    assert weights and weight_type in stored, stored
    difference, scale = verify_onnx(path, model, settings_for(model), batches=(3,))
    assert 0 < difference <= RELATIVE_TOLERANCE[precision] * scale  # lossy, within what is stated
    assert read_metadata(path)["labels"] == {0: "cat", 1: "dog", 2: "fox"}


def test_precision_is_checked_and_the_command_line_defaults_match_the_library() -> None:
    from swinv2.cli import export as export_cli
    from swinv2.export import DEFAULT_OPSET, PRECISIONS

    with pytest.raises(ExportError, match="precision must be one of fp32, fp16, int8; got 'bf16'"):
        settings_for(_classifier(), precision="bf16")
    assert (export_cli.DEFAULT_OPSET, export_cli.PRECISIONS) == (DEFAULT_OPSET, PRECISIONS)
