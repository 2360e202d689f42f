"""Quick start: build a Swin V2 classifier, save it, load it back, classify a generated image.

Runs offline in seconds on a CPU. Weights are random (no download is possible here), so the point is
the round trip: the reloaded model must give exactly the same prediction as the one that was saved.

    python examples/quickstart.py [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from swinv2 import Swinv2Config, Swinv2ForImageClassification

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def generated_image(size: int) -> Image.Image:
    """A synthetic RGB picture: a gradient sky, a sun and a hill."""
    ramp = np.linspace(0, 1, size, dtype=np.float32)[:, None]
    sky = np.concatenate([np.broadcast_to(c * (1 - 0.5 * ramp), (size, size, 1)) for c in (0.3, 0.6, 1.0)], axis=2)
    image = Image.fromarray((sky * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((size * 0.6, size * 0.1, size * 0.85, size * 0.35), fill=(250, 210, 60))
    draw.polygon([(0, size), (size * 0.4, size * 0.55), (size, size)], fill=(40, 130, 60))
    return image


def to_pixel_values(image: Image.Image, size: int) -> torch.Tensor:
    """Resize (bicubic), scale to [0, 1], normalise with ImageNet statistics: (1, 3, size, size)."""
    array = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    array = (array - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="directory to save the model in (default: a temp dir)")
    args = parser.parse_args()

    torch.manual_seed(0)
    labels = ["sky", "sun", "hill", "sea", "city"]
    config = Swinv2Config(
        image_size=128,
        window_size=8,
        embed_dim=48,
        depths=(2, 2, 2),
        num_heads=(3, 6, 12),
        id2label=dict(enumerate(labels)),
    )
    model = Swinv2ForImageClassification(config).eval()
    print(f"built Swinv2ForImageClassification: {model.num_parameters() / 1e6:.2f} M parameters")

    out = args.out or Path(tempfile.mkdtemp(prefix="swinv2-quickstart-"))
    model.save_pretrained(out)
    print(f"saved to {out}: {sorted(p.name for p in out.iterdir())}")

    reloaded = Swinv2ForImageClassification.from_pretrained(out)
    pixel_values = to_pixel_values(generated_image(160), config.image_hw[0])
    with torch.no_grad():
        before = model(pixel_values).logits
        after = reloaded(pixel_values).logits
    if not torch.equal(before, after):
        raise SystemExit("reloaded model disagrees with the saved one")
    probabilities = after.softmax(-1)[0]
    top = probabilities.topk(3)
    print("prediction (random weights, so the label means nothing):")
    for score, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        print(f"  {reloaded.config.id2label[index]:>5}  {score:.3f}")
    print("round trip exact: saved and reloaded logits are identical")


if __name__ == "__main__":
    main()
