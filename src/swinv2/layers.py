"""Generic pieces of a windowed vision transformer: window orders, padding, stochastic depth, MLP, activations.

Shapes use the legend of `swinv2.models.swinv2`: B batch, H, W token grid, C channels,
(wh, ww) window, nW windows per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from swinv2 import kernels


def window_partition(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """Cut a channels-last grid into non-overlapping windows, row-major over windows.

    Args:
        x: (B, H, W, C) with H, W multiples of the window.
        window: (wh, ww).

    Returns:
        (B*nW, wh, ww, C).
    """
    B, H, W, C = x.shape
    wh, ww = window
    x = x.view(B, H // wh, wh, W // ww, ww, C)  # (B, H/wh, wh, W/ww, ww, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, wh, ww, C)  # (B*nW, wh, ww, C)


@dataclass(frozen=True)
class WindowOrder:
    """Where each token of a grid goes when the grid is padded, rolled and cut into windows, and back.

    The shifted-window partition (zero-pad bottom/right to whole windows, roll by -shift, cut) is a
    fixed permutation of the tokens plus zero slots, so one gather does it, and one gather undoes it
    (dropping the padding), instead of a pad, two rolls and two strided copies each way.
    """

    to_windows: torch.Tensor  # (nW*N,) int64: the grid token in each window slot (padding slots: 0)
    to_grid: torch.Tensor  # (H*W,) int64: the window slot of each grid token
    pad_slots: torch.Tensor | None  # (P,) int64: window slots that hold padding, None without padding


def window_order(grid: tuple[int, int], window: int, shift: int, device: torch.device | None = None) -> WindowOrder:
    """The `WindowOrder` of an (H, W) grid for square windows of side `window`, rolled by `-shift`.

    Built from static-shape arithmetic only, so that `torch.compile` can trace it.
    """
    H, W = grid
    Hp, Wp = -(-H // window) * window, -(-W // window) * window
    N, windows_per_row = window * window, Wp // window
    rows = (torch.arange(Hp, device=device) + shift) % Hp  # padded row shown at rolled row r (roll by -shift)
    cols = (torch.arange(Wp, device=device) + shift) % Wp
    padding = (rows[:, None] >= H) | (cols[None, :] >= W)  # (Hp, Wp)
    source = (rows[:, None] * W + cols[None, :]).masked_fill(padding, 0)  # (Hp, Wp): grid index shown there
    to_windows = window_partition(source[None, :, :, None], (window, window)).reshape(-1)  # (nW*N,)
    r = (torch.arange(H, device=device) + (Hp - shift)) % Hp  # rolled row of each grid row (kept >= 0:
    # inductor in torch 2.14 fails to compile this gather when the modulo operand can be negative)
    c = (torch.arange(W, device=device) + (Wp - shift)) % Wp
    slot_of_row = (r // window) * windows_per_row * N + (r % window) * window  # (H,)
    slot_of_col = (c // window) * N + c % window  # (W,)
    to_grid = (slot_of_row[:, None] + slot_of_col[None, :]).reshape(-1)  # (H*W,)
    pads = Hp * Wp - H * W
    if not pads:
        return WindowOrder(to_windows, to_grid, None)
    is_pad = window_partition(padding[None, :, :, None], (window, window)).reshape(-1)  # (nW*N,)
    pad_slots = torch.argsort(is_pad.to(torch.int8), descending=True, stable=True)[:pads]  # (P,)
    return WindowOrder(to_windows, to_grid, pad_slots)


class _GatherTokens(torch.autograd.Function):
    """out[b, i] = x[b, index[i]] (then `zero_out` slots set to 0); the gradient is gathered back by
    `inverse` (then `zero_grad` slots set to 0). Valid when index and inverse are mutually inverse on
    the slots that are not zeroed, as `WindowOrder`'s are: a gather both ways, no scatter-add."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        index: torch.Tensor,
        inverse: torch.Tensor,
        zero_out: torch.Tensor | None,
        zero_grad: torch.Tensor | None,
    ) -> torch.Tensor:
        ctx.save_for_backward(inverse, zero_grad)
        return _gather(x, index, zero_out)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        inverse, zero_grad = ctx.saved_tensors  # type: ignore[attr-defined]
        return _gather(grad, inverse, zero_grad), None, None, None, None


def _gather(x: torch.Tensor, index: torch.Tensor, zero: torch.Tensor | None) -> torch.Tensor:
    """(B, L, C) -> (B, len(index), C): rows of each image picked by `index`, `zero` rows cleared."""
    B, L, C = x.shape
    if B > 1:  # one gather over all images' rows: faster than index_select along dim 1
        index = (index + torch.arange(B, device=x.device)[:, None] * L).reshape(-1)  # (B*len(index),)
    out = x.reshape(B * L, C).index_select(0, index).view(B, -1, C)
    return out if zero is None else out.index_fill_(1, zero, 0.0)


def to_windows(x: torch.Tensor, order: WindowOrder) -> torch.Tensor:
    """(B, H*W, C) grid tokens -> (B, nW*N, C) window slots (padding slots zero)."""
    if torch.is_grad_enabled() and x.requires_grad and not kernels.transformed(x):
        return _GatherTokens.apply(x, order.to_windows, order.to_grid, order.pad_slots, None)
    return _gather(x, order.to_windows, order.pad_slots)


def to_grid(windows: torch.Tensor, order: WindowOrder) -> torch.Tensor:
    """(B, nW*N, C) window slots -> (B, H*W, C) grid tokens (padding dropped); inverse of `to_windows`."""
    if torch.is_grad_enabled() and windows.requires_grad and not kernels.transformed(windows):
        return _GatherTokens.apply(windows, order.to_grid, order.to_windows, None, order.pad_slots)
    return _gather(windows, order.to_grid, None)


def pad_bottom_right(x: torch.Tensor, multiple: tuple[int, int]) -> torch.Tensor:
    """Zero-pad a (B, H, W, C) grid at the bottom and right up to multiples of `multiple`."""
    _, H, W, _ = x.shape
    pad_h = -H % multiple[0]
    pad_w = -W % multiple[1]
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (B, H+pad_h, W+pad_w, C)
    return x


# Score offset of a masked pair. The official code uses -100 (transformers adds it twice, -200). Scores
# reach at most 100 (cosine x temperature) + 16 (bias), so with -100 a masked probability is about
# e^-100..e^-136: partly subnormal floats, which slow CPU matmuls several-fold. -1e4 underflows to an
# exact zero in every float type (it is representable in fp16 and bf16), as transformers' -200 does.
MASKED = -1e4


def shifted_window_mask(
    grid: tuple[int, int], window: int, shift: int, *, device: torch.device | None, dtype: torch.dtype
) -> torch.Tensor:
    """Additive mask that keeps shifted-window attention inside each pre-shift region.

    After rolling a (padded) grid by `-shift`, a window at the bottom/right edge holds tokens from
    up to 2x2 regions that were not neighbours; pairs from different regions get `MASKED`.

    Args:
        grid: (Hp, Wp), the padded grid (multiples of `window`).
        window: Window side.
        shift: Cyclic shift (> 0).

    Returns:
        (nW, N, N) with N = window**2, zeros and `MASKED`.
    """

    def region(length: int) -> torch.Tensor:
        index = torch.arange(length, device=device)
        return (index >= length - window).long() + (index >= length - shift).long()  # 0, 1 or 2

    Hp, Wp = grid
    label = region(Hp)[:, None] * 3 + region(Wp)[None, :]  # (Hp, Wp): one id per region
    windows = window_partition(label[None, :, :, None], (window, window))  # (nW, ws, ws, 1)
    windows = windows.reshape(-1, window * window)  # (nW, N)
    different = windows[:, None, :] != windows[:, :, None]  # (nW, N, N)
    return torch.zeros(different.shape, device=device, dtype=dtype).masked_fill(different, MASKED)


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample in training, scale survivors by 1/keep."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the fast GELU approximation of CLIP."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class FastGELU(nn.Module):
    """transformers' `gelu_fast`: the tanh GELU approximation written with x*x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


def activation(name: str) -> nn.Module:
    """The module for a transformers `hidden_act` name (see `swinv2.config.ACTIVATIONS`)."""
    factories = {
        "gelu": nn.GELU,
        "gelu_new": lambda: nn.GELU(approximate="tanh"),
        "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
        "gelu_fast": FastGELU,
        "quick_gelu": QuickGELU,
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "leaky_relu": nn.LeakyReLU,
        "silu": nn.SiLU,
        "swish": nn.SiLU,
        "mish": nn.Mish,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
        "linear": nn.Identity,
    }
    if name not in factories:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(factories)}")
    return factories[name]()


class _GeluMlp(torch.autograd.Function):
    """fc2(gelu(fc1(x))) on (R, C) rows for training, with gradients bit for bit autograd's.

    Two (R, hidden) tensors fewer than autograd's graph, the block's largest: the activation is not
    kept for fc2's weight gradient but recomputed from the saved pre-activation (one GELU pass; the
    tiny model's training peak drops by ~12% on the CPU at the same speed), and the backward writes
    fc2's input gradient over the recomputed activation once it is used, and the GELU's gradient over
    that, instead of allocating new tensors (fresh buffers this size cost page faults on the CPU).
    Under autocast it computes in the autocast dtype, casting its inputs as autocast casts a linear's
    and returning gradients in the inputs' own dtypes, as autograd's graph through the casts does.
    """

    @staticmethod
    def applies(x: torch.Tensor, fc1: nn.Linear, fc2: nn.Linear) -> bool:
        """Gradients are wanted, and only eager ops run (not compile, `torch.func` or forward-mode AD)."""
        if not torch.is_grad_enabled() or kernels.plain_ops_required(x):
            return False
        if not torch.is_autocast_enabled(x.device.type) and x.dtype != fc1.weight.dtype:
            return False  # the plain ops raise their own dtype error
        return any(t.requires_grad for t in (x, fc1.weight, fc1.bias, fc2.weight, fc2.bias))

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        fc1_weight: torch.Tensor,
        fc1_bias: torch.Tensor,
        fc2_weight: torch.Tensor,
        fc2_bias: torch.Tensor,
    ) -> torch.Tensor:
        device = x.device.type
        inputs = (x, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
        ctx.input_dtypes = [t.dtype for t in inputs]  # type: ignore[attr-defined]
        if torch.is_autocast_enabled(device):  # autocast's cast for a linear: floating, not float64
            dtype = torch.get_autocast_dtype(device)
            inputs = tuple(t.to(dtype) if t.is_floating_point() and t.dtype != torch.float64 else t for t in inputs)
        x, fc1_weight, fc1_bias, fc2_weight, fc2_bias = inputs
        with torch.autocast(device, enabled=False):
            hidden = torch.addmm(fc1_bias, x, fc1_weight.t())  # (R, hidden)
            out = torch.addmm(fc2_bias, F.gelu(hidden), fc2_weight.t())  # (R, C)
        ctx.save_for_backward(x, fc1_weight, hidden, fc2_weight)
        return out

    @staticmethod
    @once_differentiable  # its in-place GELU gradient records no graph: no double backward
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, fc1_weight, hidden, fc2_weight = ctx.saved_tensors  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        with torch.autocast(grad.device.type, enabled=False):
            grad = grad.to(hidden.dtype)
            grad_fc2_bias = grad.sum(0) if needs[4] else None
            grad_fc2_weight = grad_x = grad_fc1_weight = grad_fc1_bias = activation = None
            if needs[3]:
                activation = F.gelu(hidden)  # (R, hidden), recomputed
                grad_fc2_weight = grad.t() @ activation
            if any(needs[:3]):
                # (R, hidden): the activation's gradient (over the used activation: no new buffer), then,
                # in place, the hidden's
                grad_hidden = grad @ fc2_weight if activation is None else torch.mm(grad, fc2_weight, out=activation)
                torch.ops.aten.gelu_backward.grad_input(grad_hidden, hidden, approximate="none", grad_input=grad_hidden)
                grad_x = grad_hidden @ fc1_weight if needs[0] else None
                grad_fc1_weight = grad_hidden.t() @ x if needs[1] else None
                grad_fc1_bias = grad_hidden.sum(0) if needs[2] else None
        grads = (grad_x, grad_fc1_weight, grad_fc1_bias, grad_fc2_weight, grad_fc2_bias)
        return tuple(g if g is None else g.to(dtype) for g, dtype in zip(grads, ctx.input_dtypes, strict=True))  # type: ignore[attr-defined]


class Mlp(nn.Module):
    """fc1 -> activation -> fc2 -> dropout, on (..., C).

    `implementation` other than "eager" runs the linears through `swinv2.kernels.linear`, with an
    exact GELU fused into fc1, and trains an exact-GELU MLP through `_GeluMlp` (autograd's gradients
    with two hidden-sized tensors fewer).
    """

    def __init__(self, dim: int, hidden: int, act: str, dropout: float, implementation: str = "auto") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = activation(act)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)
        self.implementation = implementation
        self._gelu_fusable = act == "gelu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.implementation == "eager":
            return self.drop(self.fc2(self.act(self.fc1(x))))
        if self._gelu_fusable and _GeluMlp.applies(x, self.fc1, self.fc2):
            fc1, fc2 = self.fc1, self.fc2
            rows = _GeluMlp.apply(x.reshape(-1, x.shape[-1]), fc1.weight, fc1.bias, fc2.weight, fc2.bias)  # (R, C)
            return self.drop(rows.view(x.shape))
        if self._gelu_fusable:
            hidden = kernels.linear(x, self.fc1.weight, self.fc1.bias, gelu=True)  # (..., hidden)
        else:
            hidden = self.act(kernels.linear(x, self.fc1.weight, self.fc1.bias))  # (..., hidden)
        return self.drop(kernels.linear(hidden, self.fc2.weight, self.fc2.bias))


def interpolate_grid_table(table: torch.Tensor, source: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """Resize a (1, Hs*Ws, C) per-position table to (1, Ht*Wt, C) by bicubic interpolation."""
    if source == target:
        return table
    C = table.shape[-1]
    grid = table.reshape(1, source[0], source[1], C).permute(0, 3, 1, 2)  # (1, C, Hs, Ws)
    grid = F.interpolate(grid.float(), size=target, mode="bicubic", align_corners=False).to(table.dtype)
    return grid.permute(0, 2, 3, 1).reshape(1, target[0] * target[1], C)  # (1, Ht*Wt, C)


@torch.no_grad()
def trunc_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """Fill `tensor` from N(0, std^2) truncated to ±2 std, by inverting the CDF (one pass, no rejection loop)."""
    edge = math.erf(2.0 / math.sqrt(2.0))  # erf of the +2 std bound, in the (2*CDF - 1) scale
    tensor.uniform_(-edge, edge).erfinv_().mul_(std * math.sqrt(2.0))
    return tensor.clamp_(-2.0 * std, 2.0 * std)


def trunc_normal_init(module: nn.Module, std: float) -> None:
    """Initialise Linear/Conv weights from a truncated normal (±2 std), biases to zero, norms to identity."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        trunc_normal_(module.weight, std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


LOGIT_SCALE_MAX = math.log(1.0 / 0.01)  # the V2 paper clamps the cosine-attention temperature at 100
