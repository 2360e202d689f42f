"""Bad inputs to every model class raise ValueError (or TypeError) that say what was expected and what came."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from helpers import image_batch, tiny_config
from swinv2 import (
    Swinv2Backbone,
    Swinv2Config,
    Swinv2ForImageClassification,
    Swinv2ForMaskedImageModeling,
    Swinv2Model,
)

MODEL_CLASSES = [Swinv2Model, Swinv2ForImageClassification, Swinv2Backbone, Swinv2ForMaskedImageModeling]


def _build(cls, **changes):
    torch.manual_seed(0)
    # The SimMIM decoder upsamples by encoder_stride: 8 = patch 4 * one merge for the tiny config.
    config = tiny_config(encoder_stride=8, **changes)
    return cls(config).eval()


@pytest.fixture(scope="module", params=MODEL_CLASSES, ids=lambda cls: cls.__name__)
def model(request):
    return _build(request.param)


def _run(model, pixel_values, **kwargs):
    with torch.no_grad():
        return model(pixel_values, **kwargs)


def test_good_input_runs(model):
    out = _run(model, image_batch(2, 64, 64))
    first = out[0] if not hasattr(out, "feature_maps") else out.feature_maps[0]
    assert first.shape[0] == 2
    assert torch.isfinite(first).all()


@pytest.mark.parametrize(
    ("shape", "rank"),
    [((3, 64, 64), 3), ((1, 1, 3, 64, 64), 5), ((64, 64), 2)],
)
def test_wrong_rank(model, shape, rank):
    pattern = re.escape(f"pixel_values must be (B, 3, H, W) floating point; got {rank}-d {shape} float32")
    with pytest.raises(ValueError, match=pattern):
        _run(model, torch.zeros(shape))


@pytest.mark.parametrize("channels", [1, 4])
def test_wrong_channel_count(model, channels):
    pattern = re.escape(f"got {channels} channels: (2, {channels}, 64, 64) float32")
    with pytest.raises(ValueError, match=r"pixel_values must be \(B, 3, H, W\).*" + pattern):
        _run(model, torch.zeros(2, channels, 64, 64))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_integer_dtype(model, dtype):
    name = str(dtype).removeprefix("torch.")
    pattern = re.escape(f"got (1, 3, 64, 64) {name} (convert with .float() and normalise first)")
    with pytest.raises(ValueError, match=pattern):
        _run(model, torch.zeros(1, 3, 64, 64, dtype=dtype))


@pytest.mark.parametrize("shape", [(0, 3, 64, 64), (1, 3, 0, 64), (1, 3, 64, 0)])
def test_empty_batch_or_image(model, shape):
    pattern = re.escape(f"with B, H, W > 0; got an empty batch {shape} float32")
    with pytest.raises(ValueError, match=pattern):
        _run(model, torch.zeros(shape))


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (np.zeros((1, 3, 64, 64), dtype=np.float32), "ndarray"),
        ([[[[0.0] * 64] * 64] * 3], "list"),
        (None, "NoneType"),
    ],
    ids=["ndarray", "list", "None"],
)
def test_non_tensor_input(model, value, type_name):
    pattern = re.escape(f"pixel_values must be a torch.Tensor (B, 3, H, W); got {type_name}")
    with pytest.raises(ValueError, match=pattern):
        _run(model, value)


def test_wrong_channel_count_in_config_is_named():
    model = _build(Swinv2Model, num_channels=1)
    with pytest.raises(ValueError, match=re.escape("pixel_values must be (B, 1, H, W) floating point; got 3 channels")):
        _run(model, torch.zeros(1, 3, 64, 64))
    assert _run(model, torch.zeros(1, 1, 64, 64)).last_hidden_state.shape == (1, 64, 32)


# ------------------------------------------------------------------------------ bool_masked_pos


@pytest.mark.parametrize("shape", [(2, 255), (2, 257), (1, 256), (2, 8, 32), (256,)])
def test_bool_masked_pos_wrong_shape(shape):
    model = _build(Swinv2ForMaskedImageModeling)
    pattern = re.escape(f"bool_masked_pos must be (B, L) = (2, 256) for this input (a 16x16 patch grid); got {shape}")
    with pytest.raises(ValueError, match=pattern):
        _run(model, image_batch(2, 64, 64), bool_masked_pos=torch.zeros(shape, dtype=torch.bool))


def test_bool_masked_pos_shape_follows_the_input_size():
    model = _build(Swinv2ForMaskedImageModeling)
    # 40x24 px -> a 10x6 patch grid: (B, 60) is right, (B, 256) (the config's grid) is not.
    mask = torch.zeros(1, 60, dtype=torch.bool)
    mask[0, ::3] = True
    out = _run(model, image_batch(1, 40, 24), bool_masked_pos=mask)
    assert out.reconstruction.shape == (1, 3, 40, 24)
    assert torch.isfinite(out.loss)
    with pytest.raises(
        ValueError, match=re.escape("(B, L) = (1, 60) for this input (a 10x6 patch grid); got (1, 256)")
    ):
        _run(model, image_batch(1, 40, 24), bool_masked_pos=torch.zeros(1, 256, dtype=torch.bool))


def test_bool_masked_pos_grid_shape_accepted_and_equal_to_flat():
    model = _build(Swinv2ForMaskedImageModeling)
    mask = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(1)) > 0.5
    grid_out = _run(model, image_batch(2, 64, 64), bool_masked_pos=mask)
    flat_out = _run(model, image_batch(2, 64, 64), bool_masked_pos=mask.flatten(1))
    torch.testing.assert_close(grid_out.reconstruction, flat_out.reconstruction)
    torch.testing.assert_close(grid_out.loss, flat_out.loss)


def test_bool_masked_pos_without_mask_token():
    model = _build(Swinv2Model)
    with pytest.raises(ValueError, match=re.escape("bool_masked_pos needs a model built with use_mask_token=True")):
        _run(model, image_batch(2, 64, 64), bool_masked_pos=torch.zeros(2, 256, dtype=torch.bool))


def test_bool_masked_pos_changes_the_output_with_a_mask_token():
    torch.manual_seed(0)
    model = Swinv2Model(tiny_config(), use_mask_token=True).eval()
    with torch.no_grad():
        model.embeddings.mask_token.fill_(3.0)
    x = image_batch(1, 64, 64)
    mask = torch.zeros(1, 256, dtype=torch.bool)
    unmasked = _run(model, x, bool_masked_pos=mask).last_hidden_state
    torch.testing.assert_close(unmasked, _run(model, x).last_hidden_state)
    mask[0, :16] = True
    assert not torch.allclose(_run(model, x, bool_masked_pos=mask).last_hidden_state, unmasked)


# ----------------------------------------------------------------------------- absolute positions


@pytest.mark.parametrize("cls", [Swinv2Model, Swinv2ForImageClassification, Swinv2ForMaskedImageModeling])
def test_absolute_embeddings_need_interpolation_for_other_sizes(cls):
    model = _build(cls, use_absolute_embeddings=True)
    pattern = re.escape(
        "the absolute position table is for a 16x16 patch grid, this input gives 8x12; "
        "pass interpolate_pos_encoding=True to resize it"
    )
    with pytest.raises(ValueError, match=pattern):
        _run(model, image_batch(2, 32, 48))
    out = _run(model, image_batch(2, 32, 48), interpolate_pos_encoding=True)
    assert torch.isfinite(out[0]).all()


def test_absolute_embeddings_interpolation_runs_and_is_identity_at_own_size():
    model = _build(Swinv2Model, use_absolute_embeddings=True)
    with torch.no_grad():
        model.embeddings.position_embeddings.normal_(std=1.0, generator=torch.Generator().manual_seed(0))
    x = image_batch(2, 64, 64)
    plain = _run(model, x).last_hidden_state
    torch.testing.assert_close(_run(model, x, interpolate_pos_encoding=True).last_hidden_state, plain)

    small = _run(model, image_batch(2, 32, 48), interpolate_pos_encoding=True).last_hidden_state
    assert small.shape == (2, 4 * 6, 32)
    assert torch.isfinite(small).all()
    # The interpolated table is really added: zeroing it changes the output.
    with torch.no_grad():
        model.embeddings.position_embeddings.zero_()
    assert not torch.allclose(
        _run(model, image_batch(2, 32, 48), interpolate_pos_encoding=True).last_hidden_state, small
    )


def test_without_absolute_embeddings_any_size_runs():
    model = _build(Swinv2Model)
    out = _run(model, image_batch(1, 37, 50)).last_hidden_state  # padded to 40x52 -> 10x13 -> 5x7
    assert out.shape == (1, 35, 32)
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------------------------- construction


@pytest.mark.parametrize("cls", MODEL_CLASSES)
@pytest.mark.parametrize("config", [None, {"embed_dim": 16}, "config.json"], ids=["None", "dict", "str"])
def test_non_config_rejected(cls, config):
    with pytest.raises(TypeError, match=re.escape(f"config must be a Swinv2Config; got {type(config).__name__}")):
        cls(config)


def test_transformers_config_rejected():
    import transformers

    with pytest.raises(TypeError, match=re.escape("config must be a Swinv2Config; got Swinv2Config")):
        Swinv2Model(transformers.Swinv2Config())
    assert isinstance(tiny_config(), Swinv2Config)


# ------------------------------------------------------------------------------ classification loss


@pytest.fixture(scope="module")
def classifier():
    return _build(Swinv2ForImageClassification, num_labels=3)


@pytest.mark.parametrize("labels_shape", [(3,), (1,), (2, 2)])
def test_single_label_wrong_label_shape(classifier, labels_shape):
    labels = torch.zeros(labels_shape, dtype=torch.long)
    with pytest.raises(
        ValueError, match=re.escape(f"labels must hold one class index per image (2); got shape {labels_shape}")
    ):
        _run(classifier, image_batch(2, 64, 64), labels=labels)


@pytest.mark.parametrize("labels_shape", [(2, 4), (2,), (3, 3)])
def test_multi_label_wrong_label_shape(classifier, labels_shape):
    labels = torch.zeros(labels_shape)
    with pytest.raises(
        ValueError, match=re.escape(f"multi-label targets must have the logits' shape (2, 3); got {labels_shape}")
    ):
        _run(classifier, image_batch(2, 64, 64), labels=labels)


def test_multi_label_problem_type_wrong_shape():
    model = _build(Swinv2ForImageClassification, num_labels=3, problem_type="multi_label_classification")
    with pytest.raises(ValueError, match=re.escape("multi-label targets must have the logits' shape (2, 3); got (2,)")):
        _run(model, image_batch(2, 64, 64), labels=torch.tensor([0, 1]))


def test_single_label_problem_type_wrong_shape():
    model = _build(Swinv2ForImageClassification, num_labels=3, problem_type="single_label_classification")
    with pytest.raises(ValueError, match=re.escape("labels must hold one class index per image (2); got shape (3,)")):
        _run(model, image_batch(2, 64, 64), labels=torch.tensor([0, 1, 2]))


def test_correct_labels_give_the_reference_losses(classifier):
    x = image_batch(2, 64, 64)
    logits = _run(classifier, x).logits
    single = torch.tensor([2, 0])
    torch.testing.assert_close(
        _run(classifier, x, labels=single).loss, torch.nn.functional.cross_entropy(logits, single)
    )
    multi = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, multi)
    torch.testing.assert_close(_run(classifier, x, labels=multi).loss, expected)
