"""`transformers.Trainer` drives our classifier: train, evaluate, checkpoint, resume exactly, and the checkpoint
loads into both libraries.

Determinism: both runs are on the CPU, in one process, with the same seeds, data order, optimizer and scheduler,
and run the same kernels on tensors of the same shapes in the same order; the resumed run restores the model,
optimizer, scheduler and RNG states bitwise from the checkpoint (safetensors / torch.save keep every bit) and
`Trainer` skips the batches already seen. Nothing differs between the two paths, so the parameters must be equal
bit for bit (`torch.equal`), not merely close.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import swinv2
from helpers import hf_config, image_batch, tiny_config

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # Trainer needs it
safetensors_torch = pytest.importorskip("safetensors.torch")

TOTAL_STEPS = 6
SAVE_STEPS = 3
BATCH = 2
NUM_LABELS = 3


class Images(torch.utils.data.Dataset):
    """Synthetic 64 px images with a class index each; examples are the dicts `Trainer` collates."""

    def __init__(self, size: int, seed: int) -> None:
        self.pixel_values = image_batch(size, 64, 64, seed=seed)
        self.labels = torch.randint(0, NUM_LABELS, (size,), generator=torch.Generator().manual_seed(seed + 1))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixel_values[index], "labels": self.labels[index]}


class StopAt(transformers.TrainerCallback):
    """Interrupt training after `step` (the step's checkpoint is still written)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def make_model(seed: int) -> swinv2.Swinv2ForImageClassification:
    torch.manual_seed(seed)
    return swinv2.Swinv2ForImageClassification(tiny_config(num_labels=NUM_LABELS))


def make_trainer(
    model: torch.nn.Module, output_dir: Path, train: Images, evaluation: Images, callbacks: list | None = None
) -> transformers.Trainer:
    args = transformers.TrainingArguments(
        output_dir=str(output_dir),
        use_cpu=True,
        report_to=[],
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH,
        max_steps=TOTAL_STEPS,
        learning_rate=1e-3,
        lr_scheduler_type="linear",
        warmup_steps=1,
        weight_decay=0.01,
        save_strategy="steps",
        save_steps=SAVE_STEPS,
        eval_strategy="no",
        logging_strategy="no",
        seed=0,
        data_seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    return transformers.Trainer(
        model=model, args=args, train_dataset=train, eval_dataset=evaluation, callbacks=callbacks
    )


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_trainer_trains_evaluates_resumes_exactly_and_checkpoint_loads_in_both(tmp_path: Path) -> None:
    train, evaluation = Images(16, seed=0), Images(4, seed=10)  # 8 batches: 6 steps stay in one epoch
    initial = params(make_model(seed=0))

    # uninterrupted run of TOTAL_STEPS
    full_model = make_model(seed=0)
    full = make_trainer(full_model, tmp_path / "full", train, evaluation)
    full.train()
    assert full.state.global_step == TOTAL_STEPS
    full_params = params(full_model)
    assert any(not torch.equal(full_params[k], initial[k]) for k in initial), "training changed nothing"
    assert all(torch.isfinite(p).all() for p in full_params.values())

    # evaluation: Trainer's eval loss is the mean of the per-batch losses (equal-sized batches here)
    metrics = full.evaluate()
    assert "eval_loss" in metrics and math.isfinite(metrics["eval_loss"])
    full_model.eval()
    with torch.no_grad():
        expected = full_model(pixel_values=evaluation.pixel_values, labels=evaluation.labels).loss
    assert metrics["eval_loss"] == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)

    # interrupted after SAVE_STEPS (checkpoint written), then resumed into a differently initialised model
    first = make_trainer(make_model(seed=0), tmp_path / "split", train, evaluation, callbacks=[StopAt(SAVE_STEPS)])
    first.train()
    assert first.state.global_step == SAVE_STEPS
    checkpoint = tmp_path / "split" / f"checkpoint-{SAVE_STEPS}"
    assert (checkpoint / "model.safetensors").is_file()
    assert (checkpoint / "optimizer.pt").is_file() and (checkpoint / "scheduler.pt").is_file()
    del first

    resumed_model = make_model(seed=123)
    resumed = make_trainer(resumed_model, tmp_path / "split", train, evaluation)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == TOTAL_STEPS
    resumed_params = params(resumed_model)
    assert resumed_params.keys() == full_params.keys()
    for name, value in full_params.items():
        assert torch.equal(resumed_params[name], value), f"{name} differs after resuming"

    # the final checkpoint loads, strictly, into our class and into transformers' with equal logits
    final = tmp_path / "split" / f"checkpoint-{TOTAL_STEPS}"
    state = safetensors_torch.load_file(str(final / "model.safetensors"))
    config = tiny_config(num_labels=NUM_LABELS)
    ours = swinv2.Swinv2ForImageClassification(config)
    ours.load_state_dict(state, strict=True)
    theirs = transformers.Swinv2ForImageClassification(hf_config(config))
    theirs.load_state_dict(state, strict=True)
    ours.eval()
    theirs.eval()
    for name, value in ours.named_parameters():
        assert torch.equal(value, full_params[name]), name
    pixels = image_batch(3, 64, 64, seed=7)
    with torch.no_grad():
        logits_ours = ours(pixel_values=pixels).logits
        logits_theirs = theirs(pixel_values=pixels).logits
    torch.testing.assert_close(logits_ours, logits_theirs, rtol=0, atol=1e-5)
