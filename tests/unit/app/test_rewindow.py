"""`rewindow`: carry a model to another resolution and window, keeping every learned tensor."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import transformers

from helpers import TINY_SHAPED, hf_config, image_batch, perturb_, tiny_config
from swinv2 import (
    Swinv2Backbone,
    Swinv2Config,
    Swinv2ForImageClassification,
    Swinv2ForMaskedImageModeling,
    Swinv2Model,
    rewindow,
)
from swinv2.models.swinv2 import Swinv2SelfAttention, stage_windows

ATOL = 1e-5

# (id, source fields over helpers.tiny_config, target image size, target window)
CASES: list[tuple[str, dict[str, Any], int | tuple[int, int], int]] = [
    ("tiny-64w4-to-96w6", dict(num_labels=3), 96, 6),
    ("tiny-64w4-to-32w8-clamped", dict(num_labels=3), 32, 8),
    ("tiny-64w4-to-96x128w8-nonsquare", dict(num_labels=3), (96, 128), 8),
    ("tiny-shaped-256w8-to-384w24", dict(TINY_SHAPED, image_size=256, window_size=8, num_labels=3), 384, 24),
]
IDS = [c[0] for c in CASES]


def _config(fields: dict[str, Any], **changes: Any) -> Swinv2Config:
    """`tiny_config` (64 px, window 4, two stages) with `fields` and `changes` applied."""
    return tiny_config(**{**fields, **changes})


def _source(fields: dict[str, Any], cls: type = Swinv2ForImageClassification, seed: int = 0, **changes: Any) -> Any:
    torch.manual_seed(seed)
    return perturb_(cls(_config(fields, **changes)), seed=seed).eval()


def _stage_windows(config: Swinv2Config) -> tuple[int, ...]:
    return tuple(stage_windows(config, i)[0] for i in range(config.num_layers))


def _tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor in a model output (nested tuples included)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return []


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else size


# --------------------------------------------------------------------------- learned tensors


@pytest.mark.parametrize(("fields", "size", "window"), [c[1:] for c in CASES], ids=IDS)
def test_every_learned_tensor_is_copied_exactly(fields, size, window):
    source = _source(fields)
    target = rewindow(source, image_size=size, window_size=window)
    assert target is not source
    ours, theirs = dict(target.named_parameters()), dict(source.named_parameters())
    assert sorted(ours) == sorted(theirs)
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name
        assert ours[name].data_ptr() != tensor.data_ptr(), f"{name} is shared, not copied"
    assert sorted(target.state_dict()) == sorted(source.state_dict())


def test_source_model_is_left_unchanged():
    fields = CASES[0][1]
    source = _source(fields)
    x = image_batch(1, 64, 64)
    with torch.no_grad():
        before = source(x).logits
    config_before = source.config.to_dict()
    target = rewindow(source, image_size=96, window_size=6)
    with torch.no_grad():
        target.swinv2.encoder.layers[0].blocks[0].attention.self.logit_scale.add_(1.0)  # editing the copy ...
        after = source(x).logits
    assert source.config.to_dict() == config_before  # ... changes neither the source's config
    assert torch.equal(after, before)  # ... nor its outputs
    assert [stage.windows.window for stage in source.swinv2.encoder.layers] == [4, 4]


# ----------------------------------------------------------------------------- derived tables


@pytest.mark.parametrize(("fields", "size", "window"), [c[1:] for c in CASES], ids=IDS)
def test_derived_tables_equal_a_fresh_build_of_the_new_config(fields, size, window):
    target = rewindow(_source(fields), image_size=size, window_size=window)
    config = target.config
    assert config.image_size == size
    assert config.window_size == window
    fresh = Swinv2ForImageClassification(config)
    pairs = [
        (name, a, b)
        for (name, a), (_, b) in zip(target.named_modules(), fresh.named_modules(), strict=True)
        if isinstance(a, Swinv2SelfAttention)
    ]
    assert len(pairs) == sum(config.depths)
    for name, ours, expected in pairs:
        assert (ours.window, ours.pretrained_window) == (expected.window, expected.pretrained_window), name
        assert torch.equal(ours.relative_coords_table, expected.relative_coords_table), name
        assert torch.equal(ours.relative_position_index, expected.relative_position_index), name
        side = 2 * ours.window - 1
        assert ours.relative_coords_table.shape == (side, side, 2)
    for i, (stage, expected) in enumerate(zip(target.swinv2.encoder.layers, fresh.swinv2.encoder.layers, strict=True)):
        window, shift = stage_windows(config, i)
        # the stage's layout shifts only when it has a shifted (odd) block
        layout = (window, shift if len(stage.blocks) > 1 else 0)
        assert (
            (stage.windows.window, stage.windows.shift) == (expected.windows.window, expected.windows.shift) == layout
        )
        assert [(b.window, b.shift) for b in stage.blocks] == [(b.window, b.shift) for b in expected.blocks]
        assert [(b.window, b.shift) for b in stage.blocks] == [
            (window, shift if j % 2 else 0) for j in range(len(stage.blocks))
        ]


def test_stage_geometry_after_rewindowing_to_384_window_24():
    """The 256/8 -> 384/24 transfer of the paper: grids 96, 48, 24, 12 give windows 24, 24, 24, 12."""
    target = rewindow(_source(CASES[3][1]), image_size=384, window_size=24)
    layers = target.swinv2.encoder.layers
    assert [stage_windows(target.config, i) for i in range(4)] == [(24, 12), (24, 12), (24, 0), (12, 0)]
    assert [s.windows.window for s in layers] == [24, 24, 24, 12]
    # depths (1, 1, 2, 1): only stage 3 has a second (shifted) block, and at 24 its window does not shift
    assert [[(b.window, b.shift) for b in s.blocks] for s in layers] == [
        [(24, 0)],
        [(24, 0)],
        [(24, 0), (24, 0)],
        [(12, 0)],
    ]
    assert [s.blocks[-1].attention.self.pretrained_window for s in layers] == [8, 8, 8, 8]


# ---------------------------------------------------------------------- pretrained windows


@pytest.mark.parametrize(("fields", "size", "window"), [c[1:] for c in CASES], ids=IDS)
def test_zero_pretrained_windows_become_the_source_stage_windows(fields, size, window):
    source = _source(fields)
    assert not any(source.config.pretrained_window_sizes)
    target = rewindow(source, image_size=size, window_size=window)
    expected = _stage_windows(source.config)
    assert target.config.pretrained_window_sizes == expected
    assert [s.blocks[0].attention.self.pretrained_window for s in target.swinv2.encoder.layers] == list(expected)


def test_stage_windows_of_a_clamped_source():
    """A 32 px source with window 8: stage grids 8 and 4, so the trained windows are (8, 4)."""
    source = _source(CASES[0][1], image_size=32, window_size=8)
    target = rewindow(source, image_size=64, window_size=8)
    assert target.config.pretrained_window_sizes == (8, 4)


@pytest.mark.parametrize(
    ("pretrained", "expected"),
    [((3, 2), (3, 2)), ((0, 3), (4, 3)), ((5, 0), (5, 4))],
    ids=["both-set", "first-zero", "second-zero"],
)
def test_non_zero_pretrained_windows_are_kept(pretrained, expected):
    """A non-zero entry already names the window the bias was trained with; a zero one is the stage's own."""
    source = _source(CASES[0][1], pretrained_window_sizes=pretrained)
    target = rewindow(source, image_size=96, window_size=6)
    assert target.config.pretrained_window_sizes == expected
    again = rewindow(target, image_size=128, window_size=8)
    assert again.config.pretrained_window_sizes == expected


def test_fine_tuned_variant_keeps_its_pretraining_windows():
    fields = dict(TINY_SHAPED, image_size=256, window_size=16, pretrained_window_sizes=(12, 12, 12, 6))
    target = rewindow(_source(fields), image_size=384, window_size=24)
    assert target.config.pretrained_window_sizes == (12, 12, 12, 6)


# ------------------------------------------------------------------------- running the result


@pytest.mark.parametrize(("fields", "size", "window"), [c[1:] for c in CASES], ids=IDS)
def test_classifier_runs_at_the_new_size(fields, size, window):
    target = rewindow(_source(fields), image_size=size, window_size=window)
    assert type(target) is Swinv2ForImageClassification
    x = image_batch(2, *_hw(size))
    with torch.no_grad():
        out = target(x, output_hidden_states=True)
    assert out.logits.shape == (2, 3)
    assert torch.isfinite(out.logits).all()
    h, w = (s // 4 for s in _hw(size))
    assert out.reshaped_hidden_states[0].shape == (2, target.config.embed_dim, h, w)


@pytest.mark.parametrize(("fields", "size", "window"), [c[1:] for c in CASES[:2]], ids=IDS[:2])
def test_matches_transformers_built_from_the_new_config(fields, size, window):
    """The re-windowed config means the same to transformers: same logits with the same tensors."""
    target = rewindow(_source(fields), image_size=size, window_size=window)
    reference = transformers.Swinv2ForImageClassification(hf_config(target.config)).eval()
    reference.load_state_dict(target.state_dict())
    x = image_batch(2, size, size)
    with torch.no_grad():
        torch.testing.assert_close(target(x).logits, reference(x).logits, atol=ATOL, rtol=0)


def test_backbone_keeps_its_class_and_returns_maps_at_the_new_size():
    fields = dict(CASES[0][1], out_features=["stem", "stage1", "stage2"])
    source = _source(fields, cls=Swinv2Backbone)
    target = rewindow(source, image_size=96, window_size=6)
    assert type(target) is Swinv2Backbone
    assert target.config.out_features == ["stem", "stage1", "stage2"]
    with torch.no_grad():
        maps = target(image_batch(1, 96, 96)).feature_maps
    assert [tuple(m.shape) for m in maps] == [(1, 16, 24, 24), (1, 16, 24, 24), (1, 32, 12, 12)]
    assert all(torch.isfinite(m).all() for m in maps)


def test_masked_image_modeling_keeps_its_class_and_reconstructs_at_the_new_size():
    source = _source(CASES[0][1], cls=Swinv2ForMaskedImageModeling, encoder_stride=8)
    target = rewindow(source, image_size=96, window_size=6)
    assert type(target) is Swinv2ForMaskedImageModeling
    torch.testing.assert_close(target.swinv2.embeddings.mask_token, source.swinv2.embeddings.mask_token, atol=0, rtol=0)
    mask = torch.zeros(1, 24 * 24, dtype=torch.bool)
    mask[:, ::3] = True
    with torch.no_grad():
        out = target(image_batch(1, 96, 96), bool_masked_pos=mask)
    assert out.reconstruction.shape == (1, 3, 96, 96)
    assert torch.isfinite(out.reconstruction).all()
    assert torch.isfinite(out.loss) and out.loss > 0


def test_base_model_keeps_its_class():
    source = _source(CASES[0][1], cls=Swinv2Model)
    target = rewindow(source, image_size=96, window_size=6)
    assert type(target) is Swinv2Model
    with torch.no_grad():
        out = target(image_batch(1, 96, 96))
    assert out.last_hidden_state.shape == (1, 12 * 12, 32)
    assert out.pooler_output.shape == (1, 32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtype_is_kept(dtype):
    source = _source(CASES[0][1]).to(dtype)
    target = rewindow(source, image_size=96, window_size=6)
    assert {p.dtype for p in target.parameters()} == {dtype}
    attn = target.swinv2.encoder.layers[0].blocks[0].attention.self
    assert attn.relative_coords_table.dtype == dtype
    assert attn.relative_position_index.dtype == torch.long
    for name, tensor in source.named_parameters():
        assert torch.equal(target.get_parameter(name), tensor), name
    with torch.no_grad():
        logits = target(image_batch(1, 96, 96).to(dtype)).logits
    assert logits.dtype == dtype
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("training", [True, False])
def test_training_flag_is_kept(training):
    source = _source(CASES[0][1]).train(training)
    target = rewindow(source, image_size=96, window_size=6)
    assert {m.training for m in target.modules()} == {training}


def test_invalid_window_is_rejected_with_the_config_message():
    source = _source(CASES[0][1])
    with pytest.raises(ValueError, match=re.escape("window_size must be a positive int; got 0")):
        rewindow(source, image_size=96, window_size=0)


# ------------------------------------------------------------------- absolute position table


@pytest.mark.parametrize("cls", [Swinv2ForImageClassification, Swinv2Model, Swinv2Backbone])
@pytest.mark.parametrize("size", [96, (96, 128), 32], ids=["96", "96x128", "32-smaller"])
def test_absolute_table_is_resized_bicubically(cls, size):
    source = _source(CASES[0][1], cls=cls, use_absolute_embeddings=True)
    embeddings = source.swinv2.embeddings if cls is Swinv2ForImageClassification else source.embeddings
    table = embeddings.position_embeddings.detach()  # (1, 1 + 16*16, 16): transformers' unused row 0, then patches
    assert table.shape == (1, 1 + 256, 16)
    first, table = table[:, :1], table[:, 1:]
    h, w = (s // 4 for s in _hw(size))
    grid = table.reshape(1, 16, 16, 16).permute(0, 3, 1, 2)  # (1, C, 16, 16)
    resized = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)  # (1, C, h, w)
    expected = resized.permute(0, 2, 3, 1).reshape(1, h * w, 16)

    target = rewindow(source, image_size=size, window_size=6)
    target_embeddings = target.swinv2.embeddings if cls is Swinv2ForImageClassification else target.embeddings
    resized_table = target_embeddings.position_embeddings.detach()  # (1, 1 + h*w, 16)
    torch.testing.assert_close(resized_table[:, 1:], expected, atol=0, rtol=0)
    torch.testing.assert_close(resized_table[:, :1], first, atol=0, rtol=0)  # the unused row is carried over
    assert target_embeddings.patch_grid == (h, w)
    for name, tensor in source.named_parameters():
        if not name.endswith("position_embeddings"):
            assert torch.equal(target.get_parameter(name), tensor), name
    with torch.no_grad():  # runs at the new size without interpolate_pos_encoding
        out = target(image_batch(1, *_hw(size)))
    tensors = _tensors(out.to_tuple())
    assert tensors
    assert all(torch.isfinite(t).all() for t in tensors)


def test_absolute_table_matches_interpolating_at_run_time():
    """Resizing the table once equals the source model's own `interpolate_pos_encoding` at that size."""
    source = _source(CASES[0][1], use_absolute_embeddings=True, pretrained_window_sizes=(4, 4))
    target = rewindow(source, image_size=96, window_size=4)  # same windows: only the table changes
    x = image_batch(2, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(target(x).logits, source(x, interpolate_pos_encoding=True).logits, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------- identity cases


@pytest.mark.parametrize(
    ("fields", "pretrained"),
    [
        (CASES[0][1], (4, 4)),
        (CASES[0][1], (0, 0)),  # 0 already means "the stage's own window": the same coordinates
        (CASES[3][1], (8, 8, 8, 8)),
    ],
    ids=["tiny-own-windows", "tiny-zeros", "tiny-shaped-own-windows"],
)
def test_same_size_and_window_gives_identical_outputs(fields, pretrained):
    source = _source(fields, pretrained_window_sizes=pretrained)
    size, window = source.config.image_size, source.config.window_size
    target = rewindow(source, image_size=size, window_size=window)
    assert target.config.pretrained_window_sizes == _stage_windows(source.config)
    x = image_batch(2, size, size, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(target(x).logits, source(x).logits, atol=0, rtol=0)


def test_there_and_back_again_gives_identical_outputs():
    source = _source(CASES[0][1], pretrained_window_sizes=(4, 4))
    back = rewindow(rewindow(source, image_size=96, window_size=6), image_size=64, window_size=4)
    assert back.config.to_dict() == source.config.to_dict()
    x = image_batch(2, 64, 64, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, source(x).logits, atol=0, rtol=0)


@pytest.mark.parametrize(
    "options",
    [dict(use_mask_token=True), dict(add_pooling_layer=False)],
    ids=["mask-token", "no-pooling"],
)
def test_base_model_options_are_kept(options):
    torch.manual_seed(0)
    source = perturb_(Swinv2Model(tiny_config(), **options)).eval()
    target = rewindow(source, image_size=96, window_size=6)
    assert (target.embeddings.mask_token is None) == (source.embeddings.mask_token is None)
    assert target.add_pooling_layer == source.add_pooling_layer
    for name, param in source.named_parameters():
        torch.testing.assert_close(dict(target.named_parameters())[name], param, atol=0, rtol=0)
