"""`swinv2.backends.packed_linear`: the linear routes, the bf16-units probe, row-block inference, and both
inside the model.

Covers:
- `linear`: fp32 inference with GELU goes through oneDNN (spied) and equals `F.gelu(F.linear(...))`;
  without GELU it takes oneDNN up to ONEDNN_SAME_SUM_K inputs and MKL's packed sgemm above, from
  PACKED_MIN_ROWS rows; with few rows, with autograd, without MKL, in other dtypes, under fp16
  autocast or bf16 autocast on a CPU with bf16 units it *is* `F.linear` (bit for bit, same
  gradients); the fallback when oneDNN's op is missing; bf16 autocast on a CPU without bf16 units
  (operands rounded to bf16, multiplied on the fp32 units).
- Packed weights, for both packed routes: packed once, packed again after each kind of weight change,
  not for inference tensors, given back with the weight; MKL's packs for two row counts per weight.
- `cpu_has_bf16_units`: non-x86 machines, x86 /proc/cpuinfo flags, an unreadable /proc/cpuinfo.
- `in_row_chunks`: block sizes (balanced) and starts, alignment, an `align` above the budget, one call when the
  input fits, under autograd and off the CPU.
- The model (tiny config, 64x64, shifted windows, 16 and 4 windows per image): "auto" and "sdpa" computed
  in many row blocks equal the unchunked and the "eager" outputs; bf16 autocast without bf16 units.

Tolerances (measured values are from a 2-core AVX-512 CPU without AVX512-BF16, torch 2.14):
- fp32: atol 1e-5, rtol 0 (STYLE.md). oneDNN linear+GELU vs the plain ops measured 0 on the
  (2, 37, 24) -> 40 case; MKL's packed sgemm vs F.linear at most
  9.5e-7 (385 inputs). Routes that call `F.linear` themselves are compared with `torch.equal`.
- bf16 on fp32 units vs its definition (operands rounded to bf16, fp32 linear, GELU, one rounding to
  bf16): one bf16 rounding, rtol 2**-7, atol 1e-6. Two fp32 results that differ only in summation
  order can round to neighbouring bf16 values; bf16 keeps 8 significant bits, so neighbours are at most
  2**-7 * |value| apart; atol covers outputs that cancel to ~0. Measured: 0 (bit-identical). The bound
  discriminates: the same linear on unrounded operands misses it in 13-18% of the outputs.
- bf16 on fp32 units vs native autocast: two bf16 roundings, rtol 2**-6, atol 1e-3. Native autocast
  rounds the linear to bf16 before GELU and rounds GELU's output again (the fused GELU acts on the fp32
  accumulator). Measured max 1.56e-2 with GELU (one ulp for values in [2, 4); outputs up to 4.9), 0 without.
- Model, fp32: atol 1e-5, rtol 0 (output scale 3.0). Measured: chunked == unchunked bit for bit at the
  block sizes used here (3.8e-6 with one-row blocks), "auto" == "eager" bit for bit, "sdpa" vs "eager" 3.0e-6.
- Model, bf16 autocast ("auto"): max |diff| <= 0.25 and mean |diff| <= 0.03 (output scale 3.0). Measured:
  without vs with bf16 units 0.082 max, 0.0106 mean; each vs fp32 eager 0.112 / 0.106 max, 0.0122 / 0.0123 mean.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode

from helpers import image_batch, intel_avx512, perturb_, tiny_config
from swinv2 import Swinv2Model
from swinv2.backends import packed_linear
from swinv2.models import registry
from swinv2.models.swinv2 import AttentionTerms, Swinv2SelfAttention

ATOL = 1e-5
BF16_ONE_ROUNDING = dict(rtol=2**-7, atol=1e-6)
BF16_TWO_ROUNDINGS = dict(rtol=2**-6, atol=1e-3)
BF16_MODEL_MAX = 0.25
BF16_MODEL_MEAN = 0.03

# Contexts in which no gradient is recorded, so the fast routes apply.
NO_AUTOGRAD: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]] = {
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
    "grad-mode-plain-tensors": contextlib.nullcontext,  # grad mode on, nothing requires grad
}


# --------------------------------------------------------------------------------------- helpers
def _operands(bias: bool = True, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """x (2, 37, 24), weight (40, 24) and bias (40,) with O(1) outputs."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 37, 24, generator=generator)
    weight = torch.randn(40, 24, generator=generator) / 24**0.5
    b = torch.randn(40, generator=generator)
    return x, weight, (b if bias else None)


def _plain(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool) -> torch.Tensor:
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out


def _bf16_definition(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool) -> torch.Tensor:
    """What bf16 autocast promises, computed on fp32 units: rounded operands, fp32 linear (+ GELU), one rounding."""
    rounded = [t if t is None else t.bfloat16().float() for t in (x, weight, bias)]
    return _plain(*rounded, gelu).bfloat16()


def _is_close(actual: torch.Tensor, expected: torch.Tensor, **tolerance: float) -> bool:
    try:
        torch.testing.assert_close(actual, expected, **tolerance)
    except AssertionError:
        return False
    return True


OnednnCall = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool, bool]  # x, weight, bias, gelu, rounding


@pytest.fixture
def onednn_calls(monkeypatch: pytest.MonkeyPatch) -> list[OnednnCall]:
    """Spy on `packed_linear._onednn_linear` (the only way into oneDNN): records its arguments, then delegates."""
    calls: list[OnednnCall] = []
    original = packed_linear._onednn_linear

    def spy(
        x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool, round_weight: bool
    ) -> torch.Tensor:
        calls.append((x, weight, bias, gelu, round_weight))
        return original(x, weight, bias, gelu, round_weight)

    monkeypatch.setattr(packed_linear, "_onednn_linear", spy)
    return calls


@pytest.fixture
def mkl_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Spy on `packed_linear._mkl_packed_linear` (the only way into MKL's packed sgemm): records x, weight, bias."""
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
    original = packed_linear._mkl_packed_linear

    def spy(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        calls.append((x, weight, bias))
        return original(x, weight, bias)

    monkeypatch.setattr(packed_linear, "_mkl_packed_linear", spy)
    return calls


class _TorchCalls(TorchFunctionMode):
    """Records the torch functions and ops called inside it (`torch.ops.mkldnn._linear_pointwise` included)."""

    def __init__(self) -> None:
        super().__init__()
        self.funcs: list[Any] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.funcs.append(func)
        return func(*args, **(kwargs or {}))

    @property
    def onednn(self) -> bool:
        return any("_linear_pointwise" in str(func) for func in self.funcs)


def _bf16_units(monkeypatch: pytest.MonkeyPatch, present: bool) -> None:
    monkeypatch.setattr(packed_linear, "cpu_has_bf16_units", lambda: present)


# ------------------------------------------------------------------------------ linear: fp32
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("context", list(NO_AUTOGRAD), ids=list(NO_AUTOGRAD))
def test_fp32_linear_gelu_goes_through_onednn(context: str, bias: bool, onednn_calls: list[Any]) -> None:
    x, weight, b = _operands(bias)
    with NO_AUTOGRAD[context](), _TorchCalls() as torch_calls:
        out = packed_linear.linear(x, weight, b, gelu=True)
    assert len(onednn_calls) == 1 and onednn_calls[0][3] is True and onednn_calls[0][4] is False
    assert onednn_calls[0][0] is x and onednn_calls[0][1] is weight and onednn_calls[0][2] is b
    # oneDNN's fused op itself ran (or, in a torch build without it, the plain ops did)
    assert torch_calls.onednn == packed_linear._onednn_linear_available()
    assert (F.linear in torch_calls.funcs) != torch_calls.onednn
    assert out.shape == (2, 37, 40) and out.dtype == torch.float32
    torch.testing.assert_close(out, _plain(x, weight, b, gelu=True), atol=ATOL, rtol=0)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("context", list(NO_AUTOGRAD), ids=list(NO_AUTOGRAD))
def test_fp32_linear_without_gelu_routes_by_width_and_rows(
    context: str, bias: bool, onednn_calls: list[Any], mkl_calls: list[Any]
) -> None:
    """From PACKED_MIN_ROWS contiguous rows: up to ONEDNN_SAME_SUM_K inputs per output oneDNN runs and its
    sums are F.linear's (bit for bit where that was measured, AVX-512; at the model's widths 96, 192 and
    384 too); wider, MKL's packed sgemm runs, within ATOL. For a vector, a transposed x or fewer rows
    the linear is F.linear itself."""
    for inputs in (24, 96, 192, packed_linear.ONEDNN_SAME_SUM_K, packed_linear.ONEDNN_SAME_SUM_K + 1, 768, 3072):
        generator = torch.Generator().manual_seed(inputs)
        x = torch.randn(3, 70, inputs, generator=generator)
        weight = torch.randn(50, inputs, generator=generator) / inputs**0.5
        b = torch.randn(50, generator=generator) if bias else None
        # rows; as many as the packed routes need; fewer (MKL's small-matrix routines); a vector; a transposed matrix
        few = packed_linear.PACKED_MIN_ROWS
        for rows in (x, x[0, :few], x[0, : few - 1], x[0, 0], x[0].t().contiguous().t()):
            onednn_calls.clear()
            mkl_calls.clear()
            with NO_AUTOGRAD[context]():
                out = packed_linear.linear(rows, weight, b)
                expected = F.linear(rows, weight, b)
            many_rows = rows.dim() >= 2 and rows.is_contiguous() and rows.numel() >= few * inputs
            takes_onednn = inputs <= packed_linear.ONEDNN_SAME_SUM_K and many_rows
            mkl_built = packed_linear._mkl_packed_linear_available()
            takes_mkl = inputs > packed_linear.ONEDNN_SAME_SUM_K and many_rows and mkl_built
            assert (len(onednn_calls), len(mkl_calls)) == (int(takes_onednn), int(takes_mkl)), (inputs, rows.shape)
            if takes_mkl or (takes_onednn and not intel_avx512()):
                torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
            else:
                assert torch.equal(out, expected), (inputs, (out - expected).abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_other_dtypes_outside_autocast_are_plain(dtype: torch.dtype, onednn_calls: list[Any]) -> None:
    x, weight, b = (t.to(dtype) for t in _operands())
    with torch.no_grad():
        out = packed_linear.linear(x, weight, b, gelu=True)
        expected = _plain(x, weight, b, gelu=True)
    assert not onednn_calls
    assert out.dtype == dtype and torch.equal(out, expected)


@pytest.mark.parametrize("gelu", [True, False], ids=["gelu", "no-gelu"])
@pytest.mark.parametrize("needs_grad", ["x", "weight", "bias"])
def test_autograd_takes_the_plain_ops_with_identical_gradients(
    needs_grad: str, gelu: bool, onednn_calls: list[Any]
) -> None:
    operands = dict(zip(("x", "weight", "bias"), _operands(), strict=True))
    grad_out = torch.randn(2, 37, 40, generator=torch.Generator().manual_seed(1))
    results, grads = [], []
    for function in (packed_linear.linear, _plain):
        leaves = {name: t.clone().requires_grad_(name == needs_grad) for name, t in operands.items()}
        out = function(leaves["x"], leaves["weight"], leaves["bias"], gelu)
        out.backward(grad_out)
        results.append(out.detach())
        grads.append(leaves[needs_grad].grad)
    assert not onednn_calls
    assert torch.equal(results[0], results[1])
    assert grads[0] is not None and grads[0].abs().max() > 0
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("route", ["fp32", "bf16-on-fp32"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_fallback_without_the_onednn_op_is_the_plain_ops(
    route: str, bias: bool, monkeypatch: pytest.MonkeyPatch, onednn_calls: list[Any]
) -> None:
    monkeypatch.setattr(packed_linear, "_onednn_linear_available", lambda: False)
    _bf16_units(monkeypatch, False)
    x, weight, b = _operands(bias)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=route == "bf16-on-fp32")
    with torch.no_grad(), autocast, _TorchCalls() as torch_calls:
        out = packed_linear.linear(x, weight, b, gelu=True)
    # bf16: F.linear on rounded operands, exactly
    reference = _plain if route == "fp32" else _bf16_definition
    expected = reference(x, weight, b, gelu=True)
    assert len(onednn_calls) == 1  # the route was taken; the fallback is inside `_onednn_linear`
    assert not torch_calls.onednn and F.linear in torch_calls.funcs and F.gelu in torch_calls.funcs
    assert out.dtype == expected.dtype and torch.equal(out, expected)


@pytest.mark.parametrize("needs_grad", [False, True], ids=["no-grad", "autograd"])
@pytest.mark.parametrize("mkl", [True, False], ids=["mkl", "without-mkl"])
def test_wide_linear_is_f_linear_without_mkl_or_with_autograd(
    mkl: bool, needs_grad: bool, monkeypatch: pytest.MonkeyPatch, mkl_calls: list[Any]
) -> None:
    """The MKL route needs a torch built with MKL and no autograd; otherwise the linear is F.linear itself."""
    if not mkl:
        monkeypatch.setattr(packed_linear, "_mkl_packed_linear_available", lambda: False)
    elif not packed_linear._mkl_packed_linear_available():
        pytest.skip("this torch build has no MKL")
    module, x = _route_module("mkl"), _route_input("mkl")
    module.requires_grad_(needs_grad)
    out = packed_linear.linear(x, module.weight, module.bias)
    assert len(mkl_calls) == int(mkl and not needs_grad)
    if not mkl_calls:
        assert torch.equal(out, F.linear(x, module.weight, module.bias))


# ------------------------------------------------------------------------------ linear: autocast
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("gelu", [True, False], ids=["gelu", "no-gelu"])
def test_bf16_autocast_without_bf16_units_rounds_operands_on_fp32_units(
    gelu: bool, bias: bool, monkeypatch: pytest.MonkeyPatch, onednn_calls: list[Any]
) -> None:
    x, weight, b = _operands(bias)
    _bf16_units(monkeypatch, False)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = packed_linear.linear(x, weight, b, gelu=gelu)
    _bf16_units(monkeypatch, True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        native = _plain(x, weight, b, gelu)

    assert out.dtype == native.dtype == torch.bfloat16 and out.shape == (2, 37, 40)
    # One fp32 oneDNN call on operands rounded to bf16 exactly as autocast rounds them: x and bias
    # rounded per call, the weight rounded once into its pack.
    assert len(onednn_calls) == 1
    seen_x, seen_weight, seen_bias, seen_gelu, round_weight = onednn_calls[0]
    rounded = [t for t in (seen_x, seen_bias) if t is not None]
    assert len(rounded) == (2 if bias else 1) and seen_gelu is gelu
    assert all(t.dtype == torch.float32 and torch.equal(t, t.bfloat16().float()) for t in rounded)
    assert seen_weight is weight and round_weight is True

    expected = _bf16_definition(x, weight, b, gelu)
    torch.testing.assert_close(out.float(), expected.float(), **BF16_ONE_ROUNDING)
    # Guard: the bound tells rounded operands from unrounded ones (measured: 13-18% of outputs miss it).
    unrounded = _plain(x, weight, b, gelu).bfloat16()
    assert not _is_close(unrounded.float(), expected.float(), **BF16_ONE_ROUNDING)
    torch.testing.assert_close(out.float(), native.float(), **BF16_TWO_ROUNDINGS)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("gelu", [True, False], ids=["gelu", "no-gelu"])
def test_bf16_autocast_with_bf16_units_is_native_autocast(
    gelu: bool, bias: bool, monkeypatch: pytest.MonkeyPatch, onednn_calls: list[Any]
) -> None:
    x, weight, b = _operands(bias)
    _bf16_units(monkeypatch, True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = packed_linear.linear(x, weight, b, gelu=gelu)
        expected = _plain(x, weight, b, gelu)
    assert not onednn_calls
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected)


def test_bf16_autocast_with_autograd_is_native_autocast(
    monkeypatch: pytest.MonkeyPatch, onednn_calls: list[Any]
) -> None:
    x, weight, b = _operands()
    _bf16_units(monkeypatch, False)
    x.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = packed_linear.linear(x, weight, b, gelu=True)
        expected = _plain(x, weight, b, gelu=True)
    assert not onednn_calls
    assert out.dtype == torch.bfloat16 and out.requires_grad and torch.equal(out, expected)


@pytest.mark.parametrize("gelu", [True, False], ids=["gelu", "no-gelu"])
def test_fp16_autocast_is_native_autocast(gelu: bool, monkeypatch: pytest.MonkeyPatch, onednn_calls: list[Any]) -> None:
    x, weight, b = _operands()
    _bf16_units(monkeypatch, False)  # the bf16 route is for bf16 only, even where it would apply
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        out = packed_linear.linear(x, weight, b, gelu=gelu)
        expected = _plain(x, weight, b, gelu)
    assert not onednn_calls
    assert out.dtype == torch.float16 and torch.equal(out, expected)


# ------------------------------------------------------------------------------ packed weights
needs_onednn = pytest.mark.skipif(not packed_linear._onednn_linear_available(), reason="this torch build has no oneDNN")


needs_mkl = pytest.mark.skipif(not packed_linear._mkl_packed_linear_available(), reason="this torch build has no MKL")

Packing = tuple[torch.Tensor, Any]  # the weight and its packed_linear._Layout


@pytest.fixture
def packs(monkeypatch: pytest.MonkeyPatch) -> list[Packing]:
    """Spy on `packed_linear._pack`: records the (weight, layout) of every packing."""
    made: list[Packing] = []
    original = packed_linear._pack

    def spy(weight: torch.Tensor, layout: Any) -> torch.Tensor:
        made.append((weight, layout))
        return original(weight, layout)

    monkeypatch.setattr(packed_linear, "_pack", spy)
    return made


# The packed routes, each with a linear it takes: (inputs, gelu). oneDNN takes a GELU-fused linear at
# any width; MKL's packed sgemm a linear without GELU wider than ONEDNN_SAME_SUM_K.
PACKED_ROUTES = {"onednn": (24, True), "mkl": (768, False)}
PACKED_ROUTE_PARAMS = [pytest.param("onednn", marks=needs_onednn), pytest.param("mkl", marks=needs_mkl)]


def _route_module(route: str, seed: int = 0) -> torch.nn.Linear:
    inputs, _ = PACKED_ROUTES[route]
    generator = torch.Generator().manual_seed(seed)
    module = torch.nn.Linear(inputs, 40)
    with torch.no_grad():
        module.weight.copy_(torch.randn(40, inputs, generator=generator) / inputs**0.5)
        module.bias.copy_(torch.randn(40, generator=generator))
    return module


def _route_input(route: str, rows: int = 37) -> torch.Tensor:
    """(2, rows, inputs): enough rows for either packed route."""
    return torch.randn(2, rows, PACKED_ROUTES[route][0], generator=torch.Generator().manual_seed(100))


def _route_run(module: torch.nn.Linear, x: torch.Tensor, route: str, fast: bool = True) -> torch.Tensor:
    """The route's linear of `module` by `packed_linear.linear` (or, not `fast`, by the plain ops), without autograd."""
    with torch.no_grad():
        return (packed_linear.linear if fast else _plain)(x, module.weight, module.bias, PACKED_ROUTES[route][1])


@pytest.mark.parametrize("route", PACKED_ROUTE_PARAMS)
def test_a_weight_is_packed_once_and_reused(route: str, packs: list[Packing]) -> None:
    module = _route_module(route)
    x = _route_input(route)
    outputs = [_route_run(module, x, route) for _ in range(3)]
    assert [(w.data_ptr() == module.weight.data_ptr(), layout.library) for w, layout in packs] == [(True, route)]
    assert all(torch.equal(out, outputs[0]) for out in outputs)
    torch.testing.assert_close(outputs[0], _route_run(module, x, route, fast=False), atol=ATOL, rtol=0)


def _sgd_step(module: torch.nn.Linear, other: torch.nn.Linear) -> None:
    module.weight.grad = module.weight.detach() - other.weight.detach()
    torch.optim.SGD([module.weight], lr=1.0).step()  # weight - (weight - other) = other's weight


WEIGHT_CHANGES: dict[str, Callable[[torch.nn.Linear, torch.nn.Linear], Any]] = {
    "copy_": lambda module, other: module.weight.copy_(other.weight),
    "mul_": lambda module, other: module.weight.mul_(1.5),
    "optimizer step": _sgd_step,
    "load_state_dict": lambda module, other: module.load_state_dict(other.state_dict()),
    "load_state_dict assign": lambda module, other: module.load_state_dict(other.state_dict(), assign=True),
    "data swap": lambda module, other: setattr(module.weight, "data", other.weight.detach().clone()),
    "dtype round trip": lambda module, other: module.double().float(),
}


@pytest.mark.parametrize("route", PACKED_ROUTE_PARAMS)
@pytest.mark.parametrize("change", list(WEIGHT_CHANGES), ids=list(WEIGHT_CHANGES))
def test_a_changed_weight_is_packed_again(change: str, route: str, packs: list[Packing]) -> None:
    module, other = _route_module(route, seed=0), _route_module(route, seed=1)
    x = _route_input(route)
    before = _route_run(module, x, route)
    with torch.no_grad():
        WEIGHT_CHANGES[change](module, other)
    after = _route_run(module, x, route)
    assert len(packs) == 2
    torch.testing.assert_close(after, _route_run(module, x, route, fast=False), atol=ATOL, rtol=0)
    assert (after - before).abs().max() > 1e-2 or change == "dtype round trip"  # that one keeps the values


@needs_mkl
def test_mkl_packs_are_kept_for_two_row_counts_per_weight(packs: list[Packing], mkl_calls: list[Any]) -> None:
    """MKL packs for one row count: a weight keeps MKL_ROW_COUNTS_PER_WEIGHT of them, the least
    recently used going first; every product stays F.linear's within ATOL."""
    module = _route_module("mkl")
    for rows in (37, 37, 50, 37, 60, 37):
        x = _route_input("mkl", rows)
        torch.testing.assert_close(
            _route_run(module, x, "mkl"), _route_run(module, x, "mkl", fast=False), atol=ATOL, rtol=0
        )
    assert packed_linear.MKL_ROW_COUNTS_PER_WEIGHT == 2
    # 2 images x rows: 74 was used after 100, so 100 went when 120 came (first in, first out would
    # have dropped 74 and packed it again)
    assert [layout.rows for _, layout in packs] == [74, 100, 120]
    assert sorted(layout.rows for layout in packed_linear._PACKS[module.weight]) == [74, 120]
    assert len(mkl_calls) == 6


@pytest.mark.parametrize("route", PACKED_ROUTE_PARAMS)
def test_the_packed_weight_is_what_multiplies(route: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The packed kernels multiply by the pack, not by the weight passed beside it (MKL's op falls
    back to the weight for another row count): a pack of twice the weight doubles the product."""
    original = packed_linear._pack
    monkeypatch.setattr(packed_linear, "_pack", lambda weight, layout: original(2 * weight, layout))
    module, x = _route_module(route), _route_input(route)
    with torch.no_grad():
        doubled = torch.nn.Linear(module.in_features, module.out_features)
        doubled.weight.copy_(2 * module.weight)
        doubled.bias.copy_(module.bias)
    torch.testing.assert_close(
        _route_run(module, x, route), _route_run(doubled, x, route, fast=False), atol=ATOL, rtol=0
    )


BAD_FOR_THE_PACKED_KERNELS: dict[str, Callable[[torch.nn.Linear, torch.Tensor], tuple[torch.Tensor, ...]]] = {
    "bias (1,)": lambda m, x: (x, m.weight, m.bias[:1].clone()),
    "bias ()": lambda m, x: (x, m.weight, m.bias[0].clone()),
    "bias (rows, outputs)": lambda m, x: (x[0], m.weight, torch.randn(x.shape[1], m.out_features)),
    "transposed weight": lambda m, x: (x, m.weight.t().contiguous().t(), m.bias),
    "no rows": lambda m, x: (x[:, :0], m.weight, m.bias),
    "no outputs": lambda m, x: (x, m.weight[:0], m.bias[:0]),
}


@pytest.mark.parametrize("route", PACKED_ROUTE_PARAMS)
@pytest.mark.parametrize("case", list(BAD_FOR_THE_PACKED_KERNELS), ids=list(BAD_FOR_THE_PACKED_KERNELS))
def test_what_the_packed_kernels_cannot_take_is_f_linear(
    case: str, route: str, onednn_calls: list[Any], mkl_calls: list[Any]
) -> None:
    """A bias F.linear broadcasts (the packed kernels would read past it), empty operands (MKL's packing
    crashes on no outputs) and, for MKL, a transposed weight: F.linear itself, bit for bit."""
    module, x = _route_module(route), _route_input(route)
    x, weight, bias = BAD_FOR_THE_PACKED_KERNELS[case](module, x)
    gelu = PACKED_ROUTES[route][1]
    with torch.no_grad():
        out = packed_linear.linear(x, weight, bias, gelu)
        expected = _plain(x, weight, bias, gelu)
    assert not mkl_calls
    assert not onednn_calls or (route == "onednn" and case == "transposed weight")  # oneDNN takes any weight
    assert out.shape == expected.shape
    if onednn_calls:
        torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    else:
        assert torch.equal(out, expected)


@needs_onednn
@pytest.mark.parametrize("through", ["data", "numpy"])
def test_writes_pytorch_cannot_see_need_forget_packed(through: str, packs: list[Packing]) -> None:
    """Writes through `.data` or a numpy view bypass the version counter (documented); `forget_packed`
    makes the next call repack."""
    module = _route_module("onednn")
    x = _route_input("onednn")
    before = _route_run(module, x, "onednn")
    if through == "data":
        module.weight.data.mul_(1.5)
    else:
        module.weight.detach().numpy()[:] *= 1.5
    packed_linear.forget_packed(module.parameters())
    assert module.weight not in packed_linear._PACKS
    after = _route_run(module, x, "onednn")
    assert len(packs) == 2 and (after - before).abs().max() > 1e-2
    torch.testing.assert_close(after, _route_run(module, x, "onednn", fast=False), atol=ATOL, rtol=0)


@needs_onednn
def test_a_pack_goes_with_its_weight() -> None:
    module = _route_module("onednn")
    _route_run(module, _route_input("onednn"), "onednn")
    assert module.weight in packed_linear._PACKS
    gc.collect()  # other tests' dead weights leave first
    alive = len(packed_linear._PACKS)
    del module
    gc.collect()
    assert len(packed_linear._PACKS) == alive - 1


@needs_onednn
def test_fp32_and_rounded_packs_of_one_weight_alternate_correctly(
    monkeypatch: pytest.MonkeyPatch, packs: list[Packing]
) -> None:
    _bf16_units(monkeypatch, False)
    module = _route_module("onednn")
    x = _route_input("onednn")
    for _ in range(2):
        torch.testing.assert_close(
            _route_run(module, x, "onednn"), _route_run(module, x, "onednn", fast=False), atol=ATOL, rtol=0
        )
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded = _route_run(module, x, "onednn")
        expected = _bf16_definition(x, module.weight.detach(), module.bias.detach(), gelu=True)
        torch.testing.assert_close(rounded.float(), expected.float(), **BF16_ONE_ROUNDING)
    # one per route, reused
    assert [layout for _, layout in packs] == [packed_linear.ONEDNN, packed_linear.ONEDNN_ROUNDED]


@pytest.mark.parametrize("route", PACKED_ROUTE_PARAMS)
def test_an_inference_tensor_weight_is_not_packed(route: str, packs: list[Packing], mkl_calls: list[Any]) -> None:
    """Without a version counter a pack could not be kept safely: oneDNN takes the weight unpacked, and
    the MKL route leaves the linear to F.linear."""
    module, x = _route_module(route), _route_input(route)
    with torch.inference_mode():
        frozen = torch.nn.Linear(module.in_features, module.out_features)
        frozen.load_state_dict(module.state_dict())
        out = _route_run(frozen, x, route)
    assert frozen.weight.is_inference() and frozen.weight not in packed_linear._PACKS and not packs and not mkl_calls
    expected = _route_run(module, x, route, fast=False)
    if route == "mkl":
        assert torch.equal(out, expected)
    else:
        torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


@needs_onednn
def test_a_pack_does_not_keep_a_replaced_weight_alive() -> None:
    module = _route_module("onednn")
    _route_run(module, _route_input("onednn"), "onednn")
    old = StorageWeakRef(module.weight.untyped_storage())
    module.weight.data = module.weight.detach().clone()
    gc.collect()
    assert old.expired()


@needs_onednn
def test_an_inference_tensor_weight_on_the_rounded_route(monkeypatch: pytest.MonkeyPatch, packs: list[Packing]) -> None:
    _bf16_units(monkeypatch, False)
    x, weight, b = _operands()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        frozen = weight.clone()
        out = packed_linear.linear(x, frozen, b, gelu=True)
    assert not packs
    torch.testing.assert_close(out.float(), _bf16_definition(x, weight, b, gelu=True).float(), **BF16_ONE_ROUNDING)


@needs_onednn
def test_jit_trace_records_the_plain_ops(onednn_calls: list[Any]) -> None:
    """A trace would keep the packed weight as a constant: tracing takes `F.linear`."""

    class Fused(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = _route_module("onednn")

        def forward(self, rows: torch.Tensor) -> torch.Tensor:
            return packed_linear.linear(rows, self.linear.weight, self.linear.bias, gelu=True)

    fused = Fused()
    module = fused.linear
    x = _route_input("onednn")
    with torch.no_grad():
        traced = torch.jit.trace(fused, x, check_trace=False)  # the check would rerun it untraced
    assert not onednn_calls
    assert "mkldnn" not in str(traced.graph)
    with torch.no_grad():
        module.weight.mul_(1.5)
        torch.testing.assert_close(traced(x), _route_run(module, x, "onednn", fast=False), atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------ cpu_has_bf16_units
@pytest.fixture
def fresh_probe() -> Iterator[None]:
    """`cpu_has_bf16_units` is cached: start and end each test with an empty cache."""
    packed_linear.cpu_has_bf16_units.cache_clear()
    yield
    packed_linear.cpu_has_bf16_units.cache_clear()


def _fake_path(content: str | OSError, opened: list[str]) -> type:
    """A stand-in for `pathlib.Path` whose `read_text` returns `content` (or raises it), recording the paths."""

    class FakePath:
        def __init__(self, path: str) -> None:
            self.path = str(path)

        def read_text(self) -> str:
            opened.append(self.path)
            if isinstance(content, OSError):
                raise content
            return content

    return FakePath


CPUINFO = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni {extra}\n\n"


@pytest.mark.parametrize("machine", ["aarch64", "arm64", "ppc64le"])
def test_non_x86_counts_as_having_bf16_units(machine: str, fresh_probe: None, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr(packed_linear.platform, "machine", lambda: machine)
    monkeypatch.setattr(packed_linear, "Path", _fake_path(CPUINFO.format(extra=""), opened))
    assert packed_linear.cpu_has_bf16_units() is True
    assert opened == []  # decided by the architecture alone


@pytest.mark.parametrize(
    ("machine", "extra", "expected"),
    [
        ("x86_64", "", False),
        ("x86_64", "avx512_bf16", True),
        ("x86_64", "amx_tile amx_bf16", True),
        ("AMD64", "avx512_bf16", True),
        ("AMD64", "avx512_fp16", False),
    ],
    ids=["no-bf16", "avx512_bf16", "amx_bf16", "AMD64-avx512_bf16", "AMD64-fp16-only"],
)
def test_x86_reads_the_cpu_flags(
    machine: str, extra: str, expected: bool, fresh_probe: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    monkeypatch.setattr(packed_linear.platform, "machine", lambda: machine)
    monkeypatch.setattr(packed_linear, "Path", _fake_path(CPUINFO.format(extra=extra), opened))
    assert packed_linear.cpu_has_bf16_units() is expected
    assert packed_linear.cpu_has_bf16_units() is expected
    assert opened == ["/proc/cpuinfo"]  # read once, then cached


def test_unreadable_cpuinfo_counts_as_having_bf16_units(fresh_probe: None, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr(packed_linear.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(packed_linear, "Path", _fake_path(PermissionError("no /proc here"), opened))
    assert packed_linear.cpu_has_bf16_units() is True
    assert opened == ["/proc/cpuinfo"]


# ------------------------------------------------------------------------------ in_row_chunks
def _start(rows: torch.Tensor) -> int:
    """Where a block of rows starts in the (contiguous, unoffset) input it is a view of."""
    return rows.storage_offset() // max(rows.stride(0), 1)


def _recording_fn(calls: list[tuple[int, int]]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A row-wise fn, (R, 3) -> (R, 2) float64, whose output depends on where its rows start in the input
    (`_start`); records (rows, start)."""

    def fn(rows: torch.Tensor) -> torch.Tensor:
        start = _start(rows)
        calls.append((rows.shape[0], start))
        index = torch.arange(start, start + rows.shape[0], dtype=torch.float64, device=rows.device)
        return torch.stack((rows.double().sum(-1), index), dim=-1)

    return fn


def _rows(total: int) -> torch.Tensor:
    return torch.randn(total, 3, generator=torch.Generator().manual_seed(total))


# CHUNK_BYTES is patched to 100: with 8 bytes per row, 12 rows fit in a block.
@pytest.mark.parametrize(
    ("total", "bytes_per_row", "align", "blocks"),
    [
        (23, 8, 1, [12, 11]),
        (25, 8, 1, [9, 9, 7]),  # three blocks are needed: balanced, not 12, 12 and a sliver of 1
        (37, 8, 1, [10, 10, 10, 7]),
        (23, 8, 5, [10, 10, 3]),  # balanced (8), then up to a multiple of 5; the remainder last
        (20, 8, 4, [12, 8]),
        (21, 8, 7, [7, 7, 7]),  # one multiple of 7 fits, two do not
        (40, 8, 20, [20, 20]),  # align above the budget: blocks of exactly `align` rows
        (3, 200, 1, [1, 1, 1]),  # not even one row fits: one row per block
        (12, 8, 1, [12]),  # fits exactly: one call
        (23, 0, 1, [23]),  # no intermediates: one call
    ],
)
def test_in_row_chunks_blocks(
    total: int, bytes_per_row: int, align: int, blocks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packed_linear, "CHUNK_BYTES", 100)
    x = _rows(total)
    calls: list[tuple[int, int]] = []
    fn = _recording_fn(calls)
    with torch.no_grad():
        out = packed_linear.in_row_chunks(fn, x, bytes_per_row, align=align)
    starts = [sum(blocks[:i]) for i in range(len(blocks))]
    assert calls == list(zip(blocks, starts, strict=True))  # in order, covering every row once
    assert all(size % align == 0 for size in blocks[:-1])
    expected = fn(x)
    assert out.dtype == expected.dtype == torch.float64 and torch.equal(out, expected)


def test_in_row_chunks_in_inference_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packed_linear, "CHUNK_BYTES", 100)
    x = _rows(23)
    calls: list[tuple[int, int]] = []
    with torch.inference_mode():
        out = packed_linear.in_row_chunks(_recording_fn(calls), x, 8, align=5)
    assert calls == [(10, 0), (10, 10), (3, 20)]
    assert torch.equal(out, _recording_fn([])(x))


@pytest.mark.parametrize("case", ["grad-mode", "requires-grad", "meta-device", "jit-trace"])
def test_in_row_chunks_calls_fn_once_with_autograd_or_off_the_cpu(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packed_linear, "CHUNK_BYTES", 100)
    x = _rows(23)
    calls: list[tuple[int, int]] = []
    fn = _recording_fn(calls)
    if case == "grad-mode":  # autograd on, nothing requires grad
        with torch.enable_grad():
            out = packed_linear.in_row_chunks(fn, x, 8)
    elif case == "requires-grad":
        x.requires_grad_(True)
        with torch.enable_grad():
            out = packed_linear.in_row_chunks(fn, x, 8)
        out.sum().backward()
        assert x.grad is not None and torch.equal(x.grad, torch.ones_like(x))
    elif case == "meta-device":
        with torch.no_grad():
            out = packed_linear.in_row_chunks(fn, x.to("meta"), 8)
    else:  # a trace of blocks would replay this size's loop for any input
        with torch.no_grad():
            traced = torch.jit.trace(lambda rows: packed_linear.in_row_chunks(fn, rows, 8), x, check_trace=False)
            longer = _rows(31)
            assert torch.equal(traced(longer), _recording_fn([])(longer))
            out = traced(x)
    assert calls[0] == (23, 0) and len(calls) == 1
    assert out.shape == (23, 2)


# ------------------------------------------------------------------------------ the model
@dataclasses.dataclass
class _ChunkCall:
    total: int
    align: int
    blocks: list[tuple[int, int]]  # (rows, start) of each fn call


@pytest.fixture
def chunk_log(monkeypatch: pytest.MonkeyPatch) -> list[_ChunkCall]:
    """Spy on `packed_linear.in_row_chunks` as the model calls it (the `row_blocks` of the registered
    "auto", "sdpa" and "triton" backends): the blocks of every call."""
    log: list[_ChunkCall] = []
    original = packed_linear.in_row_chunks

    def spy(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, bytes_per_row: int, align: int = 1):
        call = _ChunkCall(x.shape[0], align, [])
        log.append(call)

        def recorded(rows: torch.Tensor) -> torch.Tensor:
            assert rows.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()  # a block of x
            start = (rows.storage_offset() - x.storage_offset()) // x.stride(0)
            call.blocks.append((rows.shape[0], start))
            return fn(rows)

        return original(recorded, x, bytes_per_row, align)

    for name in ("auto", "sdpa", "triton"):
        backend = registry.get_backend(name)
        assert backend.row_blocks is original
        monkeypatch.setitem(registry._BACKENDS, name, dataclasses.replace(backend, row_blocks=spy))
    return log


def _model(implementation: str = "auto", seed: int = 0) -> Swinv2Model:
    """The tiny config (64 px, window 4, shift 2: 16 then 4 windows per image), perturbed, in eval mode."""
    torch.manual_seed(seed)
    model = perturb_(Swinv2Model(tiny_config()), seed=seed).eval()
    model.set_attn_implementation(implementation)
    return model


def _run(model: Swinv2Model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).last_hidden_state


def _check_blocks(call: _ChunkCall) -> None:
    """Blocks in order, covering the rows once; shifted attention gets whole images' windows."""
    sizes = [rows for rows, _ in call.blocks]
    assert [start for _, start in call.blocks] == [sum(sizes[:i]) for i in range(len(sizes))]
    assert sum(sizes) == call.total
    assert all(size % call.align == 0 for size in sizes)  # the model's row counts are whole images


@pytest.mark.parametrize(
    ("chunk_bytes", "split_calls", "multi_image_blocks"),
    [
        # Every attention and MLP call in blocks: unshifted attention 3 or 1 windows, shifted one image,
        # MLP 156 or 78 tokens (blocks that straddle images).
        (40_000, 8, False),
        # Only stage-1 attention in blocks, of two images' windows (32) then one (16).
        (327_680, 2, True),
    ],
    ids=["small-blocks", "two-image-blocks"],
)
@pytest.mark.parametrize("implementation", ["auto", "sdpa"])
def test_chunked_model_matches_unchunked_and_eager(
    implementation: str,
    chunk_bytes: int,
    split_calls: int,
    multi_image_blocks: bool,
    monkeypatch: pytest.MonkeyPatch,
    chunk_log: list[_ChunkCall],
) -> None:
    model = _model()
    x = image_batch(3, 64, 64)

    model.set_attn_implementation("eager")
    eager = _run(model, x)
    assert not chunk_log  # the reference path never blocks

    model.set_attn_implementation(implementation)
    unchunked = _run(model, x)
    assert len(chunk_log) == 8 and all(len(call.blocks) == 1 for call in chunk_log)  # 4 blocks x (attn, MLP)

    chunk_log.clear()
    monkeypatch.setattr(packed_linear, "CHUNK_BYTES", chunk_bytes)
    chunked = _run(model, x)
    assert len(chunk_log) == 8
    for call in chunk_log:
        _check_blocks(call)
    assert sum(len(call.blocks) > 1 for call in chunk_log) == split_calls
    shifted = [call for call in chunk_log if call.align > 1]
    assert [call.align for call in shifted] == [16, 4]  # stage 1 and 2 shifted blocks: whole images' windows
    assert any(rows > call.align for call in shifted for rows, _ in call.blocks) == multi_image_blocks

    torch.testing.assert_close(chunked, unchunked, atol=ATOL, rtol=0)
    torch.testing.assert_close(chunked, eager, atol=ATOL, rtol=0)


@pytest.mark.parametrize("implementation", ["auto", "sdpa"])
def test_chunked_model_comparison_detects_a_misplaced_window_bias(
    implementation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guard for the test above: giving each window its neighbour's bias + shift mask moves the output far
    beyond 1e-5 (measured 2.1), so a block that indexed the per-window terms wrongly would be caught."""
    model = _model()
    x = image_batch(3, 64, 64)
    model.set_attn_implementation("eager")
    eager = _run(model, x)

    original = Swinv2SelfAttention.terms

    def rolled(
        self: Swinv2SelfAttention, mask: torch.Tensor | None, mask_key: object, dtype: torch.dtype
    ) -> AttentionTerms:
        terms = original(self, mask, mask_key, dtype)
        return dataclasses.replace(terms, bias=terms.bias.roll(1, dims=0)) if terms.bias.shape[0] > 1 else terms

    monkeypatch.setattr(Swinv2SelfAttention, "terms", rolled)
    monkeypatch.setattr(packed_linear, "CHUNK_BYTES", 40_000)
    model.set_attn_implementation(implementation)
    assert (_run(model, x) - eager).abs().max() > 0.5


def test_bf16_model_without_bf16_units_is_close_to_native_and_fp32(
    monkeypatch: pytest.MonkeyPatch, onednn_calls: list[Any]
) -> None:
    model = _model()
    x = image_batch(3, 64, 64)
    model.set_attn_implementation("eager")
    fp32 = _run(model, x)
    model.set_attn_implementation("auto")

    outputs, onednn = {}, {}
    for units in (False, True):
        _bf16_units(monkeypatch, units)
        onednn_calls.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs[units] = _run(model, x).float()
        onednn[units] = len(onednn_calls)
    assert onednn[False] > 0 and onednn[True] == 0  # only the CPU without bf16 units takes the fp32-units route
    assert not torch.equal(outputs[False], outputs[True])

    for actual, expected in [(outputs[False], outputs[True]), (outputs[False], fp32), (outputs[True], fp32)]:
        diff = (actual - expected).abs()
        assert diff.max() <= BF16_MODEL_MAX and diff.mean() <= BF16_MODEL_MEAN
