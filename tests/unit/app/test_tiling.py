"""Tiled super-resolution: the tile layout, the blend weights, tiled == untiled where the module docstring
of `swinv2.superres` says so, seams, memory that grows with the tile and not the image, bf16 autocast."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from functools import cache

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import perturb_
from swinv2 import Swin2SRConfig, Swin2SRForImageSuperResolution
from swinv2.backends import plain
from swinv2.superres import Tiling, blend_weights, tile_spans, upscale_pixels

WINDOW = 4
SCALES = {"pixelshuffle": 2, "pixelshuffle_aux": 2, "pixelshuffledirect": 3, "nearest+conv": 4, "": 1}


@cache  # deterministic and never changed by a test
def tiny_sr(upsampler: str, seed: int = 0) -> Swin2SRForImageSuperResolution:
    config = Swin2SRConfig(
        embed_dim=12,
        depths=(2,),
        num_heads=(2,),
        window_size=WINDOW,
        upscale=SCALES[upsampler],
        upsampler=upsampler,
        image_size=16,
    )
    torch.manual_seed(seed)
    return perturb_(Swin2SRForImageSuperResolution(config), seed=seed).eval()


def as_function(model: Swin2SRForImageSuperResolution) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(pixels).reconstruction

    return run


@cache
def reach(model: Swin2SRForImageSuperResolution, side: int = 40) -> int:
    """How far (input pixels) the model sees beyond an output pixel: the gradient's support, the worst
    over the positions of the pixel in its window (the blocks' windows make it depend on them)."""
    scale, worst = model.upscale, 0
    for phase in range(WINDOW):
        pixels = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(phase), requires_grad=True)
        y = side // 2 + phase
        with plain():  # plain ops: the gradient flows through the eager math
            out = model(pixels).reconstruction  # (1, C, s*side, s*side)
        out[..., y * scale : (y + 1) * scale, y * scale : (y + 1) * scale].sum().backward()
        assert pixels.grad is not None
        rows, columns = (pixels.grad.abs().sum((0, 1)) > 0).nonzero(as_tuple=True)
        worst = max(worst, int((rows - y).abs().max()), int((columns - y).abs().max()))
    assert worst < side // 2 - 1, "the image is too small to measure this model's reach"
    return worst


def cut_edges(length: int, spans: list[tuple[int, int]]) -> list[int]:
    return sorted({start for start, _ in spans if start > 0} | {end for _, end in spans if end < length})


def interior(length: int, spans: list[tuple[int, int]], distance: int) -> torch.Tensor:
    """(length,) True where no cut edge is within `distance` pixels (a pixel sees [i - d, i + d])."""
    index = torch.arange(length)
    keep = torch.ones(length, dtype=torch.bool)
    for edge in cut_edges(length, spans):
        keep &= (index + distance < edge) | (index - distance >= edge)
    return keep


# ------------------------------------------------------------------------------ layout
@st.composite
def layouts(draw: st.DrawFn) -> tuple[int, int, int, int]:
    align = draw(st.sampled_from([1, 2, 4, 8]))
    tile = align * draw(st.integers(1, 24))
    overlap = align * draw(st.integers(0, tile // align - 1))
    return draw(st.integers(1, 400)), tile, overlap, align


@settings(max_examples=200, deadline=None)
@given(layouts())
def test_tile_spans_cover_the_line_on_window_boundaries(layout: tuple[int, int, int, int]) -> None:
    length, tile, overlap, align = layout
    spans = tile_spans(length, tile, overlap, align)
    assert spans[0][0] == 0 and spans[-1][1] == length  # the last tile reaches the end
    covered = torch.zeros(length, dtype=torch.int64)
    for start, end in spans:
        assert start % align == 0 and 0 <= start < end <= length
        covered[start:end] += 1
    assert bool((covered > 0).all())  # [0, length) exactly, no gap
    for (start, end), (next_start, _) in itertools.pairwise(spans):
        assert start < next_start and end - next_start >= overlap
        assert end - start == tile  # only the last tile may be longer
    if length >= tile:
        assert tile <= spans[-1][1] - spans[-1][0] < tile + align
    else:
        assert spans == [(0, length)]


@settings(max_examples=80, deadline=None)
@given(layouts(), st.integers(1, 4))
def test_blend_weights_sum_to_one_and_vanish_near_cut_edges(layout: tuple[int, int, int, int], scale: int) -> None:
    length, tile, overlap, align = layout
    spans = tile_spans(length, tile, overlap, align)
    weights = blend_weights(length, spans, overlap, scale)
    total = torch.zeros(length * scale)
    for (start, end), weight in zip(spans, weights, strict=True):
        assert weight.shape == ((end - start) * scale,) and bool((weight >= 0).all())
        total[start * scale : end * scale] += weight
        centres = torch.arange(start * scale, end * scale) + 0.5
        near = torch.zeros_like(centres, dtype=torch.bool)
        if start > 0:
            near |= centres - start * scale < overlap * scale / 4
        if end < length:
            near |= end * scale - centres < overlap * scale / 4
        assert bool((weight[near] == 0).all())
    torch.testing.assert_close(total, torch.ones(length * scale), atol=1e-6, rtol=0)


def test_tiling_refuses_what_cannot_cover_the_image() -> None:
    with pytest.raises(ValueError, match=r"overlap \(9 px, 12 in whole windows of 4\) must be smaller than the tile"):
        Tiling(10, 9).aligned(4)
    with pytest.raises(ValueError, match="overlap one of at least 0; got tile 64, overlap -8"):
        Tiling(64, -8)
    with pytest.raises(ValueError, match="got tile 0"):
        Tiling(0)
    assert Tiling(30, 10).aligned(8) == (32, 16)


# ------------------------------------------------------------------------------ values
@pytest.mark.parametrize("upsampler", list(SCALES))
def test_tiled_equals_untiled_when_the_reach_is_within_a_quarter_overlap(upsampler: str) -> None:
    model = tiny_sr(upsampler)
    seen = reach(model)  # measured: 9 to 13 pixels (window 4, one stage of two blocks)
    overlap = math.ceil(4 * seen / WINDOW) * WINDOW
    tile = overlap + 5 * WINDOW
    batch = 1 if model.upscale > 2 else 2  # (the 3x and 4x upsamplers are the slow ones)
    pixels = torch.rand(batch, 3, tile + 10, tile + 7, generator=torch.Generator().manual_seed(1))
    calls: list[tuple[int, int]] = []
    whole = upscale_pixels(as_function(model), pixels, scale=model.upscale, window=WINDOW)
    tiled = upscale_pixels(
        as_function(model),
        pixels,
        scale=model.upscale,
        window=WINDOW,
        tiling=Tiling(tile, overlap),
        on_tile=lambda done, total: calls.append((done, total)),
    )
    assert tiled.shape == whole.shape == (batch, 3, model.upscale * pixels.shape[2], model.upscale * pixels.shape[3])
    assert len(calls) >= 4 and calls[-1][0] == calls[-1][1]  # tiled for real, progress to the end
    # measured: 2e-7 to 6e-7 (the tiles' sums round differently), against outputs of about 1
    torch.testing.assert_close(tiled, whole, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def pixelshuffle_run() -> tuple[Swin2SRForImageSuperResolution, torch.Tensor, torch.Tensor]:
    model = tiny_sr("pixelshuffle")
    pixels = torch.rand(1, 3, 136, 121, generator=torch.Generator().manual_seed(2))
    return model, pixels, upscale_pixels(as_function(model), pixels, scale=2, window=WINDOW)


def test_small_overlap_is_exact_in_tile_interiors_and_blends_its_seams(
    pixelshuffle_run: tuple[Swin2SRForImageSuperResolution, torch.Tensor, torch.Tensor],
) -> None:
    model, pixels, whole = pixelshuffle_run
    seen = reach(model)
    assert seen > 16 / 4  # the overlap is too small for tiled == untiled everywhere
    _, _, H, W = pixels.shape
    errors = {}
    for overlap in (0, 16):
        tiled = upscale_pixels(as_function(model), pixels, scale=2, window=WINDOW, tiling=Tiling(64, overlap))
        error = (tiled - whole).abs().amax((0, 1))  # (2H, 2W)
        rows, columns = (interior(n, tile_spans(n, 64, overlap, WINDOW), seen) for n in (H, W))
        inside = (rows[:, None] & columns[None, :]).repeat_interleave(2, 0).repeat_interleave(2, 1)
        assert inside.float().mean() > 0.15  # a real interior is checked
        assert float(error[inside].max()) <= 1e-4  # measured: 6e-7
        errors[overlap] = error
    assert errors[0].max() > 0.1  # a hard cut shows
    # the seams: blended near the cut edges, the error is well below a hard cut's
    # (measured: max 0.00086 vs 0.53, mean 1.1e-5 vs 0.010)
    assert errors[16].max() < 0.1 * errors[0].max()
    assert errors[16].mean() < 0.1 * errors[0].mean()


def test_bf16_autocast_runs_tiled_and_stays_close(
    pixelshuffle_run: tuple[Swin2SRForImageSuperResolution, torch.Tensor, torch.Tensor],
) -> None:
    model, pixels, whole = pixelshuffle_run
    pixels = pixels[..., :80, :72]
    whole = whole[..., :160, :144]  # the model sees 11 px: only the border differs from the cropped image's run
    exact = upscale_pixels(as_function(model), pixels, scale=2, window=WINDOW, tiling=Tiling(48, 32))

    def low(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = as_function(model)(batch)
        assert out.dtype == torch.bfloat16
        return out

    rounded = upscale_pixels(low, pixels, scale=2, window=WINDOW, tiling=Tiling(48, 32))
    assert rounded.dtype == torch.float32 and bool(rounded.isfinite().all())
    difference = (rounded - exact).abs()
    # measured: max 0.008, mean 0.0016 on outputs of about 1. bf16 keeps 8 significant bits (relative
    # rounding 2^-9 = 0.002 per operation), compounded over the stage's matmuls, the residual sums and
    # the upsampler: the bounds allow about 3x the measurement
    assert 0 < float(difference.mean()) <= 0.005
    assert float(difference.max()) <= 0.03
    torch.testing.assert_close(exact[..., :120, :100], whole[..., :120, :100], atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------ memory
def _peak_bytes(model: Swin2SRForImageSuperResolution, pixels: torch.Tensor, tiling: Tiling | None) -> int:
    """Peak bytes of tensors (parameters and buffers excepted) while upscaling, by PyTorch's tracker."""
    from torch.distributed._tools.mem_tracker import MemTracker

    # plain(): the CPU fast path's packed weights are opaque tensors the tracker cannot size
    with torch.no_grad(), plain(), MemTracker() as tracker:

        def run(batch: torch.Tensor) -> torch.Tensor:
            tracker.reset_mod_stats()  # one module called once per tile, which the tracker refuses otherwise
            return model(batch).reconstruction

        upscale_pixels(run, pixels, scale=2, window=WINDOW, tiling=tiling)
    (peak,) = tracker.get_tracker_snapshot("peak").values()
    kinds = {str(getattr(kind, "value", kind)): size for kind, size in peak.items()}
    return kinds["Total"] - kinds["Parameter"] - kinds["Buffer"]


def test_peak_memory_grows_with_the_tile_not_the_image() -> None:
    model = tiny_sr("pixelshuffle")
    small, large = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 128, 128)
    output = {side: 3 * (2 * side) ** 2 * 4 for side in (64, 128)}  # B*C*sH*sW*4 bytes: 0.20 MB, 0.79 MB
    tiled = {64: _peak_bytes(model, small, Tiling(48, 8)), 128: _peak_bytes(model, large, Tiling(48, 8))}
    whole = {64: _peak_bytes(model, small, None), 128: _peak_bytes(model, large, None)}
    # measured: tiled 6.56 MB and 6.99 MB (6.36 MB and 6.20 MB without the output buffer), whole 10.9 MB
    # and 43.8 MB: with the output set apart, a tile costs the same in both images, the whole image 4x
    assert tiled[128] - output[128] <= 1.25 * (tiled[64] - output[64])
    assert whole[128] >= 3.5 * whole[64]
    assert tiled[128] < whole[128] / 4
