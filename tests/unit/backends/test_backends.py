"""The backend registry (`swinv2.models.registry`) as `swinv2.backends` fills it, and the plain-ops switch
`swinv2.backends.plain()`.

Tolerances: "auto" vs "eager" in fp32, atol 1e-5, rtol 0, as in test_fast_path.py.
"""

from __future__ import annotations

import re

import pytest
import torch

import swinv2.backends
from helpers import count_forwards, image_batch, perturb_, tiny_config
from swinv2 import Swinv2Model
from swinv2.backends import cosine_attention, packed_linear
from swinv2.backends.mlp import _GeluMlp, fast_mlp
from swinv2.backends.window_gather import GatherWindows, _GatherTokens
from swinv2.models.registry import backend_names, get_backend
from swinv2.models.swinv2 import eager_attention, eager_mlp

ATOL = 1e-5
NAMES = ["auto", "eager", "graph", "sdpa", "triton"]


def test_the_registered_backends_are_auto_eager_graph_sdpa_and_triton() -> None:
    assert backend_names() == NAMES
    for name in NAMES:
        assert get_backend(name).name == name
    eager = get_backend("eager")
    assert eager.window_moves is None  # the model's own pad, roll and partition
    assert eager.attention is eager_attention and eager.mlp is eager_mlp
    for name in ("auto", "sdpa", "triton"):
        backend = get_backend(name)
        assert isinstance(backend.window_moves, GatherWindows)
        assert backend.linear is packed_linear.linear
        assert backend.mlp is fast_mlp
        assert backend.row_blocks is packed_linear.in_row_chunks


def test_an_unknown_backend_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=re.escape("'nope'")) as error:
        get_backend("nope")
    assert str(NAMES) in str(error.value)


def _model(implementation: str) -> Swinv2Model:
    torch.manual_seed(0)
    model = perturb_(Swinv2Model(tiny_config()))
    model.set_attn_implementation(implementation)
    return model


@pytest.fixture
def packs(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Spy on `packed_linear._pack`: records the layout of every packing."""
    made: list[object] = []
    original = packed_linear._pack

    def spy(weight: torch.Tensor, layout: object) -> torch.Tensor:
        made.append(layout)
        return original(weight, layout)

    monkeypatch.setattr(packed_linear, "_pack", spy)
    return made


def test_plain_runs_auto_on_plain_ops_with_eager_outputs(monkeypatch: pytest.MonkeyPatch, packs: list[object]) -> None:
    """Inside `plain()` the "auto" model packs no weight and runs none of the hand-written autograd
    nodes (attention, MLP, window gather), in inference and in training, and gives eager's outputs."""
    nodes = count_forwards(
        monkeypatch, attention=cosine_attention._CosineWindowAttention, mlp=_GeluMlp, gather=_GatherTokens
    )
    auto, eager = _model("auto"), _model("eager")
    x = image_batch(2, 64, 64)

    # Guard: outside plain() "auto" does pack (where the build has the kernels) and train through the nodes.
    with torch.no_grad():
        auto.eval()(x)
    assert bool(packs) == (packed_linear._onednn_linear_available() or packed_linear._mkl_packed_linear_available())
    auto.train()(x).last_hidden_state.sum().backward()
    assert all(calls > 0 for calls in nodes.values()), nodes
    auto.zero_grad(set_to_none=True)
    auto.clear_caches()
    packs.clear()
    nodes.update(dict.fromkeys(nodes, 0))

    with swinv2.backends.plain():
        with torch.no_grad():
            inference = auto.eval()(x).last_hidden_state
        training = auto.train()(x).last_hidden_state
        training.sum().backward()
    with torch.no_grad():
        expected = eager.eval()(x).last_hidden_state
    torch.testing.assert_close(inference, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(training, eager.train()(x).last_hidden_state, atol=ATOL, rtol=0)
    assert not packs
    assert nodes == {"attention": 0, "mlp": 0, "gather": 0}
