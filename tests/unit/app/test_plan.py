"""`swinv2.plan`: the planner's counts agree with the real model, its memory moves the right way with
FSDP, checkpointing and precision, and its peak matches a real CPU training step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import tiny_config
from swinv2 import Swinv2ForImageClassification
from swinv2.io.errors import InputError
from swinv2.plan import LiveBytes, measure_step, plan

CONFIG = tiny_config(image_size=64, window_size=4)


def test_parameter_count_is_the_real_models() -> None:
    planned = plan(CONFIG, batch_size=2)
    model = Swinv2ForImageClassification(CONFIG)
    assert planned.parameters == sum(p.numel() for p in model.parameters())
    assert planned.parameter_bytes == 4 * planned.parameters  # fp32, one process


def test_flops_are_per_image_and_positive() -> None:
    one, four = plan(CONFIG, batch_size=1), plan(CONFIG, batch_size=4)
    assert one.flops_per_image > 0
    # the position-bias MLP runs once per batch; the rest scales with the batch
    assert four.flops_per_image == pytest.approx(one.flops_per_image, rel=0.1)


def test_fsdp_shards_parameters_gradients_and_optimiser_state() -> None:
    one = plan(CONFIG, batch_size=2, fsdp=True, world_size=1)
    two = plan(CONFIG, batch_size=2, fsdp=True, world_size=2)
    assert two.parameter_bytes == pytest.approx(one.parameter_bytes / 2, abs=4)
    assert two.gradient_bytes == pytest.approx(one.gradient_bytes / 2, abs=4)
    assert two.optimizer_bytes == pytest.approx(one.optimizer_bytes / 2, abs=8)
    assert two.peak_bytes < one.peak_bytes
    assert two.settings.world_size == 2 and two.settings.fsdp


def test_activation_checkpointing_saves_activations() -> None:
    plain = plan(CONFIG, batch_size=4)
    checkpointed = plan(CONFIG, batch_size=4, activation_checkpointing=True)
    assert checkpointed.activation_bytes < plain.activation_bytes / 2
    assert checkpointed.peak_bytes < plain.peak_bytes


def test_bf16_halves_activations_and_keeps_fp32_masters() -> None:
    fp32 = plan(CONFIG, batch_size=4, fsdp=True, world_size=2)
    bf16 = plan(CONFIG, batch_size=4, precision="bf16", fsdp=True, world_size=2)
    assert bf16.parameter_bytes == fp32.parameter_bytes  # fp32 masters either way
    assert bf16.activation_bytes < 0.8 * fp32.activation_bytes


def test_planned_peak_matches_a_real_training_step() -> None:
    planned = plan(CONFIG, batch_size=4)
    torch.manual_seed(0)
    model = Swinv2ForImageClassification(CONFIG).train()
    pixels, labels = torch.randn(4, 3, 64, 64), torch.zeros(4, dtype=torch.long)
    measured = measure_step(model, pixels, labels, tracker=LiveBytes()).peak
    assert abs(planned.peak_bytes / measured - 1) <= 0.15, (planned.peak_bytes, measured)


def test_a_model_directory_is_read(tmp_path: Path) -> None:
    CONFIG.save_pretrained(tmp_path)
    assert plan(tmp_path, batch_size=1).parameters == plan(CONFIG, batch_size=1).parameters


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        (dict(batch_size=0), "batch_size (0) must be an integer of at least 1"),
        (dict(precision="fp16"), "precision ('fp16') must be one of ['bf16', 'fp32']"),
        (dict(world_size=0, fsdp=True), "world_size (0)"),
        (dict(optimizer="sgd"), "optimizer ('sgd')"),
    ],
)
def test_bad_values_are_refused_with_the_value(kwargs: dict[str, object], phrase: str) -> None:
    with pytest.raises(InputError) as caught:
        plan(CONFIG, **kwargs)  # type: ignore[arg-type]
    assert phrase in str(caught.value)


def test_an_unknown_model_is_refused() -> None:
    with pytest.raises(InputError, match="not-a-variant"):
        plan("not-a-variant")
