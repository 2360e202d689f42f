"""Our `Swinv2Backbone` in transformers' `UperNetForSemanticSegmentation`: same logits as its own backbone.

The head is built by transformers around a tiny Swin V2 backbone config (perturbed weights); its `backbone`
is then replaced by ours, loaded strictly from that backbone's state dict. fp32, atol 1e-5.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from helpers import hf_config, image_batch, perturb_, tiny_config  # noqa: E402
from swinv2 import Swinv2Backbone  # noqa: E402

ATOL = 1e-5


# the auxiliary head reads the third map (transformers' default `auxiliary_in_index`)
@pytest.mark.parametrize(
    ("out_features", "auxiliary"), [(["stage1", "stage2"], False), (["stem", "stage1", "stage2"], True)]
)
def test_upernet_with_our_backbone(out_features: list[str], auxiliary: bool) -> None:
    config = tiny_config(out_features=out_features)
    upernet_config = transformers.UperNetConfig(
        backbone_config=hf_config(config),
        hidden_size=32,
        auxiliary_in_channels=32,
        use_auxiliary_head=auxiliary,
        num_labels=5,
    )
    torch.manual_seed(0)
    theirs = perturb_(transformers.UperNetForSemanticSegmentation(upernet_config)).eval()
    x = image_batch(2, 64, 64)
    with torch.no_grad():
        expected = theirs(x).logits

    ours = Swinv2Backbone(config).eval()
    ours.load_state_dict(theirs.backbone.state_dict(), strict=True)
    assert ours.channels == theirs.backbone.channels
    theirs.backbone = ours
    with torch.no_grad():
        actual = theirs(x).logits
        as_tuple = theirs(x, return_dict=False, output_hidden_states=True)
    assert actual.shape == (2, 5, 64, 64)
    torch.testing.assert_close(actual, expected, rtol=0, atol=ATOL)
    torch.testing.assert_close(as_tuple[0], expected, rtol=0, atol=ATOL)
