"""transformers' `PreTrainedModel` / `BackboneMixin` surface: each check runs on transformers' class and ours.

Config-driven outputs, the model surface (parameters, checkpointing, embeddings, base model), loading info,
heads left fresh on strict=None, saving (pickle, shards, a state dict, an image processor), backbone features.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

import swinv2  # noqa: E402
from helpers import hf_config, hf_twins, image_batch, perturb_, tiny_config  # noqa: E402
from swinv2 import CheckpointError, LoadReport, Swinv2Backbone, Swinv2ForImageClassification, Swinv2Model  # noqa: E402

CLASSES = ["Swinv2Model", "Swinv2ForImageClassification", "Swinv2ForMaskedImageModeling", "Swinv2Backbone"]


def _config(cls_name: str) -> Any:
    fields: dict[str, Any] = {"num_labels": 3}
    if cls_name == "Swinv2ForMaskedImageModeling":
        fields["encoder_stride"] = 8  # patch 4 * 2**(2 stages - 1)
    if cls_name == "Swinv2Backbone":
        fields["out_features"] = ["stage1", "stage2"]
    return tiny_config(**fields)


def _close(actual: Any, expected: Any) -> None:
    if expected is None or actual is None:
        assert actual is None and expected is None
    elif isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)) and len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            _close(a, e)
    else:
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def _both(cls_name: str) -> tuple[Any, Any]:
    return hf_twins(cls_name, _config(cls_name))


# ------------------------------------------------------------------------------ 1. config outputs
@pytest.mark.parametrize("cls_name", CLASSES)
def test_config_output_switches(cls_name: str) -> None:
    theirs, ours = _both(cls_name)
    x = image_batch(1, 64, 64)
    for model in (theirs, ours):
        model.config.output_hidden_states = True
        model.config.output_attentions = True
        model.config.return_dict = False
    with torch.no_grad():
        expected, actual = theirs(x), ours(x)
    assert isinstance(expected, tuple) and isinstance(actual, tuple)
    _close(actual, expected)
    for model in (theirs, ours):  # (transformers' backbone reads return_dict from its config only)
        model.config.return_dict = True
    with torch.no_grad():  # an argument overrides the config
        expected, actual = (
            theirs(x, return_dict=True, output_attentions=False),
            ours(x, return_dict=True, output_attentions=False),
        )
    assert list(actual.keys()) == list(expected.keys())
    _close(actual.to_tuple(), expected.to_tuple())


def test_tuple_keeps_none_pooler_as_transformers() -> None:
    config = tiny_config()
    theirs = perturb_(transformers.Swinv2Model(hf_config(config), add_pooling_layer=False)).eval()
    ours = Swinv2Model(config, add_pooling_layer=False).eval()
    ours.load_state_dict(theirs.state_dict())
    x = image_batch(1, 64, 64)
    with torch.no_grad():
        expected = theirs(x, return_dict=False, output_hidden_states=True)
        actual = ours(x, return_dict=False, output_hidden_states=True)
    assert actual[1] is None and expected[1] is None
    _close(actual, expected)


def test_torchscript_config_returns_tuples() -> None:
    model = Swinv2ForImageClassification(tiny_config(num_labels=3)).eval()
    model.config.torchscript = True
    with torch.no_grad():
        assert isinstance(model(image_batch(1, 64, 64)), tuple)


# ------------------------------------------------------------------------------ 2. model surface
@pytest.mark.parametrize("cls_name", CLASSES)
def test_pretrained_model_surface(cls_name: str) -> None:
    theirs, ours = _both(cls_name)
    for attribute in ("base_model_prefix", "main_input_name", "supports_gradient_checkpointing"):
        assert getattr(ours, attribute) == getattr(theirs, attribute)
    assert type(ours).config_class is swinv2.Swinv2Config
    assert ours.can_generate() is theirs.can_generate() is False
    assert type(ours.get_input_embeddings()).__name__ == type(theirs.get_input_embeddings()).__name__
    theirs_base, ours_base = theirs.base_model, ours.base_model
    assert (theirs_base is theirs) == (ours_base is ours)
    assert type(ours_base).__name__ == type(theirs_base).__name__
    for model in (theirs, ours):
        for p in list(model.parameters())[:5]:
            p.requires_grad_(False)
    for kwargs in ({}, {"only_trainable": True}, {"exclude_embeddings": True}):
        assert ours.num_parameters(**kwargs) == theirs.num_parameters(**kwargs)
    assert ours.num_parameters(trainable_only=True) == ours.num_parameters(only_trainable=True)


def test_input_embeddings_and_post_init() -> None:
    model = Swinv2ForImageClassification(tiny_config(num_labels=3))
    assert model.get_input_embeddings() is model.swinv2.embeddings.patch_embeddings
    replacement = swinv2.models.swinv2.Swinv2PatchEmbeddings(model.config)
    model.set_input_embeddings(replacement)
    assert model.get_input_embeddings() is replacement
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.post_init()  # built models are initialised: a no-op
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    class WithHead(swinv2.Swinv2PreTrainedModel):
        def __init__(self, config: swinv2.Swinv2Config) -> None:
            super().__init__(config)
            self.swinv2 = Swinv2Model(config)
            self.head = torch.nn.Linear(config.hidden_size, 2)
            torch.nn.init.constant_(self.head.weight, 5.0)
            self.post_init()

    custom = WithHead(tiny_config())
    assert custom.head.weight.abs().max() <= 2 * custom.config.initializer_range
    assert custom.base_model is custom.swinv2


def test_gradient_checkpointing(monkeypatch: pytest.MonkeyPatch) -> None:
    theirs, ours = _both("Swinv2ForImageClassification")
    seen: list[dict[str, Any]] = []
    original = swinv2.models.swinv2.checkpoint

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(swinv2.models.swinv2, "checkpoint", recording)
    x, labels = image_batch(2, 64, 64), torch.tensor([0, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5 renames these to activation_checkpointing_*
        for model in (theirs, ours):
            assert not model.is_gradient_checkpointing
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
            assert model.is_gradient_checkpointing
            model.train()
        grads = []
        for model in (theirs, ours):
            model(x, labels=labels).loss.backward()
            grads.append(model.classifier.weight.grad)
        _close(grads[1], grads[0])
        assert seen and all(kwargs == {"use_reentrant": True} for kwargs in seen)
        ours.gradient_checkpointing_disable()
        theirs.gradient_checkpointing_disable()
        assert not ours.is_gradient_checkpointing and not theirs.is_gradient_checkpointing
        ours.gradient_checkpointing_enable()
    assert ours.swinv2.encoder.layers[0].checkpoint_kwargs == {"use_reentrant": False}


# ------------------------------------------------------------------------------ 3./4. loading
def _info_sets(info: dict[str, Any]) -> dict[str, Any]:
    return {k: set(info[k]) if k != "error_msgs" else list(info[k]) for k in info}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("api")
    base = perturb_(Swinv2Model(tiny_config(num_labels=3)))
    base.save_pretrained(root / "base")
    classifier = perturb_(Swinv2ForImageClassification(tiny_config(num_labels=3)))
    classifier.save_pretrained(root / "classifier")
    return {"root": root, "base": base, "classifier": classifier}


@pytest.mark.parametrize(
    ("cls_name", "source"),
    [
        ("Swinv2Model", "classifier"),
        ("Swinv2Backbone", "classifier"),
        ("Swinv2ForImageClassification", "classifier"),
        ("Swinv2ForImageClassification", "base"),
    ],
)
def test_loading_info_matches_transformers(saved: dict[str, Any], cls_name: str, source: str) -> None:
    directory = saved["root"] / source
    _, expected = getattr(transformers, cls_name).from_pretrained(directory, output_loading_info=True)
    strict = None if source == "base" else True  # transformers' rule for a missing head
    _, actual = getattr(swinv2, cls_name).from_pretrained(directory, strict=strict, output_loading_info=True)
    assert isinstance(actual, dict) and isinstance(actual, LoadReport)
    assert sorted(actual) == ["error_msgs", "mismatched_keys", "missing_keys", "unexpected_keys"]
    assert _info_sets(actual) == _info_sets(expected)


def test_mismatched_keys_match_transformers(saved: dict[str, Any]) -> None:
    directory = saved["root"] / "classifier"
    kwargs = {"num_labels": 5, "ignore_mismatched_sizes": True, "output_loading_info": True}
    _, expected = transformers.Swinv2ForImageClassification.from_pretrained(directory, **kwargs)
    _, actual = Swinv2ForImageClassification.from_pretrained(directory, **kwargs)
    assert {(k, tuple(a), tuple(b)) for k, a, b in actual["mismatched_keys"]} == {
        (k, tuple(a), tuple(b)) for k, a, b in expected["mismatched_keys"]
    }


def test_fresh_head_on_strict_none(saved: dict[str, Any], caplog: pytest.LogCaptureFixture, tmp_path: Any) -> None:
    directory = saved["root"] / "base"
    with caplog.at_level(logging.WARNING, logger="swinv2.models.base"):
        model = Swinv2ForImageClassification.from_pretrained(directory, strict=None)
    assert "newly initialized" in caplog.text and "classifier.weight" in caplog.text
    torch.testing.assert_close(model.swinv2.embeddings.norm.weight, saved["base"].embeddings.norm.weight)
    with pytest.raises(CheckpointError, match=re.escape("missing: classifier.weight")):
        Swinv2ForImageClassification.from_pretrained(directory, strict=True)
    # a missing encoder key still raises
    state = {k: v for k, v in saved["base"].state_dict().items() if k != "embeddings.norm.bias"}
    with pytest.raises(CheckpointError, match=re.escape("embeddings.norm.bias")):
        Swinv2ForImageClassification.from_pretrained(directory, state_dict=state, strict=None)


def test_state_dict_and_subfolder(saved: dict[str, Any], tmp_path: Any) -> None:
    saved["classifier"].save_pretrained(tmp_path / "repo" / "sub")
    for library in (transformers, swinv2):
        model = library.Swinv2ForImageClassification.from_pretrained(tmp_path / "repo", subfolder="sub")
        torch.testing.assert_close(model.classifier.weight, saved["classifier"].classifier.weight)
    state = saved["classifier"].state_dict()
    model = Swinv2ForImageClassification.from_pretrained(None, config=saved["classifier"].config, state_dict=state)
    torch.testing.assert_close(model.classifier.bias, saved["classifier"].classifier.bias)


# ------------------------------------------------------------------------------ 5. saving
def test_save_pickle_and_state_dict(saved: dict[str, Any], tmp_path: Any) -> None:
    model = saved["classifier"]
    model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["config.json", "pytorch_model.bin"]
    for library in (transformers, swinv2):
        loaded = library.Swinv2ForImageClassification.from_pretrained(tmp_path / "bin")
        torch.testing.assert_close(loaded.classifier.weight, model.classifier.weight)
    encoder = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    model.save_pretrained(tmp_path / "part", state_dict=encoder)
    _, info = Swinv2ForImageClassification.from_pretrained(tmp_path / "part", strict=None, output_loading_info=True)
    assert info["missing_keys"] == {"classifier.weight", "classifier.bias"}


def test_sharded_save_matches_transformers(saved: dict[str, Any], tmp_path: Any) -> None:
    model = saved["classifier"]
    theirs = transformers.Swinv2ForImageClassification(hf_config(tiny_config(num_labels=3)))
    theirs.load_state_dict(model.state_dict())  # own storages: mapped files would change their shard sizes
    theirs.save_pretrained(tmp_path / "theirs", max_shard_size="100KB")
    model.save_pretrained(tmp_path / "ours", max_shard_size="100KB")
    names = sorted(p.name for p in (tmp_path / "ours").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "theirs").iterdir())
    assert "model.safetensors.index.json" in names and "model-00002-of-00002.safetensors" in names
    index = [json.loads((tmp_path / side / "model.safetensors.index.json").read_text()) for side in ("ours", "theirs")]
    assert index[0] == index[1]
    for library in (transformers, swinv2):
        loaded = library.Swinv2ForImageClassification.from_pretrained(tmp_path / "ours")
        torch.testing.assert_close(loaded.classifier.weight, model.classifier.weight)
    model.save_pretrained(tmp_path / "ours", max_shard_size=10**9)  # one file again: the shards go
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["config.json", "model.safetensors"]


def test_save_with_image_processor(saved: dict[str, Any], tmp_path: Any) -> None:
    processor = swinv2.Swinv2ImageProcessor()
    saved["classifier"].save_pretrained(tmp_path, image_processor=processor)
    assert swinv2.Swinv2ImageProcessor.from_pretrained(tmp_path) == processor
    assert transformers.AutoImageProcessor.from_pretrained(tmp_path).size == processor.size


# ------------------------------------------------------------------------------ 6. backbone
def test_backbone_contract() -> None:
    theirs, ours = _both("Swinv2Backbone")
    for attribute in ("stage_names", "out_features", "out_indices", "num_features", "channels", "out_feature_channels"):
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute
    assert ours.backbone_type.value == theirs.backbone_type.value
    for change in ({"out_indices": [1]}, {"out_features": ["stem", "stage2"]}, {"out_features": None}):
        for model in (theirs, ours):
            name, value = next(iter(change.items()))
            setattr(model, name, value)
        assert (ours.out_features, ours.out_indices) == (theirs.out_features, theirs.out_indices), change
        assert (ours.config.out_features, ours.config.out_indices) == (ours.out_features, ours.out_indices)
        assert ours.channels == theirs.channels
    x = image_batch(1, 64, 64)
    with torch.no_grad():
        expected = theirs.forward_with_filtered_kwargs(x, output_hidden_states=True, output_attentions=None)
        actual = ours.forward_with_filtered_kwargs(x, output_hidden_states=True, output_attentions=None)
    _close(actual.to_tuple(), expected.to_tuple())
    with pytest.raises(ValueError):
        ours.out_features = ["stage9"]
    assert isinstance(ours, Swinv2Backbone)
