"""Other layouts into our models: timm's own models, the Microsoft release layout, SimMIM pre-training.

Each file is built from a peer's model with random, perturbed weights, loaded with
`load_checkpoint`, and compared with that peer's outputs (fp32, atol 1e-5).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
import transformers
from safetensors.torch import save_file

from helpers import TINY_SHAPED, hf_config, image_batch, perturb_
from swinv2 import (
    CheckpointError,
    Swinv2Config,
    Swinv2ForImageClassification,
    Swinv2ForMaskedImageModeling,
    detect_layout,
    get_variant,
    load_checkpoint,
    save_timm,
)
from swinv2.io.checkpoints import read_state_dict
from swinv2.io.keymaps import MICROSOFT, MICROSOFT_SIMMIM, TIMM, TRANSFORMERS, transformers_encoder_to_official
from swinv2.loading import to_microsoft

ATOL = 1e-5


def microsoft_layout_from_timm(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The documented layout rules: merging moved back a stage, `head.fc` -> `head`, buffers added, under `model`."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        merge = re.match(r"layers\.(\d+)\.downsample\.(.+)$", key)
        if merge:
            key = f"layers.{int(merge[1]) - 1}.downsample.{merge[2]}"
        out[key.replace("head.fc.", "head.")] = tensor
    blocks = {m[0] for k in out if (m := re.match(r"layers\.\d+\.blocks\.\d+\.", k))}
    for block in blocks:  # stored derived buffers, with values that must not matter
        out[block + "attn_mask"] = torch.full((4, 64, 64), 7.0)
        out[block + "attn.relative_coords_table"] = torch.full((1, 15, 15, 2), 3.0)
        out[block + "attn.relative_position_index"] = torch.zeros(64, 64, dtype=torch.long)
    return {"model": out}


@pytest.fixture(scope="module")
def tiny_timm() -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_(timm.create_model("swinv2_tiny_window8_256", pretrained=False)).eval()


@pytest.mark.parametrize(
    ("variant", "size"),
    [
        ("swinv2_tiny_window8_256", (256, 256)),
        ("swinv2_small_window16_256", (256, 256)),
        ("swinv2_base_window12to16_192to256", (256, 256)),
        ("swinv2_base_window12_192", (192, 192)),
    ],
)
def test_timm_variants_load_and_agree(variant: str, size: tuple[int, int], tmp_path: Path) -> None:
    torch.manual_seed(0)
    theirs = perturb_(timm.create_model(variant, pretrained=False)).eval()
    save_file(theirs.state_dict(), tmp_path / "timm.safetensors")
    ours = load_checkpoint(tmp_path / "timm.safetensors", variant=variant)
    assert isinstance(ours, Swinv2ForImageClassification)
    assert ours.config.num_labels == get_variant(variant).config.num_labels
    x = image_batch(1, *size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, theirs(x), atol=ATOL, rtol=0)


def test_ours_saves_a_timm_file_that_timm_loads_strictly(tiny_timm: torch.nn.Module, tmp_path: Path) -> None:
    torch.save(tiny_timm.state_dict(), tmp_path / "timm.pth")
    ours = load_checkpoint(tmp_path / "timm.pth", variant="swinv2-tiny-patch4-window8-256")
    for name in ("out.safetensors", "out.pth"):
        save_timm(ours, tmp_path / name)
        fresh = timm.create_model("swinv2_tiny_window8_256", pretrained=False).eval()
        fresh.load_state_dict(read_state_dict(tmp_path / name), strict=True)
        x = image_batch(1, 256, 256)
        with torch.no_grad():
            torch.testing.assert_close(fresh(x), tiny_timm(x), atol=ATOL, rtol=0)


def test_microsoft_release_layout_loads_and_agrees(tiny_timm: torch.nn.Module, tmp_path: Path) -> None:
    torch.save(microsoft_layout_from_timm(tiny_timm.state_dict()), tmp_path / "swinv2_tiny_patch4_window8_256.pth")
    ours = load_checkpoint(tmp_path / "swinv2_tiny_patch4_window8_256.pth", variant="swinv2-tiny-patch4-window8-256")
    x = image_batch(2, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, tiny_timm(x), atol=ATOL, rtol=0)
    # and back: our model in the release's names equals the file's learned tensors
    written = to_microsoft(ours)
    source = microsoft_layout_from_timm(tiny_timm.state_dict())["model"]
    assert set(written) == {k for k in source if not re.search(r"(attn_mask|relative_\w+)$", k)}
    for key, tensor in written.items():
        torch.testing.assert_close(tensor, source[key], atol=0, rtol=0)


def test_microsoft_simmim_layout_loads_and_agrees_with_transformers(tmp_path: Path) -> None:
    config = Swinv2Config(**TINY_SHAPED, image_size=256, window_size=8, drop_path_rate=0.0)
    theirs = perturb_(transformers.Swinv2ForMaskedImageModeling(hf_config(config))).eval()
    ours = Swinv2ForMaskedImageModeling(config)
    ours.load_hf_state_dict(theirs.state_dict())
    state = ours.state_dict()
    encoder = {k.removeprefix("swinv2."): v for k, v in state.items() if k.startswith("swinv2.")}
    official = transformers_encoder_to_official(encoder)  # the release's names: patch_embed, layers, attn.qkv ...
    assert official.unmatched == []
    # the SimMIM release keeps the encoder under `encoder.`, the decoder as it is
    simmim = {"encoder." + k: v for k, v in official.tensors.items()}
    simmim |= {k: v for k, v in state.items() if not k.startswith("swinv2.")}
    assert sorted(k for k in simmim if not k.startswith("encoder.")) == ["decoder.0.bias", "decoder.0.weight"]
    simmim["encoder.layers.0.blocks.1.attn_mask"] = torch.zeros(64, 64, 64)
    torch.save({"model": simmim}, tmp_path / "simmim.pth")

    loaded = load_checkpoint(tmp_path / "simmim.pth", config=config)
    assert isinstance(loaded, Swinv2ForMaskedImageModeling)
    x = image_batch(2, 256, 256)
    mask = torch.rand(2, 64 * 64, generator=torch.Generator().manual_seed(3)) < 0.5
    with torch.no_grad():
        expected = theirs(x, bool_masked_pos=mask)
        actual = loaded(x, bool_masked_pos=mask)
    torch.testing.assert_close(actual.reconstruction, expected.reconstruction, atol=ATOL, rtol=0)
    torch.testing.assert_close(actual.loss, expected.loss, atol=ATOL, rtol=0)


def test_transformers_files_and_directories_load_as_their_class(tmp_path: Path) -> None:
    config = Swinv2Config(embed_dim=32, depths=(2, 2), num_heads=(2, 4), image_size=64, window_size=4, num_labels=3)
    theirs = perturb_(transformers.Swinv2ForImageClassification(hf_config(config))).eval()
    theirs.save_pretrained(tmp_path / "dir")
    save_file(theirs.state_dict(), tmp_path / "bare.safetensors")
    x = image_batch(1, 64, 64)
    with torch.no_grad():
        expected = theirs(x).logits
        from_dir = load_checkpoint(tmp_path / "dir")
        from_file = load_checkpoint(tmp_path / "bare.safetensors", config=config)
        torch.testing.assert_close(from_dir(x).logits, expected, atol=ATOL, rtol=0)
        torch.testing.assert_close(from_file(x).logits, expected, atol=ATOL, rtol=0)


def test_layout_detection(tiny_timm: torch.nn.Module) -> None:
    timm_state = tiny_timm.state_dict()
    assert detect_layout(timm_state) == TIMM
    assert detect_layout(microsoft_layout_from_timm(timm_state)["model"]) == MICROSOFT
    no_head = {k: v for k, v in timm_state.items() if not k.startswith("head")}
    assert detect_layout(no_head) == TIMM  # merging at the start of stage 2 is timm's
    ms_no_head = microsoft_layout_from_timm(no_head)["model"]
    assert detect_layout(ms_no_head) == MICROSOFT
    assert detect_layout({"encoder." + k: v for k, v in ms_no_head.items()}) == MICROSOFT_SIMMIM
    hf = transformers.Swinv2Model(hf_config(Swinv2Config(embed_dim=16, depths=(1,), num_heads=(1,), image_size=32)))
    assert detect_layout(hf.state_dict()) == TRANSFORMERS


def test_other_architectures_are_refused_by_name(tmp_path: Path) -> None:
    v1 = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).state_dict()
    with pytest.raises(CheckpointError, match=re.escape("'v1.pth' is a Swin Transformer V1 checkpoint")):
        detect_layout(v1, "v1.pth")
    with pytest.raises(CheckpointError, match=re.escape("'lin.pth' does not look like a Swin V2 checkpoint")):
        detect_layout(torch.nn.Linear(3, 4).state_dict(), "lin.pth")


def test_a_variant_of_other_shapes_is_refused_naming_the_file(tiny_timm: torch.nn.Module, tmp_path: Path) -> None:
    torch.save(tiny_timm.state_dict(), tmp_path / "tiny.pth")
    context = "(timm layout, read as swinv2-small-patch4-window8-256)"
    pattern = rf"checkpoint '.*tiny\.pth' {re.escape(context)} does not fit the model: \d+ missing"
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(tmp_path / "tiny.pth", variant="swinv2_small_window8_256")
    with pytest.raises(ValueError, match="carries no config"):
        load_checkpoint(tmp_path / "tiny.pth")
