"""Named variants (`swinv2.zoo`): names, configs, preprocessing, aliases, and agreement with timm's models."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import timm
import torch
from timm.models import get_pretrained_cfg

import swinv2.layers.weight_init as weight_init_module
import swinv2.models.swinv2 as model_module
from swinv2 import Swinv2Config, Swinv2ForImageClassification, Variant, get_variant, list_variants
from swinv2.models.swinv2 import stage_windows

# name -> (shape, window, size, pretrained window, pretrained size, suffix); parsed, not copied from the zoo
NAME = re.compile(
    r"swinv2-(?P<shape>tiny|small|base|large)-patch4-window(?:(?P<from_window>\d+)to)?(?P<window>\d+)"
    r"-(?:(?P<from_size>\d+)to)?(?P<size>\d+)(?P<suffix>-22k|-22kto1k-ft)?"
)
# Published parameter counts at 1000 classes, in millions (the Swin V2 release and timm agree).
MILLIONS_AT_1K = {"tiny": 28.35, "small": 49.73, "base": 87.92}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRETRAINING_22K = ("swinv2-base-patch4-window12-192-22k", "swinv2-large-patch4-window12-192-22k")


def _parse(name: str) -> re.Match[str]:
    match = NAME.fullmatch(name)
    assert match is not None, f"{name!r} is not a Swin V2 release name"
    return match


@dataclass(frozen=True)
class Built:
    """What the tests need from a built model (the models themselves are too large to keep all at once)."""

    model_type: type
    num_parameters: int
    classifier_shape: tuple[int, ...]
    num_labels: int
    blocks: list[list[tuple[int, int, int]]]  # per stage, per block: (window, shift, pretrained window)


def _summary(model: Swinv2ForImageClassification) -> Built:
    return Built(
        model_type=type(model),
        num_parameters=model.num_parameters(),
        classifier_shape=tuple(model.classifier.weight.shape),
        num_labels=model.config.num_labels,
        blocks=[
            [(b.window, b.shift, b.attention.self.pretrained_window) for b in stage.blocks]
            for stage in model.swinv2.encoder.layers
        ],
    )


@pytest.fixture(scope="module")
def models() -> dict[str, Built]:
    """Every variant built once (random weights), one at a time, summarised.

    Parameter counts and geometry do not depend on the initial values, so the truncated-normal
    initialisation, which is three quarters of the build time at these sizes, is skipped here;
    `test_a_variant_builds_and_runs_with_its_real_initialisation` covers the ordinary build.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_module, "trunc_normal_init", lambda module, std: None)
        patch.setattr(model_module, "trunc_normal_", lambda tensor, std: tensor)
        built = {name: _summary(Swinv2ForImageClassification(get_variant(name).config)) for name in list_variants()}
    assert model_module.trunc_normal_init is weight_init_module.trunc_normal_init  # restored for the other tests
    return built


@pytest.fixture(scope="module")
def timm_models() -> dict[str, torch.nn.Module]:
    """timm's model of every variant, built on the meta device (shapes only, no memory, no init)."""
    with torch.device("meta"):
        return {name: timm.create_model(get_variant(name).timm_name, pretrained=False) for name in list_variants()}


def test_list_variants_is_the_public_release_in_order():
    assert list_variants() == [
        "swinv2-tiny-patch4-window8-256",
        "swinv2-tiny-patch4-window16-256",
        "swinv2-small-patch4-window8-256",
        "swinv2-small-patch4-window16-256",
        "swinv2-base-patch4-window8-256",
        "swinv2-base-patch4-window16-256",
        "swinv2-base-patch4-window12-192-22k",
        "swinv2-base-patch4-window12to16-192to256-22kto1k-ft",
        "swinv2-base-patch4-window12to24-192to384-22kto1k-ft",
        "swinv2-large-patch4-window12-192-22k",
        "swinv2-large-patch4-window12to16-192to256-22kto1k-ft",
        "swinv2-large-patch4-window12to24-192to384-22kto1k-ft",
    ]


@pytest.mark.parametrize("name", list_variants())
def test_variant_builds_a_classifier(name, models):
    variant = get_variant(name)
    assert isinstance(variant, Variant)
    assert variant.name == name
    built = models[name]
    assert built.model_type is Swinv2ForImageClassification
    hidden = variant.config.hidden_size
    assert built.classifier_shape == (variant.config.num_labels, hidden)
    assert hidden == variant.config_fields["embed_dim"] * 8


@pytest.mark.parametrize("name", [n for n in list_variants() if _parse(n)["shape"] in MILLIONS_AT_1K])
def test_parameter_counts_match_the_release(name, models):
    shape = _parse(name)["shape"]
    count = models[name].num_parameters
    if name in PRETRAINING_22K:
        # A 21841-class head instead of 1000 classes: (21841 - 1000) * (hidden + 1) more parameters.
        count -= (21841 - 1000) * (models[name].classifier_shape[1] + 1)
    assert round(count / 1e6, 2) == MILLIONS_AT_1K[shape]


@pytest.mark.parametrize("name", list_variants())
def test_config_agrees_with_the_name(name):
    parsed = _parse(name)
    variant = get_variant(name)
    config = variant.config
    assert config.image_size == int(parsed["size"])
    assert config.window_size == int(parsed["window"])
    assert config.patch_size == 4
    assert config.drop_path_rate == 0.0
    assert config.num_labels == (21841 if parsed["suffix"] == "-22k" else 1000)
    assert len(config.id2label) == config.num_labels
    if parsed["from_window"] is None:
        assert config.pretrained_window_sizes == (0, 0, 0, 0)
        assert variant.timm_name == f"swinv2_{parsed['shape']}_window{parsed['window']}_{parsed['size']}"
    else:
        assert parsed["suffix"] == "-22kto1k-ft"
        assert config.pretrained_window_sizes == (12, 12, 12, 6)
        assert variant.timm_name == (
            f"swinv2_{parsed['shape']}_window{parsed['from_window']}to{parsed['window']}"
            f"_{parsed['from_size']}to{parsed['size']}"
        )


@pytest.mark.parametrize("name", [n for n in list_variants() if _parse(n)["from_window"] is not None])
def test_fine_tuned_variants_remember_the_pretraining_stage_windows(name):
    """(12, 12, 12, 6) are the windows of the 192 px / window 12 pre-training model, stage by stage."""
    parsed = _parse(name)
    pretraining = get_variant(f"swinv2-{parsed['shape']}-patch4-window12-192-22k").config
    expected = tuple(stage_windows(pretraining, i)[0] for i in range(pretraining.num_layers))
    assert expected == (12, 12, 12, 6)
    assert get_variant(name).config.pretrained_window_sizes == expected


@pytest.mark.parametrize("name", list_variants())
def test_preprocessing_is_bicubic_imagenet_at_the_image_size(name):
    variant = get_variant(name)
    assert variant.preprocessing.size == variant.config.image_size == int(_parse(name)["size"])
    assert variant.preprocessing.mean == pytest.approx(IMAGENET_MEAN)
    assert variant.preprocessing.std == pytest.approx(IMAGENET_STD)
    assert variant.preprocessing.resample == "bicubic"


@pytest.mark.parametrize("name", list_variants())
def test_top1_is_none_exactly_for_the_22k_pretraining_variants(name):
    top1 = get_variant(name).imagenet_top1
    if name in PRETRAINING_22K:
        assert top1 is None
    else:
        assert isinstance(top1, float)
        assert 80.0 < top1 < 90.0


def test_reported_top1_values():
    assert {n: get_variant(n).imagenet_top1 for n in list_variants()} == {
        "swinv2-tiny-patch4-window8-256": 81.8,
        "swinv2-tiny-patch4-window16-256": 82.8,
        "swinv2-small-patch4-window8-256": 83.7,
        "swinv2-small-patch4-window16-256": 84.1,
        "swinv2-base-patch4-window8-256": 84.2,
        "swinv2-base-patch4-window16-256": 84.6,
        "swinv2-base-patch4-window12-192-22k": None,
        "swinv2-base-patch4-window12to16-192to256-22kto1k-ft": 86.2,
        "swinv2-base-patch4-window12to24-192to384-22kto1k-ft": 87.1,
        "swinv2-large-patch4-window12-192-22k": None,
        "swinv2-large-patch4-window12to16-192to256-22kto1k-ft": 86.9,
        "swinv2-large-patch4-window12to24-192to384-22kto1k-ft": 87.6,
    }


@pytest.mark.parametrize("name", ["swinv2-tiny-patch4-window8-256", "swinv2-base-patch4-window12-192-22k"])
def test_config_overrides_labels_and_leaves_the_variant_untouched(name):
    variant = get_variant(name)
    before = dict(variant.config_fields)
    config = variant.config_with(num_labels=10)
    assert config.num_labels == 10
    assert config.id2label == {i: f"LABEL_{i}" for i in range(10)}
    named = variant.config_with(id2label={0: "cat", 1: "dog"})
    assert named.num_labels == 2 and named.label2id == {"cat": 0, "dog": 1}
    # other fields stay the variant's; the variant itself is not changed
    assert (config.embed_dim, config.depths, config.window_size) == (
        before["embed_dim"],
        before["depths"],
        before["window_size"],
    )
    assert variant.config_fields == before
    assert variant.config.num_labels == before["num_labels"]
    assert variant.config is not variant.config


def test_config_is_an_attribute_whose_changes_do_not_reach_the_variant():
    variant = get_variant("swinv2_tiny_window8_256")
    config = variant.config
    assert isinstance(config, Swinv2Config)
    assert config.to_dict() == variant.config_with().to_dict()
    config.window_size = 16
    config.id2label[0] = "changed"
    assert variant.config.window_size == 8
    assert variant.config.id2label[0] == "LABEL_0"
    assert not callable(variant.config)  # the override form is config_with(...)


# ------------------------------------------------------------------------------------ aliases


@pytest.mark.parametrize("name", list_variants())
def test_hub_ids_and_timm_names_resolve_to_the_same_variant(name):
    variant = get_variant(name)
    assert variant.hub_id == f"microsoft/{name}"
    assert get_variant(variant.hub_id) is variant
    assert get_variant(variant.timm_name) is variant
    tag = "ms_in22k" if name in PRETRAINING_22K else "ms_in1k"
    assert get_variant(f"{variant.timm_name}.{tag}") is variant
    assert get_variant(f"  {name}\n") is variant


def test_timm_tagged_name_example():
    assert get_variant("swinv2_tiny_window8_256.ms_in1k").name == "swinv2-tiny-patch4-window8-256"
    assert get_variant("swinv2_tiny_window8_256").name == "swinv2-tiny-patch4-window8-256"


def test_every_timm_pretrained_swinv2_tag_is_a_variant():
    """timm's own list of Microsoft Swin V2 weights (not its swinv2_cr reimplementation) is exactly the zoo."""
    tags = [t for t in timm.list_pretrained("swinv2_*") if not t.startswith("swinv2_cr_")]
    assert len(tags) == len(list_variants())
    assert {get_variant(t).name for t in tags} == set(list_variants())


@pytest.mark.parametrize("name", list_variants())
def test_preprocessing_and_classes_agree_with_timms_pretrained_config(name):
    variant = get_variant(name)
    (tag,) = [t for t in timm.list_pretrained(f"{variant.timm_name}.*")]
    cfg = get_pretrained_cfg(tag)
    assert cfg.input_size == (3, variant.preprocessing.size, variant.preprocessing.size)
    assert cfg.mean == pytest.approx(variant.preprocessing.mean)
    assert cfg.std == pytest.approx(variant.preprocessing.std)
    assert cfg.interpolation == variant.preprocessing.resample
    assert cfg.num_classes == variant.config.num_labels


@pytest.mark.parametrize("name", list_variants())
def test_same_parameter_count_and_stage_geometry_as_timm(name, models, timm_models):
    ours, theirs = models[name], timm_models[name]
    assert ours.num_parameters == sum(p.numel() for p in theirs.parameters())
    assert theirs.num_classes == ours.num_labels
    theirs_blocks = [
        [(b.window_size, b.shift_size, b.attn.pretrained_window_size) for b in stage.blocks] for stage in theirs.layers
    ]
    # timm keeps (h, w) pairs; a pretrained window of 0 means "this block's own window" in both
    assert theirs_blocks == [[((w, w), (s, s), (p, p)) for w, s, p in stage] for stage in ours.blocks]


def test_a_variant_builds_and_runs_with_its_real_initialisation():
    torch.manual_seed(0)
    model = Swinv2ForImageClassification(get_variant("swinv2_tiny_window8_256").config_with(num_labels=3)).eval()
    assert round(model.num_parameters() / 1e6, 2) == 27.58  # 28.35 M less (1000 - 3) * 769 head parameters
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))).logits
    assert logits.shape == (1, 3)
    assert torch.isfinite(logits).all()


# ------------------------------------------------------------------------------ unknown names


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("swinv2-tiny-patch4-window8-265", "swinv2-tiny-patch4-window8-256"),
        ("swinv2_tiny_windw8_256", "swinv2_tiny_window8_256"),
        ("microsoft/swinv2-base-patch4-window12-192-22", "microsoft/swinv2-base-patch4-window12-192-22k"),
    ],
)
def test_unknown_name_suggests_the_close_match(typo, meant):
    with pytest.raises(KeyError) as info:
        get_variant(typo)
    message = info.value.args[0]
    assert message.startswith(f"unknown Swin V2 variant {typo!r}; did you mean ")
    suggestions = re.search(r"did you mean (.*)\?", message)
    assert suggestions is not None
    assert suggestions[1].split(", ")[0] == repr(meant)
    assert f"lists all {len(list_variants())})" in message


def test_unrelated_name_has_no_suggestion_but_the_count():
    with pytest.raises(KeyError) as info:
        get_variant("resnet50")
    assert info.value.args[0] == "unknown Swin V2 variant 'resnet50' (swinv2.list_variants() lists all 12)"
