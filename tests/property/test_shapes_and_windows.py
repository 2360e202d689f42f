"""Property tests: window geometry, padding, window gathers, the shift mask, position tables, eager vs
"auto" blocks, and any-size inputs.

Expected values are rebuilt independently in the tests (plain loops, numpy, or the eager pad, roll and
partition that a fast path replaces), never by calling the function under test a second way.
"""

from __future__ import annotations

import math
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import image_batch, intel_avx512, perturb_, tiny_config
from swinv2 import (
    Swinv2Backbone,
    Swinv2ForImageClassification,
    Swinv2ForMaskedImageModeling,
    Swinv2Model,
)
from swinv2.backends.window_gather import GatherWindows, to_grid, to_windows, window_order
from swinv2.layers.windows import (
    MASKED,
    WindowLayout,
    pad_bottom_right,
    padded_grid,
    shifted_window_mask,
    window_partition,
    window_reverse,
)
from swinv2.models.swinv2 import BlockOptions, Swinv2Block, relative_coords_table, relative_position_index

FAST = settings(max_examples=25, deadline=None)
MODEL = settings(max_examples=20, deadline=None)

# The tiny config: 4 px patches, embed_dim 16, two stages (one patch merging), hidden size 32.
PATCH = 4
EMBED = 16
HIDDEN = 32


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# ----------------------------------------------------------------------------- windows / padding
@st.composite
def windowed_grids(draw: st.DrawFn) -> tuple[int, int, int, int, int, int]:
    """(B, Hp, Wp, C, ws, seed): a padded grid, Hp and Wp multiples of the (square) window ws."""
    ws = draw(st.integers(1, 6))
    Hp = ws * draw(st.integers(1, 4))
    Wp = ws * draw(st.integers(1, 4))
    return draw(st.integers(1, 3)), Hp, Wp, draw(st.integers(1, 4)), ws, draw(st.integers(0, 2**16))


@FAST
@given(windowed_grids())
def test_window_partition_places_each_token(case):
    B, H, W, C, ws, seed = case
    x = torch.randn(B, H, W, C, generator=torch.Generator().manual_seed(seed))
    windows = window_partition(x, ws)

    nW = (H // ws) * (W // ws)
    assert windows.shape == (B * nW, ws * ws, C)
    expected = torch.empty(B * nW, ws * ws, C)
    for b in range(B):
        for h in range(H):
            for w in range(W):
                index = b * nW + (h // ws) * (W // ws) + (w // ws)
                expected[index, (h % ws) * ws + w % ws] = x[b, h, w]
    torch.testing.assert_close(windows, expected, rtol=0, atol=0)


@FAST
@given(windowed_grids())
def test_window_reverse_undoes_window_partition(case):
    """Round trip on any padded grid: reverse(partition(x)) is x, and partition(reverse(w)) is w."""
    B, Hp, Wp, C, ws, seed = case
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(B, Hp, Wp, C, generator=generator)
    windows = window_partition(x, ws)
    back = window_reverse(windows, ws, (Hp, Wp))
    assert back.shape == (B, Hp, Wp, C)
    torch.testing.assert_close(back, x, rtol=0, atol=0)

    slots = torch.randn(B * (Hp // ws) * (Wp // ws), ws * ws, C, generator=generator)
    torch.testing.assert_close(window_partition(window_reverse(slots, ws, (Hp, Wp)), ws), slots, rtol=0, atol=0)


@st.composite
def shifted_grids(draw):
    """(B, H, W, C, window, shift, seed): any grid, padded or not, shift below the window."""
    window = draw(st.integers(1, 6))
    return (
        draw(st.integers(1, 3)),
        draw(st.integers(1, 20)),
        draw(st.integers(1, 20)),
        draw(st.integers(1, 3)),
        window,
        draw(st.integers(0, window - 1)),
        draw(st.integers(0, 2**16)),
    )


@FAST
@given(shifted_grids())
def test_window_order_is_pad_roll_partition_and_back_with_their_gradients(case):
    """One gather each way equals zero-pad, roll by -shift, partition (and the reverse), values and gradients."""
    B, H, W, C, ws, shift, seed = case
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(B, H * W, C, generator=generator, requires_grad=True)
    padded = pad_bottom_right(x.view(B, H, W, C), (ws, ws))  # (B, Hp, Wp, C)
    Hp, Wp = padded.shape[1:3]
    rolled = torch.roll(padded, shifts=(-shift, -shift), dims=(1, 2))
    expected = window_partition(rolled, ws).reshape(B, Hp * Wp, C)

    order = window_order((H, W), ws, shift)
    windows = to_windows(x, order)
    torch.testing.assert_close(windows, expected, rtol=0, atol=0)
    torch.testing.assert_close(to_grid(windows, order), x, rtol=0, atol=0)
    upstream = torch.randn(windows.shape, generator=generator)
    (grad,) = torch.autograd.grad((windows * upstream).sum(), x)
    (expected_grad,) = torch.autograd.grad((expected * upstream).sum(), x)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)

    slots = torch.randn(B, Hp * Wp, C, generator=generator, requires_grad=True)
    unrolled = slots.view(B, Hp // ws, Wp // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
    unrolled = torch.roll(unrolled, shifts=(shift, shift), dims=(1, 2))[:, :H, :W].reshape(B, H * W, C)
    tokens = to_grid(slots, order)
    torch.testing.assert_close(tokens, unrolled, rtol=0, atol=0)
    upstream = torch.randn(tokens.shape, generator=generator)
    (grad,) = torch.autograd.grad((tokens * upstream).sum(), slots)
    (expected_grad,) = torch.autograd.grad((unrolled * upstream).sum(), slots)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)  # padding slots get exactly zero


@FAST
@given(shifted_grids(), st.booleans())
def test_gather_windows_is_pad_roll_partition_and_reverse_roll_crop(case, requires_grad):
    """`GatherWindows` on a stage layout: partition equals zero-pad -> roll(-shift) -> window_partition,
    reverse equals window_reverse -> roll(+shift) -> crop, for any grid, window and shift, exactly
    (through the autograd node too, with its gradients)."""
    B, H, W, C, ws, shift, seed = case
    generator = torch.Generator().manual_seed(seed)
    layout = WindowLayout(ws, shift).for_grid((H, W), torch.device("cpu"))
    Hp, Wp = padded_grid((H, W), ws)
    assert layout.padded == (Hp, Wp)
    moves = GatherWindows()

    x = torch.randn(B, H * W, C, generator=generator, requires_grad=requires_grad)
    padded = pad_bottom_right(x.view(B, H, W, C), (ws, ws))  # (B, Hp, Wp, C)
    expected = window_partition(torch.roll(padded, shifts=(-shift, -shift), dims=(1, 2)), ws)  # (B*nW, N, C)
    windows = moves.partition(x, layout, shift)
    assert windows.shape == (B * (Hp // ws) * (Wp // ws), ws * ws, C)
    torch.testing.assert_close(windows, expected, rtol=0, atol=0)

    slots = torch.randn(windows.shape, generator=generator, requires_grad=requires_grad)
    grid = torch.roll(window_reverse(slots, ws, (Hp, Wp)), shifts=(shift, shift), dims=(1, 2))
    expected_tokens = grid[:, :H, :W].reshape(B, H * W, C)
    tokens = moves.reverse(slots, layout, shift)
    torch.testing.assert_close(tokens, expected_tokens, rtol=0, atol=0)
    torch.testing.assert_close(moves.reverse(moves.partition(x, layout, shift), layout, shift), x, rtol=0, atol=0)

    if requires_grad:
        for out, reference, source in ((windows, expected, x), (tokens, expected_tokens, slots)):
            upstream = torch.randn(out.shape, generator=generator)
            (grad,) = torch.autograd.grad((out * upstream).sum(), source)
            (expected_grad,) = torch.autograd.grad((reference * upstream).sum(), source)
            torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)


@FAST
@given(
    st.tuples(st.integers(1, 2), st.integers(1, 20), st.integers(1, 20), st.integers(1, 3)),
    st.tuples(st.integers(1, 8), st.integers(1, 8)),
    st.integers(0, 2**16),
)
def test_pad_bottom_right_pads_with_zeros_to_the_next_multiple(shape, multiple, seed):
    B, H, W, C = shape
    x = torch.randn(B, H, W, C, generator=torch.Generator().manual_seed(seed))
    out = pad_bottom_right(x, multiple)

    Hp = ceil_div(H, multiple[0]) * multiple[0]
    Wp = ceil_div(W, multiple[1]) * multiple[1]
    assert out.shape == (B, Hp, Wp, C)
    assert Hp - H < multiple[0] and Wp - W < multiple[1]
    torch.testing.assert_close(out[:, :H, :W], x, rtol=0, atol=0)
    assert torch.count_nonzero(out[:, H:]) == 0
    assert torch.count_nonzero(out[:, :, W:]) == 0


# ---------------------------------------------------------------------------------- shift mask
def region(index: int, length: int, window: int, shift: int) -> int:
    """Region of a row/column of the rolled padded grid (0, 1 or 2)."""
    if index < length - window:
        return 0
    if index < length - shift:
        return 1
    return 2


@FAST
@given(
    st.integers(2, 8).flatmap(
        lambda ws: st.tuples(st.just(ws), st.integers(1, ws - 1), st.integers(1, 4), st.integers(1, 4))
    ),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_shifted_window_mask_separates_exactly_the_pre_shift_regions(case, dtype):
    ws, shift, rows, cols = case
    Hp, Wp = ws * rows, ws * cols
    mask = shifted_window_mask((Hp, Wp), ws, shift, device=None, dtype=dtype)

    nW, N = rows * cols, ws * ws
    assert mask.shape == (nW, N, N)
    assert mask.dtype == dtype
    assert set(mask.unique().tolist()) <= {0.0, MASKED}
    torch.testing.assert_close(mask, mask.transpose(1, 2), rtol=0, atol=0)
    assert torch.count_nonzero(torch.diagonal(mask, dim1=1, dim2=2)) == 0

    # Label every padded-grid token with its region pair, then cut the labels into windows by hand.
    labels = [[(region(r, Hp, ws, shift), region(c, Wp, ws, shift)) for c in range(Wp)] for r in range(Hp)]
    expected = np.zeros((nW, N, N))
    for wr in range(rows):
        for wc in range(cols):
            tokens = [labels[wr * ws + i][wc * ws + j] for i in range(ws) for j in range(ws)]
            for p in range(N):
                for q in range(N):
                    expected[wr * cols + wc, p, q] = 0.0 if tokens[p] == tokens[q] else MASKED
    np.testing.assert_array_equal(mask.double().numpy(), expected)


# ------------------------------------------------------------------------ relative position tables
def log_spaced(offset: np.ndarray, window: int, pretrained_window: int) -> np.ndarray:
    """sign(v) * log2(|v| + 1) / 3 with v = offset / (norm - 1) * 8, norm the pretrained or own window."""
    norm = pretrained_window if pretrained_window > 0 else window
    if norm == 1:  # only a 1x1 window: the single offset is 0, and 0/0 has no better value than 0
        return np.zeros_like(offset, dtype=np.float64)
    v = offset / (norm - 1) * 8.0
    return np.sign(v) * np.log2(np.abs(v) + 1.0) / 3.0


@FAST
@given(st.integers(1, 12), st.sampled_from([0, *range(2, 17)]))
def test_relative_tables_follow_the_log_spaced_formula(ws, pretrained):
    table = relative_coords_table(ws, pretrained)
    index = relative_position_index(ws)
    side, N = 2 * ws - 1, ws * ws

    assert table.shape == (side, side, 2)
    assert table.dtype == torch.float32
    assert index.shape == (N, N)
    assert index.dtype == torch.int64
    assert int(index.min()) >= 0 and int(index.max()) < side * side
    centre = (ws - 1) * side + (ws - 1)
    assert torch.equal(torch.diagonal(index), torch.full((N,), centre))

    # Odd symmetry: the offset at [-1-a, -1-b] is minus the one at [a, b].
    torch.testing.assert_close(torch.flip(table, dims=(0, 1)), -table, rtol=0, atol=0)
    if pretrained == 0 and ws > 1:
        assert float(table.abs().max()) <= math.log2(9) / 3 + 1e-6

    offsets = np.arange(-(ws - 1), ws, dtype=np.float64)
    expected = np.stack(np.meshgrid(offsets, offsets, indexing="ij"), axis=-1)  # (side, side, 2): (dy, dx)
    expected = log_spaced(expected, ws, pretrained)
    np.testing.assert_allclose(table.numpy(), expected, rtol=0, atol=1e-6)

    # The index picks, for query i and key j, the table entry of offset coords(i) - coords(j).
    rows, cols = np.divmod(np.arange(N), ws)
    dy = rows[:, None] - rows[None, :]  # (N, N)
    dx = cols[:, None] - cols[None, :]  # (N, N)
    np.testing.assert_array_equal(index.numpy(), (dy + ws - 1) * side + (dx + ws - 1))
    picked = table.reshape(-1, 2).numpy()[index.numpy()]  # (N, N, 2)
    np.testing.assert_allclose(picked, log_spaced(np.stack([dy, dx], axis=-1), ws, pretrained), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------- models
@cache
def models() -> dict[str, torch.nn.Module]:
    """The tiny models, perturbed (so no output is trivially zero), in eval mode; built once."""
    torch.manual_seed(0)
    built = {
        "model": Swinv2Model(tiny_config()),
        "classifier": Swinv2ForImageClassification(tiny_config()),
        "backbone": Swinv2Backbone(tiny_config(out_features=["stem", "stage1", "stage2"])),
        # two stages downsample by 4 * 2 = 8, so the decoder upsamples by 8 to cover the input
        "mim": Swinv2ForMaskedImageModeling(tiny_config(encoder_stride=8)),
    }
    for seed, module in enumerate(built.values()):
        perturb_(module, seed=seed).float().eval()
    return built


def grids(height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Patch grid of an image and the grid after one patch merging (ceil halving)."""
    g0 = (ceil_div(height, PATCH), ceil_div(width, PATCH))
    return g0, (ceil_div(g0[0], 2), ceil_div(g0[1], 2))


def assert_finite(*tensors: torch.Tensor) -> None:
    for t in tensors:
        assert torch.isfinite(t).all()


def assert_reshaped(flat: torch.Tensor, reshaped: torch.Tensor, grid: tuple[int, int], channels: int) -> None:
    B = flat.shape[0]
    assert flat.shape == (B, grid[0] * grid[1], channels)
    assert reshaped.shape == (B, channels, grid[0], grid[1])
    torch.testing.assert_close(reshaped, flat.view(B, grid[0], grid[1], channels).permute(0, 3, 1, 2), rtol=0, atol=0)


sizes = st.integers(1, 90)  # covers non-multiples of the patch (4), of the window span (16) and of 32


@MODEL
@given(st.tuples(st.integers(1, 2), sizes, sizes), st.integers(0, 2**16))
def test_any_input_size_gives_ceil_grids_and_finite_outputs(shape, seed):
    B, H, W = shape
    m = models()
    x = image_batch(B, H, W, seed=seed)
    g0, g1 = grids(H, W)
    with torch.no_grad():
        base = m["model"](x, output_hidden_states=True)
        cls = m["classifier"](x)
        bb = m["backbone"](x, output_hidden_states=True)
        mask = torch.rand(B, g0[0] * g0[1], generator=torch.Generator().manual_seed(seed)) < 0.5
        mim = m["mim"](x, bool_masked_pos=mask, output_hidden_states=True)

    assert base.last_hidden_state.shape == (B, g1[0] * g1[1], HIDDEN)
    assert base.pooler_output.shape == (B, HIDDEN)
    expected = [(g0, EMBED), (g1, HIDDEN), (g1, HIDDEN)]  # embedding, after stage 1 (merged), after stage 2
    assert len(base.hidden_states) == len(base.reshaped_hidden_states) == len(expected)
    for flat, reshaped, (grid, channels) in zip(base.hidden_states, base.reshaped_hidden_states, expected, strict=True):
        assert_reshaped(flat, reshaped, grid, channels)
    assert_finite(base.last_hidden_state, base.pooler_output, *base.hidden_states)

    assert cls.logits.shape == (B, 2)
    assert_finite(cls.logits)

    backbone = m["backbone"]
    levels = [(g0, EMBED), (g0, EMBED), (g1, HIDDEN)]  # stem, stage1 and stage2 before merging
    assert len(bb.feature_maps) == len(backbone.channels) == 3
    for fmap, channels, flat, (grid, width) in zip(
        bb.feature_maps, backbone.channels, bb.hidden_states, levels, strict=True
    ):
        assert channels == width
        assert_reshaped(flat, fmap, grid, channels)
    assert_finite(*bb.feature_maps)

    assert mim.reconstruction.shape == (B, 3, H, W)
    assert mim.loss is not None and mim.loss.ndim == 0
    assert_finite(mim.reconstruction, mim.loss)
    assert mim.reshaped_hidden_states[0].shape[2:] == g0
    assert mim.reshaped_hidden_states[-1].shape[2:] == g1


@MODEL
@given(st.tuples(sizes, sizes), st.integers(0, 2**16))
def test_batch_rows_equal_single_image_runs(size, seed):
    H, W = size
    m = models()
    x = image_batch(3, H, W, seed=seed)

    def outputs(pixels: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return [
                m["model"](pixels).last_hidden_state,
                m["classifier"](pixels).logits,
                *m["backbone"](pixels).feature_maps,
                m["mim"](pixels).reconstruction,
            ]

    batched = outputs(x)
    for i in range(3):
        single = outputs(x[i : i + 1])
        for together, alone in zip(batched, single, strict=True):
            torch.testing.assert_close(together[i : i + 1], alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [(1, 1), (90, 3), (33, 65)])
def test_perturbed_models_depend_on_the_input(size):
    """Guard for the properties above: perturbed weights give outputs that depend on the input."""
    H, W = size
    m = models()
    with torch.no_grad():
        a = m["classifier"](image_batch(1, H, W, seed=1)).logits
        b = m["classifier"](image_batch(1, H, W, seed=2)).logits
    assert not torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("size", [(16, 17), (1, 90), (32, 33)])
def test_single_image_one_window_row_high_runs(size):
    """Regression: one image whose padded stage grid is one window high and several wide used to crash
    (`window_partition` then returns a non-contiguous view, and the block called `.view` on it)."""
    H, W = size
    with torch.no_grad():
        out = models()["model"](image_batch(1, H, W)).last_hidden_state
    g1 = grids(H, W)[1]
    assert out.shape == (1, g1[0] * g1[1], HIDDEN)


@cache
def block_pair(window: int, shift: int) -> tuple[Swinv2Block, Swinv2Block]:
    """A perturbed block of the tiny model's first-stage width with implementation "eager" (the model
    file's pad, roll and partition) and the same weights with "auto" (window gathers, fast kernels)."""
    torch.manual_seed(0)
    eager = Swinv2Block(EMBED, 2, window, shift, options=BlockOptions(implementation="eager"))
    perturb_(eager, seed=10 * window + shift)
    auto = Swinv2Block(EMBED, 2, window, shift, options=BlockOptions(implementation="auto"))
    auto.load_state_dict(eager.state_dict())
    return eager, auto


@MODEL
@given(shifted_grids())
def test_block_auto_equals_eager_at_any_grid(case):
    """A whole `Swinv2Block` on any H x W grid, window and shift: "auto" gives "eager"'s output bit for
    bit in training mode on Intel CPUs (as the training fast path above does), and within 1e-5 elsewhere
    (on AMD EPYC, MKL's products of a few rows round the fused q/k/v projection unlike the split ones);
    and within the batch-row tolerance
    (1e-5) in inference, where the packed linears with fused GELU may round differently; each image of
    the batch equals the batch's row."""
    B, H, W, _, ws, shift, seed = case
    eager, auto = block_pair(ws, shift)
    layout = WindowLayout(ws, shift).for_grid((H, W), torch.device("cpu"))
    x = torch.randn(B, H * W, EMBED, generator=torch.Generator().manual_seed(seed))

    eager.train(), auto.train()
    expected, _ = eager(x, layout)
    out, _ = auto(x, layout)
    if intel_avx512():
        assert torch.equal(out, expected)
    else:  # MKL on AMD rounds the fused q/k/v product of few rows unlike the split ones
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)

    eager.eval(), auto.eval()
    with torch.no_grad():
        expected, _ = eager(x, layout)
        out, _ = auto(x, layout)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
        for i in range(B):
            alone, _ = auto(x[i : i + 1], layout)
            torch.testing.assert_close(out[i : i + 1], alone, rtol=0, atol=1e-5)


@cache
def training_models() -> dict[str, Swinv2Model]:
    """The perturbed tiny model in training mode: "auto" and "eager" in fp32, and "eager" in fp64 (the
    exact reference), all with the same weights."""
    torch.manual_seed(0)
    auto = perturb_(Swinv2Model(tiny_config()), seed=7).float().train()
    built = {"auto": auto}
    for name, dtype in (("eager", torch.float32), ("exact", torch.float64)):
        built[name] = Swinv2Model(tiny_config()).to(dtype).train()
        built[name].load_state_dict(auto.state_dict())
        built[name].set_attn_implementation("eager")
    return built


@MODEL
@given(st.tuples(st.integers(1, 2), sizes, sizes), st.integers(0, 2**16))
def test_training_fast_path_forward_is_eager_bit_for_bit_with_gradients_as_close(shape, seed):
    """auto's training nodes (cosine attention, GELU MLP) at any size: eager's forward exactly, and
    every parameter's gradient within rounding noise of float64: at most 10x eager's own error or 1e-5
    of the gradient's largest entry. (Sums that cancel, such as q_bias's over all tokens, put the two
    fp32 paths' errors up to ~3x apart; a wrong gradient is off by orders of magnitude more.)"""
    B, H, W = shape
    x = image_batch(B, H, W, seed=seed)
    outputs, grads = {}, {}
    for name, model in training_models().items():
        model.zero_grad(set_to_none=True)
        outputs[name] = model(x.to(next(model.parameters()).dtype)).last_hidden_state
        outputs[name].square().mean().backward()
        grads[name] = {key: p.grad.double() for key, p in model.named_parameters()}
    assert torch.equal(outputs["auto"], outputs["eager"])
    for key, exact in grads["exact"].items():
        auto_error = (grads["auto"][key] - exact).abs().max().item()
        eager_error = (grads["eager"][key] - exact).abs().max().item()
        assert auto_error <= 10 * eager_error + 1e-5 * exact.abs().max().item(), (key, auto_error, eager_error)
