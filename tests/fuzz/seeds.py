"""Valid seed inputs for the fuzzer, built in-process from tiny configs with the library's own writers.

Every mutation starts from one of these, so a case that fails is one edit away from a file the library
itself wrote and reads back. Built once per run into a seeds directory (a `.complete` file marks it done).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

#: The seed model: two stages, 32 px, 3 labels; small enough that every load takes milliseconds.
TINY = dict(image_size=32, patch_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=4, num_labels=3)

#: The super-resolution seed: one residual stage of two blocks, 16 px, window 4, 2x pixel shuffle.
SR_TINY = dict(image_size=16, embed_dim=8, depths=(2,), num_heads=(2,), window_size=4, upscale=2)

IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff", "WEBP": ".webp"}


def tiny_config(**changes: object):  # -> Swinv2Config (imported lazily: seeds import before the library)
    """The seed config, with `changes`."""
    from swinv2 import Swinv2Config

    return Swinv2Config(**{**TINY, "drop_path_rate": 0.0, **changes})


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return model.eval()


def build_seeds(root: Path) -> Path:
    """Write every seed under `root` (idempotent) and return `root`.

    Layout:
        model/            save_pretrained classifier + preprocessor_config.json (32x32)
        model_ape/        the same with absolute position embeddings (use_absolute_embeddings=True)
        model_sr/         save_pretrained Swin2SRForImageSuperResolution (16 px, 2x pixel shuffle)
        model_bin/        classifier saved as pytorch_model.bin (safe_serialization=False)
        sharded/          classifier split into shards with model.safetensors.index.json
        config.json       the tiny config alone (for --config / config=)
        timm.pth, timm.bin, timm.safetensors   save_timm
        microsoft.pth     {"model": to_microsoft(model)} as the official release wraps it
        simmim.pth        {"model": encoder under "encoder." + decoder}, a SimMIM pre-training file
        swin2sr_original.pth   {"params_ema": save_swin2sr_original's tensors}: the Swin2SR release layout
                          (3conv stages, 2x pixel shuffle, with its derived buffers) as BasicSR wraps it
        transformers.bin  the classifier's state dict via torch.save
        image.<ext>       a 40x30 RGB image in each container format
    """
    from swinv2 import (
        Swin2SRConfig,
        Swin2SRForImageSuperResolution,
        Swinv2ForImageClassification,
        Swinv2ForMaskedImageModeling,
        Swinv2ImageProcessor,
    )
    from swinv2.io.keymaps import transformers_encoder_to_official
    from swinv2.loading import save_swin2sr_original, save_timm, to_microsoft

    root = Path(root)
    newest = (root / "model_sr", root / "swin2sr_original.pth")  # older seed sets lack these: rebuilt
    if (root / ".complete").exists() and all(p.exists() for p in newest):
        return root
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    processor = Swinv2ImageProcessor(size={"height": 32, "width": 32})
    model = _perturbed(Swinv2ForImageClassification(tiny_config()))
    model.save_pretrained(root / "model", image_processor=processor)
    _perturbed(Swinv2ForImageClassification(tiny_config(use_absolute_embeddings=True))).save_pretrained(
        root / "model_ape", image_processor=processor
    )
    model.save_pretrained(root / "model_bin", safe_serialization=False, image_processor=processor)
    sr_config = Swin2SRConfig(**SR_TINY, drop_path_rate=0.0)
    _perturbed(Swin2SRForImageSuperResolution(sr_config)).save_pretrained(root / "model_sr")
    release = _perturbed(Swin2SRForImageSuperResolution(sr_config.replace(resi_connection="3conv")))
    save_swin2sr_original(release, root / "swin2sr_original.pth", wrapper="params_ema")
    model.save_pretrained(root / "sharded", max_shard_size=20_000, image_processor=processor)
    tiny_config().to_json_file(root / "config.json")
    for name in ("timm.pth", "timm.bin", "timm.safetensors"):
        save_timm(model, root / name)
    torch.save({"model": to_microsoft(model)}, root / "microsoft.pth")
    torch.save(model.state_dict(), root / "transformers.bin")

    mim = _perturbed(Swinv2ForMaskedImageModeling(tiny_config(encoder_stride=8)))
    state = mim.state_dict()
    encoder = {k.removeprefix("swinv2."): v for k, v in state.items() if k.startswith("swinv2.")}
    simmim = {"encoder." + k: v for k, v in transformers_encoder_to_official(encoder).tensors.items()}
    simmim |= {k: v for k, v in state.items() if not k.startswith("swinv2.")}
    torch.save({"model": simmim}, root / "simmim.pth")

    pixels = (np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)
    for fmt, suffix in IMAGE_FORMATS.items():
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt)
        (root / f"image{suffix}").write_bytes(buffer.getvalue())
    (root / ".complete").write_text(json.dumps(sorted(p.name for p in root.iterdir())))
    return root
