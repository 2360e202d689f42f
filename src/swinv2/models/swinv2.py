"""Swin Transformer V2: the encoder and its heads, top to bottom in one file.

References:
    Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution", CVPR 2022 (arXiv 2111.09883):
    the three V2 techniques are residual post-norm (`Swinv2Block.forward`), scaled cosine attention
    (`WindowAttention.forward`) and the log-spaced continuous position bias (`WindowAttention`).
    Xie et al., "SimMIM", CVPR 2022 (arXiv 2111.09886): `Swinv2ForMaskedImageModeling`.

Behaviour matches transformers' Swinv2 (outputs, padding, config semantics); parameter names inside
the encoder are the official Microsoft ones (`layers.i.blocks.j.attn.qkv`, `norm1`, ...), with the
query/key/value projections fused into one `qkv` matrix. `swinv2.convert` maps them to and from
transformers' on-disk names.

Shape legend:
    B   batch               H, W  token grid of a stage        C   channels of a stage
    ws  window side         N     tokens per window (ws*ws)    nW  windows per image
    nH  attention heads     Dh    channels per head (C / nH)   L   tokens per image (H*W)
Public inputs are NCHW (B, C, H, W); inside, tokens are channels-last: (B, L, C) or (B, H, W, C).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from swinv2 import cosine_attention, kernels, triton_attention
from swinv2.config import Swinv2Config, stage_geometry
from swinv2.layers import (
    LOGIT_SCALE_MAX,
    DropPath,
    Mlp,
    WindowOrder,
    interpolate_grid_table,
    pad_bottom_right,
    shifted_window_mask,
    to_grid,
    to_windows,
    trunc_normal_,
    trunc_normal_init,
    window_order,
)
from swinv2.models.base import Swinv2PreTrainedModel
from swinv2.models.outputs import (
    BackboneOutput,
    Swinv2ImageClassifierOutput,
    Swinv2MaskedImageModelingOutput,
    Swinv2ModelOutput,
)

Grid = tuple[int, int]
_CACHED_SIZES = 4  # input sizes whose attention terms each attention keeps


# ----------------------------------------------------------------------------------- attention
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


class WindowAttention(nn.Module):
    """Scaled cosine attention inside windows, plus the continuous position bias.

    score(q, k) = cos(q, k) * exp(min(logit_scale, log 100)) + 16 * sigmoid(cpb_mlp(coords))[pair]

    Two implementations compute the same thing. "eager" materialises the scores and probabilities op
    for op as transformers does (the reference, and the path that can return them). "sdpa" normalises
    q and k straight from the projection's output, folds the temperature into q and calls
    `scaled_dot_product_attention` with the bias (+ shift mask) as its additive mask. "auto" (the
    default) takes SDPA in bf16/fp16 and, in fp32/fp64, where exactness is measurable (SDPA's own
    summation order moved a parity case 1.07e-5 away), the eager scores bit for bit through one
    autograd node with a hand-written backward (`swinv2.cosine_attention`; ~30% faster in training),
    or op for op where attention dropout acts or only plain ops may run (`torch.compile`, `torch.func`,
    forward-mode AD; `swinv2.kernels.plain_ops_required`). Both non-eager choices
    run their linears through `swinv2.kernels` and, on the CPU without autograd, attend in blocks of
    whole images' windows (`swinv2.kernels.in_row_chunks`). In inference (eval mode, no gradient
    needed for the parameters) the input-independent terms (bias + mask, temperature, fused qkv
    bias) are cached; see `attention_terms`. "triton" runs each attention on CUDA as one fused kernel
    with a fused backward (`swinv2.triton_attention`: normalise, score, bias, softmax and weight the
    values straight from the projection's output) and is "auto" where it does not apply (CPU,
    `torch.compile`, attention dropout in training).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        pretrained_window: int,
        qkv_bias: bool,
        attn_dropout: float,
        implementation: str = "auto",
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.pretrained_window = pretrained_window
        self.implementation = implementation
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(inplace=True), nn.Linear(512, num_heads, bias=False))
        self.attn_drop = nn.Dropout(attn_dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(attn_dropout)
        self.register_buffer("relative_coords_table", torch.empty(0), persistent=False)
        self.register_buffer("relative_position_index", torch.empty(0, dtype=torch.long), persistent=False)
        self._cache: dict[tuple[object, ...], AttentionTerms] = {}
        self._cache_owner: tuple[object, ...] = ()
        self.rebuild_tables()

    def rebuild_tables(self) -> None:
        """(Re)compute the derived coordinate tables on the parameters' device and dtype."""
        weight = self.cpb_mlp[0].weight
        self.relative_coords_table = relative_coords_table(self.window, self.pretrained_window).to(weight)
        self.relative_position_index = relative_position_index(self.window).to(weight.device)
        self._cache.clear()

    def position_bias(self) -> torch.Tensor:
        """The continuous position bias, (nH, N, N), values in (0, 16)."""
        N = self.window * self.window
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)  # ((2ws-1)^2, nH)
        bias = table[self.relative_position_index.view(-1)].view(N, N, self.num_heads)  # (N, N, nH)
        return 16.0 * torch.sigmoid(bias.permute(2, 0, 1))  # (nH, N, N)

    def qkv_bias(self) -> torch.Tensor | None:
        """Bias of the fused projection: (q_bias, 0, v_bias), or None without biases."""
        if self.q_bias is None or self.v_bias is None:
            return None
        return torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))  # (3C,)

    def _input_independent_parameters(self) -> list[torch.Tensor]:
        return [p for p in (self.logit_scale, self.q_bias, self.v_bias, *self.cpb_mlp.parameters()) if p is not None]

    def _compute_terms(self, mask: torch.Tensor | None, dtype: torch.dtype) -> AttentionTerms:
        with torch.autocast(self.logit_scale.device.type, enabled=False):
            bias = self.position_bias().unsqueeze(0)  # (1, nH, N, N), in the parameters' dtype
            if mask is not None:
                bias = bias + mask.to(bias.dtype).unsqueeze(1)  # (nW, nH, N, N)
            scale = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()  # (nH, 1, 1)
        return AttentionTerms(bias.to(dtype).contiguous(), scale, self.qkv_bias())  # contiguous: viewed per window

    def attention_terms(self, mask: torch.Tensor | None, mask_key: object, dtype: torch.dtype) -> AttentionTerms:
        """Bias (+ mask) in `dtype`, temperature and qkv bias; cached when nothing needs their gradient.

        The cache is keyed by the mask's key and `dtype`, holds a few input sizes, and is dropped
        whenever any parameter it depends on is replaced (`.to()`) or modified in place (an optimizer
        step, `copy_`, `load_state_dict`), as seen by its storage and version counter. Writes through
        `param.data` bypass version counting by design in PyTorch: call `clear_cache` after them. It
        is bypassed in training mode, when gradients flow to the parameters, and under
        `torch.compile` (which traces the plain computation).
        """
        params = self._input_independent_parameters()
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

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        need_weights: bool = False,
        mask_key: object = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend within each window.

        Args:
            x: (B*nW, N, C) window tokens.
            mask: (nW, N, N) additive shift mask, or None.
            need_weights: also return the attention probabilities (uses the eager path).
            mask_key: a hashable that identifies `mask` (its padded grid and device) for the cache.

        Returns:
            (B*nW, N, C) and, if asked, (B*nW, nH, N, N) probabilities.
        """
        _, N, C = x.shape
        device = x.device.type
        compute_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        terms = self.attention_terms(mask, mask_key, compute_dtype)
        if need_weights or self.implementation == "eager":
            out, probs = self._explicit_attention(x, terms)
            return self.proj_drop(self.proj(out)), (probs if need_weights else None)
        if self.implementation == "triton" and self._triton_applies(x, compute_dtype):
            qkv = F.linear(x, self.qkv.weight, terms.qkv_bias)  # (B*nW, N, 3C)
            out = triton_attention.window_attention(qkv, terms.bias, terms.scale, self.num_heads)  # (B*nW, N, C)
            return self.proj_drop(self.proj(out)), None
        sdpa = self.implementation == "sdpa" or compute_dtype in (torch.float16, torch.bfloat16)
        # the one-node cosine attention, except where attention dropout acts or plain ops are required
        one_node = not ((self.training and self.attn_drop.p > 0) or kernels.plain_ops_required(x))

        def attend(windows: torch.Tensor, _: int) -> torch.Tensor:  # windows of whole images
            if sdpa:
                out = self._sdpa_attention(windows, terms)
            elif one_node:
                # the (w, N, 3C) projection is passed on, not kept: in inference the attention lets it
                # go once q, k and v are read
                out = cosine_attention.window_attention(
                    kernels.linear(windows, self.qkv.weight, terms.qkv_bias), terms.bias, terms.scale, self.num_heads
                )  # (w, N, C)
            else:
                out = self._explicit_attention(windows, terms)[0]
            return self.proj_drop(kernels.linear(out, self.proj.weight, self.proj.bias))

        bytes_per_window = 4 * N * (4 * C + 3 * self.num_heads * N)  # qkv, q, k, out; scores, probs, bias
        return kernels.in_row_chunks(attend, x, bytes_per_window, align=terms.bias.shape[0]), None

    def _triton_applies(self, x: torch.Tensor, dtype: torch.dtype) -> bool:
        """The fused kernels run where Triton can (CUDA), outside `torch.compile`, without attention
        dropout, for the dtypes and head sizes they take."""
        dropout = self.training and self.attn_drop.p > 0
        kernels_take_it = triton_attention.supports(dtype, x.shape[-1] // self.num_heads)
        return kernels_take_it and not (dropout or torch.compiler.is_compiling()) and triton_attention.available(x)

    def _explicit_attention(self, x: torch.Tensor, terms: AttentionTerms) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and probabilities materialised, op for op as transformers computes them.

        Args:
            x: (w, N, C) windows of whole images (w a multiple of the bias's nW).

        Returns:
            (w, N, C) attended values before the output projection, and (w, nH, N, N) probabilities.
        """
        B_, N, C = x.shape
        nH, Dh, nW = self.num_heads, C // self.num_heads, terms.bias.shape[0]
        qkv = F.linear(x, self.qkv.weight, terms.qkv_bias)  # (w, N, 3C)
        qkv = qkv.view(B_, N, 3, nH, Dh).permute(2, 0, 3, 1, 4)  # (3, w, nH, N, Dh)
        q, k, v = qkv.contiguous().unbind(0)  # each (w, nH, N, Dh), batch-contiguous for the matmuls
        scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)  # (w, nH, N, N)
        scores = scores * terms.scale.to(scores.dtype)
        scores = scores.view(-1, nW, nH, N, N) + terms.bias  # (w/nW, nW, nH, N, N)
        probs = scores.view(-1, nH, N, N).softmax(dim=-1)  # (w, nH, N, N)
        out = self.attn_drop(probs) @ v  # (w, nH, N, Dh)
        return out.transpose(1, 2).reshape(B_, N, C), probs  # (w, N, C)

    def _sdpa_attention(self, x: torch.Tensor, terms: AttentionTerms) -> torch.Tensor:
        """`scaled_dot_product_attention` on windows of whole images: (w, N, C) -> (w, N, C) before the
        output projection."""
        B_, N, C = x.shape
        nH, Dh, nW = self.num_heads, C // self.num_heads, terms.bias.shape[0]
        qkv = kernels.linear(x, self.qkv.weight, terms.qkv_bias)  # (w, N, 3C)
        q, k, v = qkv.view(B_, N, 3, nH, Dh).permute(2, 0, 3, 1, 4).unbind(0)  # (w, nH, N, Dh) strided views
        q, k = q.float(), k.float()  # no-ops in fp32; 16-bit q and k are normalised in fp32
        q = q * (terms.scale / torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(cosine_attention.NORM_EPS))
        k = k / torch.linalg.vector_norm(k, dim=-1, keepdim=True).clamp_min(cosine_attention.NORM_EPS)
        # Windows join the head dimension, so that each window's bias (+ mask) broadcasts over the
        # images instead of being copied once per image (an (w, nH, N, N) tensor, the size of the scores).
        images = B_ // nW
        q, k, v = (t.to(v.dtype).reshape(images, nW * nH, N, Dh) for t in (q, k, v))  # (images, nW*nH, N, Dh)
        bias = terms.bias.view(1, nW * nH, N, N)
        dropout = self.attn_drop.p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout, scale=1.0)  # like q
        return out.view(B_, nH, N, Dh).transpose(1, 2).reshape(B_, N, C)  # (w, N, C)


@dataclass(frozen=True)
class AttentionTerms:
    """The input-independent pieces of one attention call."""

    bias: torch.Tensor  # (1 or nW, nH, N, N): 16*sigmoid(cpb) (+ shift mask), in the compute dtype
    scale: torch.Tensor  # (nH, 1, 1): exp(min(logit_scale, log 100)), in the parameters' dtype
    qkv_bias: torch.Tensor | None  # (3C,): q_bias, zeros, v_bias


# --------------------------------------------------------------------------------------- block
class Swinv2Block(nn.Module):
    """(Shifted-)window attention and MLP, each with a residual post-norm: x + norm(f(x))."""

    def __init__(
        self,
        config: Swinv2Config,
        dim: int,
        num_heads: int,
        window: int,
        shift: int,
        pretrained_window: int,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.attn = WindowAttention(
            dim,
            num_heads,
            window,
            pretrained_window,
            config.qkv_bias,
            config.attention_probs_dropout_prob,
            config.attn_implementation,
        )
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.drop_path = DropPath(drop_path)
        self.mlp = Mlp(
            dim, int(dim * config.mlp_ratio), config.hidden_act, config.hidden_dropout_prob, config.attn_implementation
        )
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def forward(
        self, x: torch.Tensor, layout: WindowLayout, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: x (B, L, C) and the stage's `WindowLayout` for its grid.

        Returns (B, L, C) and, if asked, the attention probabilities.
        """
        B, L, C = x.shape
        order = layout.shifted if self.shift else layout.plain
        assert order is not None  # a stage has a shifted order whenever it has a shifted block
        windows = to_windows(x, order).view(-1, self.window * self.window, C)  # (B*nW, N, C): padded, rolled
        if self.shift:
            windows, probs = self.attn(windows, layout.mask, need_weights, layout.mask_key)
        else:
            windows, probs = self.attn(windows, None, need_weights)
        attended = to_grid(windows.view(B, -1, C), order)  # (B, L, C): rolled back, padding dropped
        x = x + self.drop_path(self.norm1(attended))
        if self.training or self.mlp.implementation == "eager":
            return x + self.drop_path(self.norm2(self.mlp(x))), probs
        hidden_bytes = 4 * self.mlp.fc1.out_features  # in eval mode drop path is the identity
        x = kernels.in_row_chunks(lambda rows, _: rows + self.norm2(self.mlp(rows)), x.view(B * L, C), hidden_bytes)
        return x.view(B, L, C), probs


class PatchMerging(nn.Module):
    """2x2 neighbourhoods -> one token: concat (4C), reduce to 2C, then norm (the V2 order)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

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


class Swinv2Stage(nn.Module):
    """Blocks alternating plain and shifted windows, then (except the last stage) patch merging."""

    def __init__(self, config: Swinv2Config, index: int, drop_paths: list[float]) -> None:
        super().__init__()
        dim = config.embed_dim * 2**index
        window, shift = stage_geometry(config, index)
        self.window = window
        self.shift = shift
        self.blocks = nn.ModuleList(
            Swinv2Block(
                config,
                dim,
                config.num_heads[index],
                window,
                shift if j % 2 else 0,
                config.pretrained_window_sizes[index],
                drop_paths[j],
            )
            for j in range(config.depths[index])
        )
        self.downsample = PatchMerging(dim) if index < config.num_layers - 1 else None
        self.gradient_checkpointing = False
        self._layouts: dict[tuple[Grid, torch.device], WindowLayout] = {}

    def layout(self, grid: Grid, device: torch.device) -> WindowLayout:
        """The window orders and shift mask of `grid`, cached for the last grid seen (rebuilt under compile)."""
        if torch.compiler.is_compiling():
            return self._build_layout(grid, device)
        key = (grid, device)
        if key not in self._layouts:
            with torch.inference_mode(False):  # plain tensors, reusable outside inference mode
                self._layouts = {key: self._build_layout(grid, device)}  # inputs of one size are the usual case
        return self._layouts[key]

    def _build_layout(self, grid: Grid, device: torch.device) -> WindowLayout:
        plain = window_order(grid, self.window, 0, device)
        if not (self.shift and len(self.blocks) > 1):
            return WindowLayout(plain, None, None, None)
        padded = (-(-grid[0] // self.window) * self.window, -(-grid[1] // self.window) * self.window)
        mask = shifted_window_mask(padded, self.window, self.shift, device=device, dtype=torch.float32)
        return WindowLayout(plain, window_order(grid, self.window, self.shift, device), mask, (padded, device))

    def forward(
        self, x: torch.Tensor, grid: Grid, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, Grid, torch.Tensor | None]:
        """Args: x (B, L, C), grid (H, W).

        Returns:
            tokens before merging (B, L, C), after merging (B, L', C'), the grid after merging,
            and, if asked, the last block's attention probabilities (B*nW, nH, N, N), which is what
            transformers reports per stage.
        """
        layout = self.layout(grid, x.device)
        probs = None
        for block in self.blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, probs = checkpoint(block, x, layout, need_weights, use_reentrant=False)
            else:
                x, probs = block(x, layout, need_weights)
        if self.downsample is None:
            return x, x, grid, probs
        merged, merged_grid = self.downsample(x, grid)
        return x, merged, merged_grid, probs


@dataclass(frozen=True)
class WindowLayout:
    """What a stage's blocks need for one input grid, independent of the input itself."""

    plain: WindowOrder  # token order of the unshifted windows
    shifted: WindowOrder | None  # of the shifted windows (None when the stage has no shifted block)
    mask: torch.Tensor | None  # (nW, N, N) shift mask of the padded grid, fp32
    mask_key: object  # (padded grid, device): identifies the mask for the attention-terms cache


# ------------------------------------------------------------------------------------ encoder
class PatchEmbed(nn.Module):
    """Pad to whole patches (bottom/right), project with a strided conv, flatten, norm."""

    def __init__(self, config: Swinv2Config) -> None:
        super().__init__()
        self.patch = config.patch_hw
        self.proj = nn.Conv2d(config.num_channels, config.embed_dim, kernel_size=self.patch, stride=self.patch)
        self.norm = nn.LayerNorm(config.embed_dim)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        """Args: pixel_values (B, C_in, H_img, W_img). Returns (B, L, C) tokens and their grid (H, W)."""
        pad_h = -pixel_values.shape[2] % self.patch[0]
        pad_w = -pixel_values.shape[3] % self.patch[1]
        if pad_h or pad_w:
            pixel_values = F.pad(pixel_values, (0, pad_w, 0, pad_h))
        x = self.proj(pixel_values)  # (B, C, H, W)
        grid = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), grid  # (B, L, C)


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
    """What one encoder pass produced (internal): embedding, per-stage tokens and grids, attentions."""

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


class Swinv2Model(Swinv2PreTrainedModel):
    """The Swin V2 encoder: patch embedding, stages, final norm, mean pooling.

    Any input height and width run: the image is padded to whole patches, every stage pads its grid
    to whole windows before the cyclic shift and builds the shift mask on the padded grid; windows
    and shifts are fixed per stage from `config.image_size`.

    Args:
        config: The model configuration.
        add_pooling_layer: Return `pooler_output` (mean over tokens).
        use_mask_token: Learn a mask token for `bool_masked_pos` (SimMIM).
        use_final_norm: Apply the final layer norm (a backbone has none).

    Example:
        >>> config = Swinv2Config(image_size=64, window_size=4, depths=(1, 1), num_heads=(1, 2), embed_dim=16)
        >>> model = Swinv2Model(config)
        >>> model(torch.randn(1, 3, 64, 64)).last_hidden_state.shape
        torch.Size([1, 64, 32])
    """

    encoder_prefix = ""
    hf_encoder_prefix = ""

    def __init__(
        self,
        config: Swinv2Config,
        add_pooling_layer: bool = True,
        use_mask_token: bool = False,
        use_final_norm: bool = True,
    ) -> None:
        super().__init__(config)
        self.add_pooling_layer = add_pooling_layer
        self.num_features = config.hidden_size
        self.patch_embed = PatchEmbed(config)
        grid = config.patch_grid
        self.pos_embed_grid = grid
        self.absolute_pos_embed = (
            nn.Parameter(torch.zeros(1, grid[0] * grid[1], config.embed_dim))
            if config.use_absolute_embeddings
            else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim)) if use_mask_token else None
        self.pos_drop = nn.Dropout(config.hidden_dropout_prob)
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths)).tolist()
        starts = [sum(config.depths[:i]) for i in range(config.num_layers)]
        self.layers = nn.ModuleList(
            Swinv2Stage(config, i, rates[starts[i] : starts[i] + config.depths[i]]) for i in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(self.num_features, eps=config.layer_norm_eps) if use_final_norm else None
        self.init_weights()

    def with_config(self, config: Swinv2Config) -> Swinv2Model:
        """A freshly initialised `Swinv2Model` with this one's pooling, mask-token and final-norm options."""
        return Swinv2Model(
            config,
            add_pooling_layer=self.add_pooling_layer,
            use_mask_token=self.mask_token is not None,
            use_final_norm=self.norm is not None,
        )

    def init_weights(self) -> None:
        """Truncated-normal linear weights, identity norms, logit scale log(10), zero q/v biases."""
        std = self.config.initializer_range
        self.apply(lambda m: trunc_normal_init(m, std))
        for module in self.modules():
            if isinstance(module, WindowAttention):
                nn.init.constant_(module.logit_scale, math.log(10.0))
                for bias in (module.q_bias, module.v_bias):
                    if bias is not None:
                        nn.init.zeros_(bias)
        if self.absolute_pos_embed is not None:
            trunc_normal_(self.absolute_pos_embed, std)
        if self.mask_token is not None:
            nn.init.zeros_(self.mask_token)

    def embed(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, Grid]:
        """Patch tokens with mask tokens and absolute positions applied: (B, L, C) and the grid."""
        check_pixel_values(pixel_values, self.config.num_channels)
        x, grid = self.patch_embed(pixel_values)  # (B, L, C)
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
        if self.absolute_pos_embed is not None:
            if grid != self.pos_embed_grid and not interpolate_pos_encoding:
                table_h, table_w = self.pos_embed_grid
                raise ValueError(
                    f"the absolute position table is for a {table_h}x{table_w} patch grid, "
                    f"this input gives {grid[0]}x{grid[1]}; pass interpolate_pos_encoding=True to resize it"
                )
            x = x + interpolate_grid_table(self.absolute_pos_embed, self.pos_embed_grid, grid)
        return self.pos_drop(x), grid

    def encode(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool = False,
    ) -> EncoderTrace:
        """Run the embedding and every stage, recording what the heads need (no final norm)."""
        x, grid = self.embed(pixel_values, bool_masked_pos, interpolate_pos_encoding)
        trace = EncoderTrace(x, grid)
        for stage in self.layers:
            before, x, new_grid, probs = stage(x, grid, output_attentions)
            trace.before_merge.append((before, grid))
            trace.after_merge.append((x, new_grid))
            if probs is not None:
                trace.attentions.append(probs)
            grid = new_grid
        return trace

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> Swinv2ModelOutput | tuple[torch.Tensor, ...]:
        """Encode images.

        Args:
            pixel_values: (B, num_channels, H, W) float.
            bool_masked_pos: (B, L) bool, patches to replace by the mask token (SimMIM).
            output_attentions: Also return every block's attention probabilities.
            output_hidden_states: Also return the embedding and every stage output.
            interpolate_pos_encoding: Resize the absolute position table to the input's grid.
            return_dict: False returns `to_tuple()` of the output, as transformers does.
        """
        trace = self.encode(pixel_values, bool_masked_pos, interpolate_pos_encoding, bool(output_attentions))
        tokens, _ = trace.last
        if self.norm is not None:
            tokens = self.norm(tokens)  # (B, L, C)
        hidden, reshaped = trace.hidden_states(before_merge=False) if output_hidden_states else (None, None)
        out = Swinv2ModelOutput(
            last_hidden_state=tokens,
            pooler_output=tokens.mean(dim=1) if self.add_pooling_layer else None,  # (B, C)
            hidden_states=hidden,
            attentions=tuple(trace.attentions) if output_attentions else None,
            reshaped_hidden_states=reshaped,
        )
        return out if return_dict is not False else out.to_tuple()


# --------------------------------------------------------------------------------------- heads
class Swinv2ForImageClassification(Swinv2PreTrainedModel):
    """`Swinv2Model` + a linear classifier on the pooled features (identity when num_labels == 0).

    The loss follows `config.problem_type`; when it is None: regression for one label, single-label
    cross-entropy for integer labels, multi-label BCE otherwise (transformers' rule).
    """

    def __init__(self, config: Swinv2Config) -> None:
        super().__init__(config)
        self.swinv2 = Swinv2Model(config)
        self.classifier: nn.Module = (
            nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.init_weights()

    def init_weights(self) -> None:
        """Initialise the classifier (the encoder initialises itself)."""
        trunc_normal_init(self.classifier, self.config.initializer_range)

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
        base = self.swinv2(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
        )
        logits = self.classifier(base.pooler_output)  # (B, num_labels)
        out = Swinv2ImageClassifierOutput(
            loss=None if labels is None else self.classification_loss(logits, labels),
            logits=logits,
            hidden_states=base.hidden_states,
            attentions=base.attentions,
            reshaped_hidden_states=base.reshaped_hidden_states,
        )
        return out if return_dict is not False else out.to_tuple()

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss `config.problem_type` names (or infers) for these logits and labels."""
        num_labels = self.config.num_labels
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

    def __init__(self, config: Swinv2Config) -> None:
        super().__init__(config)
        ph, pw = config.patch_hw
        total_stride = ph * 2 ** (config.num_layers - 1)
        if ph != pw or config.encoder_stride != total_stride:
            raise ValueError(
                f"masked image modeling needs encoder_stride ({config.encoder_stride}) equal to the encoder's "
                f"total stride, patch_size * 2**(num_stages - 1) = {config.patch_size} * 2**{config.num_layers - 1}"
                + ("" if ph != pw else f" = {total_stride}; set encoder_stride={total_stride}")
            )
        self.swinv2 = Swinv2Model(config, add_pooling_layer=False, use_mask_token=True)
        self.decoder = nn.Sequential(
            nn.Conv2d(config.hidden_size, config.encoder_stride**2 * config.num_channels, kernel_size=1),
            nn.PixelShuffle(config.encoder_stride),
        )
        self.init_weights()

    def init_weights(self) -> None:
        """Initialise the decoder (the encoder initialises itself)."""
        trunc_normal_init(self.decoder[0], self.config.initializer_range)

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
        base = self.swinv2(
            pixel_values,
            bool_masked_pos=bool_masked_pos,
            output_attentions=output_attentions,
            output_hidden_states=True,
            interpolate_pos_encoding=interpolate_pos_encoding,
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
        return out if return_dict is not False else out.to_tuple()


class Swinv2Backbone(Swinv2PreTrainedModel):
    """Multi-scale feature maps for detection and segmentation heads.

    `config.out_features` picks among `stem` (the patch embedding) and `stage1`..`stageN` (each stage's
    output before its patch merging); maps are channels-first (B, C_i, H_i, W_i), no final norm.
    """

    hf_encoder_prefix = ""  # transformers' backbone keeps the encoder at the top level

    def __init__(self, config: Swinv2Config) -> None:
        super().__init__(config)
        self.swinv2 = Swinv2Model(config, add_pooling_layer=False, use_final_norm=False)

    @property
    def out_features(self) -> list[str]:
        """Names of the returned feature maps."""
        return list(self.config.out_features or [])

    @property
    def channels(self) -> list[int]:
        """Channels of each returned feature map."""
        widths = [self.config.embed_dim] + [self.config.embed_dim * 2**i for i in range(self.config.num_layers)]
        return [widths[i] for i in self.config.out_indices or []]

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BackboneOutput | tuple[torch.Tensor, ...]:
        """Feature maps of `config.out_features`; `hidden_states` are the flat (B, L, C) versions of all levels."""
        trace = self.swinv2.encode(pixel_values, output_attentions=bool(output_attentions))
        hidden, reshaped = trace.hidden_states(before_merge=True)
        out = BackboneOutput(
            feature_maps=tuple(reshaped[i] for i in self.config.out_indices or []),
            hidden_states=hidden if output_hidden_states else None,
            attentions=tuple(trace.attentions) if output_attentions else None,
        )
        return out if return_dict is not False else out.to_tuple()
