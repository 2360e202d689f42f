"""The fast paths against the reference: sdpa vs eager attention, the "auto" choice, the cache of
input-independent attention terms, torch.compile, autocast (bf16, fp16) and gradient checkpointing.

Tolerances: fp32 comparisons of two implementations use atol 1e-5, rtol 0 (STYLE.md); a cache must
reproduce a cold model exactly, so those comparisons are bit-for-bit (atol 0, rtol 0). The bf16 and
fp16 bounds are stated next to their tests with the values measured when they were set.
"""

from __future__ import annotations

import copy
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from torch.autograd import forward_ad

from helpers import TINY, TINY_SHAPED, count_forwards, hf_config, image_batch, natural_images, perturb_, tiny_config
from swinv2 import Swinv2Config, Swinv2ForImageClassification, Swinv2Model
from swinv2.backends import cosine_attention, packed_linear
from swinv2.backends.mlp import _GeluMlp
from swinv2.backends.window_gather import GatherWindows, window_order
from swinv2.io.checkpoints import read_state_dict
from swinv2.layers.windows import GridWindows, shifted_window_mask
from swinv2.models.swinv2 import AttentionTerms, Swinv2Attention, Swinv2Block, Swinv2SelfAttention

ATOL = 1e-5
EXACT = dict(atol=0.0, rtol=0.0)

# A representative subset of tests/parity/test_transformers_parity.py's CASES: (id, config fields, input (H, W)).
# No any-size (hypothesis) sdpa == eager test at 1e-5: over 300 random sizes of the tiny config, 3 exceeded it
# (max 1.39e-5 at batch 2, 49x90, output scale 3.3, i.e. 4e-6 relative; median 3.7e-6): fp32 rounding carried
# through every post-norm block. The parity cases below all stay within 1e-5.
CASES: list[tuple[str, dict[str, Any], tuple[int, int]]] = [
    ("tiny-w8-256", dict(TINY_SHAPED, image_size=256, window_size=8), (256, 256)),
    ("tiny-w16-256-clamp", dict(TINY_SHAPED, image_size=256, window_size=16), (256, 256)),
    (
        "tiny-w16to12-256-pws",
        dict(TINY_SHAPED, image_size=256, window_size=16, pretrained_window_sizes=(12, 12, 12, 6)),
        (256, 256),
    ),
    ("tiny-w8-nonsquare", dict(TINY_SHAPED, image_size=256, window_size=8), (192, 256)),
    ("tiny-w8-not-multiple-of-32", dict(TINY_SHAPED, image_size=256, window_size=8), (200, 232)),
    ("two-stage-64", dict(TINY), (64, 64)),
]


# --------------------------------------------------------------------------------------- helpers
def _model(config: Swinv2Config | None = None, seed: int = 0, implementation: str | None = None) -> Swinv2Model:
    """A perturbed `Swinv2Model` in eval mode, with its own copy of the config."""
    config = (config or tiny_config()).replace()
    torch.manual_seed(seed)
    model = perturb_(Swinv2Model(config), seed=seed).eval()
    if implementation is not None:
        model.set_attn_implementation(implementation)
    return model


def _cold_copy(model: Swinv2Model, dtype: torch.dtype = torch.float32) -> Swinv2Model:
    """A newly built model (empty caches) with `model`'s weights, implementation and dtype."""
    copy = Swinv2Model(model.config.replace()).to(dtype).eval()
    copy.load_state_dict(model.state_dict())
    return copy


def _packing_model(seed: int = 0) -> Swinv2Model:
    """A model wide enough for both packed routes: its first stage's fc2 (416 inputs) runs on MKL's
    packed sgemm, its other linears on oneDNN (where the build has them)."""
    return _model(tiny_config(embed_dim=104), seed=seed)


def _packed_libraries(model: torch.nn.Module) -> set[str]:
    """Which packed routes hold packs of `model`'s weights: its parameters and the fused query/key/value
    weights (`AttentionTerms.qkv_weight`) its attentions keep."""
    weights = [*model.parameters(), *(terms.qkv_weight for terms in _cached_terms(model))]
    return {layout.library for w in weights for layout in packed_linear._PACKS.get(w, {})}


BOTH_PACKED_ROUTES = {
    name
    for name, available in (
        ("onednn", packed_linear._onednn_linear_available()),
        ("mkl", packed_linear._mkl_packed_linear_available()),
    )
    if available
}


def _run(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).last_hidden_state


def _attentions(model: torch.nn.Module) -> list[Swinv2SelfAttention]:
    """Every attention's `Swinv2SelfAttention` (the module that owns the terms and their cache)."""
    return [m for m in model.modules() if isinstance(m, Swinv2SelfAttention)]


def _uncached_terms(attn: Swinv2SelfAttention, mask: torch.Tensor | None, mask_key: object, dtype: torch.dtype):
    return attn._compute_terms(mask, dtype)


def _disable_cache(model: torch.nn.Module) -> None:
    """Make every attention recompute its terms on each call (the reference for the cached path)."""
    for attn in _attentions(model):
        attn.terms = partial(_uncached_terms, attn)


def _cached_terms(model: torch.nn.Module) -> list[AttentionTerms]:
    return [terms for attn in _attentions(model) for terms in attn._cache.values()]


def _same_objects(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


# ------------------------------------------------------------------------------ sdpa vs eager
@pytest.mark.parametrize(("fields", "size"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_sdpa_matches_eager_and_transformers(fields: dict[str, Any], size: tuple[int, int]) -> None:
    ours = _model(Swinv2Config(**fields, drop_path_rate=0.0))
    theirs = transformers.Swinv2Model(hf_config(ours.config)).eval()
    theirs.load_state_dict(ours.state_dict())
    x = image_batch(2, *size)
    with torch.no_grad():
        expected = theirs(x)
        ours.set_attn_implementation("eager")
        eager = ours(x)
        ours.set_attn_implementation("sdpa")
        sdpa = ours(x)
    # Guard: the two paths really ran (measured max differences 1.9e-6 .. 4.5e-6, never 0).
    assert not torch.equal(sdpa.last_hidden_state, eager.last_hidden_state)
    for name in ("last_hidden_state", "pooler_output"):
        torch.testing.assert_close(getattr(sdpa, name), getattr(eager, name), atol=ATOL, rtol=0)
        torch.testing.assert_close(getattr(sdpa, name), getattr(expected, name), atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------ "auto"
def _outputs_by_implementation(model: Swinv2Model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    outputs = {}
    for name in ("auto", "eager", "sdpa"):
        model.set_attn_implementation(name)
        outputs[name] = _run(model, x)
    return outputs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_auto_takes_explicit_scores_in_full_precision(dtype: torch.dtype) -> None:
    model = _model().to(dtype)
    out = _outputs_by_implementation(model, image_batch(2, 64, 64).to(dtype))
    assert out["auto"].dtype == dtype
    torch.testing.assert_close(out["auto"], out["eager"], atol=ATOL, rtol=0)
    # SDPA's own arithmetic is visible; auto's explicit scores are the eager ones.
    assert (out["sdpa"] - out["eager"]).abs().max() > 10 * (out["auto"] - out["eager"]).abs().max()


@pytest.fixture
def node_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts of the forwards of the two hand-written autograd nodes (attention, MLP)."""
    return count_forwards(monkeypatch, attention=cosine_attention._CosineWindowAttention, mlp=_GeluMlp)


def test_auto_trains_like_eager_in_fp32(node_calls: dict[str, int]) -> None:
    """auto's training forward is eager's bit for bit; its own backward (`swinv2.backends.cosine_attention`)
    gives gradients as close to a float64 model's as eager's autograd."""
    x = image_batch(2, 64, 64)
    outputs, grads = {}, {}
    for name, implementation, dtype in (
        ("auto", "auto", torch.float32),
        ("eager", "eager", torch.float32),
        ("exact", "eager", torch.float64),
    ):
        model = _model(implementation=implementation).to(dtype).train()
        outputs[name] = model(x.to(dtype)).last_hidden_state
        outputs[name].square().mean().backward()
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        if name == "auto":  # four blocks, each through both nodes; eager through neither
            assert node_calls == {"attention": 4, "mlp": 4}
    assert node_calls == {"attention": 4, "mlp": 4}
    assert torch.equal(outputs["auto"], outputs["eager"])

    def error(name: str) -> float:
        return ((grads[name].double() - grads["exact"]).abs().max() / grads["exact"].abs().max()).item()

    # measured: auto 2.9e-7, eager 2.3e-7 of the largest gradient
    assert error("auto") <= 2 * error("eager"), (error("auto"), error("eager"))


def _jvp(model: Swinv2Model, x: torch.Tensor, direction: torch.Tensor, how: str) -> torch.Tensor:
    if how == "torch.func":
        return torch.func.jvp(lambda t: model(t).last_hidden_state, (x,), (direction,))[1]
    with forward_ad.dual_level():
        return forward_ad.unpack_dual(model(forward_ad.make_dual(x, direction)).last_hidden_state).tangent


@pytest.mark.parametrize("how", ["torch.func", "forward_ad"])
def test_forward_mode_differentiation_takes_the_plain_ops(how: str, node_calls: dict[str, int]) -> None:
    """Forward-mode AD cannot see through the nodes' out= writes: auto gives way to plain ops."""
    model = _model()
    x, direction = image_batch(1, 64, 64), image_batch(1, 64, 64, seed=1)
    auto = _jvp(model, x, direction, how)
    model.set_attn_implementation("eager")
    eager = _jvp(model, x, direction, how)
    assert node_calls == {"attention": 0, "mlp": 0}
    assert auto.abs().max() > 0
    torch.testing.assert_close(auto, eager, atol=ATOL, rtol=0)


def test_torch_func_grad_and_vmap_run_through_the_plain_ops(node_calls: dict[str, int]) -> None:
    model = _model()
    x = image_batch(2, 64, 64)
    grad = torch.func.grad(lambda t: model(t).last_hidden_state.square().mean())(x)
    assert node_calls == {"attention": 0, "mlp": 0}
    leaf = x.clone().requires_grad_()
    model(leaf).last_hidden_state.square().mean().backward()
    torch.testing.assert_close(grad, leaf.grad, atol=1e-6 * leaf.grad.abs().max().item(), rtol=0)
    mapped = torch.func.vmap(lambda image: model(image.unsqueeze(0)).last_hidden_state.squeeze(0))(x)
    torch.testing.assert_close(mapped, _run(model, x), atol=ATOL, rtol=0)


def test_auto_is_sdpa_under_bf16_autocast() -> None:
    model = _model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _outputs_by_implementation(model, image_batch(2, 64, 64))
    assert torch.equal(out["auto"], out["sdpa"])
    assert not torch.equal(out["eager"], out["sdpa"])


def test_output_attentions_with_sdpa_falls_back_to_eager() -> None:
    x = image_batch(2, 64, 64)
    eager_model = _model(implementation="eager")
    sdpa_model = _model(implementation="sdpa")
    with torch.no_grad():
        eager = eager_model(x, output_attentions=True)
        sdpa = sdpa_model(x, output_attentions=True)
        sdpa_plain = sdpa_model(x)
    assert sdpa.attentions is not None and len(sdpa.attentions) == len(eager.attentions) == 2
    for actual, expected in zip(sdpa.attentions, eager.attentions, strict=True):
        assert torch.equal(actual, expected)
    assert torch.equal(sdpa.last_hidden_state, eager.last_hidden_state)  # every block took the eager path
    assert not torch.equal(sdpa_plain.last_hidden_state, eager.last_hidden_state)


# ------------------------------------------------------------------------------------- cache
def test_cache_is_filled_and_reused() -> None:
    model = _model()
    x = image_batch(2, 64, 64)
    assert all(not attn._cache for attn in _attentions(model))
    first = _run(model, x)
    terms = _cached_terms(model)
    assert all(len(attn._cache) == 1 for attn in _attentions(model))
    for block in (m for m in model.modules() if isinstance(m, Swinv2Block)):
        (key,) = block.attention.self._cache
        assert key[1] == torch.float32
        assert (key[0] is None) == (block.shift == 0)
    second = _run(model, x)
    assert torch.equal(first, second)
    assert _same_objects(terms, _cached_terms(model))


@pytest.mark.parametrize(
    "modify",
    [
        lambda attn: attn.continuous_position_bias_mlp[0].weight.add_(0.1),
        lambda attn: attn.continuous_position_bias_mlp[0].bias.add_(0.1),
        lambda attn: attn.continuous_position_bias_mlp[2].weight.add_(0.1),
        lambda attn: attn.logit_scale.add_(0.5),
        lambda attn: attn.query.bias.add_(0.1),
        lambda attn: attn.value.bias.add_(0.1),
        lambda attn: attn.continuous_position_bias_mlp[0].weight.copy_(
            torch.randn_like(attn.continuous_position_bias_mlp[0].weight)
        ),
    ],
    ids=["cpb0.weight", "cpb0.bias", "cpb2.weight", "logit_scale", "query.bias", "value.bias", "copy_"],
)
def test_in_place_parameter_change_invalidates_the_cache(modify: Any) -> None:
    model = _model()
    x = image_batch(2, 64, 64)
    before = _run(model, x)
    with torch.no_grad():
        for attn in _attentions(model):
            modify(attn)
    after = _run(model, x)
    torch.testing.assert_close(after, _run(_cold_copy(model), x), **EXACT)
    assert _max_diff(after, before) > 1e-3


@pytest.mark.parametrize(
    "linear",
    [
        "attention.self.query",  # the three are packed fused, as the cached terms' qkv_weight
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ],
)
def test_in_place_linear_weight_change_reaches_the_packed_weights(linear: str) -> None:
    model = _packing_model()
    x = image_batch(2, 64, 64)
    before = _run(model, x)
    assert _packed_libraries(model) == BOTH_PACKED_ROUTES
    with torch.no_grad():
        for block in (m for m in model.modules() if isinstance(m, Swinv2Block)):
            weight = block.get_submodule(linear).weight
            if linear.endswith("key"):
                # keys have no bias and are normalised: scaling the whole weight changes nothing, so
                # scale its input columns unevenly instead
                weight.mul_(torch.linspace(1.0, 1.5, weight.shape[1]))
            else:
                weight.mul_(1.25)
    after = _run(model, x)
    torch.testing.assert_close(after, _run(_cold_copy(model), x), **EXACT)
    assert _max_diff(after, before) > 1e-3


def test_optimizer_step_between_evaluations_invalidates_the_cache() -> None:
    model = _model()
    x = image_batch(2, 64, 64)
    before = _run(model, x)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    model(x).last_hidden_state.square().mean().backward()
    optimizer.step()
    model.eval()
    after = _run(model, x)
    torch.testing.assert_close(after, _run(_cold_copy(model), x), **EXACT)
    assert _max_diff(after, before) > 1e-3


@pytest.mark.parametrize("assign", [False, True])
def test_load_state_dict_invalidates_the_cache(assign: bool) -> None:
    model, other = _model(seed=0), _model(seed=1)
    x = image_batch(2, 64, 64)
    before = _run(model, x)
    model.load_state_dict(_cold_copy(other).state_dict(), assign=assign)
    after = _run(model, x)
    torch.testing.assert_close(after, _run(other, x), **EXACT)
    assert _max_diff(after, before) > 1e-3


def test_from_pretrained_and_loading_a_directory_into_a_warm_model(tmp_path: Path) -> None:
    saved, warm = _model(seed=0), _model(seed=1)
    x = image_batch(2, 64, 64)
    expected = _run(saved, x)
    saved.save_pretrained(tmp_path)
    torch.testing.assert_close(_run(Swinv2Model.from_pretrained(tmp_path), x), expected, **EXACT)
    before = _run(warm, x)
    warm.load_hf_state_dict(read_state_dict(tmp_path))
    torch.testing.assert_close(_run(warm, x), expected, **EXACT)
    assert _max_diff(before, expected) > 1e-3


def test_dtype_round_trip_recomputes_the_terms() -> None:
    model = _model()
    x = image_batch(2, 64, 64)
    fp32 = _run(model, x)
    model.to(torch.float64)
    fp64 = _run(model, x.double())
    assert fp64.dtype == torch.float64
    assert all(t.bias.dtype == torch.float64 for t in _cached_terms(model))
    torch.testing.assert_close(fp64, _run(_cold_copy(model, torch.float64), x.double()), **EXACT)
    assert 0 < _max_diff(fp64, fp32) < 1e-4
    model.to(torch.float32)
    back = _run(model, x)
    assert back.dtype == torch.float32
    torch.testing.assert_close(back, fp32, **EXACT)  # fp32 -> fp64 -> fp32 is exact for the weights
    torch.testing.assert_close(back, _run(_cold_copy(model), x), **EXACT)


def _attention_grads(model: torch.nn.Module) -> list[torch.Tensor | None]:
    return [
        p.grad
        for attn in _attentions(model)
        for p in (
            *attn.continuous_position_bias_mlp.parameters(),
            attn.logit_scale,
            attn.query.weight,  # the projections' weights feed the terms' fused qkv_weight
            attn.key.weight,
            attn.value.weight,
            attn.query.bias,
            attn.value.bias,
        )
    ]


def test_training_mode_bypasses_the_cache() -> None:
    model = _model().train()
    x = image_batch(2, 64, 64)
    model(x).last_hidden_state.square().mean().backward()
    assert all(not attn._cache for attn in _attentions(model))
    grads = _attention_grads(model)
    assert all(g is not None and g.abs().max() > 0 for g in grads)

    # Training mode alone bypasses it, even when no parameter gradient is needed.
    with torch.no_grad():
        model(x)
    model.requires_grad_(False)
    model(x)
    assert all(not attn._cache for attn in _attentions(model))
    model.requires_grad_(True)

    # A cache warmed in eval mode is not used once back in training mode.
    model.eval()
    _run(model, x)
    model.train()
    model.zero_grad(set_to_none=True)
    model(x).last_hidden_state.square().mean().backward()
    for again, first in zip(_attention_grads(model), grads, strict=True):
        torch.testing.assert_close(again, first, **EXACT)


def test_eval_mode_with_parameter_gradients_bypasses_the_cache() -> None:
    model, reference = _model(), _model()
    _disable_cache(reference)
    x = image_batch(2, 64, 64)
    _run(model, x)  # warm
    for m in (model, reference):
        m(x).last_hidden_state.square().mean().backward()
    for actual, expected in zip(_attention_grads(model), _attention_grads(reference), strict=True):
        assert actual is not None and actual.abs().max() > 0
        torch.testing.assert_close(actual, expected, **EXACT)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_input_gradient_through_cached_terms(implementation: str) -> None:
    """Frozen parameters (a saliency map, say): the cache is used and the input gradient is unchanged."""
    model, reference = _model(implementation=implementation), _model(implementation=implementation)
    _disable_cache(reference)
    x = image_batch(2, 64, 64)
    grads = []
    for m in (model, reference):
        m.requires_grad_(False)
        _run(m, x)  # warms `model`'s cache
        warm = _cached_terms(m)
        assert bool(warm) == (m is model)
        pixels = x.clone().requires_grad_(True)
        m(pixels).last_hidden_state.square().mean().backward()
        assert _same_objects(warm, _cached_terms(m))
        grads.append(pixels.grad)
    assert all(not attn._cache for attn in _attentions(reference))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1], **EXACT)


def test_alternating_input_sizes() -> None:
    model = _model()
    for batch, height, width in [(2, 64, 64), (2, 72, 56), (2, 64, 64), (1, 72, 56)]:
        x = image_batch(batch, height, width, seed=height)
        torch.testing.assert_close(_run(model, x), _run(_cold_copy(model), x), **EXACT)


def test_window_layouts_are_cached_per_stage_and_replaced_by_a_new_size() -> None:
    """Each stage's `WindowLayout` keeps the `GridWindows` of the last grid it saw (padded grid, shift
    mask, mask key), and the gather orders of "auto" are kept in that `GridWindows.extras`."""
    model = _model()
    stages = list(model.encoder.layers)
    cpu = torch.device("cpu")

    def check(grids: list[tuple[int, int]], padded: list[tuple[int, int]]) -> list[GridWindows]:
        layouts = []
        for stage, grid, pad in zip(stages, grids, padded, strict=True):
            assert (stage.windows.window, stage.windows.shift) == (4, 2)
            layout = stage.windows.for_grid(grid, cpu)  # the cached one: the run below filled its extras
            assert (layout.grid, layout.padded, layout.window, layout.shift) == (grid, pad, 4, 2)
            assert layout.key == (pad, cpu)
            expected = shifted_window_mask(pad, 4, 2, device=cpu, dtype=torch.float32)
            torch.testing.assert_close(layout.mask, expected, **EXACT)
            assert len(layout.extras) == 2  # the plain and the shifted blocks' gather orders
            for shift in (0, 2):
                order = GatherWindows._order(layout, shift)
                assert any(order is kept for kept in layout.extras.values())
                reference = window_order(grid, 4, shift)
                assert torch.equal(order.to_windows, reference.to_windows)
                assert torch.equal(order.to_grid, reference.to_grid)
            layouts.append(layout)
        return layouts

    _run(model, image_batch(1, 64, 64))  # token grids 16x16 and 8x8, window 4, shift 2
    layouts = check([(16, 16), (8, 8)], [(16, 16), (8, 8)])
    _run(model, image_batch(1, 64, 64))
    assert all(s.windows.for_grid(g, cpu) is a for s, g, a in zip(stages, [(16, 16), (8, 8)], layouts, strict=True))
    _run(model, image_batch(1, 72, 56))  # grids 18x14 -> padded 20x16, then 9x7 -> padded 12x8
    replaced = check([(18, 14), (9, 7)], [(20, 16), (12, 8)])
    assert all(a is not b for a, b in zip(layouts, replaced, strict=True))
    # only the last grid is kept: the first size's layouts are built afresh (no extras yet)
    again = [s.windows.for_grid(g, cpu) for s, g in zip(stages, [(16, 16), (8, 8)], strict=True)]
    assert all(a is not b and not a.extras for a, b in zip(again, layouts, strict=True))


# ------------------------------------------------------------------------------ torch.compile
@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("implementation", ["auto", "sdpa"])
def test_compile_fullgraph_matches_and_does_not_recompile(implementation: str, fresh_dynamo: None) -> None:
    model = _model(implementation=implementation)
    x = image_batch(2, 64, 64)
    graphs = []

    def counting(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Any:
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(model, fullgraph=True, backend=counting)  # fullgraph: a graph break raises
    with torch.no_grad():
        outputs = [compiled(x) for _ in range(3)]
    assert len(graphs) == 1
    assert all(not attn._cache for attn in _attentions(model))  # traced the plain computation
    with torch.no_grad():
        expected = model(x)
    for out in outputs:
        torch.testing.assert_close(out.last_hidden_state, expected.last_hidden_state, atol=ATOL, rtol=0)
        torch.testing.assert_close(out.pooler_output, expected.pooler_output, atol=ATOL, rtol=0)


def test_compiled_training_traces_the_plain_ops(fresh_dynamo: None, node_calls: dict[str, int]) -> None:
    """Under compile in training the hand-written nodes step aside: one graph of plain ops, eager's gradients."""
    model = _model().train()
    x = image_batch(2, 64, 64)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    compiled(x).last_hidden_state.square().mean().backward()
    assert node_calls == {"attention": 0, "mlp": 0}
    compiled_grads = {name: p.grad for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.set_attn_implementation("eager")
    model(x).last_hidden_state.square().mean().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(compiled_grads[name], p.grad, atol=1e-6 * p.grad.abs().max().item(), rtol=0)


@pytest.mark.long
def test_compile_with_inductor(fresh_dynamo: None) -> None:
    """Measured on 2 CPU cores: 29-52 s from a cold inductor cache (~4 s warm); max difference 6.3e-6.
    On request only (`pytest -m long`): the default suite compiles with inductor in
    tests/unit/models/test_outputs.py and traces the training graph in `test_compiled_training_traces_the_plain_ops`."""
    model = _model()
    x = image_batch(2, 64, 64)
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    start = time.perf_counter()
    with torch.no_grad():
        actual = compiled(x).last_hidden_state
        expected = model(x).last_hidden_state
    assert time.perf_counter() - start < 300, "inductor compile became very slow"
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------------- autocast
def test_bf16_autocast_logits_close_to_fp32() -> None:
    config = Swinv2Config(**TINY_SHAPED, image_size=256, window_size=8, drop_path_rate=0.0, num_labels=10)
    torch.manual_seed(0)
    model = perturb_(Swinv2ForImageClassification(config)).eval()
    x = image_batch(2, 256, 256)
    with torch.no_grad():
        fp32 = model(x).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x).logits
    assert bf16.dtype == torch.bfloat16
    assert torch.isfinite(bf16).all()
    # Measured: max |bf16 - fp32| = 0.025 with max |fp32 logits| = 3.73, i.e. 0.68 % of the scale
    # (seeds 1, 2: 1.3 %, 0.4 %). bf16 keeps 8 mantissa bits (0.4 % per rounding), so errors of that
    # size are expected; the bound is 3 % of the scale, ~4.4x the observed value.
    assert _max_diff(bf16, fp32) < 0.03 * fp32.abs().max().item()


def test_fp16_autocast_on_cpu_stays_finite_with_realistic_activations() -> None:
    config = Swinv2Config(
        embed_dim=128,
        depths=(2, 2, 6, 2),
        num_heads=(4, 8, 16, 32),
        image_size=256,
        window_size=8,
        drop_path_rate=0.0,
        num_labels=1000,
    )
    torch.manual_seed(0)
    model = perturb_(Swinv2ForImageClassification(config), scale=0.05).eval()
    x = natural_images(2, 256)
    with torch.no_grad():
        fp32 = model(x).logits
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(x, output_hidden_states=True)
            features = model.swinv2(x).last_hidden_state
    assert out.logits.dtype == torch.float16
    assert torch.isfinite(features).all()
    assert torch.isfinite(out.logits).all()
    assert all(torch.isfinite(h).all() for h in out.hidden_states)
    # Measured: max |fp16 - fp32| = 0.0055 with max |fp32 logits| = 5.7 (0.1 %); bound 0.5 %, ~5x.
    assert _max_diff(out.logits, fp32) < 0.005 * fp32.abs().max().item()


# ----------------------------------------------------------------------- gradient checkpointing
def test_gradient_checkpointing_recomputes_blocks_and_keeps_gradients() -> None:
    torch.manual_seed(0)
    model = perturb_(Swinv2ForImageClassification(tiny_config(num_labels=3))).train()
    blocks = [m for m in model.modules() if isinstance(m, Swinv2Block)]
    calls = []
    for block in blocks:
        block.register_forward_pre_hook(lambda module, args: calls.append(module))
    x = image_batch(2, 64, 64)
    labels = torch.tensor([0, 2])

    def step() -> tuple[dict[str, torch.Tensor], list[int]]:
        calls.clear()
        model.zero_grad(set_to_none=True)
        model(x, labels=labels).loss.backward()
        return {k: p.grad.clone() for k, p in model.named_parameters()}, [sum(c is b for c in calls) for b in blocks]

    plain, plain_calls = step()
    model.gradient_checkpointing_enable()
    checkpointed, checkpointed_calls = step()
    model.gradient_checkpointing_disable()
    again, again_calls = step()

    assert plain_calls == again_calls == [1] * len(blocks)
    assert checkpointed_calls == [2] * len(blocks)  # forward, then the recomputation in backward
    assert plain.keys() == checkpointed.keys()
    for key, grad in plain.items():
        assert grad.abs().max() > 0, key
        torch.testing.assert_close(checkpointed[key], grad, atol=1e-6, rtol=0, msg=key)
        torch.testing.assert_close(again[key], grad, atol=1e-6, rtol=0, msg=key)


@pytest.mark.skipif(
    not packed_linear._onednn_linear_available(), reason="this torch build has no oneDNN: nothing is packed"
)
def test_writes_through_data_need_clear_caches() -> None:
    """`param.data` bypasses PyTorch's version counter, so the caches cannot see it; clear_caches() can.
    It also gives back the packed linear weights."""
    model = _packing_model()
    x = image_batch(1, 64, 64)
    before = _run(model, x)
    assert _packed_libraries(model) == BOTH_PACKED_ROUTES
    model.encoder.layers[0].blocks[1].attention.self.logit_scale.data.add_(0.5)
    model.encoder.layers[0].blocks[0].output.dense.weight.data.mul_(1.25)  # packed for MKL
    model.encoder.layers[0].blocks[1].intermediate.dense.weight.data.mul_(1.25)  # packed for oneDNN
    model.encoder.layers[1].blocks[0].attention.self.value.weight.data.mul_(1.25)  # in the fused qkv_weight
    model.clear_caches()
    assert not _packed_libraries(model)
    after = _run(model, x)
    torch.testing.assert_close(after, _run(_cold_copy(model), x), **EXACT)
    assert _max_diff(after, before) > 1e-3


def test_a_warm_model_deep_copies_and_pickles(tmp_path: Path) -> None:
    """The packed weights live outside the modules (oneDNN's opaque tensors cannot be copied or saved)."""
    model = _packing_model()
    x = image_batch(1, 64, 64)
    expected = _run(model, x)
    twin = copy.deepcopy(model)
    torch.save(model, tmp_path / "model.pt")  # pickles every module's state
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)  # our own file, written just above
    assert torch.equal(_run(twin, x), expected) and torch.equal(_run(loaded, x), expected)


@pytest.mark.skipif(
    not packed_linear._onednn_linear_available(), reason="this torch build has no oneDNN: nothing is packed"
)
def test_loading_by_swapping_parameters_into_a_warm_model() -> None:
    """With `torch.__future__`'s swap on conversion, loads swap the parameter tensors, which a weak
    reference (the packs') would block: `load_state_dict` gives the packs back first."""
    model, other = _packing_model(seed=0), _packing_model(seed=1)
    x = image_batch(1, 64, 64)
    _run(model, x)
    assert _packed_libraries(model) == BOTH_PACKED_ROUTES
    swapping = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        model.load_state_dict(other.state_dict())
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swapping)
    torch.testing.assert_close(_run(model, x), _run(other, x), **EXACT)


@pytest.mark.skipif(
    not packed_linear._onednn_linear_available(), reason="this torch build has no oneDNN: nothing is packed"
)
@pytest.mark.parametrize("how", ["train()", ".to(float64)"])
def test_training_mode_and_moves_give_the_packs_back(how: str) -> None:
    """Training would leave the packs stale and a move would leave them behind: both drop them."""
    model = _packing_model()
    x = image_batch(1, 64, 64)
    expected = _run(model, x)
    assert _packed_libraries(model) == BOTH_PACKED_ROUTES
    if how == "train()":
        model.train()
    else:
        model.to(torch.float64)
    assert not _packed_libraries(model)
    model.eval().float()
    torch.testing.assert_close(_run(model, x), expected, **EXACT)


def test_cache_filled_in_inference_mode_serves_later_input_gradients() -> None:
    model = _model()
    x = image_batch(1, 64, 64)
    with torch.inference_mode():
        model(x)
    model.requires_grad_(False)
    pixels = x.clone().requires_grad_(True)
    model(pixels).last_hidden_state.sum().backward()
    reference = _cold_copy(model).requires_grad_(False)
    expected = x.clone().requires_grad_(True)
    reference(expected).last_hidden_state.sum().backward()
    torch.testing.assert_close(pixels.grad, expected.grad, atol=1e-6, rtol=0)


def test_cache_keeps_a_bounded_number_of_input_sizes() -> None:
    model = _model()
    for height in range(40, 120, 4):
        _run(model, image_batch(1, height, 64))
    assert max(len(attn._cache) for attn in _attentions(model)) <= 4


def test_set_attn_implementation_leaves_other_models_of_the_same_config_alone() -> None:
    config = tiny_config()
    first, second = Swinv2Model(config), Swinv2Model(config)
    first.set_attn_implementation("sdpa")
    assert first.config.attn_implementation == "sdpa"
    assert second.config.attn_implementation == config.attn_implementation == "auto"
    assert {a.implementation for a in second.modules() if isinstance(a, Swinv2Attention)} == {"auto"}
    with pytest.raises(ValueError, match="attn_implementation 'flash' is not one of"):
        first.set_attn_implementation("flash")
