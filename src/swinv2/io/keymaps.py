"""Parameter names of every Swin V2 checkpoint layout, mapped to transformers' (the models' own names).

One table, `ENCODER_NAME_PAIRS`, pairs each transformers encoder template with the official
(Microsoft and timm) one; every template compiles into an anchored regular expression for either
direction, so no rule depends on the order of the others. The differences between layouts are then
explicit steps:

* **q/k/v.** The official layouts fuse the projections into one `qkv` weight (rows: q, k, v) with
  separate `q_bias` / `v_bias`; transformers keeps `query`, `key` (no bias) and `value`. The fused
  weight is split on the way in and concatenated on the way out.
* **Absolute positions.** transformers' table has one leading row more than there are patches (its
  issue #37161; the models keep that shape and use rows 1..L); the official table has none. A zero
  row is put in front on the way in and dropped on the way out.
* **Patch merging.** timm merges at the start of stage i+1 (`layers.{i+1}.downsample`) where
  Microsoft and transformers merge at the end of stage i.
* **Heads and prefixes.** Head models keep the encoder under `swinv2.`; timm's classifier is
  `head.fc`, Microsoft's `head`; Microsoft's SimMIM keeps the encoder under `encoder.`.
* **Derived buffers** some official files store (coordinate tables, index, masks, timm's zero
  `k_bias`) are dropped: the models rebuild them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from swinv2.io.checkpoints import CheckpointError

TRANSFORMERS, TIMM, MICROSOFT, MICROSOFT_SIMMIM = "transformers", "timm", "microsoft", "microsoft-simmim"
#: The original Swin2SR release (super-resolution; its table is `swinv2.io.swin2sr_keys`).
SWIN2SR_ORIGINAL = "swin2sr-original"
LAYOUTS = (TRANSFORMERS, TIMM, MICROSOFT, MICROSOFT_SIMMIM, SWIN2SR_ORIGINAL)

_PLACEHOLDERS = {"i": r"\d+", "j": r"\d+", "k": r"\d+", "p": r"weight|bias", "m": r"reduction|norm"}

_BLOCK_HF = "encoder.layers.{i}.blocks.{j}."
_BLOCK_OFFICIAL = "layers.{i}.blocks.{j}."

#: (transformers, official) names inside one Swin V2 block but the fused q/k/v weight; shared by every
#: layout built of these blocks (Swin2SR's release too, `swinv2.io.swin2sr_keys`).
BLOCK_NAME_PAIRS: tuple[tuple[str, str], ...] = (
    ("attention.self.logit_scale", "attn.logit_scale"),
    ("attention.self.continuous_position_bias_mlp.{k}.{p}", "attn.cpb_mlp.{k}.{p}"),
    ("attention.self.query.bias", "attn.q_bias"),
    ("attention.self.value.bias", "attn.v_bias"),
    ("attention.output.dense.{p}", "attn.proj.{p}"),
    ("layernorm_before.{p}", "norm1.{p}"),
    ("intermediate.dense.{p}", "mlp.fc1.{p}"),
    ("output.dense.{p}", "mlp.fc2.{p}"),
    ("layernorm_after.{p}", "norm2.{p}"),
)
#: (transformers, official) name of a block's q/k/v projection weights: three in transformers, one fused.
BLOCK_QKV_PAIR = ("attention.self.{part}.weight", "attn.qkv.weight")

#: (transformers template, official template) for every encoder tensor but the fused q/k/v weight.
ENCODER_NAME_PAIRS: tuple[tuple[str, str], ...] = (
    ("embeddings.patch_embeddings.projection.{p}", "patch_embed.proj.{p}"),
    ("embeddings.norm.{p}", "patch_embed.norm.{p}"),
    ("embeddings.mask_token", "mask_token"),
    ("embeddings.position_embeddings", "absolute_pos_embed"),
    *((_BLOCK_HF + hf, _BLOCK_OFFICIAL + official) for hf, official in BLOCK_NAME_PAIRS),
    ("encoder.layers.{i}.downsample.{m}.{p}", "layers.{i}.downsample.{m}.{p}"),
    ("layernorm.{p}", "norm.{p}"),
)

#: transformers' three projection weights, in the row order of the official fused `qkv.weight`.
QKV_PARTS = ("query", "key", "value")
_QKV_HF = _BLOCK_HF + BLOCK_QKV_PAIR[0]
_QKV_OFFICIAL = _BLOCK_OFFICIAL + BLOCK_QKV_PAIR[1]
_POS_EMBED_HF = "embeddings.position_embeddings"

HEAD_PREFIX = "swinv2."  # where transformers' head models keep the encoder
HEAD_MODULES = ("classifier.", "decoder.")  # transformers' head parameters, outside the encoder
_CLASSIFIER = "classifier."
_HEADS = {TIMM: "head.fc.", MICROSOFT: "head."}
_SIMMIM_ENCODER = "encoder."
_DERIVED = re.compile(r"\.(relative_position_index|relative_coords_table|attn_mask|k_bias)$")
_DOWNSAMPLE = re.compile(r"^layers\.(?P<i>\d+)\.downsample\.(?P<rest>.+)$")


def compile_template(template: str) -> re.Pattern[str]:
    """An anchored regular expression for `template`, each placeholder (`{i}`, `{p}`, `{part}`, ...) a named group."""
    pattern = re.escape(template)
    for name, regex in _PLACEHOLDERS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{regex})")
    return re.compile(pattern.replace(re.escape("{part}"), "(?P<part>query|key|value)") + "$")


_OFFICIAL_TO_HF: Rules = [(compile_template(official), hf) for hf, official in ENCODER_NAME_PAIRS]
_HF_TO_OFFICIAL: Rules = [(compile_template(hf), official) for hf, official in ENCODER_NAME_PAIRS]
_QKV_HF_RE = compile_template(_QKV_HF)
_QKV_OFFICIAL_RE = compile_template(_QKV_OFFICIAL)


Rules = list[tuple[re.Pattern[str], str]]


def rename(key: str, rules: Rules) -> str | None:
    """`key` renamed by the one rule whose pattern matches it (the rules are anchored), or None."""
    for pattern, template in rules:
        match = pattern.match(key)
        if match:
            return template.format(**match.groupdict())
    return None


def is_transformers_encoder_key(key: str) -> bool:
    """Whether `key` (no prefix) names a tensor of transformers' Swinv2 encoder."""
    return _QKV_HF_RE.match(key) is not None or any(pattern.match(key) for pattern, _ in _HF_TO_OFFICIAL)


@dataclass
class Converted:
    """Result of a conversion: the renamed tensors and the keys no rule matched."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)


def split_qkv(key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """A fused q/k/v weight (3C, C) named `key` as transformers' {"query", "key", "value"} weights (C, C) each.

    Raises:
        CheckpointError: the first dimension is not three equal parts.
    """
    if tensor.ndim == 0 or tensor.shape[0] % 3:
        raise CheckpointError(
            f"tensor {key!r} has shape {list(tensor.shape)}; a fused q/k/v projection stacks three "
            "equal parts along its first dimension"
        )
    return {part: chunk.contiguous() for part, chunk in zip(QKV_PARTS, tensor.chunk(3, dim=0), strict=True)}  # (C, C)


def fuse_qkv(parts: Mapping[str, Mapping[str, tuple[str, torch.Tensor]]], out: Converted) -> None:
    """Concatenate each fused name's {part: (transformers key, weight)} into `out` (rows q, k, v); a group that
    lacks a part goes to `out.unmatched` under its transformers names."""
    for fused, found in parts.items():
        if set(found) != set(QKV_PARTS):
            out.unmatched.extend(key for key, _ in found.values())  # a projection without its siblings
            continue
        out.tensors[fused] = torch.cat([found[p][1] for p in QKV_PARTS], dim=0)  # (3C, C)


def _merge_stage_shift(key: str, shift: int) -> str:
    """`layers.i.downsample...` -> `layers.{i+shift}.downsample...` (timm's merging sits one stage later)."""
    match = _DOWNSAMPLE.match(key)
    return f"layers.{int(match['i']) + shift}.downsample.{match['rest']}" if match else key


def official_encoder_to_transformers(state: Mapping[str, torch.Tensor], merge_shift: int = 0) -> Converted:
    """Rename official encoder tensors (no prefix) to transformers' names.

    Args:
        state: Microsoft / timm encoder tensors.
        merge_shift: Added to a patch merging's stage index (-1 for timm).
    """
    out = Converted()
    for key, tensor in state.items():
        if _DERIVED.search(key):
            continue
        key = _merge_stage_shift(key, merge_shift)
        fused = _QKV_OFFICIAL_RE.match(key)
        if fused:
            for part, chunk in split_qkv(key, tensor).items():
                out.tensors[_QKV_HF.format(part=part, **fused.groupdict())] = chunk
            continue
        name = rename(key, _OFFICIAL_TO_HF)
        if name is None:
            out.unmatched.append(key)
            continue
        if name == _POS_EMBED_HF:
            if tensor.ndim != 3 or tensor.shape[0] != 1:
                raise CheckpointError(
                    f"tensor {key!r} has shape {list(tensor.shape)}; an absolute position table is (1, L, C)"
                )
            tensor = torch.cat([torch.zeros_like(tensor[:, :1]), tensor], dim=1)  # (1, L+1, C)
        out.tensors[name] = tensor
    return out


def transformers_encoder_to_official(state: Mapping[str, torch.Tensor], merge_shift: int = 0) -> Converted:
    """Inverse of `official_encoder_to_transformers` (fuses q/k/v, drops the leading position row)."""
    out = Converted()
    parts: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    for key, tensor in state.items():
        projection = _QKV_HF_RE.match(key)
        if projection:
            groups = {k: v for k, v in projection.groupdict().items() if k != "part"}
            parts.setdefault(_QKV_OFFICIAL.format(**groups), {})[projection["part"]] = (key, tensor)
            continue
        name = rename(key, _HF_TO_OFFICIAL)
        if name is None:
            out.unmatched.append(key)
            continue
        if key == _POS_EMBED_HF:
            tensor = tensor[:, 1:]  # (1, L, C)
        out.tensors[_merge_stage_shift(name, -merge_shift)] = tensor
    fuse_qkv(parts, out)
    return out


Tensors = dict[str, torch.Tensor]


def _split_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> tuple[Tensors, Tensors]:
    """(tensors under `prefix`, with it removed; the others as they are)."""
    inside = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    return inside, {k: v for k, v in state.items() if not k.startswith(prefix)}


def to_transformers(state: Mapping[str, torch.Tensor], layout: str) -> Converted:
    """A checkpoint of `layout` under transformers' names.

    timm and Microsoft classifiers become `Swinv2ForImageClassification` names (`swinv2.` + encoder,
    `classifier`), Microsoft's SimMIM `Swinv2ForMaskedImageModeling` names, the original Swin2SR release
    `Swin2SRForImageSuperResolution` names (its head read from the tensors); transformers' pass as they are.

    Raises:
        CheckpointError: a tensor the conversion reshapes, or a Swin2SR head, has an unexpected shape.
    """
    if layout == TRANSFORMERS:
        return Converted(dict(state))
    if layout == SWIN2SR_ORIGINAL:
        # imported here: swin2sr_keys builds on this module's tables
        from swinv2.io.swin2sr_keys import infer_original_fields, original_to_transformers

        fields = infer_original_fields(state)
        return original_to_transformers(state, fields["upsampler"], fields["upscale"])
    if layout == MICROSOFT_SIMMIM:
        encoder, rest = _split_prefix(state, _SIMMIM_ENCODER)
        head: dict[str, torch.Tensor] = {k: v for k, v in rest.items() if not _DERIVED.search(k)}
        converted = official_encoder_to_transformers(encoder)
        converted.unmatched = [_SIMMIM_ENCODER + k for k in converted.unmatched]  # as named in the file
    elif layout in _HEADS:
        official_head, encoder = _split_prefix(state, _HEADS[layout])
        head = {_CLASSIFIER + k: v for k, v in official_head.items()}
        converted = official_encoder_to_transformers(encoder, merge_shift=-1 if layout == TIMM else 0)
    else:
        raise ValueError(f"unknown checkpoint layout {layout!r}; known: {', '.join(LAYOUTS)}")
    converted.tensors = {HEAD_PREFIX + k: v for k, v in converted.tensors.items()} | head
    return converted


def from_transformers(state: Mapping[str, torch.Tensor], layout: str) -> Converted:
    """An image classifier's transformers-named tensors under `layout`'s names (timm or Microsoft).

    (A Swin2SR model's names depend on its config: `swinv2.io.swin2sr_keys.transformers_to_original`.)
    """
    if layout not in _HEADS:
        raise ValueError(f"only classifiers convert to a {', '.join(_HEADS)} layout; got {layout!r}")
    encoder, rest = _split_prefix(state, HEAD_PREFIX)
    converted = transformers_encoder_to_official(encoder, merge_shift=-1 if layout == TIMM else 0)
    converted.unmatched = [HEAD_PREFIX + k for k in converted.unmatched]  # as named in the model
    for key, tensor in rest.items():
        if key.startswith(_CLASSIFIER):
            converted.tensors[_HEADS[layout] + key.removeprefix(_CLASSIFIER)] = tensor
        else:
            converted.unmatched.append(key)
    return converted
