"""A supervised training loop for image classifiers: AdamW, warm-up then cosine decay, label smoothing.

It trains on tensors already in memory (the demo's scale); data loaders, distribution and resumable
checkpoints belong to the training issue and will extend this module rather than replace it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class TrainingSettings:
    """Hyper-parameters of `fit`."""

    epochs: int
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1  # linear warm-up length, then cosine decay to zero over the remaining steps
    label_smoothing: float = 0.1
    seed: int = 0  # shuffling and augmentation draw from a generator seeded with this

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be positive; got {value!r}"
            for name, value in (("epochs", self.epochs), ("batch_size", self.batch_size))
            if value < 1
        ]
        if not 0.0 <= self.label_smoothing < 1.0:
            problems.append(f"label_smoothing must be in [0, 1); got {self.label_smoothing!r}")
        if problems:
            raise ValueError("invalid training settings: " + "; ".join(problems))


@dataclass(frozen=True)
class EpochStats:
    """What one epoch measured."""

    epoch: int
    loss: float  # mean training loss over the epoch's images
    train_accuracy: float
    held_out_accuracy: float | None  # None without held-out data


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate factor rising linearly over `warmup_steps`, times a cosine decay over `total_steps`."""
    warmup_steps, total_steps = max(1, warmup_steps), max(1, total_steps)

    def factor(step: int) -> float:
        warmup = min(1.0, (step + 1) / warmup_steps)
        return warmup * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def accuracy(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of `model` (put in eval mode) on `pixels` (B, C, H, W) and `labels` (B,)."""
    model.eval()
    return (model(pixels).logits.argmax(-1) == labels).float().mean().item()


def fit(
    model: nn.Module,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    settings: TrainingSettings,
    *,
    held_out: tuple[torch.Tensor, torch.Tensor] | None = None,
    augment: Augment | None = None,
    on_step: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> list[EpochStats]:
    """Train a classifier (any model whose output has `.logits`) with cross-entropy.

    Args:
        model: Trained in place.
        pixels: (B, C, H, W) training images; labels: (B,) class indices.
        settings: Hyper-parameters.
        held_out: (pixels, labels) measured after every epoch.
        augment: Applied to each batch with the loop's generator.
        on_step: Called with (step in epoch, steps per epoch) after each optimiser step.
        on_epoch: Called with each epoch's `EpochStats`.

    Returns:
        One `EpochStats` per epoch.
    """
    if pixels.shape[0] != labels.shape[0] or pixels.shape[0] == 0:
        raise ValueError(
            f"pixels and labels must hold the same, non-zero number of images; "
            f"got {pixels.shape[0]} and {labels.shape[0]}"
        )
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(pixels) / settings.batch_size)
    schedule = warmup_cosine(optimizer, settings.warmup_epochs * steps_per_epoch, settings.epochs * steps_per_epoch)
    history = []
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = torch.randperm(len(pixels), generator=generator)
        loss_sum, correct = 0.0, 0
        for step, start in enumerate(range(0, len(pixels), settings.batch_size), start=1):
            index = order[start : start + settings.batch_size]
            x, y = pixels[index], labels[index]
            if augment is not None:
                x = augment(x, generator)
            logits = model(x).logits  # (b, num_labels)
            loss = F.cross_entropy(logits, y, label_smoothing=settings.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(index)
            correct += int((logits.argmax(-1) == y).sum().item())
            if on_step is not None:
                on_step(step, steps_per_epoch)
        stats = EpochStats(
            epoch,
            loss_sum / len(pixels),
            correct / len(pixels),
            None if held_out is None else accuracy(model, *held_out),
        )
        logger.info("epoch %d: %s", epoch, stats)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    return history
