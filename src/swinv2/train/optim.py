"""The optimiser recipe for fine-tuning and pre-training Swin V2: AdamW with no weight decay on norms, biases,
`logit_scale`, the continuous position-bias MLP and the embedding tokens; layer-wise learning-rate decay; linear
warm-up then cosine decay; mixup/cutmix with soft targets.

This is the recipe of Microsoft's Swin-Transformer code (`optimizer.py`, SimMIM fine-tuning) and of timm users,
restated for this library's parameter names, which are transformers' (`swinv2.encoder.layers.{i}.blocks.{j}...`).
Every function works from `named_parameters()` names alone, so the same rules apply to `Swinv2Model` (no `swinv2.`
prefix), `Swinv2ForImageClassification`, `Swinv2ForMaskedImageModeling`, `Swinv2Backbone` and to models wrapped by
PEFT (`base_model.model.` prefix, `query.base_layer.weight`, `query.lora_A.default.weight`, ...).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NO_DECAY_RULE",
    "NoDecayRule",
    "WarmupCosine",
    "build_optimizer",
    "decays",
    "layer_id",
    "layer_scale",
    "mix_batch",
    "num_layer_ids",
    "parameter_groups",
    "soft_cross_entropy",
    "warmup_cosine_factor",
]


@dataclass(frozen=True)
class NoDecayRule:
    """Which parameters AdamW must not pull towards zero.

    A parameter is exempt from weight decay when any of these holds:

    - it has at most one dimension (`max_ndim`): LayerNorm weights and biases, and every other bias. Decaying a norm's
      gain shrinks the activations it is there to scale, and decaying a bias only biases it towards zero;
    - its name ends with one of `suffixes` (`.bias`), whatever its shape;
    - its name contains one of `keywords`. These are the multi-dimensional parameters that are not weights of a
      linear map on features:
      `logit_scale` (the learnt per-head temperature of scaled cosine attention; decaying it sharpens or flattens all
      attention at once), `continuous_position_bias_mlp` (the small MLP that produces the relative position bias from
      log-spaced coordinates; its weights encode geometry, not features), `position_embeddings` (the optional
      absolute position embedding) and `mask_token` (the learnt token SimMIM substitutes for masked patches), and
      `relative_position_bias_table` for Swin V1-style tables.

    The Microsoft code applies the same rule: 1-D parameters and `.bias` through `set_weight_decay`, and the model's
    `no_weight_decay()` (`absolute_pos_embed`, plus `mask_token` for SimMIM) and `no_weight_decay_keywords()`
    (`cpb_mlp`, `logit_scale`, `relative_position_bias_table`); the keywords here are those names in transformers'
    spelling. Keywords match anywhere in the name, so PEFT's wrappers (`...query.base_layer.weight`) keep the rule.
    """

    max_ndim: int = 1
    suffixes: tuple[str, ...] = (".bias",)
    keywords: tuple[str, ...] = (
        "logit_scale",
        "continuous_position_bias_mlp",
        "position_embeddings",
        "mask_token",
        "relative_position_bias_table",
    )

    def exempts(self, name: str, parameter: torch.Tensor) -> bool:
        """True when the parameter `name` must get no weight decay."""
        return (
            parameter.ndim <= self.max_ndim
            or name.endswith(self.suffixes)
            or any(keyword in name for keyword in self.keywords)
        )


NO_DECAY_RULE = NoDecayRule()
"""The rule `decays` and `parameter_groups` apply; see `NoDecayRule` for what it exempts and why."""


def decays(name: str, parameter: torch.Tensor) -> bool:
    """True when AdamW should apply weight decay to the parameter called `name` (see `NoDecayRule`)."""
    return not NO_DECAY_RULE.exempts(name, parameter)


# Names are matched by their transformers-style path, wherever it sits: after `swinv2.`, `base_model.model.swinv2.`
# or at the top of a bare `Swinv2Model` / `Swinv2Backbone`.
_BLOCK = re.compile(r"(?:^|\.)encoder\.layers\.(\d+)\.blocks\.(\d+)\.")
_DOWNSAMPLE = re.compile(r"(?:^|\.)encoder\.layers\.(\d+)\.downsample\.")
_EMBEDDINGS = re.compile(r"(?:^|\.)embeddings\.")


def _check_depths(depths: Sequence[int]) -> tuple[int, ...]:
    """`depths` as a tuple, after checking it names at least one stage and no stage is empty."""
    checked = tuple(int(depth) for depth in depths)
    if not checked or any(depth < 1 for depth in checked):
        raise ValueError(f"depths must be a non-empty sequence of positive block counts; got {tuple(depths)!r}")
    return checked


def num_layer_ids(depths: Sequence[int]) -> int:
    """How many distinct layer ids `layer_id` hands out: the embedding, one per block, and the top."""
    return sum(_check_depths(depths)) + 2


def layer_id(name: str, depths: Sequence[int]) -> int:
    """The depth of the parameter `name` for layer-wise learning-rate decay, from 0 (input) to `sum(depths) + 1`.

    The rule, per name (`i` a stage, `j` a block within it, `depths` the blocks per stage):

    - `embeddings.*` (patch projection, its norm, `position_embeddings`, `mask_token`): 0;
    - `encoder.layers.{i}.blocks.{j}.*`: `1 + sum(depths[:i]) + j`, so blocks count 1, 2, ... through the network;
    - `encoder.layers.{i}.downsample.*` (patch merging's reduction and norm): `sum(depths[:i + 1])`, the id of the
      *last block of stage i*. Patch merging runs at the end of its stage (in Microsoft's `BasicLayer` and in
      transformers' `Swinv2Stage` alike), and Microsoft's `get_swin_layer` (SimMIM fine-tuning) returns
      `sum(depths[:layer_id + 1])` for `layers.{i}.downsample.{reduction,norm}`, which is that id; it is not the
      first block of stage i + 1 (one more);
    - anything else (the final `layernorm`, `classifier`, the SimMIM `decoder`, backbone `hidden_states_norms`):
      `sum(depths) + 1`, the top, whose learning rate is not decayed.

    One choice differs from Microsoft's function: there `absolute_pos_embed` falls through to the top id because its
    name does not start with `patch_embed`; here `embeddings.position_embeddings` is at 0 with the patch embedding it
    is added to, as BEiT's `get_vit_layer` places `pos_embed`.

    The match looks for these paths anywhere in the name, so prefixes (`swinv2.`, PEFT's `base_model.model.`) and
    wrappers inside a block (`query.base_layer.weight`, `query.lora_A.default.weight`) keep their block's id.
    Raises ValueError when a stage or block index does not exist in `depths` (the names are from another model).
    """
    checked = _check_depths(depths)
    top = sum(checked) + 1
    if (match := _BLOCK.search(name)) is not None:
        stage, block = int(match.group(1)), int(match.group(2))
        if stage >= len(checked) or block >= checked[stage]:
            raise ValueError(f"{name!r} names stage {stage} block {block}, which depths {checked} do not have")
        return 1 + sum(checked[:stage]) + block
    if (match := _DOWNSAMPLE.search(name)) is not None:
        stage = int(match.group(1))
        if stage >= len(checked):
            raise ValueError(f"{name!r} names stage {stage}, which depths {checked} do not have")
        return sum(checked[: stage + 1])
    if _EMBEDDINGS.search(name) is not None:
        return 0
    return top


def layer_scale(layer: int, depths: Sequence[int], layer_decay: float) -> float:
    """The learning-rate multiplier of layer id `layer`: `layer_decay ** (sum(depths) + 1 - layer)`.

    The top id gets 1 and each id below it one more factor of `layer_decay`, so the embedding, furthest from the
    loss, moves least; this is Microsoft's `scales[layer_id]` with `scales = [layer_decay ** k for k in
    reversed(range(num_layers + 2))]`.
    """
    return float(layer_decay ** (num_layer_ids(depths) - 1 - layer))


def _model_depths(model: nn.Module) -> tuple[int, ...]:
    """The `depths` of the first module in `model` whose `config` has them (reaches through PEFT wrappers)."""
    for module in model.modules():
        depths = getattr(getattr(module, "config", None), "depths", None)
        if depths is not None:
            return _check_depths(depths)
    raise ValueError("layer_decay needs the model's depths: no module has a config with `depths`; pass depths=")


def parameter_groups(
    model: nn.Module,
    *,
    weight_decay: float,
    base_lr: float,
    layer_decay: float | None = None,
    depths: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """AdamW parameter groups for `model`'s trainable parameters: weight decay by `NO_DECAY_RULE`, learning rate by
    layer-wise decay.

    Each group is a dict with `params` (the tensors), `names` (their names, for logs and tests), `weight_decay`
    (`weight_decay` or 0.0), `lr_scale` (the layer's multiplier, 1.0 without layer decay) and `lr`
    (`base_lr * lr_scale`). `torch.optim` keeps keys it does not know (`names`, `lr_scale`) in `param_groups` and in
    its state dict, so a scheduler or a log can read them back.

    Without `layer_decay` there are at most two groups (decayed, then not). With it there is one group per (layer id,
    decayed or not) that has parameters, ordered by layer id, decayed first; `depths` defaults to the `depths` of the
    model's config (found through PEFT wrappers). Parameters keep `named_parameters()` order within a group, and
    frozen ones (`requires_grad=False`) are left out, so PEFT/LoRA models get only their adapters. Every trainable
    parameter is in exactly one group (shared parameters once, as `named_parameters()` yields them once).
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be non-negative; got {weight_decay!r}")
    if base_lr < 0:
        raise ValueError(f"base_lr must be non-negative; got {base_lr!r}")
    if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1]; got {layer_decay!r}")
    stage_depths = None if layer_decay is None else _model_depths(model) if depths is None else _check_depths(depths)

    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        decayed = decays(name, parameter)
        layer = 0 if stage_depths is None else layer_id(name, stage_depths)
        key = (layer, decayed)
        if key not in groups:
            scale = (
                1.0 if stage_depths is None or layer_decay is None else layer_scale(layer, stage_depths, layer_decay)
            )
            groups[key] = {
                "params": [],
                "names": [],
                "weight_decay": float(weight_decay) if decayed else 0.0,
                "lr": base_lr * scale,
                "lr_scale": scale,
            }
        groups[key]["params"].append(parameter)
        groups[key]["names"].append(name)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return [groups[key] for key in sorted(groups, key=lambda key: (key[0], not key[1]))]


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    layer_decay: float | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    depths: Sequence[int] | None = None,
) -> torch.optim.AdamW:
    """AdamW over `parameter_groups(model, ...)`; `lr` is the top layer's learning rate.

    The fused/foreach implementation is left to torch's default for the parameters' device.
    """
    groups = parameter_groups(model, weight_decay=weight_decay, base_lr=lr, layer_decay=layer_decay, depths=depths)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """The learning-rate factor at optimiser step `step` (0-based): linear warm-up, then cosine decay.

    - `step < warmup_steps`: `step / warmup_steps`, rising from 0 at the first step;
    - `warmup_steps <= step <= total_steps`: `min_ratio + (1 - min_ratio) * (1 + cos(pi * t)) / 2` with
      `t = (step - warmup_steps) / (total_steps - warmup_steps)`, so 1 at the end of warm-up and `min_ratio` at
      `total_steps`;
    - after `total_steps`: `min_ratio`.

    This is the shape of transformers' `get_cosine_with_min_lr_schedule_with_warmup`, and the warm-up-then-cosine
    schedule of the Microsoft Swin configs (`WARMUP_EPOCHS`, `MIN_LR`), counted in steps.
    """
    if warmup_steps < 0 or total_steps <= warmup_steps:
        raise ValueError(f"need 0 <= warmup_steps < total_steps; got warmup_steps={warmup_steps}, total={total_steps}")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio must be in [0, 1]; got {min_ratio!r}")
    if step < 0:
        raise ValueError(f"step must be non-negative; got {step}")
    if step < warmup_steps:
        return step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up then cosine decay (`warmup_cosine_factor`), stepped once per optimiser step.

    Each group's learning rate is its initial `lr` times the factor. `parameter_groups` already set that `lr` to
    `base_lr * lr_scale`, so layer-wise decay holds at every step and each group ends at `min_lr_ratio` of its own
    peak. The schedule's settings live on the object and travel in `state_dict()` with the step count, so
    `load_state_dict` on a fresh `WarmupCosine` (over an optimiser restored from its own state dict) continues
    exactly where the saved one stopped.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        warmup_steps: int,
        total_steps: int,
        min_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        warmup_cosine_factor(0, warmup_steps, total_steps, min_lr_ratio)  # validates the settings
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, _ScheduleFactor(self), last_epoch=last_epoch)

    def state_dict(self) -> dict[str, Any]:
        """Step count, base learning rates and the schedule's settings (not the optimiser, not the factor object)."""
        return {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "lr_lambdas")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict` saved; the factor reads the restored settings."""
        self.__dict__.update({key: value for key, value in state_dict.items() if key != "lr_lambdas"})


class _ScheduleFactor:
    """`WarmupCosine`'s factor as a callable that reads the scheduler's current settings."""

    def __init__(self, schedule: WarmupCosine) -> None:
        self.schedule = schedule

    def __call__(self, step: int) -> float:
        schedule = self.schedule
        return warmup_cosine_factor(step, schedule.warmup_steps, schedule.total_steps, schedule.min_lr_ratio)


def _soft_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float, dtype: torch.dtype) -> torch.Tensor:
    """(B, num_classes) targets: `1 - smoothing + smoothing / num_classes` on the label, `smoothing / num_classes`
    elsewhere (the distribution `F.cross_entropy(label_smoothing=smoothing)` trains towards)."""
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, dtype=dtype, device=labels.device)
    return targets.scatter_(1, labels.long().unsqueeze(1), 1.0 - smoothing + off)


def _beta(alpha: float, generator: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw decided by `generator` (torch's Beta sampler takes no generator)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return random.Random(seed).betavariate(alpha, alpha)


def mix_batch(
    pixels: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    mixup_alpha: float,
    cutmix_alpha: float,
    generator: torch.Generator,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix over a batch, as timm's `Mixup` does per batch: `(mixed pixels, (B, num_classes) targets)`.

    Image `b` is mixed with image `B - 1 - b` (the batch reversed) with weight `lam ~ Beta(alpha, alpha)` on its own.
    Mixup blends whole images; CutMix pastes a box of the partner image whose side is `sqrt(1 - lam)` of the image's
    and whose centre is uniform over the image (clipped at the border), then sets `lam` to the share of pixels left
    untouched. With both alphas positive each call picks one of the two with equal odds; with both zero the pixels
    are returned unchanged. Targets are `lam * own + (1 - lam) * partner` of label-smoothed one-hot vectors, so each
    row sums to 1; train on them with `soft_cross_entropy`.

    Every random choice comes from `generator`, so the same generator state gives the same batch. `pixels` is
    (B, C, H, W) and is not modified.
    """
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"alphas must be non-negative; got mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing!r}")
    if pixels.ndim != 4 or labels.shape != pixels.shape[:1]:
        raise ValueError(f"need pixels (B, C, H, W) and labels (B,); got {tuple(pixels.shape)}, {tuple(labels.shape)}")
    dtype = pixels.dtype if pixels.is_floating_point() else torch.float32
    targets = _soft_one_hot(labels, num_classes, label_smoothing, dtype)
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return pixels, targets

    use_cutmix = cutmix_alpha > 0 and (mixup_alpha == 0 or bool(torch.rand((), generator=generator) < 0.5))
    lam = _beta(cutmix_alpha if use_cutmix else mixup_alpha, generator)
    partner = pixels.flip(0)
    if use_cutmix:
        height, width = pixels.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut), int(width * cut)
        centre_y = int(torch.randint(0, height, (), generator=generator))
        centre_x = int(torch.randint(0, width, (), generator=generator))
        top, bottom = max(centre_y - cut_h // 2, 0), min(centre_y + cut_h // 2, height)
        left, right = max(centre_x - cut_w // 2, 0), min(centre_x + cut_w // 2, width)
        mixed = pixels.clone()
        mixed[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    else:
        mixed = pixels * lam + partner * (1.0 - lam)
    return mixed, targets * lam + targets.flip(0) * (1.0 - lam)


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of `-sum(targets * log_softmax(logits))`, for (B, num_classes) probability targets.

    Computed in float32 at least, so half-precision logits do not lose the loss; equal to
    `F.cross_entropy(logits, soft_targets)` with class-probability targets.
    """
    log_probs = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    return -(soft_targets.to(log_probs.dtype) * log_probs).sum(dim=-1).mean()
