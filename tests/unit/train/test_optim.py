"""The optimiser recipe: which parameters decay, which layer each belongs to, the groups AdamW gets, the warm-up
cosine schedule and its exact resume, and mixup/cutmix targets."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from swinv2 import (
    Swinv2Backbone,
    Swinv2Config,
    Swinv2ForImageClassification,
    Swinv2ForMaskedImageModeling,
    Swinv2Model,
)
from swinv2.train.optim import (
    NO_DECAY_RULE,
    WarmupCosine,
    build_optimizer,
    decays,
    layer_id,
    layer_scale,
    mix_batch,
    num_layer_ids,
    parameter_groups,
    soft_cross_entropy,
    warmup_cosine_factor,
)

DEPTHS = (2, 2)
TOP = sum(DEPTHS) + 1  # the id above the last block


def tiny_config(**overrides: object) -> Swinv2Config:
    settings: dict[str, object] = {
        "image_size": 32,
        "patch_size": 4,
        "embed_dim": 16,
        "depths": DEPTHS,
        "num_heads": (1, 2),
        "window_size": 4,
        "num_labels": 3,
        "encoder_stride": 8,
        "use_absolute_embeddings": True,
    }
    settings.update(overrides)
    return Swinv2Config(**settings)  # type: ignore[arg-type]


def classifier(seed: int = 0) -> Swinv2ForImageClassification:
    torch.manual_seed(seed)
    return Swinv2ForImageClassification(tiny_config())


MODEL_CLASSES = [Swinv2ForImageClassification, Swinv2Model, Swinv2ForMaskedImageModeling, Swinv2Backbone]


def block_weight_names(prefix: str) -> list[str]:
    """The weights that are linear maps on features, in every block of the tiny model."""
    names = []
    for stage, depth in enumerate(DEPTHS):
        for block in range(depth):
            at = f"{prefix}encoder.layers.{stage}.blocks.{block}."
            names += [
                at + "attention.self.query.weight",
                at + "attention.self.key.weight",
                at + "attention.self.value.weight",
                at + "attention.output.dense.weight",
                at + "intermediate.dense.weight",
                at + "output.dense.weight",
            ]
    return names


# --- weight decay -------------------------------------------------------------------------------------------------


def test_a_classifier_decays_exactly_its_feature_weights() -> None:
    model = classifier()
    decayed = {name for name, p in model.named_parameters() if decays(name, p)}
    expected = {
        "swinv2.embeddings.patch_embeddings.projection.weight",
        "swinv2.encoder.layers.0.downsample.reduction.weight",
        "classifier.weight",
        *block_weight_names("swinv2."),
    }
    assert decayed == expected


def test_a_classifier_exempts_norms_biases_logit_scale_cpb_mlp_and_position_embeddings() -> None:
    model = classifier()
    exempt = {name for name, p in model.named_parameters() if not decays(name, p)}
    expected = {
        "swinv2.embeddings.position_embeddings",
        "swinv2.embeddings.patch_embeddings.projection.bias",
        "swinv2.embeddings.norm.weight",
        "swinv2.embeddings.norm.bias",
        "swinv2.encoder.layers.0.downsample.norm.weight",
        "swinv2.encoder.layers.0.downsample.norm.bias",
        "swinv2.layernorm.weight",
        "swinv2.layernorm.bias",
        "classifier.bias",
    }
    for stage, depth in enumerate(DEPTHS):
        for block in range(depth):
            at = f"swinv2.encoder.layers.{stage}.blocks.{block}."
            expected |= {
                at + "attention.self.logit_scale",
                at + "attention.self.continuous_position_bias_mlp.0.weight",
                at + "attention.self.continuous_position_bias_mlp.0.bias",
                at + "attention.self.continuous_position_bias_mlp.2.weight",
                at + "attention.self.query.bias",
                at + "attention.self.value.bias",  # the key projection has no bias in Swin V2
                at + "attention.output.dense.bias",
                at + "intermediate.dense.bias",
                at + "output.dense.bias",
                at + "layernorm_before.weight",
                at + "layernorm_before.bias",
                at + "layernorm_after.weight",
                at + "layernorm_after.bias",
            }
    assert exempt == expected


def test_masked_image_modeling_exempts_the_mask_token_and_decays_the_decoder() -> None:
    model = Swinv2ForMaskedImageModeling(tiny_config())
    verdicts = {name: decays(name, p) for name, p in model.named_parameters()}
    assert verdicts["swinv2.embeddings.mask_token"] is False
    assert verdicts["swinv2.embeddings.position_embeddings"] is False
    assert verdicts["decoder.0.weight"] is True
    assert verdicts["decoder.0.bias"] is False


def test_the_rule_exempts_by_shape_suffix_and_keyword() -> None:
    matrix = torch.zeros(4, 4)
    assert not decays("anything.weight", torch.zeros(4))  # 1-D
    assert not decays("anything.weight", torch.zeros(()))  # 0-D
    assert not decays("odd.bias", matrix)  # `.bias`, whatever its shape
    for keyword in NO_DECAY_RULE.keywords:
        assert not decays(f"x.{keyword}.weight", matrix)
    assert decays("x.query.lora_A.default.weight", matrix)  # LoRA adapters are feature weights
    assert not decays("x.continuous_position_bias_mlp.0.base_layer.weight", matrix)  # wrapped, still exempt


# --- layer ids ----------------------------------------------------------------------------------------------------

LAYER_CASES = [
    ("swinv2.embeddings.patch_embeddings.projection.weight", 0),
    ("swinv2.embeddings.norm.bias", 0),
    ("swinv2.embeddings.position_embeddings", 0),
    ("swinv2.embeddings.mask_token", 0),
    ("swinv2.encoder.layers.0.blocks.0.attention.self.query.weight", 1),
    ("swinv2.encoder.layers.0.blocks.0.attention.self.logit_scale", 1),
    ("swinv2.encoder.layers.0.blocks.1.attention.self.continuous_position_bias_mlp.2.weight", 2),
    ("swinv2.encoder.layers.0.blocks.1.layernorm_after.weight", 2),
    ("swinv2.encoder.layers.0.downsample.reduction.weight", 2),  # with the last block of its stage
    ("swinv2.encoder.layers.0.downsample.norm.weight", 2),
    ("swinv2.encoder.layers.1.blocks.0.intermediate.dense.weight", 3),
    ("swinv2.encoder.layers.1.blocks.1.output.dense.bias", 4),
    ("swinv2.layernorm.weight", TOP),
    ("classifier.weight", TOP),
    ("decoder.0.weight", TOP),
    # a bare Swinv2Model or Swinv2Backbone
    ("embeddings.patch_embeddings.projection.weight", 0),
    ("encoder.layers.1.blocks.1.attention.self.key.weight", 4),
    ("encoder.layers.0.downsample.reduction.weight", 2),
    ("layernorm.bias", TOP),
    ("hidden_states_norms.stage1.weight", TOP),
    ("hidden_states_norms.stage2.bias", TOP),
    # PEFT-wrapped
    ("base_model.model.swinv2.embeddings.patch_embeddings.projection.weight", 0),
    ("base_model.model.swinv2.encoder.layers.1.blocks.0.attention.self.query.base_layer.weight", 3),
    ("base_model.model.swinv2.encoder.layers.1.blocks.0.attention.self.value.lora_A.default.weight", 3),
    ("base_model.model.swinv2.encoder.layers.0.blocks.1.attention.self.query.lora_B.default.weight", 2),
    ("base_model.model.classifier.modules_to_save.default.weight", TOP),
]


@pytest.mark.parametrize(("name", "expected"), LAYER_CASES)
def test_layer_id_of_each_name_pattern(name: str, expected: int) -> None:
    assert layer_id(name, DEPTHS) == expected


def test_layer_ids_for_a_four_stage_network() -> None:
    depths = (2, 2, 6, 2)
    assert num_layer_ids(depths) == 14
    assert layer_id("swinv2.encoder.layers.1.blocks.0.attention.self.query.weight", depths) == 3
    assert layer_id("swinv2.encoder.layers.2.blocks.5.attention.self.query.weight", depths) == 10
    assert layer_id("swinv2.encoder.layers.2.downsample.reduction.weight", depths) == 10
    assert layer_id("swinv2.encoder.layers.3.blocks.0.attention.self.query.weight", depths) == 11
    assert layer_id("swinv2.encoder.layers.3.blocks.1.attention.self.query.weight", depths) == 12
    assert layer_id("swinv2.layernorm.weight", depths) == 13


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_every_name_of_every_model_class_gets_an_id_rising_from_input_to_output(model_class: type[nn.Module]) -> None:
    model = model_class(tiny_config())
    ids = [layer_id(name, DEPTHS) for name, _ in model.named_parameters()]
    assert ids == sorted(ids)  # modules are registered input to output
    assert set(ids) <= set(range(num_layer_ids(DEPTHS)))
    assert {0, 1, 2, 3, 4} <= set(ids)  # the embedding and every block


@pytest.mark.parametrize(
    "name",
    ["encoder.layers.2.blocks.0.attention.self.query.weight", "encoder.layers.1.blocks.2.output.dense.weight"],
)
def test_names_outside_the_depths_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="do not have"):
        layer_id(name, DEPTHS)


def test_bad_depths_are_refused() -> None:
    for depths in [(), (2, 0)]:
        with pytest.raises(ValueError, match="depths"):
            num_layer_ids(depths)


# --- parameter groups ---------------------------------------------------------------------------------------------


def test_learning_rate_multipliers_follow_layer_decay() -> None:
    model = classifier()
    groups = parameter_groups(model, weight_decay=0.05, base_lr=1e-3, layer_decay=0.5)
    scale_of = {name: group["lr_scale"] for group in groups for name in group["names"]}
    for name, _ in model.named_parameters():
        assert scale_of[name] == 0.5 ** (sum(DEPTHS) + 1 - layer_id(name, DEPTHS))
    assert scale_of["swinv2.embeddings.patch_embeddings.projection.weight"] == 0.5**5
    assert scale_of["swinv2.encoder.layers.0.downsample.reduction.weight"] == 0.5**3
    assert scale_of["swinv2.encoder.layers.1.blocks.0.attention.self.query.weight"] == 0.5**2
    assert scale_of["classifier.weight"] == 1.0
    for group in groups:
        assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"], rel=1e-15)
        assert group["weight_decay"] == (
            0.05 if all(decays(n, p) for n, p in zip(group["names"], group["params"], strict=True)) else 0.0
        )
        assert len({decays(n, p) for n, p in zip(group["names"], group["params"], strict=True)}) == 1
    assert layer_scale(TOP, DEPTHS, 0.5) == 1.0


def test_without_layer_decay_there_are_two_groups_at_the_base_rate() -> None:
    groups = parameter_groups(classifier(), weight_decay=0.05, base_lr=1e-3)
    assert [(g["weight_decay"], g["lr"], g["lr_scale"]) for g in groups] == [(0.05, 1e-3, 1.0), (0.0, 1e-3, 1.0)]


@pytest.mark.parametrize("layer_decay", [None, 0.75])
@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_groups_cover_every_trainable_parameter_exactly_once(
    model_class: type[nn.Module], layer_decay: float | None
) -> None:
    model = model_class(tiny_config())
    groups = parameter_groups(model, weight_decay=0.05, base_lr=1e-3, layer_decay=layer_decay)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    assert len(grouped) == len(set(grouped))
    named = dict(model.named_parameters())
    for group in groups:
        assert all(named[n] is p for n, p in zip(group["names"], group["params"], strict=True))
        assert group["params"]  # no empty groups


def test_groups_are_in_a_deterministic_order() -> None:
    first = parameter_groups(classifier(0), weight_decay=0.05, base_lr=1e-3, layer_decay=0.8)
    second = parameter_groups(classifier(1), weight_decay=0.05, base_lr=1e-3, layer_decay=0.8)
    assert [g["names"] for g in first] == [g["names"] for g in second]
    keys = [(layer_id(g["names"][0], DEPTHS), g["weight_decay"] == 0.0) for g in first]
    assert keys == sorted(keys)


def test_frozen_parameters_are_left_out() -> None:
    model = classifier()
    for name, parameter in model.named_parameters():
        if name.startswith(("swinv2.embeddings.", "swinv2.encoder.layers.0.")):
            parameter.requires_grad_(False)
    groups = parameter_groups(model, weight_decay=0.05, base_lr=1e-3, layer_decay=0.9)
    names = [n for g in groups for n in g["names"]]
    assert names
    assert not any(n.startswith(("swinv2.embeddings.", "swinv2.encoder.layers.0.")) for n in names)
    assert len(names) == sum(p.requires_grad for p in model.parameters())


def test_a_model_with_nothing_trainable_is_refused() -> None:
    model = classifier().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        parameter_groups(model, weight_decay=0.05, base_lr=1e-3)


def test_a_lora_wrapped_model_gets_groups_for_its_adapters_and_trains() -> None:
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(
        classifier(), peft.LoraConfig(r=2, target_modules=["query", "value"], modules_to_save=["classifier"])
    )
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    names = [n for g in optimizer.param_groups for n in g["names"]]
    assert len(names) == sum(p.requires_grad for p in model.parameters())
    assert all("lora_" in n or "modules_to_save" in n for n in names)
    scale_of = {n: g["lr_scale"] for g in optimizer.param_groups for n in g["names"]}
    query_a = "base_model.model.swinv2.encoder.layers.1.blocks.0.attention.self.query.lora_A.default.weight"
    assert scale_of[query_a] == 0.5**2
    assert scale_of["base_model.model.classifier.modules_to_save.default.weight"] == 1.0
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(0)
    loss = model(pixel_values=torch.randn(2, 3, 32, 32)).logits.square().mean()
    loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed and changed <= set(names)


def test_adamw_keeps_names_and_lr_scale_in_its_groups_and_state_dict() -> None:
    optimizer = build_optimizer(classifier(), lr=2e-3, weight_decay=0.05, layer_decay=0.7, betas=(0.9, 0.99), eps=1e-6)
    assert isinstance(optimizer, torch.optim.AdamW)
    for group in optimizer.param_groups:
        assert {"names", "lr_scale"} <= set(group)
        assert group["betas"] == (0.9, 0.99)
        assert group["eps"] == 1e-6
        assert group["lr"] == pytest.approx(2e-3 * group["lr_scale"])
    saved = optimizer.state_dict()["param_groups"]
    assert [g["names"] for g in saved] == [g["names"] for g in optimizer.param_groups]
    assert [g["lr_scale"] for g in saved] == [g["lr_scale"] for g in optimizer.param_groups]


# --- schedule -----------------------------------------------------------------------------------------------------


def test_factor_at_start_end_of_warmup_middle_and_end() -> None:
    assert warmup_cosine_factor(0, 10, 110) == 0.0
    assert warmup_cosine_factor(5, 10, 110) == 0.5
    assert warmup_cosine_factor(10, 10, 110) == 1.0
    assert warmup_cosine_factor(60, 10, 110) == pytest.approx(0.5)
    assert warmup_cosine_factor(110, 10, 110) == pytest.approx(0.0, abs=1e-15)
    assert warmup_cosine_factor(500, 10, 110) == 0.0
    assert warmup_cosine_factor(60, 10, 110, min_ratio=0.1) == pytest.approx(0.55)
    assert warmup_cosine_factor(110, 10, 110, min_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine_factor(0, 0, 10) == 1.0  # no warm-up starts at the peak
    values = [warmup_cosine_factor(s, 10, 110) for s in range(111)]
    assert values[:11] == sorted(values[:11])
    assert values[10:] == sorted(values[10:], reverse=True)


@pytest.mark.parametrize(
    ("step", "warmup", "total", "min_ratio"), [(0, 10, 10, 0.0), (0, -1, 10, 0.0), (0, 1, 10, 1.5), (-1, 1, 10, 0.0)]
)
def test_bad_schedule_settings_are_refused(step: int, warmup: int, total: int, min_ratio: float) -> None:
    with pytest.raises(ValueError):
        warmup_cosine_factor(step, warmup, total, min_ratio)


def test_the_schedule_scales_each_group_by_its_own_peak() -> None:
    optimizer = build_optimizer(classifier(), lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    schedule = WarmupCosine(optimizer, warmup_steps=4, total_steps=12, min_lr_ratio=0.1)
    peaks = [1e-3 * g["lr_scale"] for g in optimizer.param_groups]
    for step in range(15):
        factor = warmup_cosine_factor(step, 4, 12, 0.1)
        for group, peak in zip(optimizer.param_groups, peaks, strict=True):
            assert group["lr"] == pytest.approx(peak * factor, rel=1e-12, abs=1e-18)
        optimizer.step()
        schedule.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1 * p for p in peaks])


def _train(
    model: nn.Module, optimizer: torch.optim.Optimizer, schedule: WarmupCosine, steps: int, seed: int
) -> list[list[float]]:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # drop path draws from the global generator
    rates = []
    for _ in range(steps):
        pixels = torch.randn(2, 3, 32, 32, generator=generator)
        labels = torch.randint(0, 3, (2,), generator=generator)
        loss = F.cross_entropy(model(pixel_values=pixels).logits, labels, label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        rates.append([g["lr"] for g in optimizer.param_groups])
    return rates


def test_saving_and_restoring_optimizer_and_schedule_resumes_exactly() -> None:
    def setup(model: nn.Module) -> tuple[torch.optim.AdamW, WarmupCosine]:
        optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05, layer_decay=0.8)
        return optimizer, WarmupCosine(optimizer, warmup_steps=2, total_steps=8, min_lr_ratio=0.05)

    model = classifier()
    optimizer, schedule = setup(model)
    _train(model, optimizer, schedule, steps=3, seed=1)
    saved = copy.deepcopy((model.state_dict(), optimizer.state_dict(), schedule.state_dict()))
    rates = _train(model, optimizer, schedule, steps=4, seed=2)

    resumed = classifier(seed=99)  # different initial weights: everything must come from the saved state
    resumed.load_state_dict(saved[0])
    resumed_optimizer, resumed_schedule = setup(resumed)
    resumed_optimizer.load_state_dict(saved[1])
    resumed_schedule.load_state_dict(saved[2])
    assert resumed_schedule.last_epoch == 3
    resumed_rates = _train(resumed, resumed_optimizer, resumed_schedule, steps=4, seed=2)

    assert resumed_rates == rates
    for (name, expected), (_, actual) in zip(model.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(expected, actual), name


def test_schedule_settings_travel_in_the_state_dict() -> None:
    optimizer = build_optimizer(classifier(), lr=1e-3, weight_decay=0.05)
    saved = WarmupCosine(optimizer, warmup_steps=3, total_steps=30, min_lr_ratio=0.2).state_dict()
    other = WarmupCosine(optimizer, warmup_steps=1, total_steps=5)
    other.load_state_dict(saved)
    assert (other.warmup_steps, other.total_steps, other.min_lr_ratio) == (3, 30, 0.2)
    assert other.lr_lambdas[0](10) == warmup_cosine_factor(10, 3, 30, 0.2)


# --- mixup / cutmix -----------------------------------------------------------------------------------------------


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(6, 3, 16, 16, generator=generator), torch.tensor([0, 1, 2, 3, 4, 0])


@pytest.mark.parametrize(("mixup", "cutmix"), [(0.8, 1.0), (0.8, 0.0), (0.0, 1.0)])
def test_mix_batch_is_deterministic_and_its_targets_are_distributions(mixup: float, cutmix: float) -> None:
    pixels, labels = _batch()
    original = pixels.clone()
    runs = [
        mix_batch(
            pixels,
            labels,
            5,
            mixup_alpha=mixup,
            cutmix_alpha=cutmix,
            generator=torch.Generator().manual_seed(seed),
            label_smoothing=0.1,
        )
        for seed in (7, 7)
    ]
    (mixed, targets), (mixed_again, targets_again) = runs
    assert torch.equal(mixed, mixed_again)
    assert torch.equal(targets, targets_again)
    assert torch.equal(pixels, original)  # the input is not modified
    assert targets.shape == (6, 5)
    torch.testing.assert_close(targets.sum(-1), torch.ones(6))
    assert (targets > 0).all()  # smoothing gives every class some mass


def test_the_generator_decides_and_advances() -> None:
    pixels, labels = _batch()
    generator = torch.Generator().manual_seed(3)
    draws = [mix_batch(pixels, labels, 5, mixup_alpha=0.8, cutmix_alpha=1.0, generator=generator)[1] for _ in range(4)]
    assert any(not torch.equal(draws[0], later) for later in draws[1:])


def test_mixup_blends_each_image_with_the_reversed_batch_by_its_target_weight() -> None:
    pixels, labels = _batch()
    mixed, targets = mix_batch(
        pixels, labels, 5, mixup_alpha=0.8, cutmix_alpha=0.0, generator=torch.Generator().manual_seed(1)
    )
    lam = targets[1, 1].item()  # image 1 (label 1) is paired with image 4 (label 4)
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(targets[1, 4], torch.tensor(1.0 - lam))
    torch.testing.assert_close(mixed, lam * pixels + (1 - lam) * pixels.flip(0))


def test_cutmix_pastes_a_box_whose_area_sets_the_target_weight() -> None:
    pixels, labels = _batch()
    for seed in range(5):
        mixed, targets = mix_batch(
            pixels, labels, 5, mixup_alpha=0.0, cutmix_alpha=1.0, generator=torch.Generator().manual_seed(seed)
        )
        own = (mixed == pixels).all(dim=1)  # (B, H, W): pixel kept
        partner = (mixed == pixels.flip(0)).all(dim=1)
        assert (own | partner).all()
        kept = own[1].float().mean().item()
        assert targets[1, 1].item() == pytest.approx(kept, abs=1e-6)
        assert targets[1, 4].item() == pytest.approx(1.0 - kept, abs=1e-6)


def test_no_mixing_gives_the_pixels_and_smoothed_one_hot_targets() -> None:
    pixels, labels = _batch()
    mixed, targets = mix_batch(
        pixels, labels, 5, mixup_alpha=0.0, cutmix_alpha=0.0, generator=torch.Generator(), label_smoothing=0.1
    )
    assert mixed is pixels
    expected = torch.full((6, 5), 0.02)
    expected[torch.arange(6), labels] = 0.92
    torch.testing.assert_close(targets, expected)


def test_soft_cross_entropy_matches_torch_label_smoothing() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    _, targets = mix_batch(
        torch.zeros(6, 1, 2, 2),
        labels,
        5,
        mixup_alpha=0,
        cutmix_alpha=0,
        generator=torch.Generator(),
        label_smoothing=0.1,
    )
    torch.testing.assert_close(
        soft_cross_entropy(logits, targets), F.cross_entropy(logits, labels, label_smoothing=0.1)
    )
    torch.testing.assert_close(
        soft_cross_entropy(logits.half(), targets).float(), soft_cross_entropy(logits.half().float(), targets)
    )
    assert soft_cross_entropy(logits.half(), targets).dtype == torch.float32
    assert math.isfinite(soft_cross_entropy(logits, targets).item())
