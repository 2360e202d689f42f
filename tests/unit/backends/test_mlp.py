"""`swinv2.backends.mlp.fast_mlp`: the training path with the hand-written backward (`_GeluMlp`)
against the eager MLP (`swinv2.models.swinv2.eager_mlp`, the plain modules), bit for bit, and where
it steps aside."""

from __future__ import annotations

import pytest
import torch

from helpers import count_forwards
from swinv2.backends.mlp import _GeluMlp
from swinv2.models.registry import get_backend
from swinv2.models.swinv2 import BlockOptions, Swinv2Block

# The MLP's parameters in a block: intermediate.dense (fc1) and output.dense (fc2).
FC1, FC2 = "intermediate.dense", "output.dense"


def _block(act: str, implementation: str) -> Swinv2Block:
    """A block of width 12 whose MLP is 12 -> 48 -> 12 with activation `act`."""
    options = BlockOptions(mlp_ratio=4.0, hidden_act=act, implementation=implementation)
    return Swinv2Block(12, 2, 2, options=options)


def _pair(act: str = "gelu") -> tuple[Swinv2Block, Swinv2Block]:
    """A fast-path ("auto") block and an "eager" one (plain modules) with the same weights."""
    torch.manual_seed(0)
    fast = _block(act, "auto")
    eager = _block(act, "eager")
    eager.load_state_dict(fast.state_dict())
    return fast, eager


def _mlp(block: Swinv2Block, x: torch.Tensor) -> torch.Tensor:
    """The block's MLP as its backend runs it (`fast_mlp` for "auto", `eager_mlp` for "eager")."""
    return get_backend(block.implementation).mlp(block, x)


def _mlp_parameters(block: Swinv2Block) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in block.named_parameters() if name.startswith((FC1, FC2))}


def _train(
    block: Swinv2Block, x: torch.Tensor, grad_out: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    x = x.detach().clone().requires_grad_(x.requires_grad)
    out = _mlp(block, x)
    out.backward(grad_out)
    grads = {name: p.grad for name, p in _mlp_parameters(block).items()}
    grads["x"] = x.grad
    return out.detach(), grads


def _calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    return count_forwards(monkeypatch, mlp=_GeluMlp)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 7, 12), (5, 12)], ids=["tokens", "rows"])
def test_training_gradients_are_autograds_bit_for_bit(
    shape: tuple[int, ...], dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _calls(monkeypatch)
    fast, eager = (m.to(dtype) for m in _pair())
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=generator, dtype=dtype).requires_grad_()
    grad_out = torch.randn(shape, generator=generator, dtype=dtype)
    out, grads = _train(fast, x, grad_out)
    assert calls == {"mlp": 1}
    expected_out, expected = _train(eager, x, grad_out)
    assert out.shape == shape and torch.equal(out, expected_out)
    for name, grad in grads.items():
        assert grad is not None and grad.abs().max() > 0, name
        assert torch.equal(grad, expected[name]), name


def test_frozen_weights_get_no_gradient() -> None:
    fast, eager = _pair()
    for block in (fast, eager):
        block.intermediate.dense.requires_grad_(False)
    x = torch.randn(3, 12, requires_grad=True)
    grad_out = torch.randn(3, 12)
    _, grads = _train(fast, x, grad_out)
    _, expected = _train(eager, x, grad_out)
    assert grads[f"{FC1}.weight"] is None and grads[f"{FC1}.bias"] is None
    for name in ("x", f"{FC2}.weight", f"{FC2}.bias"):
        assert torch.equal(grads[name], expected[name]), name


@pytest.mark.parametrize("case", ["no-grad", "other-activation", "eager"])
def test_plain_ops_where_it_does_not_apply(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _calls(monkeypatch)
    fast, eager = _pair("gelu_new" if case == "other-activation" else "gelu")
    block = eager if case == "eager" else fast
    x = torch.randn(4, 12, requires_grad=True)
    with (
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast"),
        torch.set_grad_enabled(case != "no-grad"),
    ):
        out = _mlp(block, x)
    assert out.shape == (4, 12) and out.requires_grad == (case != "no-grad")
    assert calls == {"mlp": 0}


def test_double_backward_is_refused_clearly() -> None:
    fast, _ = _pair()
    x = torch.randn(3, 12, requires_grad=True)
    (grad,) = torch.autograd.grad(_mlp(fast, x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad.sum().backward()


@pytest.mark.parametrize("trained", ["x", f"{FC1}.bias", f"{FC2}.weight"])
def test_any_one_trained_tensor_takes_the_node(trained: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _calls(monkeypatch)
    fast, eager = _pair()
    for block in (fast, eager):
        for name, p in block.named_parameters():
            p.requires_grad_(name == trained)
    x = torch.randn(3, 12, requires_grad=trained == "x")
    grad_out = torch.randn(3, 12)
    _, grads = _train(fast, x, grad_out)
    _, expected = _train(eager, x, grad_out)
    assert calls == {"mlp": 1}
    for name, grad in grads.items():
        assert (grad is not None) == (name == trained), name
        if grad is not None:
            assert torch.equal(grad, expected[name]), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_training_is_autocasts_bit_for_bit(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under autocast the node computes in the autocast dtype and returns fp32 gradients, like the
    plain modules' graph through autocast's casts."""
    calls = _calls(monkeypatch)
    fast, eager = _pair()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 12, generator=generator, requires_grad=True)
    grad_out = torch.randn(2, 7, 12, generator=generator)
    results = []
    for block in (fast, eager):
        leaf = x.detach().clone().requires_grad_()
        with torch.autocast("cpu", dtype=dtype):
            out = _mlp(block, leaf)
        out.backward(grad_out.to(dtype))  # outside autocast, as recommended
        grads = {n: p.grad for n, p in _mlp_parameters(block).items()}
        results.append((out.detach(), {**grads, "x": leaf.grad}))
    assert calls == {"mlp": 1}
    (out, grads), (expected_out, expected) = results
    assert out.dtype == expected_out.dtype == dtype and torch.equal(out, expected_out)
    for name, grad in grads.items():
        assert grad.dtype == torch.float32 and grad.abs().max() > 0, name
        assert torch.equal(grad, expected[name]), name
