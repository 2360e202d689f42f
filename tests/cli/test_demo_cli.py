"""`swinv2 demo`, shortened, end to end through the real entry point; it trains through `swinv2.train.train`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from swinv2 import Swinv2ForImageClassification
from swinv2.cli.demo import digits_as_images, held_out_indices, run_demo
from swinv2.pipeline import classify
from swinv2.train.metrics import draw_curves


def test_short_demo_trains_saves_and_draws(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "swinv2.cli", "demo", "--out", str(out), "--epochs", "4"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    # Not a terminal: no bar, one plain line per epoch, from the trainer's evaluations.
    assert done.stderr.count("held-out accuracy") == 4, done.stderr
    assert "\r" not in done.stderr and "digits: 1437 training and 360 held-out images" in done.stderr
    assert "step 10/" not in done.stderr  # the trainer's step lines are left out; the epoch lines carry the loss
    first_line = done.stdout.splitlines()[0]
    accuracy = float(first_line.split(": ")[1].split("%")[0]) / 100
    assert accuracy > 0.3, first_line  # ten classes: chance is 0.1; 4 epochs reach about 0.8
    assert "true \\ predicted" in done.stdout

    # What the trainer wrote: its metrics log (one evaluation per epoch), whose last evaluation is what
    # the pipeline measured from the saved directory; no scratch directory (init weights, checkpoint) left.
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "model", "predictions.png", "training_curves.png"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "eval" in r]
    assert [r["epoch"] for r in evaluations] == [0, 1, 2, 3]
    assert evaluations[-1]["eval"]["images"] == 360
    assert f"{evaluations[-1]['eval']['top1']:.2%}" in first_line

    model_dir = out / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    with Image.open(out / "predictions.png") as image:
        assert image.size[0] > 100 and image.getextrema() != ((255, 255),) * 3  # not blank
    # The curves are the trainer's (`draw_curves` of its metrics log), pixel for pixel.
    redrawn = draw_curves(records, tmp_path / "redrawn.png", title="digits: Swinv2ForImageClassification")
    with Image.open(out / "training_curves.png") as ours, Image.open(redrawn) as theirs:
        assert ours.size == theirs.size and np.array_equal(np.asarray(ours), np.asarray(theirs))

    # The saved directory loads in transformers with the same predictions as ours.
    images, _ = digits_as_images()
    ours_model = Swinv2ForImageClassification.from_pretrained(model_dir)
    theirs_model = transformers.Swinv2ForImageClassification.from_pretrained(model_dir).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(model_dir)
    pixel_values = processor(images[:16], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = theirs_model(pixel_values).logits
        torch.testing.assert_close(ours_model(pixel_values).logits, expected, atol=1e-5, rtol=0)
    predicted = [int(p[0]["label"]) for p in classify(images[:16], model_dir, top_k=1)]
    assert predicted == expected.argmax(-1).tolist()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_demo_on_a_terminal_shows_the_trainers_bar_and_runs_again_over_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    first = run_demo(tmp_path, epochs=1, seed=3)
    shown = err.getvalue()
    assert "29/29" in shown and "\r" in shown, shown  # the trainer's tqdm bar: 1,437 images, 48 a step
    assert "step 10/29" not in shown  # on a terminal the bar replaces the trainer's step lines
    assert shown.count("held-out accuracy") == 1 and "epoch  1/1: training loss" in shown
    assert first.confusion.sum() == 360 and first.accuracy == pytest.approx(first.trainer_accuracy)
    # The same --out again (the default one, for a new user running the demo twice) is replaced, not refused.
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    second = run_demo(tmp_path, epochs=1, seed=3)
    assert second.accuracy == pytest.approx(second.trainer_accuracy)
    assert "\r" not in sys.stderr.getvalue() and "step " not in sys.stderr.getvalue()  # plain lines, one an epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "metrics.jsonl",
        "model",
        "predictions.png",
        "training_curves.png",
    ]


def test_the_demo_holds_out_what_the_trainer_holds_out() -> None:
    from swinv2.preprocess import Swinv2ImageProcessor
    from swinv2.train.data import load_classification_data

    processor = Swinv2ImageProcessor(size={"height": 32, "width": 32})
    images, targets = digits_as_images()
    for seed in (0, 1, 2):
        data = load_classification_data("digits", processor=processor, seed=seed, val_fraction=0.2)
        held = held_out_indices(len(images), seed)
        assert len(held) == len(data.val) == 360
        assert [int(targets[i]) for i in held] == data.val.labels
        assert all(np.array_equal(np.asarray(images[i]), data.val.sources[k]) for k, i in enumerate(held))
