"""The original Swin2SR release's parameter names (github.com/mv-lab/swin2sr), mapped to transformers' Swin2SR
names, and the config fields a release file's tensors imply.

Source of the names: the release's module tree (`models/network_swin2sr.py`: `Swin2SR`, `RSTB`, `BasicLayer`,
`WindowAttention`, `Upsample`, `UpsampleOneStep`), cross-checked with the renames of transformers'
`convert_swin2sr_original_to_pytorch.py`. The tables are ours, written from those names:

    original                                   transformers
    conv_first                                 swin2sr.first_convolution
    patch_embed.proj / patch_embed.norm        swin2sr.embeddings.patch_embeddings.projection / .layernorm
    layers.i.residual_group.blocks.j.<block>   swin2sr.encoder.stages.i.layers.j.<block>  (`keymaps.BLOCK_NAME_PAIRS`)
    layers.i.conv[.k]                          swin2sr.encoder.stages.i.conv[.k]           ("1conv" / "3conv")
    layers.i.patch_embed.proj                  swin2sr.encoder.stages.i.patch_embed.projection
    norm, conv_after_body                      swin2sr.layernorm, swin2sr.conv_after_body
    conv_before_upsample.0                     upsample.conv_before_upsample
    upsample.{2n} (pixel shuffle)              upsample.upsample.convolution_{n}  (x3: upsample.upsample.convolution)
    upsample.0 (pixelshuffledirect)            upsample.conv
    conv_bicubic, conv_aux, conv_after_aux.0   upsample.conv_bicubic, upsample.conv_aux, upsample.conv_after_aux.0
    conv_up1, conv_up2, conv_hr                upsample.conv_up1, upsample.conv_up2, upsample.conv_hr
    conv_last                                  upsample.final_convolution  (upsampler "": final_convolution)

The fused `attn.qkv.weight` is split into query/key/value (and fused back) by `keymaps.split_qkv` /
`keymaps.fuse_qkv`, as for the Microsoft layout. The derived buffers the release stores
(`attn.relative_position_index`, `attn.relative_coords_table`, `attn_mask`) are dropped on the way in and
read only for the window size and training image size they imply.

Not representable: the release's "3conv" model also closes the body with a 3-convolution bottleneck
(`conv_after_body.0/2/4`), where transformers' Swin2SR (and this library) always has one convolution
(`resi_connection` only shapes the stages' convolutions); such a file is refused by name. The release's
"pixelshuffle_hf" upsampler (`layers_hf`, `conv_first_hf`) has no transformers equivalent either.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from swinv2.io.checkpoints import CheckpointError
from swinv2.io.keymaps import (
    BLOCK_NAME_PAIRS,
    BLOCK_QKV_PAIR,
    Converted,
    Rules,
    compile_template,
    fuse_qkv,
    rename,
    split_qkv,
)

_STAGE_HF = "swin2sr.encoder.stages.{i}."
_STAGE_ORIGINAL = "layers.{i}."
_BLOCK_HF = _STAGE_HF + "layers.{j}."
_BLOCK_ORIGINAL = _STAGE_ORIGINAL + "residual_group.blocks.{j}."

#: (transformers template, original template) for the body: every tensor before the upsampler but the q/k/v weight.
BODY_NAME_PAIRS: tuple[tuple[str, str], ...] = (
    ("swin2sr.first_convolution.{p}", "conv_first.{p}"),
    ("swin2sr.embeddings.patch_embeddings.projection.{p}", "patch_embed.proj.{p}"),
    ("swin2sr.embeddings.patch_embeddings.layernorm.{p}", "patch_embed.norm.{p}"),
    *((_BLOCK_HF + hf, _BLOCK_ORIGINAL + original) for hf, original in BLOCK_NAME_PAIRS),
    (_STAGE_HF + "conv.{p}", _STAGE_ORIGINAL + "conv.{p}"),  # "1conv"
    (_STAGE_HF + "conv.{k}.{p}", _STAGE_ORIGINAL + "conv.{k}.{p}"),  # "3conv": 0, 2, 4
    (_STAGE_HF + "patch_embed.projection.{p}", _STAGE_ORIGINAL + "patch_embed.proj.{p}"),
    ("swin2sr.layernorm.{p}", "norm.{p}"),
    ("swin2sr.conv_after_body.{p}", "conv_after_body.{p}"),
)
_QKV_HF = _BLOCK_HF + BLOCK_QKV_PAIR[0]
_QKV_ORIGINAL = _BLOCK_ORIGINAL + BLOCK_QKV_PAIR[1]
_QKV_HF_RE = compile_template(_QKV_HF)
_QKV_ORIGINAL_RE = compile_template(_QKV_ORIGINAL)

#: Head tensors whose names do not depend on the upsampler's scale.
_CONV_BEFORE = ("upsample.conv_before_upsample.{p}", "conv_before_upsample.0.{p}")
_CONV_LAST = ("upsample.final_convolution.{p}", "conv_last.{p}")
_AUX_PAIRS = (
    ("upsample.conv_bicubic.{p}", "conv_bicubic.{p}"),
    ("upsample.conv_aux.{p}", "conv_aux.{p}"),
    ("upsample.conv_after_aux.0.{p}", "conv_after_aux.0.{p}"),
)
_NEAREST_PAIRS = (
    ("upsample.conv_up1.{p}", "conv_up1.{p}"),
    ("upsample.conv_up2.{p}", "conv_up2.{p}"),
    ("upsample.conv_hr.{p}", "conv_hr.{p}"),
)

_DERIVED = re.compile(r"\.(relative_position_index|relative_coords_table|attn_mask)$")
_BLOCK_KEY = re.compile(r"^layers\.(\d+)\.residual_group\.blocks\.(\d+)\.")
_UPSAMPLE_CONV = re.compile(r"^upsample\.(\d+)\.weight$")
#: Keys only the release's "pixelshuffle_hf" model has.
_HF_BRANCH = re.compile(r"^(layers_hf\.|conv_first_hf\.|conv_after_body_hf\.|upsample_hf\.|conv_last_hf\.)")


def _shuffle_pairs(upscale: int) -> tuple[tuple[str, str], ...]:
    """The pixel-shuffle stages: a conv at every even index of the release's `nn.Sequential` (conv, shuffle, ...)."""
    if upscale == 3:
        return (("upsample.upsample.convolution.{p}", "upsample.0.{p}"),)
    steps = max(upscale, 1).bit_length() - 1  # log2 of a power of two
    return tuple((f"upsample.upsample.convolution_{n}.{{p}}", f"upsample.{2 * n}.{{p}}") for n in range(steps))


def head_name_pairs(upsampler: str, upscale: int) -> tuple[tuple[str, str], ...]:
    """(transformers template, original template) for the reconstruction head of `upsampler` at `upscale`."""
    if upsampler == "pixelshuffle":
        return (_CONV_BEFORE, *_shuffle_pairs(upscale), _CONV_LAST)
    if upsampler == "pixelshuffle_aux":
        return (_CONV_BEFORE, *_AUX_PAIRS, *_shuffle_pairs(upscale), _CONV_LAST)
    if upsampler == "pixelshuffledirect":
        return (("upsample.conv.{p}", "upsample.0.{p}"),)
    if upsampler == "nearest+conv":
        return (_CONV_BEFORE, *_NEAREST_PAIRS, _CONV_LAST)
    if upsampler == "":
        return (("final_convolution.{p}", "conv_last.{p}"),)
    raise ValueError(f"unknown upsampler {upsampler!r}")


def _rules(upsampler: str, upscale: int, to_hf: bool) -> Rules:
    pairs = (*BODY_NAME_PAIRS, *head_name_pairs(upsampler, upscale))
    return [(compile_template(original if to_hf else hf), hf if to_hf else original) for hf, original in pairs]


def original_to_transformers(state: Mapping[str, torch.Tensor], upsampler: str, upscale: int) -> Converted:
    """Rename an original Swin2SR state dict to `Swin2SRForImageSuperResolution`'s names.

    Args:
        state: The release's tensors (no wrapper, no prefix).
        upsampler, upscale: The head the file holds (`infer_original_fields` reads them from the tensors);
            they decide what `upsample.N` and `conv_last` are.

    Returns:
        The renamed tensors, and the keys no rule matched (as named in the file). Derived buffers are dropped.

    Raises:
        CheckpointError: a fused q/k/v weight that is not three equal parts.
    """
    rules = _rules(upsampler, upscale, to_hf=True)
    out = Converted()
    for key, tensor in state.items():
        if _DERIVED.search(key):
            continue
        fused = _QKV_ORIGINAL_RE.match(key)
        if fused:
            for part, chunk in split_qkv(key, tensor).items():
                out.tensors[_QKV_HF.format(part=part, **fused.groupdict())] = chunk
            continue
        name = rename(key, rules)
        if name is None:
            out.unmatched.append(key)
        else:
            out.tensors[name] = tensor
    return out


def transformers_to_original(state: Mapping[str, torch.Tensor], upsampler: str, upscale: int) -> Converted:
    """Inverse of `original_to_transformers`: a `Swin2SRForImageSuperResolution` state dict under the release's
    names (q/k/v fused; no derived buffers). Keys no rule matched are returned as named in the model."""
    rules = _rules(upsampler, upscale, to_hf=False)
    out = Converted()
    parts: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    for key, tensor in state.items():
        projection = _QKV_HF_RE.match(key)
        if projection:
            groups = {k: v for k, v in projection.groupdict().items() if k != "part"}
            parts.setdefault(_QKV_ORIGINAL.format(**groups), {})[projection["part"]] = (key, tensor)
            continue
        name = rename(key, rules)
        if name is None:
            out.unmatched.append(key)
        else:
            out.tensors[name] = tensor
    fuse_qkv(parts, out)
    return out


# ---------------------------------------------------------------------------------- config from tensors
class _Reader:
    """Looks tensors up by name, raising one `CheckpointError` naming the file and key for anything missing or
    of an unexpected shape."""

    def __init__(self, state: Mapping[str, torch.Tensor], source: str) -> None:
        self.state = state
        self.source = source

    def error(self, message: str) -> CheckpointError:
        return CheckpointError(f"cannot read '{self.source}' as an original Swin2SR checkpoint: {message}")

    def get(self, key: str, why: str) -> torch.Tensor:
        tensor = self.state.get(key)
        if tensor is None:
            raise self.error(f"it has no tensor {key!r} ({why})")
        return tensor

    def shaped(self, key: str, ndim: int, why: str) -> tuple[int, ...]:
        """The shape of `key`, which must have `ndim` dimensions, all positive."""
        shape = tuple(self.get(key, why).shape)
        if len(shape) != ndim or min(shape, default=1) < 1:
            raise self.error(f"tensor {key!r} has shape {list(shape)}; expected {ndim} non-empty dimensions ({why})")
        return shape

    def wrong(self, key: str, expected: str) -> CheckpointError:
        return self.error(f"tensor {key!r} has shape {list(self.state[key].shape)}; expected {expected}")


def _indices(keys: Iterable[str], pattern: re.Pattern[str]) -> list[int]:
    return sorted({int(m[1]) for k in keys if (m := pattern.match(k))})


def _depths(reader: _Reader) -> tuple[int, ...]:
    """Blocks per residual stage, from `layers.i.residual_group.blocks.j.*` (stages and blocks numbered 0, 1, ...)."""
    blocks: dict[int, set[int]] = {}
    for key in reader.state:
        match = _BLOCK_KEY.match(key)
        if match:
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    if not blocks:
        raise reader.error("it has no residual stages (no 'layers.i.residual_group.blocks.j.*' tensors)")
    depths = []
    for i in range(max(blocks) + 1):
        found = blocks.get(i, set())
        missing = sorted(set(range(max(found, default=-1) + 1)) - found) if found else [0]
        if missing:
            raise reader.error(
                f"it has no tensors of block {f'layers.{i}.residual_group.blocks.{missing[0]}'!r} "
                f"(stages found: {sorted(blocks)}; blocks are numbered from 0 without gaps)"
            )
        depths.append(len(found))
    return tuple(depths)


def _num_heads(reader: _Reader, depths: tuple[int, ...], embed_dim: int) -> tuple[int, ...]:
    """Heads per stage, from every block's `attn.logit_scale` (nH, 1, 1)."""
    heads = []
    for i, depth in enumerate(depths):
        stage: int | None = None
        for j in range(depth):
            key = f"layers.{i}.residual_group.blocks.{j}.attn.logit_scale"
            shape = tuple(reader.get(key, "each block's attention temperature, one per head").shape)
            if len(shape) != 3 or shape[1:] != (1, 1) or shape[0] < 1 or embed_dim % shape[0]:
                raise reader.wrong(key, f"(num_heads, 1, 1) with num_heads dividing embed_dim ({embed_dim})")
            if stage is not None and shape[0] != stage:
                raise reader.wrong(key, f"({stage}, 1, 1) like the stage's first block")
            stage = shape[0]
        heads.append(stage or 1)
    return tuple(heads)


def _window(reader: _Reader, depths: tuple[int, ...]) -> tuple[int | None, int | None]:
    """(window_size, image_size) the stored buffers imply; None for what they do not tell.

    `relative_position_index` is (N, N) and `attn_mask` (nW, N, N), N = ws*ws, nW windows of the training image.
    A file with the tables but no mask on a shifted (odd) block was built for an image no larger than the
    window, where the release neither shifts nor partitions: image_size = window_size reproduces that.
    """
    window, first = None, ""
    for key, tensor in reader.state.items():
        if key.endswith(".attn.relative_position_index") or key.endswith(".attn_mask"):
            N = tensor.shape[-1] if tensor.ndim >= 2 else 0
            side = math.isqrt(N)
            if side < 1 or side * side != N or tensor.shape[-2] != N:
                raise reader.wrong(key, "(..., N, N) with N = window_size**2")
        elif key.endswith(".attn.relative_coords_table"):
            if tensor.ndim != 4 or tensor.shape[1] % 2 == 0 or tensor.shape[1] != tensor.shape[2]:
                raise reader.wrong(key, "(1, 2*window_size-1, 2*window_size-1, 2)")
            side = (tensor.shape[1] + 1) // 2
        else:
            continue
        if window is not None and side != window:
            raise reader.error(
                f"its derived buffers disagree on the window size: {key!r} is for {side}, {first!r} for {window}"
            )
        window, first = side, key
    if window is None:
        return None, None
    masks = [reader.state[k] for k in reader.state if k.endswith(".attn_mask")]
    if masks:
        windows = masks[0].shape[0] if masks[0].ndim == 3 else 0
        side = math.isqrt(windows)
        return window, (side * window if side * side == windows and side > 0 else None)  # square images only
    has_tables = any(k.endswith(".attn.relative_position_index") for k in reader.state)
    if has_tables and any(depth > 1 for depth in depths):
        return window, window  # buffers kept, yet no shifted block: the release clamped the window to the image
    return window, None


def _head(reader: _Reader, num_channels: int) -> tuple[str, int, int]:
    """(upsampler, upscale, num_channels_out) from which head tensors exist and their shapes."""
    state = reader.state
    hf_branch = next((k for k in state if _HF_BRANCH.match(k)), None)
    if hf_branch is not None:
        raise reader.error(
            f"tensor {hf_branch!r} belongs to the release's 'pixelshuffle_hf' upsampler, which transformers' "
            "Swin2SR (and this library) does not have"
        )
    if "conv_bicubic.weight" in state or "conv_aux.weight" in state:
        upsampler = "pixelshuffle_aux"
    elif "conv_up1.weight" in state:
        upsampler = "nearest+conv"
    elif "conv_before_upsample.0.weight" in state:
        upsampler = "pixelshuffle"
    elif "upsample.0.weight" in state:
        upsampler = "pixelshuffledirect"
    elif "conv_last.weight" in state:
        upsampler = ""
    else:
        raise reader.error(
            "it has no reconstruction head: none of 'conv_last.weight' (every upsampler but pixelshuffledirect) "
            "or 'upsample.0.weight' (pixelshuffledirect)"
        )

    if upsampler == "pixelshuffledirect":
        key = "upsample.0.weight"
        out, _, _, _ = reader.shaped(key, 4, "the one-step upsampling convolution")
        scale = math.isqrt(out // num_channels) if out % num_channels == 0 else 0
        if scale < 2 or scale * scale * num_channels != out:
            raise reader.wrong(
                key, f"(num_channels * upscale**2, embed_dim, 3, 3) with num_channels {num_channels} and upscale >= 2"
            )
        return upsampler, scale, num_channels

    out_channels, _, _, _ = reader.shaped("conv_last.weight", 4, "the output convolution")
    if upsampler == "nearest+conv":
        return upsampler, 4, out_channels
    if upsampler == "":
        return upsampler, 1, out_channels

    features, _, _, _ = reader.shaped("conv_before_upsample.0.weight", 4, "the convolution before upsampling")
    steps = _indices(state, _UPSAMPLE_CONV)
    if not steps:
        raise reader.error(f"it has no tensor 'upsample.0.weight' (the {upsampler} upsampler's first stage)")
    if steps != list(range(0, 2 * len(steps), 2)):
        odd = next(i for i, s in zip(range(0, 2 * len(steps), 2), steps, strict=True) if i != s)
        raise reader.error(
            f"its pixel-shuffle stages are {[f'upsample.{s}.weight' for s in steps]}; expected upsample.0, "
            f"upsample.2, ... (a convolution then a shuffle each), without 'upsample.{odd}.weight'"
        )
    shapes = [reader.shaped(f"upsample.{s}.weight", 4, "a pixel-shuffle stage") for s in steps]
    if len(steps) == 1 and shapes[0][:2] == (9 * features, features):
        return upsampler, 3, out_channels
    for s, shape in zip(steps, shapes, strict=True):
        if shape[:2] != (4 * features, features):
            raise reader.wrong(
                f"upsample.{s}.weight",
                f"({4 * features}, {features}, 3, 3) for a 2x stage or, as the only stage, "
                f"({9 * features}, {features}, 3, 3) for 3x (4 or 9 times the {features} features)",
            )
    return upsampler, 2 ** len(steps), out_channels


def infer_original_fields(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> dict[str, Any]:
    """The `Swin2SRConfig` fields an original Swin2SR state dict's tensors imply.

    Read from the tensors: `embed_dim` and `num_channels` (`conv_first`), `depths` (blocks per stage),
    `num_heads` (each block's `logit_scale`), `mlp_ratio` (`mlp.fc1`), `qkv_bias` (`q_bias`), `resi_connection`
    (`layers.0.conv` or `layers.0.conv.0`), `upsampler`, `upscale` and `num_channels_out` (which head tensors
    exist, and the pixel-shuffle convolutions' widths: 4F per 2x stage, 9F for 3x, C_out * s**2 for
    pixelshuffledirect). `window_size` (and `image_size`) only where the file kept its derived buffers;
    `img_range` never (the release uses 1.0 but 255.0 for JPEG artefact removal): the caller supplies what
    is absent.

    Raises:
        CheckpointError: a tensor these fields come from is missing or has an unexpected shape (the message
            names `source` and the key), or the file holds a part transformers' Swin2SR cannot represent.
    """
    reader = _Reader(state, source)
    embed_dim, num_channels, _, _ = reader.shaped("conv_first.weight", 4, "the shallow convolution")
    if "conv_after_body.0.weight" in state:
        raise reader.error(
            "its 'conv_after_body' is the release's 3-convolution bottleneck ('conv_after_body.0.weight'); "
            "transformers' Swin2SR, and this library, close the body with one convolution 'conv_after_body.weight'"
        )
    reader.shaped("conv_after_body.weight", 4, "the convolution after the body")
    depths = _depths(reader)
    num_heads = _num_heads(reader, depths, embed_dim)
    fc1 = "layers.0.residual_group.blocks.0.mlp.fc1.weight"
    hidden, width = reader.shaped(fc1, 2, "the first block's MLP expansion")
    mlp_ratio = hidden / embed_dim
    if width != embed_dim or int(embed_dim * mlp_ratio) != hidden:
        raise reader.wrong(fc1, f"(hidden, {embed_dim}) with hidden = int({embed_dim} * mlp_ratio)")
    if "layers.0.conv.weight" in state:
        resi_connection = "1conv"
    elif "layers.0.conv.0.weight" in state:
        resi_connection = "3conv"
    else:
        raise reader.error(
            "it has neither 'layers.0.conv.weight' (resi_connection '1conv') nor 'layers.0.conv.0.weight' ('3conv')"
        )
    upsampler, upscale, num_channels_out = _head(reader, num_channels)
    fields: dict[str, Any] = dict(
        embed_dim=embed_dim,
        num_channels=num_channels,
        num_channels_out=num_channels_out,
        depths=depths,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        qkv_bias="layers.0.residual_group.blocks.0.attn.q_bias" in state,
        resi_connection=resi_connection,
        upsampler=upsampler,
        upscale=upscale,
        use_absolute_embeddings=False,
    )
    window_size, image_size = _window(reader, depths)
    if window_size is not None:
        fields["window_size"] = window_size
    if image_size is not None:
        fields["image_size"] = image_size
    return fields
