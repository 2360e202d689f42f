"""Named variants: the config and preprocessing of every public Swin V2 checkpoint.

Names are the Microsoft/Hugging Face ones without the `microsoft/` owner
(`swinv2-tiny-patch4-window8-256`); timm's names (`swinv2_tiny_window8_256`, with or without a
`.ms_in1k`-style tag) and the Hub ids resolve to the same variants. Top-1 figures are the ImageNet-1K
accuracies reported with the official release (None for the ImageNet-22K pre-training checkpoints).
No weights ship with the library: a variant builds a randomly initialised model, or names the shape
of a checkpoint file being converted.

Two more variants have no released weights at all: `swinv2-huge` and `swinv2-giant`, the V2 paper's
SwinV2-H (C = 352, depths 2-2-18-2) and SwinV2-G (C = 512, depths 2-2-42-4), with its "additional
layer normalization layer on the main branch every 6 layers" (`extra_norm_period=6`, counted per
stage: huge has 3 such norms, all in stage 3; giant 7 in stage 3 and none in stage 4, whose 4 blocks
end before a 6th). They have no Hub id, no timm model and no top-1 (`hub_id`, `timm_model` and
`imagenet_top1` are None; `timm_name` raises), and `list_variants()` leaves them out unless asked
(`list_variants(include_unreleased=True)`), so it keeps naming exactly the released checkpoints.

* Heads: the paper gives no head count for H or G. Every released Swin (V1 and V2: T, S, B, L) has 32
  channels per head, so H has (11, 22, 44, 88) and G (16, 32, 64, 128); timm's `swinv2_cr_giant_*`
  use the same for G, and its `swinv2_cr_huge_384` the same for H (its `swinv2_cr_huge_224` tries
  (8, 16, 32, 64); timm notes the count is "not certain for Huge"). Heads change only the logit
  scales and the position-bias MLPs' outputs: 513 parameters per head per block.
* Geometry: 192 px input with window 12, the pre-training geometry of the paper (SwinV2-G's ImageNet-22K-ext
  pre-training, like the zoo's `-192-22k` base and large variants); ImageNet-1K's 1000 classes, the
  head at which the paper (and the zoo's T/S/B counts) state parameter counts.
* Parameters (exact, from the built model): huge 658,036,370 with the 1000-class head, 655,219,370
  for the encoder alone (`Swinv2Model`, no head), of which 8,448 are the 3 extra norms; the paper says
  658 M. giant 3,001,940,680 with the head, 2,997,843,680 for the encoder, 28,672 of them the 7 extra
  norms; the paper says 3.0 B (timm's `swinv2_cr_giant` has ~2.6 B because it uses depths 2-2-42-2).
  With a 21,841-class (ImageNet-22K) head they would be 716,745,467 and 3,087,326,257.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from swinv2.config import Swinv2Config
from swinv2.io.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_1K_CLASSES = 1000
IMAGENET_22K_CLASSES = 21841


@dataclass(frozen=True)
class Preprocessing:
    """How the checkpoint expects its input: bicubic resize to `size` (no crop), /255, normalise."""

    size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resample: str = "bicubic"


@dataclass(frozen=True)
class Variant:
    """One public checkpoint: its name, config fields, preprocessing and reported accuracy."""

    name: str
    timm_model: str | None  # timm's name; None: timm has no such model (the paper-only huge and giant)
    config_fields: dict[str, Any] = field(hash=False)
    preprocessing: Preprocessing
    imagenet_top1: float | None
    released: bool = True  # weights on the Hub; False for the paper-only huge and giant

    @property
    def hub_id(self) -> str | None:
        """The Hugging Face Hub id of the released weights (None: no weights were released)."""
        return f"microsoft/{self.name}" if self.released else None

    @property
    def timm_name(self) -> str:
        """timm's name of this model (`timm.create_model(variant.timm_name)`).

        Raises:
            InputError: the variant has none (`timm_model` is None: the paper-only huge and giant).
        """
        if self.timm_model is None:
            raise InputError(
                f"variant {self.name!r} has no timm model: timm's swinv2_* are Microsoft's released checkpoints "
                "(its swinv2_cr_* are another implementation, with other parameter names)"
            )
        return self.timm_model

    @property
    def config(self) -> Swinv2Config:
        """This variant's `Swinv2Config`: a fresh copy on every access, so changing it leaves the variant alone.

        Example:
            >>> get_variant("swinv2_tiny_window8_256").config.window_size
            8
        """
        return Swinv2Config(**self.config_fields)

    def config_with(self, **overrides: Any) -> Swinv2Config:
        """A fresh `Swinv2Config` for this variant with `overrides` changing fields.

        Giving `id2label` (or `num_labels`) replaces the variant's class count.

        Example:
            >>> get_variant("swinv2_tiny_window8_256").config_with(num_labels=10).num_labels
            10
        """
        fields = dict(self.config_fields)
        if "num_labels" in overrides or "id2label" in overrides:
            fields.pop("num_labels", None)
        fields.update(overrides)
        return Swinv2Config(**fields)


_SHAPES = {
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    "large": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}
_FINE_TUNED_FROM_192 = (12, 12, 12, 6)  # the 192 px / window 12 pre-training windows (stage 4 clamps to 6)


def _variant(
    shape: str,
    window: int,
    size: int,
    top1: float | None,
    *,
    from_window: int | None = None,
    from_size: int | None = None,
) -> Variant:
    if from_window is None:
        name = f"swinv2-{shape}-patch4-window{window}-{size}"
        timm_name = f"swinv2_{shape}_window{window}_{size}"
    else:
        name = f"swinv2-{shape}-patch4-window{from_window}to{window}-{from_size}to{size}"
        timm_name = f"swinv2_{shape}_window{from_window}to{window}_{from_size}to{size}"
    pretraining_22k = top1 is None
    if pretraining_22k:
        name += "-22k"
    elif from_window is not None:
        name += "-22kto1k-ft"
    fields: dict[str, Any] = dict(
        _SHAPES[shape],
        image_size=size,
        patch_size=4,
        window_size=window,
        drop_path_rate=0.0,
        num_labels=IMAGENET_22K_CLASSES if pretraining_22k else IMAGENET_1K_CLASSES,
    )
    if from_window is not None:
        fields["pretrained_window_sizes"] = _FINE_TUNED_FROM_192
    return Variant(name, timm_name, fields, Preprocessing(size), top1)


#: The V2 paper's two largest models (no weights released; see the module docstring for the choices).
_PAPER_ONLY = {
    "huge": dict(embed_dim=352, depths=(2, 2, 18, 2), num_heads=(11, 22, 44, 88)),
    "giant": dict(embed_dim=512, depths=(2, 2, 42, 4), num_heads=(16, 32, 64, 128)),
}
EXTRA_NORM_PERIOD = 6  # "an additional layer normalization layer on the main branch every 6 layers"


def _paper_only(shape: str) -> Variant:
    fields: dict[str, Any] = dict(
        _PAPER_ONLY[shape],
        image_size=192,
        patch_size=4,
        window_size=12,
        drop_path_rate=0.0,
        extra_norm_period=EXTRA_NORM_PERIOD,
        num_labels=IMAGENET_1K_CLASSES,
    )
    return Variant(f"swinv2-{shape}", None, fields, Preprocessing(192), None, released=False)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        _variant("tiny", 8, 256, 81.8),
        _variant("tiny", 16, 256, 82.8),
        _variant("small", 8, 256, 83.7),
        _variant("small", 16, 256, 84.1),
        _variant("base", 8, 256, 84.2),
        _variant("base", 16, 256, 84.6),
        _variant("base", 12, 192, None),
        _variant("base", 16, 256, 86.2, from_window=12, from_size=192),
        _variant("base", 24, 384, 87.1, from_window=12, from_size=192),
        _variant("large", 12, 192, None),
        _variant("large", 16, 256, 86.9, from_window=12, from_size=192),
        _variant("large", 24, 384, 87.6, from_window=12, from_size=192),
        _paper_only("huge"),
        _paper_only("giant"),
    )
}

_ALIASES: dict[str, str] = {}
for _v in VARIANTS.values():
    for _alias in (_v.name, _v.hub_id, _v.timm_model):
        if _alias is not None:
            _ALIASES[_alias] = _v.name


def list_variants(include_unreleased: bool = False) -> list[str]:
    """Names of the released checkpoints, in release order (each has a Hub id and a timm name).

    Args:
        include_unreleased: Also name the paper-only `swinv2-huge` and `swinv2-giant` (no weights).
    """
    return [name for name, v in VARIANTS.items() if v.released or include_unreleased]


def get_variant(name: str) -> Variant:
    """The variant called `name` (ours, the Hub id or timm's, with an optional `.tag`).

    Raises:
        KeyError: unknown name; the message lists the closest known names.
    """
    key = name.strip()
    if key not in _ALIASES and "." in key.rsplit("/", 1)[-1]:
        key = key.rsplit(".", 1)[0]  # timm's pretrained tags: swinv2_tiny_window8_256.ms_in1k
    if key in _ALIASES:
        return VARIANTS[_ALIASES[key]]
    close = difflib.get_close_matches(key, list(_ALIASES), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise KeyError(f"unknown Swin V2 variant {name!r}{hint} (swinv2.list_variants() lists all {len(list_variants())})")
