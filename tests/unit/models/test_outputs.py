"""The output dataclasses behave like transformers' `ModelOutput`: mapping, tuple and attribute views of the
fields that are not None, pytree flattening, and models returning them through export, compile and trace.

The contract tests run on ours and on transformers' `Swinv2ImageClassifierOutput` side by side.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import pickle
from collections import OrderedDict
from collections.abc import Mapping, MutableMapping
from typing import Any

import pytest
import torch
import torch.utils._pytree as pytree
from torch import nn

from helpers import image_batch, tiny_config
from swinv2 import Swinv2Backbone, Swinv2ForImageClassification, Swinv2ForMaskedImageModeling, Swinv2Model
from swinv2.models import outputs
from swinv2.models.outputs import (
    BackboneOutput,
    Swinv2ImageClassifierOutput,
    Swinv2MaskedImageModelingOutput,
    Swinv2ModelOutput,
)

OUR_CLASSES = [Swinv2ModelOutput, Swinv2ImageClassifierOutput, Swinv2MaskedImageModelingOutput, BackboneOutput]
_TAIL = ["hidden_states", "attentions", "reshaped_hidden_states"]
FIELDS = {
    Swinv2ModelOutput: ["last_hidden_state", "pooler_output", *_TAIL],
    Swinv2ImageClassifierOutput: ["loss", "logits", *_TAIL],
    Swinv2MaskedImageModelingOutput: ["loss", "reconstruction", *_TAIL],
    BackboneOutput: ["feature_maps", "hidden_states", "attentions"],
}


@pytest.fixture(params=["ours", "transformers"])
def classifier_output(request: pytest.FixtureRequest) -> type[Any]:
    """Our `Swinv2ImageClassifierOutput` or transformers'."""
    if request.param == "ours":
        return Swinv2ImageClassifierOutput
    modeling = pytest.importorskip("transformers.models.swinv2.modeling_swinv2")
    return modeling.Swinv2ImageClassifierOutput  # type: ignore[no-any-return]


def _tensors(n: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, generator=generator) for _ in range(n)]


# ------------------------------------------------------------------------------ the classes themselves
def test_field_names_order_and_docstrings_are_kept() -> None:
    for cls in OUR_CLASSES:
        assert dataclasses.is_dataclass(cls)
        assert [f.name for f in dataclasses.fields(cls)] == FIELDS[cls]
        assert cls.__doc__ and cls.__doc__.startswith("Output of `")


def test_same_fields_as_transformers() -> None:
    modeling = pytest.importorskip("transformers.models.swinv2.modeling_swinv2")
    for ours, theirs in [
        (Swinv2ModelOutput, modeling.Swinv2ModelOutput),
        (Swinv2ImageClassifierOutput, modeling.Swinv2ImageClassifierOutput),
        (Swinv2MaskedImageModelingOutput, modeling.Swinv2MaskedImageModelingOutput),
    ]:
        assert [f.name for f in dataclasses.fields(ours)] == [f.name for f in dataclasses.fields(theirs)]


def test_mapping_types_match_transformers(classifier_output: type[Any]) -> None:
    out = classifier_output(logits=_tensors(1)[0])
    assert isinstance(out, Mapping) and isinstance(out, MutableMapping) and isinstance(out, OrderedDict)
    assert not isinstance(out, tuple)


# ------------------------------------------------------------------------------ contract, ours and theirs
def test_attribute_key_and_index_access_agree(classifier_output: type[Any]) -> None:
    logits, h0, h1 = _tensors(3)
    out = classifier_output(logits=logits, hidden_states=(h0, h1))
    assert out.logits is logits and out["logits"] is logits and out[0] is logits
    assert out.hidden_states == (h0, h1) and out["hidden_states"] is out[1] is out.hidden_states
    assert out[-1] is out.hidden_states
    assert out[1:] == out.to_tuple()[1:] and out[:] == out.to_tuple()
    assert out.loss is None and out.attentions is None
    with pytest.raises(KeyError):
        out["loss"]  # a None field has no entry
    with pytest.raises(IndexError):
        out[2]


def test_keys_values_items_len_in_and_iteration(classifier_output: type[Any]) -> None:
    loss, logits, attention = _tensors(3)
    out = classifier_output(loss=loss, logits=logits, attentions=(attention,))
    assert list(out.keys()) == ["loss", "logits", "attentions"]  # the fields that are not None, declared order
    assert list(out) == list(out.keys())
    values = list(out.values())
    assert values[0] is loss and values[1] is logits and values[2] == (attention,)
    assert [k for k, _ in out.items()] == list(out.keys())
    assert all(v is getattr(out, k) for k, v in out.items())
    assert len(out) == 3
    assert "logits" in out and "attentions" in out
    assert "hidden_states" not in out and "nonsense" not in out


def test_get(classifier_output: type[Any]) -> None:
    logits = _tensors(1)[0]
    out = classifier_output(logits=logits)
    assert out.get("logits") is logits
    assert out.get("loss") is None and out.get("loss", 7) == 7


def test_to_tuple_skips_none_fields(classifier_output: type[Any]) -> None:
    loss, logits, attention = _tensors(3)
    assert classifier_output(logits=logits).to_tuple() == (logits,)
    assert classifier_output(loss=loss, logits=logits).to_tuple() == (loss, logits)
    both = classifier_output(loss=None, logits=logits, hidden_states=None, attentions=(attention,))
    assert both.to_tuple() == (logits, (attention,))
    assert classifier_output().to_tuple() == () and len(classifier_output()) == 0


def test_item_assignment_sets_the_attribute(classifier_output: type[Any]) -> None:
    old, new = _tensors(2)
    out = classifier_output(logits=old)
    out["logits"] = new
    assert out.logits is new and out["logits"] is new and out[0] is new
    assert list(out.keys()) == ["logits"]


def test_setting_a_none_field_adds_its_entry_at_the_end(classifier_output: type[Any]) -> None:
    """As transformers does: the entry goes last (insertion order), so `to_tuple()` follows."""
    loss, logits, attention = _tensors(3)
    out = classifier_output(logits=logits)
    out.loss = loss
    assert "loss" in out and out["loss"] is loss
    out["attentions"] = (attention,)
    assert out.attentions == (attention,)
    assert list(out.keys()) == ["logits", "loss", "attentions"]
    assert out.to_tuple() == (logits, loss, (attention,)) and out[1] is loss


def test_equality_is_the_dataclass_one(classifier_output: type[Any]) -> None:
    one, two = torch.tensor(1.0), torch.tensor(2.0)
    assert classifier_output(logits=one) == classifier_output(logits=one)
    assert classifier_output(logits=one) == classifier_output(logits=torch.tensor(1.0))
    assert classifier_output(logits=one) != classifier_output(logits=two)
    assert classifier_output(logits=one) != classifier_output(loss=one, logits=one)
    assert classifier_output.__hash__ is None  # eq without frozen: unhashable, like any dict


def test_entries_cannot_be_removed_through_dict_methods(classifier_output: type[Any]) -> None:
    out = classifier_output(logits=_tensors(1)[0])
    for remove in (
        lambda: out.__delitem__("logits"),
        lambda: out.pop("logits"),
        lambda: out.setdefault("loss", 1),
        lambda: out.update(loss=1),
    ):
        with pytest.raises(Exception):  # noqa: B017 - transformers raises a bare Exception, ours TypeError
            remove()
    assert list(out.keys()) == ["logits"]


def test_pickle_and_copy_round_trip(classifier_output: type[Any]) -> None:
    loss, logits = _tensors(2)
    out = classifier_output(loss=loss, logits=logits)
    for back in (pickle.loads(pickle.dumps(out)), copy.deepcopy(out), copy.copy(out)):
        assert type(back) is classifier_output
        assert list(back.keys()) == ["loss", "logits"]
        torch.testing.assert_close(back.to_tuple(), out.to_tuple())
        assert back.logits is back["logits"]
    assert copy.copy(out).logits is logits


def test_pytree_flattens_values_with_keys_as_context(classifier_output: type[Any]) -> None:
    logits, h0, h1 = _tensors(3)
    out = classifier_output(logits=logits, hidden_states=(h0, h1))
    leaves, spec = pytree.tree_flatten(out)
    assert leaves[0] is logits and leaves[1] is h0 and leaves[2] is h1 and len(leaves) == 3
    assert spec.type is classifier_output and spec.context == ["logits", "hidden_states"]
    back = pytree.tree_unflatten(leaves, spec)
    assert type(back) is classifier_output and back.logits is logits and back.hidden_states == (h0, h1)
    paths = [path for path, _ in pytree.tree_flatten_with_path(out)[0]]
    assert paths[0] == (pytree.MappingKey("logits"),)
    assert paths[1] == (pytree.MappingKey("hidden_states"), pytree.SequenceKey(0))
    doubled = pytree.tree_map(lambda t: t * 2, out)
    assert type(doubled) is classifier_output and list(doubled.keys()) == ["logits", "hidden_states"]
    torch.testing.assert_close(doubled.logits, logits * 2)


def test_repr_names_the_fields(classifier_output: type[Any]) -> None:
    text = repr(classifier_output(logits=torch.tensor(1.0)))
    assert text.startswith(classifier_output.__name__ + "(") and "logits=tensor(1.)" in text and "loss=None" in text


# ------------------------------------------------------------------------------ ours only (documented choices)
def test_assigning_none_drops_the_entry() -> None:
    """Where transformers keeps the stale value (attribute) or stores None (key): the entries stay the
    fields that are not None."""
    loss, logits = _tensors(2)
    out = Swinv2ImageClassifierOutput(loss=loss, logits=logits)
    out.loss = None
    assert list(out.keys()) == ["logits"] and out.to_tuple() == (logits,) and out[0] is logits
    out["logits"] = None
    assert out.logits is None and len(out) == 0 and out.to_tuple() == ()


def test_unknown_keys_and_other_removals_are_refused() -> None:
    out = Swinv2ImageClassifierOutput(logits=_tensors(1)[0])
    with pytest.raises(KeyError):
        out["logit"] = torch.zeros(1)
    with pytest.raises(TypeError):
        out.popitem()
    with pytest.raises(TypeError):
        out.clear()
    assert list(out.keys()) == ["logits"] and not hasattr(out, "logit")


def test_every_output_class_is_a_registered_pytree_node() -> None:
    for cls in OUR_CLASSES:
        assert cls in pytree.SUPPORTED_NODES
        assert pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE[f"{outputs.__name__}.{cls.__name__}"] is cls
    feature_maps = tuple(_tensors(2))
    leaves, spec = pytree.tree_flatten(BackboneOutput(feature_maps=feature_maps))
    assert spec.context == ["feature_maps"] and leaves == list(feature_maps)
    assert pytree.treespec_loads(pytree.treespec_dumps(spec)) == spec  # what export's serialisation uses
    assert pytree.tree_unflatten(leaves, spec) == BackboneOutput(feature_maps=feature_maps)


def test_required_first_field_iterables_are_kept_as_values() -> None:
    """transformers' quirk of spreading (key, value) pairs given as the first field is not copied; a tuple of
    tensors (the backbone's feature maps) stays the field's value in both."""
    maps = tuple(_tensors(2))
    out = BackboneOutput(feature_maps=maps)
    assert out.feature_maps is maps and out[0] is maps and list(out.keys()) == ["feature_maps"]


# ------------------------------------------------------------------------------ models: export, compile, trace
X = image_batch(2, 64, 64)


def _models() -> list[tuple[nn.Module, type[Any]]]:
    torch.manual_seed(0)
    return [
        (Swinv2Model(tiny_config()).eval(), Swinv2ModelOutput),
        (Swinv2ForImageClassification(tiny_config(num_labels=3)).eval(), Swinv2ImageClassifierOutput),
        (Swinv2ForMaskedImageModeling(tiny_config(encoder_stride=8)).eval(), Swinv2MaskedImageModelingOutput),
        (Swinv2Backbone(tiny_config(out_features=["stage1", "stage2"])).eval(), BackboneOutput),
    ]


MODEL_IDS = ["model", "classification", "masked", "backbone"]


def _assert_same_output(got: Any, expected: Any) -> None:
    assert type(got) is type(expected)
    assert list(got.keys()) == list(expected.keys())
    torch.testing.assert_close(got.to_tuple(), expected.to_tuple(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("index", range(4), ids=MODEL_IDS)
def test_export_returns_the_output_class(index: int) -> None:
    model, cls = _models()[index]
    with torch.no_grad():
        expected = model(X)
    program = torch.export.export(model, (X,))
    assert program.call_spec.out_spec is not None and program.call_spec.out_spec.type is cls
    got = program.module()(X)
    assert isinstance(got, cls)
    _assert_same_output(got, expected)


def test_export_with_every_output_and_serialisation() -> None:
    model = Swinv2ForImageClassification(tiny_config(num_labels=3)).eval()
    kwargs = dict(labels=torch.tensor([0, 2]), output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        expected = model(X, **kwargs)
    program = torch.export.export(model, (X,), kwargs)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer)
    for prog in (program, loaded):
        got = prog.module()(X, **kwargs)
        assert list(got.keys()) == ["loss", "logits", "hidden_states", "attentions", "reshaped_hidden_states"]
        _assert_same_output(got, expected)


@pytest.mark.parametrize("index", range(4), ids=MODEL_IDS)
def test_compile_fullgraph_returns_the_output_class(index: int) -> None:
    model, _ = _models()[index]
    with torch.no_grad():
        expected = model(X, output_hidden_states=True)
        got = torch.compile(model, fullgraph=True, backend="eager")(X, output_hidden_states=True)
    _assert_same_output(got, expected)


@pytest.mark.slow
def test_compile_fullgraph_inductor_and_tuple_outputs() -> None:
    model = Swinv2ForImageClassification(tiny_config(num_labels=3)).eval()
    labels = torch.tensor([0, 2])
    with torch.no_grad():
        expected = model(X, labels=labels)
        compiled = torch.compile(model, fullgraph=True)
        _assert_same_output(compiled(X, labels=labels), expected)
        as_tuple = compiled(X, labels=labels, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2
    torch.testing.assert_close(as_tuple, expected.to_tuple(), atol=1e-5, rtol=1e-5)


def test_compile_fullgraph_uses_the_mapping_inside_the_graph() -> None:
    model = Swinv2ForImageClassification(tiny_config(num_labels=3)).eval()

    def head(x: torch.Tensor) -> Any:
        out = model(x, output_hidden_states=True)
        out["logits"] = out.logits * 2  # item assignment inside the graph
        return out[0], out["hidden_states"][-1], len(out), list(out.keys()), "loss" in out, out.get("loss")

    with torch.no_grad():
        expected = head(X)
        got = torch.compile(head, fullgraph=True, backend="eager")(X)
    torch.testing.assert_close(got[:2], expected[:2])
    assert got[2:] == expected[2:] == (3, ["logits", "hidden_states", "reshaped_hidden_states"], False, None)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("index", [1, 3], ids=["classification", "backbone"])  # tensor and tuple entries
def test_jit_trace_non_strict_returns_the_entries_as_a_dict(index: int) -> None:
    """jit.trace has no pytree: with strict=False a Mapping output comes back as a dict of its entries.
    check_trace is off: the model caches its window layout (built on the first call, reused after), so
    the check's second trace differs from the first; that is the model's, not the output's."""
    model, _ = _models()[index]
    with torch.no_grad():
        expected = model(X)
        traced = torch.jit.trace(model, X, strict=False, check_trace=False)
        got = traced(X)
        other = image_batch(3, 64, 64, seed=1)
        got_other, expected_other = traced(other), model(other)
    assert isinstance(got, dict) and list(got.keys()) == list(expected.keys())
    torch.testing.assert_close(tuple(got.values()), expected.to_tuple(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tuple(got_other.values()), expected_other.to_tuple(), atol=1e-5, rtol=1e-5)
    _assert_same_output(type(expected)(**got), expected)  # the entries rebuild the output class


def test_model_outputs_flatten_like_transformers() -> None:
    """Our and transformers' classifier outputs of the same inputs flatten to the same keys and leaves."""
    pytest.importorskip("transformers")
    from helpers import hf_twins

    theirs, ours = hf_twins("Swinv2ForImageClassification", tiny_config(num_labels=3))
    kwargs = dict(labels=torch.tensor([0, 2]), output_hidden_states=True)
    with torch.no_grad():
        mine, reference = ours(X, **kwargs), theirs(X, **kwargs)
    assert list(mine.keys()) == list(reference.keys()) and len(mine) == len(reference)
    (mine_leaves, mine_spec), (ref_leaves, ref_spec) = pytree.tree_flatten(mine), pytree.tree_flatten(reference)
    assert mine_spec.context == ref_spec.context
    torch.testing.assert_close(mine_leaves, ref_leaves, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mine[1:], reference[1:], atol=1e-4, rtol=1e-4)
