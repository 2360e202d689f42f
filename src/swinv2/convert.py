"""Parameter-name maps between this library and transformers' Swinv2 checkpoints.

The maps are one declarative table of (transformers name, our name) templates; each template is
compiled into an anchored regular expression for either direction, so no rule depends on the order
of the others. Two rules need tensor surgery as well as renaming, both explicit below:

* transformers stores separate `query`, `key`, `value` weights; we fuse them into one `qkv` weight
  (rows: q, then k, then v) and split it back on save.
* transformers' absolute position table has N+1 rows of which the first is never used correctly
  (its issue #37161); we keep the official (1, N, C) table, drop that row on load and write a zero
  row in front on save so transformers can load the file.

Encoder names here are relative to the encoder (no `swinv2.` prefix); the caller adds prefixes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

_PLACEHOLDERS = {"i": r"\d+", "j": r"\d+", "k": r"\d+", "p": r"weight|bias", "m": r"reduction|norm"}

_BLOCK_HF = "encoder.layers.{i}.blocks.{j}."
_BLOCK_OURS = "layers.{i}.blocks.{j}."

#: (transformers template, our template) for every encoder parameter.
ENCODER_NAME_PAIRS: tuple[tuple[str, str], ...] = (
    ("embeddings.patch_embeddings.projection.{p}", "patch_embed.proj.{p}"),
    ("embeddings.norm.{p}", "patch_embed.norm.{p}"),
    ("embeddings.mask_token", "mask_token"),
    ("embeddings.position_embeddings", "absolute_pos_embed"),
    (_BLOCK_HF + "attention.self.logit_scale", _BLOCK_OURS + "attn.logit_scale"),
    (_BLOCK_HF + "attention.self.continuous_position_bias_mlp.{k}.{p}", _BLOCK_OURS + "attn.cpb_mlp.{k}.{p}"),
    (_BLOCK_HF + "attention.self.query.bias", _BLOCK_OURS + "attn.q_bias"),
    (_BLOCK_HF + "attention.self.value.bias", _BLOCK_OURS + "attn.v_bias"),
    (_BLOCK_HF + "attention.output.dense.{p}", _BLOCK_OURS + "attn.proj.{p}"),
    (_BLOCK_HF + "layernorm_before.{p}", _BLOCK_OURS + "norm1.{p}"),
    (_BLOCK_HF + "intermediate.dense.{p}", _BLOCK_OURS + "mlp.fc1.{p}"),
    (_BLOCK_HF + "output.dense.{p}", _BLOCK_OURS + "mlp.fc2.{p}"),
    (_BLOCK_HF + "layernorm_after.{p}", _BLOCK_OURS + "norm2.{p}"),
    ("encoder.layers.{i}.downsample.{m}.{p}", "layers.{i}.downsample.{m}.{p}"),
    ("layernorm.{p}", "norm.{p}"),
)

#: The fused projection: transformers' three weights, in the row order of our `qkv.weight`.
QKV_PARTS = ("query", "key", "value")
_QKV_HF = _BLOCK_HF + "attention.self.{part}.weight"
_QKV_OURS = _BLOCK_OURS + "attn.qkv.weight"

_POS_EMBED_OURS = "absolute_pos_embed"
_POS_EMBED_HF = "embeddings.position_embeddings"


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.escape(template)
    for name, regex in _PLACEHOLDERS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{regex})")
    return re.compile(pattern.replace(re.escape("{part}"), "(?P<part>query|key|value)") + "$")


_HF_TO_OURS = [(_compile(hf), ours) for hf, ours in ENCODER_NAME_PAIRS]
_OURS_TO_HF = [(_compile(ours), hf) for hf, ours in ENCODER_NAME_PAIRS]
_QKV_HF_RE = _compile(_QKV_HF)
_QKV_OURS_RE = _compile(_QKV_OURS)


def _rename(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, template in rules:
        match = pattern.match(key)
        if match:
            return template.format(**match.groupdict())
    return None


def hf_encoder_name(ours: str) -> str | None:
    """transformers' name of one of our encoder parameters (None if it is not one; qkv is split)."""
    return _rename(ours, _OURS_TO_HF)


@dataclass
class Converted:
    """Result of a conversion: the renamed tensors and the keys no rule matched."""

    tensors: dict[str, torch.Tensor]
    unmatched: list[str]


def encoder_from_hf(state: Mapping[str, torch.Tensor], num_patches: int) -> Converted:
    """Rename transformers encoder tensors (no prefix) to ours, fusing q/k/v and trimming the position table.

    Args:
        state: transformers encoder tensors, names relative to the encoder.
        num_patches: N of the model's absolute position table (its patch grid at `image_size`).
    """
    out: dict[str, torch.Tensor] = {}
    qkv_parts: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    unmatched: list[str] = []
    for key, tensor in state.items():
        qkv = _QKV_HF_RE.match(key)
        if qkv:
            target = _QKV_OURS.format(**qkv.groupdict())
            qkv_parts.setdefault(target, {})[qkv["part"]] = (key, tensor)
            continue
        name = _rename(key, _HF_TO_OURS)
        if name is None:
            unmatched.append(key)
            continue
        if name == _POS_EMBED_OURS and tensor.shape[1] == num_patches + 1:
            tensor = tensor[:, 1:]  # transformers' unused leading row
        out[name] = tensor
    for target, parts in qkv_parts.items():
        if set(parts) != set(QKV_PARTS):
            unmatched.extend(key for key, _ in parts.values())  # a q/k/v weight without its siblings
            continue
        out[target] = torch.cat([parts[p][1] for p in QKV_PARTS], dim=0)  # (3C, C)
    return Converted(out, unmatched)


def encoder_to_hf(state: Mapping[str, torch.Tensor]) -> Converted:
    """Rename our encoder tensors (no prefix) to transformers', splitting qkv and padding the position table."""
    out: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, tensor in state.items():
        qkv = _QKV_OURS_RE.match(key)
        if qkv:
            for part, chunk in zip(QKV_PARTS, tensor.chunk(3, dim=0), strict=True):
                out[_QKV_HF.format(part=part, **qkv.groupdict())] = chunk.contiguous()
            continue
        name = _rename(key, _OURS_TO_HF)
        if name is None:
            unmatched.append(key)
            continue
        if name == _POS_EMBED_HF:
            tensor = torch.cat([torch.zeros_like(tensor[:, :1]), tensor], dim=1)  # (1, N+1, C)
        out[name] = tensor
    return Converted(out, unmatched)


# ------------------------------------------------------------------------------------------ timm
# timm uses the official encoder names but merges patches at the start of stage i+1
# (`layers.{i+1}.downsample`) where we, transformers and Microsoft merge at the end of stage i,
# and calls the classifier `head.fc`.
_DOWNSAMPLE = re.compile(r"layers\.(?P<i>\d+)\.downsample\.(?P<rest>.+)$")  # same pattern in both layouts
_TIMM_HEAD = "head.fc."
_OURS_HEAD = "classifier."
_TIMM_DERIVED = re.compile(r".*\.(relative_position_index|relative_coords_table|attn_mask|k_bias)$")


def from_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm `SwinTransformerV2` state dict to our `Swinv2ForImageClassification` names.

    Derived buffers some timm versions store (coordinate tables, masks, the zero k bias) are dropped.
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if _TIMM_DERIVED.match(key):
            continue
        if key.startswith(_TIMM_HEAD):
            out[_OURS_HEAD + key.removeprefix(_TIMM_HEAD)] = tensor
            continue
        merge = _DOWNSAMPLE.match(key)
        if merge:
            key = f"layers.{int(merge['i']) - 1}.downsample.{merge['rest']}"
        out["swinv2." + key] = tensor
    return out


def to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `from_timm`: our classification-model names to timm's."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith(_OURS_HEAD):
            out[_TIMM_HEAD + key.removeprefix(_OURS_HEAD)] = tensor
            continue
        key = key.removeprefix("swinv2.")
        merge = _DOWNSAMPLE.match(key)
        if merge:
            key = f"layers.{int(merge['i']) + 1}.downsample.{merge['rest']}"
        out[key] = tensor
    return out
