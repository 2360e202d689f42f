"""`swinv2 demo`, shortened, end to end through the real entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
import transformers
from PIL import Image

from swinv2 import Swinv2ForImageClassification
from swinv2.cli.demo import digits_as_images
from swinv2.pipeline import classify


def test_short_demo_trains_saves_and_draws(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "swinv2.cli", "demo", "--out", str(out), "--epochs", "4"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("held-out accuracy") == 4  # one line per epoch
    first_line = done.stdout.splitlines()[0]
    accuracy = float(first_line.split(": ")[1].split("%")[0]) / 100
    assert accuracy > 0.3, first_line  # ten classes: chance is 0.1; 4 epochs reach about 0.6
    assert "true \\ predicted" in done.stdout

    model_dir = out / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    for png in ("predictions.png", "training_curves.png"):
        with Image.open(out / png) as image:
            assert image.size[0] > 100 and image.getextrema() != ((255, 255),) * 3  # not blank

    # The saved directory loads in transformers with the same predictions as ours.
    images, _ = digits_as_images()
    ours = Swinv2ForImageClassification.from_pretrained(model_dir)
    theirs = transformers.Swinv2ForImageClassification.from_pretrained(model_dir).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(model_dir)
    pixel_values = processor(images[:16], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = theirs(pixel_values).logits
        torch.testing.assert_close(ours(pixel_values).logits, expected, atol=1e-5, rtol=0)
    predicted = [int(p[0]["label"]) for p in classify(images[:16], model_dir, top_k=1)]
    assert predicted == expected.argmax(-1).tolist()
