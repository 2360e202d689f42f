"""`swinv2 convert` through a real subprocess: layouts in, transformers/timm out, and every error path.

Sources are written with timm and transformers themselves (a two-stage 64 px model, so each run is
about two seconds, mostly importing torch); one case converts a real variant's shapes (Swin V2-T).
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import timm
import torch
import transformers
from safetensors.torch import load_file, save_file
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer_v2 import SwinTransformerV2

from helpers import hf_config, image_batch, perturb_, timm_model, tiny_config
from swinv2 import Swinv2Config

ATOL = 1e-5
NUM_CLASSES = 5
COMMAND = [sys.executable, "-m", "swinv2.cli"]
ERROR = "swinv2 convert: error: "


def run_cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd, check=False
    )


def _microsoft_layout(timm_state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The official release's names: merging at the end of stage i, `head`, derived buffers, under `model`."""
    state = {}
    for key, tensor in timm_state.items():
        merge = re.fullmatch(r"layers\.(\d+)\.downsample\.(.+)", key)
        if merge:
            key = f"layers.{int(merge[1]) - 1}.downsample.{merge[2]}"
        elif key.startswith("head.fc."):
            key = "head." + key.removeprefix("head.fc.")
        state[key] = tensor
    # derived tables the release stores; the converter must drop them (any shape will do)
    state["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    state["layers.0.blocks.0.attn.relative_coords_table"] = torch.zeros(1, 7, 7, 2)
    state["layers.0.blocks.1.attn_mask"] = torch.zeros(16, 16, 16)
    return {"model": state}


@dataclass(frozen=True)
class Sources:
    config: Swinv2Config
    config_file: Path
    timm_model: SwinTransformerV2
    timm_pth: Path
    timm_safetensors: Path
    microsoft_pth: Path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    root = tmp_path_factory.mktemp("sources")
    config = tiny_config(num_labels=NUM_CLASSES)
    config_file = config.save_pretrained(root / "config")
    model = timm_model(config)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    assert "head.fc.weight" in state and "layers.1.downsample.reduction.weight" in state  # timm's names
    torch.save(state, root / "timm.pth")
    save_file(state, root / "timm.safetensors")
    torch.save(_microsoft_layout(state), root / "microsoft.pth")
    return Sources(config, config_file, model, root / "timm.pth", root / "timm.safetensors", root / "microsoft.pth")


def _hidden_entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def assert_converted(
    result: subprocess.CompletedProcess[str],
    src: Path,
    dst: Path,
    kind: str,
    model_class: str = "Swinv2ForImageClassification",
) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    (line,) = result.stdout.strip().splitlines()
    assert line.startswith(f"converted '{src}' -> '{dst}' ({kind}, {model_class}, ")
    assert re.search(r"; outputs match \(max abs difference [0-9.e+-]+\)$", line), line
    assert _hidden_entries(dst.parent) == []  # no staging directory left behind


def assert_same_logits_as_timm(hf_dir: Path, timm_model: torch.nn.Module, size: int = 64) -> None:
    """transformers itself loads the written directory and agrees with the timm source model."""
    assert sorted(p.name for p in hf_dir.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    theirs = transformers.Swinv2ForImageClassification.from_pretrained(hf_dir).eval()
    x = image_batch(2, size, size, seed=3)
    with torch.no_grad():
        expected = timm_model(x)
        torch.testing.assert_close(theirs(pixel_values=x).logits, expected, atol=ATOL, rtol=0)
    assert expected.abs().max() > 0.1  # the logits are not trivially equal


def assert_one_line_error(result: subprocess.CompletedProcess[str], *phrases: str) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith(ERROR), line
    for phrase in phrases:
        assert phrase in line, line
    return line


# ----------------------------------------------------------------------------------- success


def test_timm_pth_to_transformers_directory(sources, tmp_path):
    dst = tmp_path / "nested" / "hf"  # missing parents are created
    result = run_cli("convert", sources.timm_pth, dst, "--config", sources.config_file, cwd=tmp_path)
    assert_converted(result, sources.timm_pth, dst, "a transformers directory")
    assert_same_logits_as_timm(dst, sources.timm_model)
    assert transformers.Swinv2Config.from_pretrained(dst).num_labels == NUM_CLASSES


def test_timm_safetensors_to_transformers_directory(sources, tmp_path):
    dst = tmp_path / "hf"
    result = run_cli("convert", sources.timm_safetensors, dst, "--config", sources.config_file)
    assert_converted(result, sources.timm_safetensors, dst, "a transformers directory")
    assert_same_logits_as_timm(dst, sources.timm_model)


def test_microsoft_pth_to_transformers_directory(sources, tmp_path):
    dst = tmp_path / "hf"
    result = run_cli("convert", sources.microsoft_pth, dst, "--config", sources.config_file)
    assert_converted(result, sources.microsoft_pth, dst, "a transformers directory")
    assert_same_logits_as_timm(dst, sources.timm_model)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_transformers_directory_to_timm_file(sources, tmp_path, suffix):
    torch.manual_seed(1)
    reference = perturb_(transformers.Swinv2ForImageClassification(hf_config(sources.config)), seed=1).eval()
    reference.save_pretrained(tmp_path / "hf")
    dst = tmp_path / f"timm{suffix}"
    result = run_cli("convert", tmp_path / "hf", dst, "--to", "timm")
    assert_converted(result, tmp_path / "hf", dst, "a timm state dict")
    state = load_file(dst) if suffix == ".safetensors" else torch.load(dst, map_location="cpu", weights_only=True)
    fresh = timm_model(sources.config, seed=2)
    fresh.load_state_dict(state, strict=True)
    x = image_batch(2, 64, 64, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), reference(pixel_values=x).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("model_class", ["Swinv2ForImageClassification", "Swinv2ForMaskedImageModeling"])
def test_transformers_directory_to_transformers_directory(tmp_path, model_class):
    """Re-writing a transformers directory keeps its class, label names and outputs."""
    config = hf_config(tiny_config(num_labels=3, encoder_stride=8))
    config.id2label = {0: "cat", 1: "dog", 2: "emu"}
    config.label2id = {"cat": 0, "dog": 1, "emu": 2}
    cls = getattr(transformers, model_class)
    torch.manual_seed(0)
    source = perturb_(cls(config)).eval()
    source.save_pretrained(tmp_path / "src")
    dst = tmp_path / "dst"
    result = run_cli("convert", tmp_path / "src", dst)
    assert_converted(result, tmp_path / "src", dst, "a transformers directory", model_class)
    written = cls.from_pretrained(dst).eval()
    assert written.config.architectures == [model_class]
    assert written.config.id2label == config.id2label
    x = image_batch(1, 64, 64, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(written(pixel_values=x)[0], source(pixel_values=x)[0], atol=ATOL, rtol=0)


def test_real_variant_by_its_timm_name(tmp_path):
    """Swin V2-T's own shapes (28.35 M parameters), named by timm's name."""
    torch.manual_seed(0)
    model = perturb_(timm.create_model("swinv2_tiny_window8_256", pretrained=False), scale=0.02).eval()
    src = tmp_path / "swinv2_tiny.pth"
    torch.save(model.state_dict(), src)
    dst = tmp_path / "hf"
    result = run_cli("convert", src, dst, "--variant", "swinv2_tiny_window8_256")
    assert_converted(result, src, dst, "a transformers directory")
    assert "28.35 M parameters" in result.stdout
    assert_same_logits_as_timm(dst, model, size=256)


# ------------------------------------------------------------------------------ destinations


def test_existing_destination_needs_overwrite_and_is_then_replaced(sources, tmp_path):
    dst = tmp_path / "hf"
    dst.mkdir()
    (dst / "keep.txt").write_text("old\n", encoding="utf-8")
    args = ("convert", sources.timm_pth, dst, "--config", sources.config_file)

    refused = run_cli(*args)
    assert_one_line_error(refused, f"'{dst}' exists; pass --overwrite to replace it")
    assert sorted(p.name for p in dst.iterdir()) == ["keep.txt"]  # untouched
    assert _hidden_entries(tmp_path) == []

    replaced = run_cli(*args, "--overwrite")
    assert_converted(replaced, sources.timm_pth, dst, "a transformers directory")
    assert not (dst / "keep.txt").exists()
    assert_same_logits_as_timm(dst, sources.timm_model)


@pytest.mark.parametrize("stage", ["reading", "writing"])
def test_failed_conversion_leaves_no_destination_and_no_temporary_entries(sources, tmp_path, stage):
    if stage == "reading":  # fails while loading the source, before anything is staged
        dst = tmp_path / "hf"
        result = run_cli("convert", sources.timm_pth, dst, "--variant", "swinv2-small-patch4-window8-256")
        assert_one_line_error(result, "does not fit the model")
    else:  # fails after the staging directory exists: timm has no masked-image-modeling model
        mim = transformers.Swinv2ForMaskedImageModeling(hf_config(tiny_config(encoder_stride=8)))
        mim.save_pretrained(tmp_path / "simmim")
        dst = tmp_path / "timm.pth"
        result = run_cli("convert", tmp_path / "simmim", dst, "--to", "timm")
        assert_one_line_error(result, "timm has no equivalent of Swinv2ForMaskedImageModeling")
    assert not dst.exists()
    assert _hidden_entries(tmp_path) == []


# --------------------------------------------------------------------------------- bad input


def _bad_source(kind: str, root: Path, sources: Sources) -> tuple[Path, list[str], list[str]]:
    """(SRC, extra arguments, phrases the one-line message must hold besides the quoted file name)."""
    config = ["--config", str(sources.config_file)]
    if kind == "missing":
        return root / "absent.pth", config, ["no such file or directory"]
    if kind == "text-pth":
        path = root / "notes.pth"
        path.write_text("these are not weights\n", encoding="utf-8")
        return path, config, ["cannot read", "not a PyTorch checkpoint"]
    if kind == "empty-safetensors":
        path = root / "empty.safetensors"
        path.touch()
        return path, config, ["cannot read", "not a valid safetensors file"]
    if kind == "linear":
        path = root / "linear.pth"
        torch.save(torch.nn.Linear(3, 4).state_dict(), path)
        return path, config, ["does not look like a Swin V2 checkpoint", "among its 2 tensors"]
    if kind == "resnet":
        path = root / "resnet18.pth"
        state = timm.create_model("resnet18", pretrained=False, num_classes=NUM_CLASSES).state_dict()
        torch.save(state, path)
        return path, config, ["does not look like a Swin V2 checkpoint", f"among its {len(state)} tensors"]
    if kind == "swin-v1":
        path = root / "swin_v1.pth"
        v1 = SwinTransformer(
            img_size=64, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4, num_classes=5
        )
        torch.save(v1.state_dict(), path)
        return path, config, ["is a Swin Transformer V1 checkpoint", "not V2"]
    if kind == "empty-directory":
        path = root / "empty_dir"
        path.mkdir()
        return path, config, ["no weights in", "expected model.safetensors"]
    if kind == "wrong-variant":
        variant = ["--variant", "swinv2-small-patch4-window8-256"]
        phrases = ["read as swinv2-small-patch4-window8-256", "does not fit the model", "missing: ", "wrong shape: "]
        return sources.timm_pth, variant, [*phrases, "more"]
    if kind == "timm-without-config":
        return sources.timm_pth, [], ["carries no config", "name a variant"]
    if kind == "microsoft-without-config":
        return sources.microsoft_pth, [], ["carries no config", "name a variant"]
    raise AssertionError(kind)


def _bad_config(kind: str, root: Path) -> Path:
    if kind == "missing-config":
        return root / "absent.json"
    path = root / "config.json"
    path.write_text("{not json", encoding="utf-8")
    return path


BAD = [
    "missing",
    "text-pth",
    "empty-safetensors",
    "linear",
    "resnet",
    "swin-v1",
    "empty-directory",
    "wrong-variant",
    "timm-without-config",
    "microsoft-without-config",
]


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_is_one_line_naming_the_file(sources, tmp_path, kind):
    src, extra, phrases = _bad_source(kind, tmp_path, sources)
    dst = tmp_path / "out"
    line = assert_one_line_error(run_cli("convert", src, dst, *extra), f"'{src}'", *phrases)
    assert "Traceback" not in line
    assert not dst.exists()
    assert _hidden_entries(tmp_path) == []


@pytest.mark.parametrize(
    ("kind", "phrase"),
    [("missing-config", "no config file at"), ("invalid-config", "not valid JSON")],
)
def test_bad_config_file_is_one_line_naming_it(sources, tmp_path, kind, phrase):
    config = _bad_config(kind, tmp_path)
    dst = tmp_path / "out"
    assert_one_line_error(run_cli("convert", sources.timm_pth, dst, "--config", config), f"'{config}'", phrase)
    assert not dst.exists()


# ------------------------------------------------------------------------------------ misuse


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["--to", "onnx"], "argument --to: invalid choice: 'onnx'"),
        (
            ["--variant", "swinv2-tiny-patch4-window8-265"],
            "unknown Swin V2 variant 'swinv2-tiny-patch4-window8-265'; did you mean 'swinv2-tiny-patch4-window8-256'",
        ),
        (["--variant", "swinv2_tiny_window8_256", "--config", "CONFIG"], "not allowed with argument"),
    ],
    ids=["no-arguments", "unknown-to", "unknown-variant", "variant-and-config"],
)
def test_misuse_exits_2_with_usage(sources, tmp_path, args, phrase):
    dst = tmp_path / "out"
    args = [str(sources.config_file) if a == "CONFIG" else a for a in args]
    argv = ["convert", sources.timm_pth, dst, *args] if args else []
    result = run_cli(*argv)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("usage: swinv2")
    assert phrase in result.stderr
    assert not dst.exists()


def test_console_script_is_installed_next_to_the_interpreter():
    script = Path(sys.executable).parent / "swinv2"
    assert script.is_file()
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: swinv2")
    assert "convert" in result.stdout


def test_backbone_directory_converts_comparing_every_feature_map(tmp_path):
    config = hf_config(tiny_config(out_features=["stem", "stage1", "stage2"]))
    torch.manual_seed(0)
    perturb_(transformers.Swinv2Backbone(config)).save_pretrained(tmp_path / "src")
    result = run_cli("convert", tmp_path / "src", tmp_path / "dst")
    assert_converted(result, tmp_path / "src", tmp_path / "dst", "a transformers directory", "Swinv2Backbone")


def test_overwrite_works_beside_leftovers_of_an_interrupted_run(sources, tmp_path):
    dst = tmp_path / "hf"
    dst.mkdir()
    leftover = tmp_path / ".hf.old"
    leftover.mkdir()
    (leftover / "stale.txt").write_text("from an earlier crash\n", encoding="utf-8")
    result = run_cli("convert", sources.timm_pth, dst, "--config", sources.config_file, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert _hidden_entries(tmp_path) == [".hf.old"]  # someone else's leftovers are not ours to delete


def test_a_variant_for_a_directory_with_its_own_config_is_refused(sources, tmp_path):
    run_cli("convert", sources.timm_pth, tmp_path / "hf", "--config", sources.config_file)
    result = run_cli("convert", tmp_path / "hf", tmp_path / "again", "--variant", "swinv2_tiny_window8_256")
    assert_one_line_error(result, f"'{tmp_path / 'hf'}' carries its own config.json")
