"""The "graph" backend: the model's arithmetic in plain PyTorch ops, laid out for graph runtimes (ONNX
Runtime, `torch.export` programs). `swinv2.export` switches a model to it while it traces.

What differs from the reference ("eager") and why, as a graph runtime sees it:
- **q, k and v come from one product** on the stacked weight (`AttentionTerms.qkv_weight`), split by
  one Transpose and one Split, instead of three products and three Transposes.
- **The temperature is folded into the normalised queries**: cos(q, k) * t is computed as
  (q * t / |q|) . (k / |k|), a multiply on the (w, nH, N, Dh) queries instead of on the (w, nH, N, N)
  scores, which are 2x larger at N = 64, Dh = 32. No `expand` of the norms either (`F.normalize`
  materialises one per call).
- **Linears run on 2-D rows**, which export as Gemm with the bias inside; the GELU after the MLP's first
  linear is one operator (opset 20). In ONNX Runtime on a CPU this beats MatMul + Add on 3-D input,
  fused or not.
- **Window moves are one Gather along the token axis** with a precomputed index, padding slots reading
  an appended zero token: no roll, pad or strided copies, and no arithmetic on the batch size.

The bias and shift mask are computed from the parameters inside the trace; the exporter folds them
into one constant per block. Every function here equals the reference to rounding (the tests hold
them to it), and all of them are differentiable plain ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from swinv2.backends.window_gather import WindowOrder, window_order
from swinv2.layers.windows import GridWindows
from swinv2.models.registry import Backend, register_backend
from swinv2.models.swinv2 import AttentionTerms, Swinv2Block, Swinv2SelfAttention, eager_attention, whole

NORM_EPS = 1e-12  # F.normalize's floor on the norm


def graph_attention(
    module: Swinv2SelfAttention, windows: torch.Tensor, terms: AttentionTerms, need_weights: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled cosine attention with one q/k/v MatMul and the temperature on the queries.

    Args:
        windows: (w, N, C), windows of whole images.

    Returns:
        (w, N, C) context; the probabilities only through `eager_attention` (when asked for, or when
        attention dropout acts).
    """
    if need_weights or (module.training and module.dropout.p > 0):
        return eager_attention(module, windows, terms, need_weights)
    w, N, C = windows.shape
    nH, nW = module.num_heads, terms.bias.shape[0]
    qkv = graph_linear(windows, terms.qkv_weight, terms.qkv_bias)  # (w, N, 3C)
    q, k, v = qkv.view(w, N, 3 * nH, C // nH).transpose(1, 2).split(nH, dim=1)  # 3 x (w, nH, N, Dh)
    scale = terms.scale.to(q.dtype)  # (nH, 1, 1)
    q = q * (scale / q.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS))  # (w, nH, N, Dh), |q| = temperature
    k = k / k.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)  # (w, nH, N, Dh), unit rows
    scores = q @ k.transpose(-2, -1)  # (w, nH, N, N)
    # (1, nH, N, N) broadcasts over the windows; (nW, nH, N, N) over the images
    scores = scores + terms.bias if nW == 1 else (scores.view(-1, nW, nH, N, N) + terms.bias).view(w, nH, N, N)
    context = scores.softmax(dim=-1) @ v  # (w, nH, N, Dh)
    return context.transpose(1, 2).reshape(w, N, C), None  # (w, N, C)


def graph_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu: bool = False
) -> torch.Tensor:
    """`eager_linear` shaped for ONNX Runtime: (..., in) -> (..., out), the rows as one 2-D product (a Gemm,
    bias included), then the exact GELU as one operator when `gelu`."""
    out = F.linear(x.reshape(-1, x.shape[-1]), weight, bias)  # (rows, out)
    return (F.gelu(out) if gelu else out).view(*x.shape[:-1], weight.shape[0])


def graph_mlp(block: Swinv2Block, x: torch.Tensor) -> torch.Tensor:
    """The block's MLP, (..., C) -> (..., C), through `graph_linear`; wrapped linears (PEFT adapters) run
    their own modules."""
    fc1, fc2 = block.intermediate.dense, block.output.dense
    if type(fc1) is not nn.Linear or type(fc2) is not nn.Linear:
        return block.output(block.intermediate(x))
    if block.intermediate.act_name == "gelu":
        hidden = graph_linear(x, fc1.weight, fc1.bias, gelu=True)  # (..., hidden)
    else:
        hidden = block.intermediate.intermediate_act_fn(graph_linear(x, fc1.weight, fc1.bias))  # (..., hidden)
    return block.output.dropout(graph_linear(hidden, fc2.weight, fc2.bias))


def _gather_tokens(x: torch.Tensor, index: torch.Tensor, pad_slots: torch.Tensor | None, length: int) -> torch.Tensor:
    """(B, L, C) -> (B, len(index), C): x[:, index], where slots in `pad_slots` read a zero token."""
    if pad_slots is None:
        return x.index_select(1, index)
    zero = x.new_zeros(x.shape[0], 1, x.shape[-1])  # (B, 1, C)
    index = index.index_fill(0, pad_slots, length)  # padding slots read the appended zero token
    return torch.cat((x, zero), dim=1).index_select(1, index)


class GraphWindows:
    """`WindowMoves` as one Gather along the token axis each way (see module docstring)."""

    @staticmethod
    def _order(layout: GridWindows, shift: int) -> WindowOrder:
        return window_order(layout.grid, layout.window, shift, layout.device)

    def partition(self, hidden: torch.Tensor, layout: GridWindows, shift: int) -> torch.Tensor:
        """(B, H*W, C) -> (B*nW, N, C)."""
        order = self._order(layout, shift)
        N, C = layout.window * layout.window, hidden.shape[-1]
        return _gather_tokens(hidden, order.to_windows, order.pad_slots, hidden.shape[1]).view(-1, N, C)

    def reverse(self, windows: torch.Tensor, layout: GridWindows, shift: int) -> torch.Tensor:
        """(B*nW, N, C) -> (B, H*W, C)."""
        padded_tokens = layout.padded[0] * layout.padded[1]
        slots = windows.reshape(-1, padded_tokens, windows.shape[-1])  # (B, nW*N, C)
        return slots.index_select(1, self._order(layout, shift).to_grid)


GRAPH = register_backend(Backend("graph", graph_attention, graph_linear, graph_mlp, whole, GraphWindows()))
