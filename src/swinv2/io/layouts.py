"""Which layout a Swin V2 checkpoint's keys follow (transformers, timm, Microsoft, Microsoft SimMIM).

timm and Microsoft share the official encoder names; they differ in where patch merging sits
(`layers.{i+1}.downsample` in timm, `layers.i.downsample` in Microsoft's release) and in the head
(`head.fc` against `head`). Microsoft's SimMIM files keep the encoder under `encoder.`.

The original Swin2SR release names its blocks `layers.i.residual_group.blocks.j` (a residual stage wraps
them), where the classification releases have `layers.i.blocks.j`; its SwinIR ancestor has the same tree
with Swin V1 blocks (`relative_position_bias_table`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from swinv2.io.checkpoints import CheckpointError
from swinv2.io.keymaps import MICROSOFT, MICROSOFT_SIMMIM, SWIN2SR_ORIGINAL, TIMM, TRANSFORMERS

_CPB = re.compile(r"(^|\.)layers\.\d+\.blocks\.\d+\.attn\.cpb_mlp\.")
_RESIDUAL_GROUP = re.compile(r"^layers\.\d+\.residual_group\.blocks\.\d+\.")
_SWIN2SR_CPB = re.compile(r"^layers\.\d+\.residual_group\.blocks\.\d+\.attn\.cpb_mlp\.")
_V1_BIAS_TABLE = re.compile(r"\.attn\.relative_position_bias_table$")
_DERIVED_BUFFER = re.compile(r"\.(relative_coords_table|relative_position_index|attn_mask)$")


def detect_layout(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> str:
    """Which layout `state`'s keys follow (one of `swinv2.io.keymaps.LAYOUTS`).

    Raises:
        CheckpointError: the keys are not a Swin V2 checkpoint (a V1 Swin, another architecture).
    """
    keys = list(state)
    if any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in keys):
        return TRANSFORMERS
    if any(_SWIN2SR_CPB.match(k) for k in keys):
        return SWIN2SR_ORIGINAL
    if any(_RESIDUAL_GROUP.match(k) for k in keys) and any(_V1_BIAS_TABLE.search(k) for k in keys):
        raise CheckpointError(
            f"'{source}' is a SwinIR checkpoint (Swin V1 blocks: relative_position_bias_table), not Swin2SR"
        )
    if any(_V1_BIAS_TABLE.search(k) for k in keys):
        raise CheckpointError(f"'{source}' is a Swin Transformer V1 checkpoint (relative_position_bias_table), not V2")
    if not any(_CPB.search(k) for k in keys):
        raise CheckpointError(
            f"'{source}' does not look like a Swin V2 checkpoint: no patch embedding and no "
            f"continuous-position-bias (cpb_mlp) weights among its {len(keys)} tensors"
        )
    if "encoder.patch_embed.proj.weight" in state:
        return MICROSOFT_SIMMIM
    if "head.fc.weight" in state:
        return TIMM
    if "head.weight" in state or "layers.0.downsample.reduction.weight" in state:
        return MICROSOFT
    if any(_DERIVED_BUFFER.search(k) for k in keys):
        return MICROSOFT
    return TIMM
