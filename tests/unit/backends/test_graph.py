"""The "graph" backend (`swinv2.backends.graph`), the layout `swinv2.export` traces: equal to the reference
("eager") forward and backward, with every window arrangement (shifted, padded, one window per stage).

Tolerance: atol 1e-5 in fp32 (the order of the q/k/v products and of the norm's division differs).
"""

from __future__ import annotations

import pytest
import torch

from helpers import image_batch, perturb_, tiny_config
from swinv2 import Swinv2ForImageClassification, Swinv2ForMaskedImageModeling
from swinv2.backends.graph import graph_linear

ATOL = 1e-5


def _pair(model_class: type, **changes: object) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    eager = perturb_(model_class(tiny_config(**changes)))
    graph = model_class(tiny_config(**changes))
    graph.load_state_dict(eager.state_dict())
    eager.set_attn_implementation("eager")
    graph.set_attn_implementation("graph")
    return eager.eval(), graph.eval()


@pytest.mark.parametrize(
    ("height", "width"),
    [(64, 64), (52, 60), (36, 20)],  # whole windows; padded windows; a stage with one window
)
def test_the_classifier_equals_eager(height: int, width: int) -> None:
    eager, graph = _pair(Swinv2ForImageClassification)
    pixels = image_batch(3, height, width)
    with torch.no_grad():
        expected = eager(pixels, output_hidden_states=True)
        got = graph(pixels, output_hidden_states=True)
    torch.testing.assert_close(got.logits, expected.logits, atol=ATOL, rtol=0)
    for mine, theirs in zip(got.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0)


def test_attention_weights_when_asked_come_from_the_reference() -> None:
    eager, graph = _pair(Swinv2ForImageClassification)
    pixels = image_batch(2, 64, 64)
    with torch.no_grad():
        expected = eager(pixels, output_attentions=True).attentions
        got = graph(pixels, output_attentions=True).attentions
    for mine, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0)


def test_gradients_equal_eager() -> None:
    eager, graph = _pair(Swinv2ForMaskedImageModeling, encoder_stride=8)
    pixels = image_batch(2, 64, 64)
    mask = torch.zeros(2, 256, dtype=torch.bool)
    mask[:, ::3] = True
    for model in (eager, graph):
        model.train()
        model(pixels, bool_masked_pos=mask).loss.backward()
    grads = {name: p.grad for name, p in eager.named_parameters() if p.grad is not None}
    assert grads
    for name, param in graph.named_parameters():
        if name in grads:
            torch.testing.assert_close(param.grad, grads[name], atol=ATOL, rtol=0, msg=name)


def test_another_activation_runs_as_its_module() -> None:
    eager, graph = _pair(Swinv2ForImageClassification, hidden_act="relu")
    pixels = image_batch(2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(graph(pixels).logits, eager(pixels).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("shape", [(5, 8), (2, 5, 8), (2, 3, 5, 8)])
def test_graph_linear_is_linear_then_gelu_on_any_rank(shape: tuple[int, ...], gelu: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator)
    weight, bias = torch.randn(6, 8, generator=generator), torch.randn(6, generator=generator)
    expected = torch.nn.functional.linear(x, weight, bias)
    expected = torch.nn.functional.gelu(expected) if gelu else expected
    torch.testing.assert_close(graph_linear(x, weight, bias, gelu=gelu), expected, atol=1e-6, rtol=0)
