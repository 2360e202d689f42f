"""Model behaviour beyond peer parity: odd geometries, output conventions, init."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import image_batch, tiny_config
from swinv2 import Swinv2Backbone, Swinv2ForImageClassification, Swinv2ForMaskedImageModeling, Swinv2Model
from swinv2.models.swinv2 import Swinv2SelfAttention


@pytest.mark.parametrize("size", [(32, 48), (16, 48), (48, 16), (4, 4), (1, 1)])
def test_single_image_of_one_window_height(size: tuple[int, int]) -> None:
    """Batch 1 whose padded grid is one window high but several wide (a non-contiguous window view)."""
    model = Swinv2Model(tiny_config()).eval()
    x = image_batch(2, *size)
    with torch.no_grad():
        single = model(x[:1]).last_hidden_state
        batched = model(x).last_hidden_state
    torch.testing.assert_close(single, batched[:1], atol=1e-5, rtol=0)


def test_output_indexing_follows_transformers() -> None:
    model = Swinv2ForImageClassification(tiny_config(num_labels=3)).eval()
    with torch.no_grad():
        out = model(image_batch(2, 64, 64), labels=torch.tensor([0, 2]))
        as_tuple = model(image_batch(2, 64, 64), labels=torch.tensor([0, 2]), return_dict=False)
    assert list(out.keys()) == ["loss", "logits"]
    assert out[0] is out.loss and out["logits"] is out.logits
    torch.testing.assert_close(as_tuple[1], out.logits)
    with pytest.raises(KeyError):
        out["hidden_states"]


def test_fresh_model_initialisation() -> None:
    config = tiny_config(initializer_range=0.02)
    model = Swinv2ForImageClassification(config)
    for module in model.modules():
        if isinstance(module, Swinv2SelfAttention):
            torch.testing.assert_close(module.logit_scale, torch.full_like(module.logit_scale, math.log(10)))
            assert module.query.bias is not None and not module.query.bias.any()
    weight = model.swinv2.encoder.layers[0].blocks[0].intermediate.dense.weight
    assert weight.abs().max() <= 0.04 + 1e-7 and 0.01 < weight.std() < 0.03
    assert not model.classifier.bias.any()


def test_masked_image_modeling_rejects_a_stride_mismatch() -> None:
    with pytest.raises(ValueError, match=r"encoder_stride \(32\) .* set encoder_stride=8"):
        Swinv2ForMaskedImageModeling(tiny_config())


def test_masked_image_modeling_any_size_and_masked_loss_only() -> None:
    model = Swinv2ForMaskedImageModeling(tiny_config(encoder_stride=8)).eval()
    x = image_batch(1, 50, 70)
    grid = (math.ceil(50 / 4), math.ceil(70 / 4))
    nothing = torch.zeros(1, grid[0] * grid[1], dtype=torch.bool)
    everything = torch.ones_like(nothing)
    with torch.no_grad():
        out = model(x, bool_masked_pos=everything)
        empty = model(x, bool_masked_pos=nothing)
    assert out.reconstruction.shape == x.shape
    expected = (x - out.reconstruction).abs().mean()
    torch.testing.assert_close(out.loss, expected, atol=1e-4, rtol=1e-4)
    assert empty.loss.item() == 0.0


def test_backbone_channels_and_maps() -> None:
    backbone = Swinv2Backbone(tiny_config(out_features=["stem", "stage2"])).eval()
    with torch.no_grad():
        maps = backbone(image_batch(1, 64, 64)).feature_maps
    assert backbone.channels == [16, 32]
    assert [tuple(m.shape) for m in maps] == [(1, 16, 16, 16), (1, 32, 8, 8)]
