"""`use_absolute_embeddings=True` with the official semantics.

transformers 5.24 allocates an (1, N+1, C) table and crashes adding it to N tokens (its issue
#37161), so there is no reference forward to compare with. Our table keeps transformers' shape and
the patches use rows 1..N. What is checked instead: a transformers checkpoint loads as it is, the
table's rows 1..N are added right after the patch norm, interpolation is bicubic to the new grid, and
our saved directory loads back into transformers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers

from helpers import hf_config, image_batch, perturb_, tiny_config
from swinv2 import Swinv2ForImageClassification, Swinv2Model

ATOL = 1e-5


def _config(**changes: object):  # type: ignore[no-untyped-def]
    return tiny_config(use_absolute_embeddings=True, num_labels=3, **changes)


def test_transformers_table_loads_with_its_unused_first_row() -> None:
    config = _config()
    theirs = perturb_(transformers.Swinv2ForImageClassification(hf_config(config)))
    table = theirs.swinv2.embeddings.position_embeddings.detach()
    assert table.shape == (1, 16 * 16 + 1, 16)  # transformers' N+1 rows
    ours = Swinv2ForImageClassification(config)
    report = ours.load_hf_state_dict(theirs.state_dict())
    assert report.ok
    assert ours.swinv2.embeddings.position_embeddings.shape == (1, 16 * 16 + 1, 16)  # the same shape
    torch.testing.assert_close(ours.swinv2.embeddings.position_embeddings, table, atol=0, rtol=0)


def test_table_is_added_after_the_patch_norm() -> None:
    model = perturb_(Swinv2Model(_config())).eval()
    x = image_batch(2, 64, 64)
    with torch.no_grad():
        tokens, _ = model.embeddings.patch_embeddings(x)
        tokens = model.embeddings.norm(tokens)  # after the patch norm
        embedded, _ = model.embeddings(x)
    patch_rows = model.embeddings.position_embeddings[:, 1:]  # row 0 is transformers' unused one
    torch.testing.assert_close(embedded, tokens + patch_rows, atol=ATOL, rtol=0)


def test_zero_table_equals_no_table_and_a_table_changes_the_output() -> None:
    with_table = perturb_(Swinv2Model(_config())).eval()
    without = Swinv2Model(tiny_config()).eval()
    state = {k: v for k, v in with_table.state_dict().items() if k != "embeddings.position_embeddings"}
    without.load_state_dict(state)
    x = image_batch(2, 64, 64)
    with torch.no_grad():
        changed = with_table(x).last_hidden_state
        with_table.embeddings.position_embeddings.zero_()
        torch.testing.assert_close(with_table(x).last_hidden_state, without(x).last_hidden_state, atol=ATOL, rtol=0)
    assert (changed - without(x).last_hidden_state).abs().max() > 1e-3


@pytest.mark.parametrize("size", [(96, 64), (48, 48), (70, 90)])
def test_interpolation_is_bicubic_to_the_new_grid(size: tuple[int, int]) -> None:
    model = perturb_(Swinv2Model(_config())).eval()
    x = image_batch(2, *size)
    grid = (-(-size[0] // 4), -(-size[1] // 4))
    table = model.embeddings.position_embeddings.detach()[:, 1:].reshape(1, 16, 16, 16).permute(0, 3, 1, 2)
    resized = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)
    expected_table = resized.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], 16)
    with torch.no_grad():
        tokens, _ = model.embeddings.patch_embeddings(x)
        tokens = model.embeddings.norm(tokens)
        embedded, _ = model.embeddings(x, interpolate_pos_encoding=True)
        out = model(x, interpolate_pos_encoding=True).last_hidden_state
    torch.testing.assert_close(embedded, tokens + expected_table, atol=ATOL, rtol=0)
    assert torch.isfinite(out).all()


def test_interpolation_at_the_native_size_is_the_identity() -> None:
    model = perturb_(Swinv2Model(_config())).eval()
    x = image_batch(2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            model(x, interpolate_pos_encoding=True).last_hidden_state, model(x).last_hidden_state, atol=0, rtol=0
        )


def test_saved_directory_loads_in_transformers(tmp_path: Path) -> None:
    ours = perturb_(Swinv2ForImageClassification(_config()))
    ours.save_pretrained(tmp_path)
    theirs = transformers.Swinv2ForImageClassification.from_pretrained(tmp_path)
    table = theirs.swinv2.embeddings.position_embeddings.detach()
    # the whole table, transformers' unused row 0 included, is written as our parameter holds it
    torch.testing.assert_close(table, ours.swinv2.embeddings.position_embeddings.detach(), atol=0, rtol=0)
    back = Swinv2ForImageClassification.from_pretrained(tmp_path)
    x = image_batch(1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, ours.eval()(x).logits, atol=0, rtol=0)
