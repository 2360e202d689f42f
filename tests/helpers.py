"""Shared builders for the tests: tiny configs, perturbed weights, transformers/timm twins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from swinv2 import Swinv2Config

# Published shapes with depths cut to keep parity tests fast (the full ones are 2, 2, 6, 2 / 2, 2, 18, 2).
TINY_SHAPED = dict(embed_dim=96, depths=(1, 1, 2, 1), num_heads=(3, 6, 12, 24))
BASE_SHAPED = dict(embed_dim=128, depths=(1, 1, 1, 1), num_heads=(4, 8, 16, 32))

# A two-stage model that still exercises shifting, merging and the stage-window clamp.
TINY = dict(image_size=64, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4)


def tiny_config(**changes: Any) -> Swinv2Config:
    """A small valid config (64 px, window 4, two stages); `changes` override fields."""
    fields = {**TINY, "drop_path_rate": 0.0, **changes}
    return Swinv2Config(**fields)


def perturb_(module: nn.Module, seed: int = 0, scale: float = 0.05) -> nn.Module:
    """Add noise to every parameter so that a mis-mapped or unused tensor changes the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)
    return module


def hf_config(config: Swinv2Config) -> Any:
    """transformers' Swinv2Config with the same fields."""
    import transformers

    data = config.to_dict()
    for key in ("hidden_size", "num_layers", "stage_names", "model_type", "extra"):
        data.pop(key, None)
    return transformers.Swinv2Config(**data)


def image_batch(batch: int, height: int, width: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Deterministic normalised-looking pixels."""
    return torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))


def timm_model(config: Swinv2Config, seed: int = 0) -> Any:
    """timm's SwinTransformerV2 of `config`'s shape (any input size), perturbed, in eval mode."""
    from timm.models.swin_transformer_v2 import SwinTransformerV2

    torch.manual_seed(seed)
    model = SwinTransformerV2(
        img_size=config.image_size,
        patch_size=config.patch_size,
        embed_dim=config.embed_dim,
        depths=config.depths,
        num_heads=config.num_heads,
        window_size=config.window_size,
        pretrained_window_sizes=config.pretrained_window_sizes[: config.num_layers],
        num_classes=config.num_labels,
        drop_path_rate=0.0,
        strict_img_size=False,  # any input size, masks built per input
    )
    return perturb_(model, seed=seed).eval()


def natural_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random fields in [0, 1] (8x8 noise upsampled bicubically), ImageNet-normalised."""
    low = torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    images = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (images - mean) / std  # (B, 3, size, size)


def hf_twins(cls_name: str, config: Swinv2Config, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """A perturbed transformers model of class `cls_name` and ours loaded from its state dict, both in eval mode."""
    import transformers

    import swinv2

    torch.manual_seed(seed)
    theirs = getattr(transformers, cls_name)(hf_config(config)).eval()
    perturb_(theirs, seed=seed)
    ours = getattr(swinv2, cls_name)(config).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)  # our names are transformers'
    return theirs, ours


def count_forwards(monkeypatch: Any, **nodes: type[torch.autograd.Function]) -> dict[str, int]:
    """Patch each autograd Function's forward to count its calls; returns the live counts by name."""
    calls = dict.fromkeys(nodes, 0)
    for name, node in nodes.items():

        def counted(*args: Any, name: str = name, original: Any = node.forward) -> Any:
            calls[name] += 1
            return original(*args)

        monkeypatch.setattr(node, "forward", staticmethod(counted))
    return calls


def intel_avx512() -> bool:
    """Whether this is an Intel CPU with AVX-512: where the CPU fast path's sums were measured to be the
    eager path's bit for bit. (On AMD EPYC MKL takes other kernels, and products of few rows or of 384
    inputs round differently, by ~1e-6.)"""
    try:
        info = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512f" in info and "GenuineIntel" in info


def hf_swin2sr_config(config: Any) -> Any:
    """transformers' Swin2SRConfig with the fields of our `Swin2SRConfig`."""
    import transformers

    data = config.to_dict()
    for key in ("num_layers", "model_type"):
        data.pop(key, None)
    return transformers.Swin2SRConfig(**data)


def hf_swin2sr_twins(cls_name: str, config: Any, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """A perturbed transformers Swin2SR model of class `cls_name` and ours loaded from its state dict (eval mode)."""
    import transformers

    import swinv2

    torch.manual_seed(seed)
    theirs = perturb_(getattr(transformers, cls_name)(hf_swin2sr_config(config)), seed=seed).eval()
    ours = getattr(swinv2, cls_name)(config).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)  # our names are transformers'
    return theirs, ours
