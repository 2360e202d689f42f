"""`swinv2 demo`: train a small Swin V2 on scikit-learn's handwritten digits, end to end, offline.

1,797 real 8x8 scans of digits (shipped inside scikit-learn) are upscaled to 32x32, split into train
and held-out sets, and a three-stage Swin V2 (window 4) is trained with AdamW. The
trained model is saved as a transformers directory, the held-out images are classified through the
library's own pipeline from that directory, and the run leaves a confusion matrix on the terminal, a
PNG sheet of predictions (green right, red wrong) and a PNG of the training curves.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from swinv2.cli.common import non_negative_int, positive_int
from swinv2.config import Swinv2Config
from swinv2.models import Swinv2ForImageClassification
from swinv2.pipeline import classify
from swinv2.preprocess import Swinv2ImageProcessor
from swinv2.train import EpochStats, TrainingSettings, fit

IMAGE_SIZE = 32
GRAY_MEAN, GRAY_STD = 0.5, 0.5  # digits are grey strokes on black; any fixed normalisation works


@dataclass
class DemoResult:
    """What a demo run measured and wrote."""

    accuracy: float
    seconds: float
    model_dir: Path
    sheet: Path
    curves: Path
    confusion: np.ndarray


def digits_as_images() -> tuple[list[Image.Image], np.ndarray]:
    """scikit-learn's digits as 8-bit greyscale PIL images (8x8) and their labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("the demo needs scikit-learn: pip install 'swinv2[demo]'") from None
    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # values 0..16 -> 0..255
    return [Image.fromarray(p) for p in pixels], digits.target.astype(np.int64)


def demo_config() -> Swinv2Config:
    """A 0.6 M-parameter Swin V2 for 32x32 inputs: patch 2, windows of 4, three stages."""
    return Swinv2Config(
        image_size=IMAGE_SIZE,
        patch_size=2,
        embed_dim=48,
        depths=(2, 2, 2),
        num_heads=(3, 6, 12),
        window_size=4,
        drop_path_rate=0.1,
        encoder_stride=8,
        id2label={i: str(i) for i in range(10)},
    )


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 3 pixels (pad by replicating the border, crop back)."""
    padded = F.pad(batch, (3, 3, 3, 3), mode="replicate")
    dy, dx = torch.randint(0, 7, (2,), generator=generator).tolist()
    return padded[:, :, dy : dy + IMAGE_SIZE, dx : dx + IMAGE_SIZE]


def _bar(done: int, total: int, text: str) -> None:
    if not sys.stderr.isatty():
        return  # a progress bar is for people at a terminal, not for logs
    filled = 24 * done // total
    end = "\n" if done == total else ""
    print(f"\r  [{'#' * filled}{'.' * (24 - filled)}] {text}", end=end, file=sys.stderr, flush=True)


def _print_epoch(stats: EpochStats) -> None:
    print(
        f"epoch {stats.epoch:2d}: loss {stats.loss:.3f}, train accuracy {stats.train_accuracy:.3f}, "
        f"held-out accuracy {stats.held_out_accuracy:.3f}",
        file=sys.stderr,
    )


def _curves_png(history: list[EpochStats], path: Path) -> None:
    """Loss and accuracies per epoch, drawn with PIL (no plotting library needed)."""
    width, height, margin = 640, 360, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((margin, margin, width - margin, height - margin), outline="black")
    series = {
        "loss (scaled to the first epoch)": ([h.loss / history[0].loss for h in history], (200, 60, 60)),
        "train accuracy": ([h.train_accuracy for h in history], (60, 60, 200)),
        "held-out accuracy": ([h.held_out_accuracy or 0.0 for h in history], (30, 150, 60)),
    }
    span_x = max(1, len(history) - 1)
    for row, (name, (values, colour)) in enumerate(series.items()):
        points = [
            (margin + (width - 2 * margin) * i / span_x, height - margin - (height - 2 * margin) * min(max(v, 0), 1))
            for i, v in enumerate(values)
        ]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        draw.text((margin + 8, margin + 6 + 14 * row), name, fill=colour)
    draw.text((margin, height - margin + 8), f"epochs 1..{len(history)}; y from 0 to 1", fill="black")
    image.save(path)


def _sheet_png(images: list[Image.Image], truth: list[int], predicted: list[int], path: Path, count: int = 48) -> None:
    """A grid of held-out digits with their predictions: green when right, red when wrong."""
    cell, columns = 64, 12
    shown = min(count, len(images))
    rows = math.ceil(shown / columns)
    sheet = Image.new("RGB", (columns * cell, rows * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(shown):
        x, y = (i % columns) * cell, (i // columns) * cell
        sheet.paste(images[i].resize((cell - 16, cell - 16), Image.Resampling.NEAREST).convert("RGB"), (x + 8, y + 2))
        colour = (20, 150, 40) if truth[i] == predicted[i] else (210, 30, 30)
        draw.rectangle((x + 1, y + 1, x + cell - 2, y + cell - 2), outline=colour, width=2)
        draw.text((x + 24, y + cell - 14), str(predicted[i]), fill=colour)
    sheet.save(path)


def run_demo(out: Path, epochs: int = 40, seed: int = 0, held_out_fraction: float = 0.2) -> DemoResult:
    """Train, save, classify the held-out digits from the saved directory, write the PNGs."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    images, targets = digits_as_images()
    order = np.random.default_rng(seed).permutation(len(images))
    cut = int(len(images) * (1 - held_out_fraction))
    train_idx, test_idx = order[:cut], order[cut:]
    processor = Swinv2ImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[GRAY_MEAN] * 3, image_std=[GRAY_STD] * 3
    )
    pixels = processor([images[i] for i in train_idx]).pixel_values
    held_pixels = processor([images[i] for i in test_idx]).pixel_values
    labels, held_labels = torch.from_numpy(targets[train_idx]), torch.from_numpy(targets[test_idx])
    print(f"digits: {len(train_idx)} training and {len(test_idx)} held-out images, upscaled to 32x32", file=sys.stderr)

    model = Swinv2ForImageClassification(demo_config())
    print(f"model: Swin V2, {model.num_parameters() / 1e6:.2f} M parameters", file=sys.stderr)
    epoch = [1]  # the epoch the progress bar shows

    def after_epoch(stats: EpochStats) -> None:
        _print_epoch(stats)
        epoch[0] = stats.epoch + 1

    history = fit(
        model,
        pixels,
        labels,
        TrainingSettings(epochs=epochs, seed=seed),
        held_out=(held_pixels, held_labels),
        augment=_augment,
        on_step=lambda step, total: _bar(step, total, f"epoch {epoch[0]}/{epochs}"),
        on_epoch=after_epoch,
    )

    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    predictions = classify([images[i] for i in test_idx], model_dir, top_k=1, batch_size=128)
    predicted = [int(p[0]["label"]) for p in predictions]
    truth = held_labels.tolist()
    accuracy = float(np.mean(np.array(predicted) == np.array(truth)))
    confusion = np.zeros((10, 10), dtype=np.int64)
    for t, p in zip(truth, predicted, strict=True):
        confusion[t, p] += 1
    sheet, curves = out / "predictions.png", out / "training_curves.png"
    _sheet_png([images[i] for i in test_idx], truth, predicted, sheet)
    _curves_png(history, curves)
    return DemoResult(accuracy, time.perf_counter() - started, model_dir, sheet, curves, confusion)


def format_confusion(confusion: np.ndarray) -> str:
    """The confusion matrix as text: rows are true digits, columns predicted ones."""
    lines = ["true \\ predicted " + " ".join(f"{d:>4}" for d in range(10))]
    lines += [f"{t:>16} " + " ".join(f"{n:>4}" for n in row) for t, row in enumerate(confusion)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- command
def demo_command(args: argparse.Namespace) -> str:
    """Train on scikit-learn's digits, save, classify the held-out set, report and draw."""
    result = run_demo(Path(args.out), epochs=args.epochs, seed=args.seed)
    return "\n".join(
        [
            f"held-out accuracy: {result.accuracy:.2%} in {result.seconds:.0f} s",
            format_confusion(result.confusion),
            f"model (transformers format): {result.model_dir}",
            f"predictions sheet: {result.sheet}",
            f"training curves: {result.curves}",
            f"try: swinv2 classify SOME_IMAGE --model {result.model_dir}",
        ]
    )


def register(commands: Any) -> None:
    """Add `demo` to the `swinv2` subcommands."""
    demo = commands.add_parser("demo", help="train a small Swin V2 on scikit-learn's digits, offline")
    demo.add_argument("--out", default="swinv2-demo", metavar="DIR", help="where to write (default: swinv2-demo)")
    demo.add_argument("--epochs", type=positive_int, default=40, metavar="N")
    demo.add_argument("--seed", type=non_negative_int, default=0)
    demo.set_defaults(run=demo_command)
