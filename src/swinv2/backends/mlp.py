"""The MLP of a window block on the fast path: a training node for the exact-GELU MLP that keeps two
hidden-sized tensors fewer than autograd, and the packed linears (with fused GELU) in inference."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from swinv2.backends.packed_linear import linear
from swinv2.backends.plain import plain_ops_required

if TYPE_CHECKING:
    from swinv2.models.swinv2 import Swinv2Block


class _GeluMlp(torch.autograd.Function):
    """fc2(gelu(fc1(x))) on (R, C) rows for training, with gradients bit for bit autograd's.

    Two (R, hidden) tensors fewer than autograd's graph, the block's largest: the activation is not
    kept for fc2's weight gradient but recomputed from the saved pre-activation (one GELU pass, for a
    lower training peak at the same speed), and the backward writes
    fc2's input gradient over the recomputed activation once it is used, and the GELU's gradient over
    that, instead of allocating new tensors (fresh buffers this size cost page faults on the CPU).
    Under autocast it computes in the autocast dtype, casting its inputs as autocast casts a linear's
    and returning gradients in the inputs' own dtypes, as autograd's graph through the casts does.
    """

    @staticmethod
    def applies(x: torch.Tensor, fc1: nn.Linear, fc2: nn.Linear) -> bool:
        """Gradients are wanted, and only eager ops run (not compile, `torch.func` or forward-mode AD)."""
        if not torch.is_grad_enabled() or plain_ops_required(x):
            return False
        if not torch.is_autocast_enabled(x.device.type) and x.dtype != fc1.weight.dtype:
            return False  # the plain ops raise their own dtype error
        return any(t.requires_grad for t in (x, fc1.weight, fc1.bias, fc2.weight, fc2.bias))

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        fc1_weight: torch.Tensor,
        fc1_bias: torch.Tensor,
        fc2_weight: torch.Tensor,
        fc2_bias: torch.Tensor,
    ) -> torch.Tensor:
        device = x.device.type
        inputs: tuple[torch.Tensor, ...] = (x, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
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


def fast_mlp(block: Swinv2Block, x: torch.Tensor) -> torch.Tensor:
    """The block's MLP, (..., C) -> (..., C): `_GeluMlp` when training an exact-GELU MLP, else the
    packed linears (the exact GELU fused into the first); other activations run as modules. Linears
    replaced by wrappers (LoRA adapters) run through their own modules."""
    fc1, fc2, dropout = block.intermediate.dense, block.output.dense, block.output.dropout
    if type(fc1) is not nn.Linear or type(fc2) is not nn.Linear:  # wrapped (a PEFT adapter): its own forward
        return block.output(block.intermediate(x))
    gelu = block.intermediate.act_name == "gelu"
    if gelu and _GeluMlp.applies(x, fc1, fc2):
        rows = _GeluMlp.apply(x.reshape(-1, x.shape[-1]), fc1.weight, fc1.bias, fc2.weight, fc2.bias)  # (R, C)
        return dropout(rows.view(x.shape))
    if gelu:
        hidden = linear(x, fc1.weight, fc1.bias, gelu=True)  # (..., hidden)
    else:
        hidden = block.intermediate.intermediate_act_fn(linear(x, fc1.weight, fc1.bias))  # (..., hidden)
    return dropout(linear(hidden, fc2.weight, fc2.bias))
