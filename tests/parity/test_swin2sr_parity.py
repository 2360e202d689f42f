"""Parity with transformers 5.24's Swin2SR on the same (perturbed) weights: fp32, atol 1e-5.

Every upsampler with both residual convolutions, at an input whose sides are multiples of the window
(transformers runs it as it is) and at one whose sides are not (transformers fails on it: ours is
compared with transformers run on the same reflect-padded input, cropped to the input's size times
`upscale`). Eval mode, so transformers' missing stochastic depth does not matter.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from helpers import hf_swin2sr_twins
from swinv2 import Swin2SRConfig

ATOL = 1e-5
WINDOW = 4

# (upsampler, upscale): every upsampler, the power-of-two (two 2x steps) and 3x pixel shuffles among them
UPSAMPLERS = [("pixelshuffle", 4), ("pixelshuffle_aux", 3), ("pixelshuffledirect", 3), ("nearest+conv", 4), ("", 1)]
SIZES = {"multiple": (16, 12), "not-multiple": (13, 10)}


def _config(**fields: Any) -> Swin2SRConfig:
    base = dict(image_size=16, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=WINDOW, drop_path_rate=0.0)
    return Swin2SRConfig(**{**base, **fields})


def _pixels(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _their_padded(pixel_values: torch.Tensor) -> torch.Tensor:
    """The input reflect-padded at the bottom and right to whole windows, as transformers pads it itself."""
    pad_h, pad_w = -pixel_values.shape[2] % WINDOW, -pixel_values.shape[3] % WINDOW
    return F.pad(pixel_values, (0, pad_w, 0, pad_h), mode="reflect")


@pytest.mark.parametrize("resi_connection", ["1conv", "3conv"])
@pytest.mark.parametrize(("upsampler", "upscale"), UPSAMPLERS, ids=[u or "none" for u, _ in UPSAMPLERS])
def test_reconstruction_matches(upsampler: str, upscale: int, resi_connection: str) -> None:
    config = _config(upsampler=upsampler, upscale=upscale, resi_connection=resi_connection)
    theirs, ours = hf_swin2sr_twins("Swin2SRForImageSuperResolution", config)
    for name, (height, width) in SIZES.items():
        x = _pixels(2, height, width)
        with torch.no_grad():
            expected = theirs(_their_padded(x)).reconstruction[:, :, : height * upscale, : width * upscale]
            actual = ours(x).reconstruction
        assert actual.shape == (2, 3, height * upscale, width * upscale), name
        torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0, msg=lambda m, name=name: f"{name}: {m}")


def test_a_changed_block_tensor_breaks_parity() -> None:
    """The comparison is sensitive to the blocks' own tensors: a small change of one shifted block's
    temperature moves the reconstruction by more than the tolerance."""
    config = _config()
    theirs, ours = hf_swin2sr_twins("Swin2SRForImageSuperResolution", config)
    with torch.no_grad():
        ours.swin2sr.encoder.stages[1].layers[1].attention.self.logit_scale.add_(0.05)
        x = _pixels(1, 16, 12)
        difference = (ours(x).reconstruction - theirs(x).reconstruction).abs().max().item()
    assert difference > 10 * ATOL


def test_model_outputs_match() -> None:
    """`Swin2SRModel`: last_hidden_state, every hidden state and attention at a multiple of the window;
    last_hidden_state cropped from transformers' run on the padded input at another size."""
    config = _config(resi_connection="3conv")
    theirs, ours = hf_swin2sr_twins("Swin2SRModel", config, seed=1)
    x = _pixels(2, 16, 12, seed=1)
    with torch.no_grad():
        expected = theirs(x, output_hidden_states=True, output_attentions=True)
        actual = ours(x, output_hidden_states=True, output_attentions=True)
    torch.testing.assert_close(actual.last_hidden_state, expected.last_hidden_state, atol=ATOL, rtol=0)
    assert len(actual.hidden_states) == len(expected.hidden_states) == 3
    for ours_state, their_state in zip(actual.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(ours_state, their_state, atol=ATOL, rtol=0)
    assert len(actual.attentions) == len(expected.attentions) == 2
    for ours_probs, their_probs in zip(actual.attentions, expected.attentions, strict=True):
        torch.testing.assert_close(ours_probs, their_probs, atol=ATOL, rtol=0)

    x = _pixels(1, 13, 10, seed=2)
    with torch.no_grad():
        expected_map = theirs(_their_padded(x)).last_hidden_state[:, :, :13, :10]
        actual_map = ours(x).last_hidden_state
    assert actual_map.shape == (1, 16, 13, 10)
    torch.testing.assert_close(actual_map, expected_map, atol=ATOL, rtol=0)


def test_tuple_outputs_match() -> None:
    """return_dict=False: the same tuple layout and values as transformers (reconstruction, hidden states)."""
    config = _config(upsampler="pixelshuffledirect", upscale=2)
    theirs, ours = hf_swin2sr_twins("Swin2SRForImageSuperResolution", config, seed=2)
    x = _pixels(1, 8, 8, seed=3)
    with torch.no_grad():
        expected = theirs(x, output_hidden_states=True, return_dict=False)
        actual = ours(x, output_hidden_states=True, return_dict=False)
    assert len(actual) == len(expected) == 2
    torch.testing.assert_close(actual[0], expected[0], atol=ATOL, rtol=0)
    for ours_state, their_state in zip(actual[1], expected[1], strict=True):
        torch.testing.assert_close(ours_state, their_state, atol=ATOL, rtol=0)
