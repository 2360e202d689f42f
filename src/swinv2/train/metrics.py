"""What a run measures: evaluation (top-1, top-5, loss, confusion matrix), the `metrics.jsonl` log and
the curves drawn from it."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from swinv2.io.files import atomic_write
from swinv2.io.jsonfile import json_safe

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


@dataclass(frozen=True)
class Evaluation:
    """A classifier measured on a labelled set."""

    top1: float
    top5: float
    loss: float
    images: int
    confusion: list[list[int]]  # confusion[true][predicted]

    def summary(self) -> str:
        return f"top-1 {self.top1:.2%}, top-5 {self.top5:.2%}, loss {self.loss:.4f} on {self.images} images"


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset[tuple[torch.Tensor, int]],
    *,
    num_classes: int,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    workers: int = 0,
) -> Evaluation:
    """Top-1 / top-5 accuracy, mean cross-entropy and the confusion matrix of `model` on `dataset`."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    top1 = top5 = 0
    loss_sum = 0.0
    count = 0
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    for pixels, labels in loader:
        pixels, labels = pixels.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(pixels).logits
        logits = logits.float()  # (B, num_classes)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        ranked = logits.topk(min(5, num_classes), dim=-1).indices  # (B, k)
        top1 += int((ranked[:, 0] == labels).sum())
        top5 += int((ranked == labels[:, None]).any(dim=-1).sum())
        confusion += torch.bincount(labels.cpu() * num_classes + ranked[:, 0].cpu(), minlength=num_classes**2).view(
            num_classes, num_classes
        )
        count += len(labels)
    model.train(was_training)
    if count == 0:
        return Evaluation(math.nan, math.nan, math.nan, 0, confusion.tolist())
    return Evaluation(top1 / count, top5 / count, loss_sum / count, count, confusion.tolist())


def confusion_text(evaluation: Evaluation, class_names: list[str]) -> str:
    """The confusion matrix as aligned text: one row per true class, one column per predicted class."""
    width = max([len(str(v)) for row in evaluation.confusion for v in row] + [len(n) for n in class_names] + [4])
    header = " " * width + " " + " ".join(f"{n[:width]:>{width}}" for n in class_names)
    rows = [
        f"{name[:width]:>{width}} " + " ".join(f"{v:>{width}}" for v in row)
        for name, row in zip(class_names, evaluation.confusion, strict=True)
    ]
    return "\n".join(["true \\ predicted", header, *rows])


class MetricsLog:
    """`RUN/metrics.jsonl`: one strict-JSON line per logged step or evaluation."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Drop lines of steps after `step` (logged by a killed run after its last checkpoint)."""
        if not self.path.is_file():
            return
        kept = [line for line in self.read() if int(line.get("step", 0)) <= step]
        text = "".join(json.dumps(line, allow_nan=False) + "\n" for line in kept)
        atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def append(self, record: dict[str, Any]) -> None:
        safe, _ = json_safe(record)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(safe, allow_nan=False) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluation_record(step: int, epoch: int, evaluation: Evaluation) -> dict[str, Any]:
    """The metrics line of an evaluation (without the confusion matrix, which goes to the summary)."""
    values = {k: v for k, v in asdict(evaluation).items() if k != "confusion"}
    return {"step": step, "epoch": epoch, "eval": values}


def draw_curves(records: Iterable[dict[str, Any]], path: str | os.PathLike[str], title: str = "") -> Path:
    """Training loss, held-out accuracy and learning rate against the step, as one PNG (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(records)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval" in r]
    scored = [r for r in evals if "top1" in r["eval"]]  # classification runs; SimMIM logs a loss only
    figure, (loss_axis, accuracy_axis, lr_axis) = plt.subplots(1, 3, figsize=(13, 3.6))
    loss_axis.plot([r["step"] for r in train], [r["loss"] for r in train], label="training loss")
    if evals:
        loss_axis.plot([r["step"] for r in evals], [r["eval"]["loss"] for r in evals], "o-", label="held-out loss")
    if scored:
        accuracy_axis.plot([r["step"] for r in scored], [r["eval"]["top1"] for r in scored], "o-", label="top-1")
        accuracy_axis.plot([r["step"] for r in scored], [r["eval"]["top5"] for r in scored], "s--", label="top-5")
    lr_axis.plot([r["step"] for r in train], [r["lr"] for r in train], label="learning rate")
    for axis, ylabel in ((loss_axis, "loss"), (accuracy_axis, "held-out accuracy"), (lr_axis, "learning rate")):
        axis.set_xlabel("optimiser step")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        if axis.has_data():
            axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    plt.close(figure)
    return path
