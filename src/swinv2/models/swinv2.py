"""Swin Transformer V2: the encoder and its heads, top to bottom in one file.

References:
    Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution", CVPR 2022 (arXiv 2111.09883):
    the three V2 techniques are residual post-norm (`Swinv2Block.forward`), scaled cosine attention
    (`eager_attention`) and the log-spaced continuous position bias (`Swinv2SelfAttention.position_bias`).
    Its SwinV2-H and -G also put a layer norm on the main branch every 6 blocks: `Swinv2Block.extra_norm`
    (`config.extra_norm_period`, 0 in every released model).
    Xie et al., "SimMIM", CVPR 2022 (arXiv 2111.09886): `Swinv2ForMaskedImageModeling`.

The module tree and parameter names are transformers' (`embeddings.patch_embeddings.projection`,
`encoder.layers.i.blocks.j.attention.self.query`, `swinv2.` in the heads), so a state dict, a PEFT
target list or a Trainer checkpoint carries over unchanged. The arithmetic written here is the
reference ("eager"); faster equivalents of its hot operations are registered in `swinv2.backends`
and chosen by `config.attn_implementation` through `swinv2.models.registry`.

Shape legend:
    B   batch               H, W  token grid of a stage        C   channels of a stage
    ws  window side         N     tokens per window (ws*ws)    nW  windows per image
    nH  attention heads     Dh    channels per head (C / nH)   L   tokens per image (H*W)
    w   windows in a call (B*nW)                               Hp, Wp  grid padded to whole windows
Public inputs are NCHW (B, C, H, W); inside, tokens are channels-last: (B, L, C) or (B, H, W, C).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from swinv2.config import Swin2SRConfig, Swinv2Config
from swinv2.io.errors import ConfigError
from swinv2.layers.activations import activation
from swinv2.layers.drop import DropPath
from swinv2.layers.position import interpolate_grid_table
from swinv2.layers.weight_init import trunc_normal_, trunc_normal_init
from swinv2.layers.windows import (
    Grid,
    GridWindows,
    WindowLayout,
    clamp_window,
    pad_bottom_right,
    window_partition,
    window_reverse,
)
from swinv2.models.base import BackboneMixin, Swinv2PreTrainedModel
from swinv2.models.outputs import (
    BackboneOutput,
    Swinv2ImageClassifierOutput,
    Swinv2MaskedImageModelingOutput,
    Swinv2ModelOutput,
)
from swinv2.models.registry import Backend, get_backend, register_backend
from swinv2.models.size import Head

LOGIT_SCALE_MAX = math.log(1.0 / 0.01)  # the V2 paper clamps the cosine-attention temperature at 100
CPB_HIDDEN = 512  # width of the continuous position bias MLP
_CACHED_SIZES = 4  # input sizes whose attention terms each attention keeps


# ------------------------------------------------------------------------- position bias
def relative_coords_table(window: int, pretrained_window: int) -> torch.Tensor:
    """Log-spaced relative coordinates fed to the continuous position bias MLP.

    Offsets (dy, dx) in [-(ws-1), ws-1] are normalised by (pretrained_window - 1) when a pretrained
    window is given, else by (ws - 1), scaled to [-8, 8], then mapped by sign(v)*log2(|v|+1)/log2(8).

    Returns:
        (2ws-1, 2ws-1, 2) float32.
    """
    offsets = torch.arange(-(window - 1), window, dtype=torch.float32)  # (2ws-1,)
    table = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1)  # (2ws-1, 2ws-1, 2)
    norm = pretrained_window if pretrained_window > 0 else window
    table = table / max(norm - 1, 1) * 8.0
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


def relative_position_index(window: int) -> torch.Tensor:
    """Index into the flattened (2ws-1)^2 table for every (query, key) pair of a window: (N, N) int64."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))  # (2, ws, ws)
    coords = coords.flatten(1)  # (2, N)
    offsets = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (N, N, 2) in [0, 2ws-2]
    return offsets[..., 0] * (2 * window - 1) + offsets[..., 1]  # (N, N)


@dataclass(frozen=True)
class AttentionTerms:
    """The input-independent pieces of one attention call."""

    bias: torch.Tensor  # (1 or nW, nH, N, N): 16*sigmoid(cpb) (+ shift mask), in the compute dtype
    scale: torch.Tensor  # (nH, 1, 1): exp(min(logit_scale, log 100)), in the parameters' dtype
    qkv_weight: torch.Tensor  # (3C, C): query, key and value weights stacked, for fused projections
    qkv_bias: torch.Tensor | None  # (3C,): query bias, zeros (keys have none), value bias


# ----------------------------------------------------------------------------- attention
def eager_attention(
    module: Swinv2SelfAttention, windows: torch.Tensor, terms: AttentionTerms, need_weights: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled cosine attention, op for op as transformers computes it:
    softmax(cos(q, k) * exp(min(logit_scale, log 100)) + 16 * sigmoid(cpb_mlp(coords))[pair] + mask) v.

    Args:
        windows: (w, N, C), windows of whole images.

    Returns:
        (w, N, C) context and (w, nH, N, N) probabilities.
    """
    w, N, C = windows.shape
    nH, nW = module.num_heads, terms.bias.shape[0]
    q = module.query(windows).view(w, N, nH, C // nH).transpose(1, 2)  # (w, nH, N, Dh)
    k = module.key(windows).view(w, N, nH, C // nH).transpose(1, 2)  # (w, nH, N, Dh)
    v = module.value(windows).view(w, N, nH, C // nH).transpose(1, 2)  # (w, nH, N, Dh)
    scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)  # (w, nH, N, N)
    scores = scores * terms.scale.to(scores.dtype)
    scores = scores.view(-1, nW, nH, N, N) + terms.bias  # (B, nW, nH, N, N)
    probs = scores.view(w, nH, N, N).softmax(dim=-1)  # (w, nH, N, N)
    context = module.dropout(probs) @ v  # (w, nH, N, Dh)
    return context.transpose(1, 2).reshape(w, N, C), probs  # (w, N, C)


class Swinv2SelfAttention(nn.Module):
    """Query/key/value projections, the learned temperature and the continuous position bias of one
    window attention; the attention itself is the backend's (`eager_attention` is the reference)."""

    def __init__(
        self, dim: int, num_heads: int, window: int, pretrained_window: int, qkv_bias: bool, dropout: float
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.pretrained_window = pretrained_window
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.continuous_position_bias_mlp = nn.Sequential(
            nn.Linear(2, CPB_HIDDEN), nn.ReLU(inplace=True), nn.Linear(CPB_HIDDEN, num_heads, bias=False)
        )
        self.query = nn.Linear(dim, dim, bias=qkv_bias)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("relative_coords_table", torch.empty(0), persistent=False)
        self.register_buffer("relative_position_index", torch.empty(0, dtype=torch.long), persistent=False)
        self._cache: dict[tuple[object, ...], AttentionTerms] = {}
        self._cache_owner: tuple[object, ...] = ()
        self.rebuild_tables()

    def rebuild_tables(self) -> None:
        """(Re)compute the derived coordinate tables on the parameters' device and dtype."""
        weight = cast(nn.Linear, self.continuous_position_bias_mlp[0]).weight
        self.relative_coords_table = relative_coords_table(self.window, self.pretrained_window).to(weight)
        self.relative_position_index = relative_position_index(self.window).to(weight.device)
        self.clear_cache()

    def position_bias(self) -> torch.Tensor:
        """The continuous position bias, (nH, N, N), values in (0, 16)."""
        N = self.window * self.window
        table = self.continuous_position_bias_mlp(self.relative_coords_table)  # (2ws-1, 2ws-1, nH)
        table = table.view(-1, self.num_heads)  # ((2ws-1)^2, nH)
        bias = table[self.relative_position_index.view(-1)].view(N, N, self.num_heads)  # (N, N, nH)
        return 16.0 * torch.sigmoid(bias.permute(2, 0, 1))  # (nH, N, N)

    def _compute_terms(self, mask: torch.Tensor | None, dtype: torch.dtype) -> AttentionTerms:
        with torch.autocast(self.logit_scale.device.type, enabled=False):
            bias = self.position_bias().unsqueeze(0)  # (1, nH, N, N), in the parameters' dtype
            if mask is not None:
                bias = bias + mask.to(bias.dtype).unsqueeze(1)  # (nW, nH, N, N)
            scale = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()  # (nH, 1, 1)
        weight = torch.cat((self.query.weight, self.key.weight, self.value.weight))  # (3C, C)
        qkv_bias = None
        if self.query.bias is not None and self.value.bias is not None:
            qkv_bias = torch.cat((self.query.bias, torch.zeros_like(self.value.bias), self.value.bias))  # (3C,)
        return AttentionTerms(bias.to(dtype).contiguous(), scale, weight, qkv_bias)  # contiguous: viewed per window

    def _term_parameters(self) -> list[torch.Tensor]:
        return [p for p in self.parameters() if p is not None]

    def terms(self, mask: torch.Tensor | None, mask_key: object, dtype: torch.dtype) -> AttentionTerms:
        """Bias (+ mask) in `dtype`, temperature and fused projection; cached when nothing needs their
        gradient.

        The cache is keyed by the mask's key and `dtype`, holds a few input sizes, and is dropped
        whenever any parameter it depends on is replaced (`.to()`) or modified in place (an optimizer
        step, `copy_`, `load_state_dict`), as seen by its storage and version counter. Writes through
        `param.data` bypass version counting by design in PyTorch: call `clear_cache` after them. It
        is bypassed in training mode, when gradients flow to the parameters, and under
        `torch.compile` (which traces the plain computation).
        """
        params = self._term_parameters()
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        if self.training or needs_grad or torch.compiler.is_compiling():
            return self._compute_terms(mask, dtype)
        owner = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        if owner != self._cache_owner:
            self._cache.clear()
            self._cache_owner = owner
        key = (mask_key, dtype)
        if key not in self._cache:
            if len(self._cache) >= _CACHED_SIZES:
                del self._cache[next(iter(self._cache))]  # the oldest input size goes first
            with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable outside inference mode
                self._cache[key] = self._compute_terms(mask, dtype)
        return self._cache[key]

    def clear_cache(self) -> None:
        """Forget the cached terms (needed only after changing parameters through `.data`)."""
        self._cache.clear()
        self._cache_owner = ()


class Swinv2SelfOutput(nn.Module):
    """The attention's output projection and its dropout."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, context: torch.Tensor, linear: Callable[..., torch.Tensor] = F.linear) -> torch.Tensor:
        if type(self.dense) is not nn.Linear:  # wrapped (a PEFT adapter): its own forward
            return self.dropout(self.dense(context))
        return self.dropout(linear(context, self.dense.weight, self.dense.bias))


class Swinv2Attention(nn.Module):
    """Window attention (`self`) followed by the output projection (`output`), on windows of whole images."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        pretrained_window: int,
        qkv_bias: bool,
        dropout: float,
        implementation: str,
    ) -> None:
        super().__init__()
        self.implementation = implementation
        self.self = Swinv2SelfAttention(dim, num_heads, window, pretrained_window, qkv_bias, dropout)
        self.output = Swinv2SelfOutput(dim, dropout)

    def forward(
        self, windows: torch.Tensor, mask: torch.Tensor | None, need_weights: bool = False, mask_key: object = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: windows (w, N, C); mask (nW, N, N) or None; `mask_key` identifies the mask for the terms cache.

        Returns (w, N, C) and, if asked, the (w, nH, N, N) probabilities.
        """
        backend = get_backend(self.implementation)
        device = windows.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else windows.dtype
        terms = self.self.terms(mask, mask_key, dtype)

        # fused projections only from plain linears: wrapped ones (PEFT adapters) run their own forward
        plain = all(type(m) is nn.Linear for m in (self.self.query, self.self.key, self.self.value))
        attention = backend.attention if plain else eager_attention

        def attend(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            context, probs = attention(self.self, rows, terms, need_weights)  # (w, N, C)
            return self.output(context, backend.linear), probs

        if need_weights:
            return attend(windows)
        _, N, C = windows.shape
        bytes_per_window = 4 * N * (4 * C + 3 * self.self.num_heads * N)  # qkv, q, k, out; scores, probs, bias
        out = backend.row_blocks(lambda rows: attend(rows)[0], windows, bytes_per_window, terms.bias.shape[0])
        return out, None


# ------------------------------------------------------------------------------------ MLP
class Swinv2Intermediate(nn.Module):
    """The MLP's expansion: dense to `mlp_ratio` x width, then the activation."""

    def __init__(self, dim: int, hidden: int, act: str) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, hidden)
        self.act_name = act
        self.intermediate_act_fn = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(x))


class Swinv2Output(nn.Module):
    """The MLP's projection back to the block width, and its dropout."""

    def __init__(self, hidden: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(x))


def eager_mlp(block: Swinv2Block, x: torch.Tensor) -> torch.Tensor:
    """dropout(dense(act(dense(x)))): (..., C) -> (..., C)."""
    return block.output(block.intermediate(x))


def eager_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu: bool = False
) -> torch.Tensor:
    """`F.linear`, then the exact GELU when `gelu`."""
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out


def whole(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, bytes_per_row: int, align: int) -> torch.Tensor:
    """`fn(x)` in one call (the eager backend computes no row blocks)."""
    return fn(x)


EAGER = register_backend(Backend("eager", eager_attention, eager_linear, eager_mlp, whole))


# ---------------------------------------------------------------------------------- block
@dataclass(frozen=True)
class BlockOptions:
    """What every block of a model shares (the per-block shape is given to `Swinv2Block` itself)."""

    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    hidden_dropout: float = 0.0  # after the MLP
    attention_dropout: float = 0.0  # on the probabilities and after the output projection
    implementation: str = "auto"  # the registered backend (`swinv2.models.registry`)

    @classmethod
    def from_config(cls, config: Swinv2Config | Swin2SRConfig) -> BlockOptions:
        """The block options of either config (their block fields have the same names)."""
        return cls(
            mlp_ratio=config.mlp_ratio,
            qkv_bias=config.qkv_bias,
            hidden_act=config.hidden_act,
            layer_norm_eps=config.layer_norm_eps,
            hidden_dropout=config.hidden_dropout_prob,
            attention_dropout=config.attention_probs_dropout_prob,
            implementation=config.attn_implementation,
        )


class Swinv2Block(nn.Module):
    """(Shifted-)window attention and MLP, each with a residual post-norm: x + norm(f(x)); optionally a
    layer norm of the result, on the main branch (SwinV2-H/G, `extra_norm`).

    Args:
        dim: Channels C.
        num_heads: nH.
        window: Window side ws.
        shift: Cyclic shift of this block's windows (0: plain windows).
        pretrained_window: Window the position bias was trained with (0: `window`).
        drop_path: Stochastic depth rate of both residual branches.
        options: What the model's blocks share.
        extra_norm: End with a layer norm on the main branch, `extra_norm` (the V2 paper's "additional
            layer normalization on the main branch" of SwinV2-H/G; timm's swinv2_cr calls it `norm3`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        shift: int = 0,
        pretrained_window: int = 0,
        drop_path: float = 0.0,
        options: BlockOptions = BlockOptions(),
        extra_norm: bool = False,
    ) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.implementation = options.implementation
        self.attention = Swinv2Attention(
            dim,
            num_heads,
            window,
            pretrained_window,
            options.qkv_bias,
            options.attention_dropout,
            options.implementation,
        )
        self.layernorm_before = nn.LayerNorm(dim, eps=options.layer_norm_eps)
        self.drop_path = DropPath(drop_path)
        hidden = int(dim * options.mlp_ratio)
        self.intermediate = Swinv2Intermediate(dim, hidden, options.hidden_act)
        self.output = Swinv2Output(hidden, dim, options.hidden_dropout)
        self.layernorm_after = nn.LayerNorm(dim, eps=options.layer_norm_eps)
        self.extra_norm = nn.LayerNorm(dim, eps=options.layer_norm_eps) if extra_norm else None

    def forward(
        self, hidden: torch.Tensor, layout: GridWindows, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: hidden (B, L, C) on `layout.grid`.

        Returns (B, L, C) and, if asked, the attention probabilities (B*nW, nH, N, N).
        """
        B, L, C = hidden.shape
        (H, W), ws, shift = layout.grid, self.window, self.shift
        backend = get_backend(self.implementation)
        moves = backend.window_moves
        if moves is None:
            x = pad_bottom_right(hidden.reshape(B, H, W, C), (ws, ws))  # (B, Hp, Wp, C)
            if shift:
                x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            windows = window_partition(x, ws)  # (B*nW, N, C)
        else:  # the same permutation as one gather
            windows = moves.partition(hidden, layout, shift)  # (B*nW, N, C)
        mask, mask_key = (layout.mask, layout.key) if shift else (None, None)
        attended, probs = self.attention(windows, mask, need_weights, mask_key)
        if moves is None:
            x = window_reverse(attended, ws, layout.padded)  # (B, Hp, Wp, C)
            if shift:
                x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
            attended = x[:, :H, :W].reshape(B, L, C)  # (B, L, C)
        else:
            attended = moves.reverse(attended, layout, shift)  # (B, L, C)
        hidden = hidden + self.drop_path(self.layernorm_before(attended))

        def mlp_residual(rows: torch.Tensor) -> torch.Tensor:
            return rows + self.drop_path(self.layernorm_after(backend.mlp(self, rows)))

        if self.training:  # drop path draws per image: no row blocks
            hidden = mlp_residual(hidden)
        else:
            hidden_bytes = 4 * self.intermediate.dense.out_features
            hidden = backend.row_blocks(mlp_residual, hidden.reshape(B * L, C), hidden_bytes, 1).view(B, L, C)
        if self.extra_norm is not None:
            hidden = self.extra_norm(hidden)  # the main branch itself, not a residual: (B, L, C)
        return hidden, probs


class Swinv2PatchMerging(nn.Module):
    """2x2 neighbourhoods -> one token: concat (4C), reduce to 2C, then norm (the V2 order)."""

    def __init__(self, dim: int, layer_norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim, eps=layer_norm_eps)

    def forward(self, x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, Grid]:
        """Args: x (B, L, C), grid (H, W). Returns (B, ceil(H/2)*ceil(W/2), 2C) and its grid."""
        B, _, C = x.shape
        H, W = grid
        x = pad_bottom_right(x.view(B, H, W, C), (2, 2))  # (B, H', W', C), H', W' even
        x = torch.cat(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1
        )  # (B, H'/2, W'/2, 4C)
        new_grid = (x.shape[1], x.shape[2])
        x = x.reshape(B, -1, 4 * C)  # (B, L/4, 4C)
        return self.norm(self.reduction(x)), new_grid


def run_blocks(
    blocks: Iterable[nn.Module],
    x: torch.Tensor,
    layout: GridWindows,
    need_weights: bool,
    checkpoint_kwargs: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run `Swinv2Block`s in turn on tokens (B, L, C) of `layout.grid`: what every stage of windowed
    blocks does (a Swin V2 stage, a Swin2SR residual stage).

    Args:
        checkpoint_kwargs: Recompute each block's activations in the backward pass
            (`torch.utils.checkpoint` with these arguments) when gradients are enabled; None: store them.

    Returns:
        (B, L, C) and, if asked, the last block's attention probabilities (B*nW, nH, N, N).
    """
    probs = None
    for block in blocks:
        if checkpoint_kwargs is not None and torch.is_grad_enabled():
            x, probs = checkpoint(block, x, layout, need_weights, **checkpoint_kwargs)
        else:
            x, probs = block(x, layout, need_weights)
    return x, probs


class Swinv2Stage(nn.Module):
    """Blocks alternating plain and shifted windows on one `WindowLayout`, then (optionally) patch merging.

    Args:
        dim, num_heads, window, pretrained_window: As for `Swinv2Block`.
        shift: The shifted blocks' roll (odd blocks shift; 0: none does).
        drop_paths: Stochastic depth rate of each block (their count is the stage's depth).
        options: What the model's blocks share.
        downsample: End with `Swinv2PatchMerging`.
        extra_norm_period: Blocks k, 2k, ... of this stage (counted from 1) end with a main-branch
            layer norm (`Swinv2Block.extra_norm`); 0: none.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        shift: int,
        pretrained_window: int,
        drop_paths: Sequence[float],
        options: BlockOptions,
        downsample: bool,
        extra_norm_period: int = 0,
    ) -> None:
        super().__init__()
        self.windows = WindowLayout(window, shift if len(drop_paths) > 1 else 0)
        self.blocks = nn.ModuleList(
            Swinv2Block(
                dim,
                num_heads,
                window,
                shift if j % 2 else 0,
                pretrained_window,
                rate,
                options,
                extra_norm=extra_norm_period > 0 and (j + 1) % extra_norm_period == 0,
            )
            for j, rate in enumerate(drop_paths)
        )
        self.downsample = Swinv2PatchMerging(dim, options.layer_norm_eps) if downsample else None
        self.gradient_checkpointing = False
        self.checkpoint_kwargs: dict[str, Any] = {"use_reentrant": False}  # for torch.utils.checkpoint

    def forward(
        self, x: torch.Tensor, grid: Grid, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, Grid, torch.Tensor | None]:
        """Args: x (B, L, C), grid (H, W).

        Returns:
            tokens before merging (B, L, C), after merging (B, L', C'), the grid after merging,
            and, if asked, the last block's attention probabilities (B*nW, nH, N, N), which is what
            transformers reports per stage.
        """
        layout = self.windows.for_grid(grid, x.device)
        checkpointing = self.gradient_checkpointing and self.training
        x, probs = run_blocks(self.blocks, x, layout, need_weights, self.checkpoint_kwargs if checkpointing else None)
        if self.downsample is None:
            return x, x, grid, probs
        merged, merged_grid = self.downsample(x, grid)
        return x, merged, merged_grid, probs


def stage_windows(config: Swinv2Config, stage: int) -> tuple[int, int]:
    """(window, shift) of a stage, fixed from `config.image_size` as transformers does: the window is
    clamped to the stage's nominal grid `patch_grid // 2**stage` (floor), keyed on its height."""
    return clamp_window(config.patch_grid[0] // 2**stage, config.window_size, config.window_size // 2)


# -------------------------------------------------------------------------------- encoder
class Swinv2PatchEmbeddings(nn.Module):
    """Pad to whole patches (bottom/right), project with a strided conv, flatten."""

    def __init__(self, config: Swinv2Config) -> None:
        super().__init__()
        self.patch = config.patch_hw
        self.projection = nn.Conv2d(config.num_channels, config.embed_dim, kernel_size=self.patch, stride=self.patch)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        """Args: pixel_values (B, C_in, H_img, W_img). Returns (B, L, C) tokens and their grid (H, W)."""
        pad_h = -pixel_values.shape[2] % self.patch[0]
        pad_w = -pixel_values.shape[3] % self.patch[1]
        if pad_h or pad_w:
            pixel_values = F.pad(pixel_values, (0, pad_w, 0, pad_h))
        x = self.projection(pixel_values)  # (B, C, H, W)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])  # (B, L, C)


class Swinv2Embeddings(nn.Module):
    """Patch tokens, normalised, with mask tokens (SimMIM) and absolute positions (optional) applied.

    transformers' absolute position table has one row more than there are patches, a leading row that
    is never used correctly (its issue #37161); the table keeps that shape, so checkpoints load both
    ways, and the patches use rows 1..L.
    """

    def __init__(self, config: Swinv2Config, use_mask_token: bool = False) -> None:
        super().__init__()
        self.patch_embeddings = Swinv2PatchEmbeddings(config)
        self.patch_grid = config.patch_grid
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim)) if use_mask_token else None
        self.position_embeddings = (
            nn.Parameter(torch.zeros(1, self.patch_grid[0] * self.patch_grid[1] + 1, config.embed_dim))
            if config.use_absolute_embeddings
            else None
        )
        self.norm = nn.LayerNorm(config.embed_dim)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.num_channels = config.num_channels

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, Grid]:
        """Returns (B, L, C) tokens and their grid."""
        check_pixel_values(pixel_values, self.num_channels)
        x, grid = self.patch_embeddings(pixel_values)  # (B, L, C)
        x = self.norm(x)
        B, L, _ = x.shape
        if bool_masked_pos is not None:
            if self.mask_token is None:
                raise ValueError("bool_masked_pos needs a model built with use_mask_token=True")
            if bool_masked_pos.shape not in ((B, L), (B, grid[0], grid[1])):
                raise ValueError(
                    f"bool_masked_pos must be (B, L) = ({B}, {L}) for this input (a {grid[0]}x{grid[1]} patch grid); "
                    f"got {tuple(bool_masked_pos.shape)}"
                )
            keep = bool_masked_pos.reshape(B, L, 1).to(x.dtype)  # (B, L, 1), 1 where masked
            x = x * (1.0 - keep) + self.mask_token.to(x.dtype) * keep
        if self.position_embeddings is not None:
            if grid != self.patch_grid and not interpolate_pos_encoding:
                table_h, table_w = self.patch_grid
                raise ValueError(
                    f"the absolute position table is for a {table_h}x{table_w} patch grid, "
                    f"this input gives {grid[0]}x{grid[1]}; pass interpolate_pos_encoding=True to resize it"
                )
            x = x + interpolate_grid_table(self.position_embeddings[:, 1:], self.patch_grid, grid)
        return self.dropout(x), grid


def check_pixel_values(pixel_values: torch.Tensor, num_channels: int) -> None:
    """Raise ValueError unless `pixel_values` is a non-empty float (B, num_channels, H, W) tensor."""
    if not isinstance(pixel_values, torch.Tensor):
        raise ValueError(
            f"pixel_values must be a torch.Tensor (B, {num_channels}, H, W); got {type(pixel_values).__name__}"
        )
    described = f"{tuple(pixel_values.shape)} {str(pixel_values.dtype).removeprefix('torch.')}"
    expected = f"pixel_values must be (B, {num_channels}, H, W) floating point"
    if pixel_values.ndim != 4:
        raise ValueError(f"{expected}; got {pixel_values.ndim}-d {described}")
    if not pixel_values.is_floating_point():
        raise ValueError(f"{expected}; got {described} (convert with .float() and normalise first)")
    if pixel_values.shape[1] != num_channels:
        raise ValueError(f"{expected}; got {pixel_values.shape[1]} channels: {described}")
    if pixel_values.shape[0] == 0 or pixel_values.shape[2] == 0 or pixel_values.shape[3] == 0:
        raise ValueError(f"{expected} with B, H, W > 0; got an empty batch {described}")


def reshape_tokens(tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(B, L, C) tokens -> (B, C, H, W) map."""
    B, _, C = tokens.shape
    return tokens.view(B, grid[0], grid[1], C).permute(0, 3, 1, 2)


class EncoderTrace:
    """What one encoder pass produced: embedding, per-stage tokens and grids, attentions."""

    def __init__(self, embedding: torch.Tensor, grid: Grid) -> None:
        self.embedding = (embedding, grid)
        self.before_merge: list[tuple[torch.Tensor, Grid]] = []
        self.after_merge: list[tuple[torch.Tensor, Grid]] = []
        self.attentions: list[torch.Tensor] = []

    @property
    def last(self) -> tuple[torch.Tensor, Grid]:
        return self.after_merge[-1]

    def hidden_states(self, before_merge: bool) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """Embedding + each stage's tokens, flat (B, L, C) and reshaped (B, C, H, W)."""
        states = [self.embedding] + (self.before_merge if before_merge else self.after_merge)
        return tuple(t for t, _ in states), tuple(reshape_tokens(t, g) for t, g in states)


class Swinv2Encoder(nn.Module):
    """The stages: stage i has `embed_dim * 2**i` channels; all but the last end in patch merging.
    With `config.extra_norm_period` k > 0, blocks k, 2k, ... of every stage end with a main-branch norm."""

    def __init__(self, config: Swinv2Config) -> None:
        super().__init__()
        options = BlockOptions.from_config(config)
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths), device="cpu").tolist()  # not on meta
        starts = [sum(config.depths[:i]) for i in range(config.num_layers)]
        stages = []
        for i in range(config.num_layers):
            window, shift = stage_windows(config, i)
            stages.append(
                Swinv2Stage(
                    dim=config.embed_dim * 2**i,
                    num_heads=config.num_heads[i],
                    window=window,
                    shift=shift,
                    pretrained_window=config.pretrained_window_sizes[i],
                    drop_paths=rates[starts[i] : starts[i] + config.depths[i]],
                    options=options,
                    downsample=i < config.num_layers - 1,
                    extra_norm_period=config.extra_norm_period,
                )
            )
        self.layers = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor, grid: Grid, output_attentions: bool = False) -> EncoderTrace:
        """Run every stage on embedded tokens (B, L, C) of `grid`, recording what the heads need."""
        trace = EncoderTrace(x, grid)
        for stage in self.layers:
            before, x, new_grid, probs = stage(x, grid, output_attentions)
            trace.before_merge.append((before, grid))
            trace.after_merge.append((x, new_grid))
            if probs is not None:
                trace.attentions.append(probs)
            grid = new_grid
        return trace


def init_encoder_weights(module: nn.Module, std: float) -> None:
    """Truncated-normal linear weights, identity norms, logit scale log(10), zero q/v biases, zero
    mask token and position table, for every encoder part inside `module`."""
    module.apply(lambda m: trunc_normal_init(m, std))
    for part in module.modules():
        if isinstance(part, Swinv2SelfAttention):
            nn.init.constant_(part.logit_scale, math.log(10.0))
            for bias in (part.query.bias, part.value.bias):
                if bias is not None:
                    nn.init.zeros_(bias)
        elif isinstance(part, Swinv2Embeddings):
            if part.position_embeddings is not None:
                trunc_normal_(part.position_embeddings, std)
                with torch.no_grad():
                    part.position_embeddings[:, 0].zero_()  # transformers' unused leading row
            if part.mask_token is not None:
                nn.init.zeros_(part.mask_token)


class Swinv2Model(Swinv2PreTrainedModel):
    """The Swin V2 encoder: patch embedding, stages, final norm, mean pooling.

    Any input height and width run: the image is padded to whole patches, every stage pads its grid
    to whole windows before the cyclic shift and builds the shift mask on the padded grid; windows
    and shifts are fixed per stage from `config.image_size`.

    Args:
        config: The model configuration.
        add_pooling_layer: Return `pooler_output` (mean over tokens).
        use_mask_token: Learn a mask token for `bool_masked_pos` (SimMIM).

    Example:
        >>> config = Swinv2Config(image_size=64, window_size=4, depths=(1, 1), num_heads=(1, 2), embed_dim=16)
        >>> model = Swinv2Model(config)
        >>> model(torch.randn(1, 3, 64, 64)).last_hidden_state.shape
        torch.Size([1, 64, 32])
    """

    def __init__(self, config: Swinv2Config, add_pooling_layer: bool = True, use_mask_token: bool = False) -> None:
        super().__init__(config)
        self.add_pooling_layer = add_pooling_layer
        self.num_features = config.hidden_size
        self.embeddings = Swinv2Embeddings(config, use_mask_token)
        self.encoder = Swinv2Encoder(config)
        self.layernorm = nn.LayerNorm(self.num_features, eps=config.layer_norm_eps)
        self.pooler = nn.AdaptiveAvgPool1d(1) if add_pooling_layer else None
        self.post_init()

    def _initialize_weights(self) -> None:
        init_encoder_weights(self, self.config.initializer_range)

    def with_config(self, config: Swinv2Config) -> Swinv2Model:
        """A freshly initialised `Swinv2Model` with this one's pooling and mask-token options."""
        return Swinv2Model(
            config, add_pooling_layer=self.add_pooling_layer, use_mask_token=self.embeddings.mask_token is not None
        )

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> Swinv2ModelOutput | tuple[Any, ...]:
        """Encode images.

        Args:
            pixel_values: (B, num_channels, H, W) float.
            bool_masked_pos: (B, L) bool, patches to replace by the mask token (SimMIM).
            output_attentions: Also return every stage's attention probabilities.
            output_hidden_states: Also return the embedding and every stage output.
            interpolate_pos_encoding: Resize the absolute position table to the input's grid.
            return_dict: False returns a tuple, as transformers does: (last_hidden_state,
                pooler_output (None without pooling), then those of hidden_states, attentions,
                reshaped_hidden_states that were asked for).
            (output_attentions, output_hidden_states and return_dict left None take the config's value.)
        """
        output_attentions, output_hidden_states, return_dict = self._output_options(
            output_attentions, output_hidden_states, return_dict
        )
        x, grid = self.embeddings(pixel_values, bool_masked_pos, interpolate_pos_encoding)
        trace = self.encoder(x, grid, output_attentions)
        tokens = self.layernorm(trace.last[0])  # (B, L, C)
        pooled = None
        if self.pooler is not None:
            pooled = self.pooler(tokens.transpose(1, 2)).flatten(1)  # (B, C)
        hidden, reshaped = trace.hidden_states(before_merge=False) if output_hidden_states else (None, None)
        out = Swinv2ModelOutput(
            last_hidden_state=tokens,
            pooler_output=pooled,
            hidden_states=hidden,
            attentions=tuple(trace.attentions) if output_attentions else None,
            reshaped_hidden_states=reshaped,
        )
        if return_dict:
            return out
        return (tokens, pooled, *(t for t in (out.hidden_states, out.attentions, reshaped) if t is not None))


# ---------------------------------------------------------------------------------- heads
class Swinv2ForImageClassification(Swinv2PreTrainedModel):
    """`Swinv2Model` + a linear classifier on the pooled features (identity when num_labels == 0).

    The loss follows `config.problem_type`; when it is None: regression for one label, single-label
    cross-entropy for integer labels, multi-label BCE otherwise (transformers' rule).
    """

    size_head: Head = "classifier"

    def __init__(self, config: Swinv2Config) -> None:
        super().__init__(config)
        self.swinv2 = Swinv2Model(config)
        num_labels = config.num_labels or 0  # set from id2label after validation
        self.classifier: nn.Module = nn.Linear(config.hidden_size, num_labels) if num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> Swinv2ImageClassifierOutput | tuple[torch.Tensor, ...]:
        """Classify images: `logits` (B, num_labels); `loss` when `labels` are given."""
        output_attentions, output_hidden_states, return_dict = self._output_options(
            output_attentions, output_hidden_states, return_dict
        )
        base = self.swinv2(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
        )
        logits = self.classifier(base.pooler_output)  # (B, num_labels)
        out = Swinv2ImageClassifierOutput(
            loss=None if labels is None else self.classification_loss(logits, labels),
            logits=logits,
            hidden_states=base.hidden_states,
            attentions=base.attentions,
            reshaped_hidden_states=base.reshaped_hidden_states,
        )
        return out if return_dict else out.to_tuple()

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss `config.problem_type` names (or infers) for these logits and labels."""
        num_labels = self.config.num_labels or 0
        problem = self.config.problem_type
        if problem is None:
            if num_labels == 1:
                problem = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        labels = labels.to(logits.device)
        if problem == "regression":
            if num_labels == 1:
                return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
            return F.mse_loss(logits, labels.to(logits.dtype))
        if problem == "single_label_classification":
            if labels.numel() != logits.shape[0]:
                raise ValueError(
                    f"labels must hold one class index per image ({logits.shape[0]}); got shape {tuple(labels.shape)}"
                )
            return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
        if labels.shape != logits.shape:
            raise ValueError(
                f"multi-label targets must have the logits' shape {tuple(logits.shape)}; got {tuple(labels.shape)}"
            )
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class Swinv2ForMaskedImageModeling(Swinv2PreTrainedModel):
    """SimMIM: encoder with a mask token, a 1x1 conv + pixel shuffle decoder, L1 loss on masked pixels.

    The reconstruction is cropped to the input size (the encoder pads inputs that are not multiples of
    `encoder_stride`), and the mask follows the input's own patch grid, so any size works.
    """

    size_head: Head = "decoder"

    def __init__(self, config: Swinv2Config) -> None:
        super().__init__(config)
        ph, pw = config.patch_hw
        total_stride = ph * 2 ** (config.num_layers - 1)
        if ph != pw or config.encoder_stride != total_stride:
            raise ConfigError(
                f"masked image modeling needs encoder_stride ({config.encoder_stride}) equal to the encoder's "
                f"total stride, patch_size * 2**(num_stages - 1) = {config.patch_size} * 2**{config.num_layers - 1}"
                + ("" if ph != pw else f" = {total_stride}; set encoder_stride={total_stride}")
            )
        self.swinv2 = Swinv2Model(config, add_pooling_layer=False, use_mask_token=True)
        self.decoder = nn.Sequential(
            nn.Conv2d(config.hidden_size, config.encoder_stride**2 * config.num_channels, kernel_size=1),
            nn.PixelShuffle(config.encoder_stride),
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> Swinv2MaskedImageModelingOutput | tuple[torch.Tensor, ...]:
        """Reconstruct pixels: `reconstruction` (B, C, H, W); `loss` when `bool_masked_pos` (B, L) is given."""
        output_attentions, output_hidden_states, return_dict = self._output_options(
            output_attentions, output_hidden_states, return_dict
        )
        base = self.swinv2(
            pixel_values,
            bool_masked_pos=bool_masked_pos,
            output_attentions=output_attentions,
            output_hidden_states=True,  # the grids
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
        )
        grid = base.reshaped_hidden_states[-1].shape[2:]
        features = reshape_tokens(base.last_hidden_state, (grid[0], grid[1]))  # (B, C, H/32, W/32)
        H, W = pixel_values.shape[2:]
        reconstruction = self.decoder(features)[:, :, :H, :W]  # (B, C_in, H, W)
        loss = None
        if bool_masked_pos is not None:
            ph, pw = self.config.patch_hw
            B = pixel_values.shape[0]
            patch_grid = base.reshaped_hidden_states[0].shape[2:]
            mask = bool_masked_pos.reshape(B, 1, patch_grid[0], patch_grid[1]).to(pixel_values.dtype)
            mask = mask.repeat_interleave(ph, 2).repeat_interleave(pw, 3)[:, :, :H, :W]  # (B, 1, H, W)
            error = F.l1_loss(pixel_values, reconstruction, reduction="none")  # (B, C_in, H, W)
            loss = (error * mask).sum() / (mask.sum() + 1e-5) / self.config.num_channels
        out = Swinv2MaskedImageModelingOutput(
            loss=loss,
            reconstruction=reconstruction,
            hidden_states=base.hidden_states if output_hidden_states else None,
            attentions=base.attentions,
            reshaped_hidden_states=base.reshaped_hidden_states if output_hidden_states else None,
        )
        return out if return_dict else out.to_tuple()


class Swinv2Backbone(BackboneMixin, Swinv2PreTrainedModel):
    """Multi-scale feature maps for detection and segmentation heads.

    `out_features` picks among `stem` (the patch embedding) and `stage1`..`stageN` (each stage's
    output before its patch merging); maps are channels-first (B, C_i, H_i, W_i), no final norm. As in
    transformers, the embeddings and encoder sit at the top level (no `swinv2.` prefix), and the
    class keeps transformers' backbone contract (`BackboneMixin`).
    """

    def __init__(self, config: Swinv2Config) -> None:
        super().__init__(config)
        self.num_features = [config.embed_dim] + [config.embed_dim * 2**i for i in range(config.num_layers)]
        self.embeddings = Swinv2Embeddings(config)
        self.encoder = Swinv2Encoder(config)
        self.post_init()

    def _initialize_weights(self) -> None:
        init_encoder_weights(self, self.config.initializer_range)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BackboneOutput | tuple[torch.Tensor, ...]:
        """Feature maps of `out_features`; `hidden_states` are the flat (B, L, C) versions of all levels."""
        output_attentions, output_hidden_states, return_dict = self._output_options(
            output_attentions, output_hidden_states, return_dict
        )
        trace = self.encoder(*self.embeddings(pixel_values), output_attentions=output_attentions)
        hidden, reshaped = trace.hidden_states(before_merge=True)
        out = BackboneOutput(
            feature_maps=tuple(reshaped[i] for i in self.out_indices),
            hidden_states=hidden if output_hidden_states else None,
            attentions=tuple(trace.attentions) if output_attentions else None,
        )
        return out if return_dict else out.to_tuple()
