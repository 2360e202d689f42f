"""The one place that decides which computation runs: the plain-ops switch and the "auto" rule.

**Plain ops.** Every fast path steps aside for the model's plain PyTorch ops where
`swinv2.backends.plain.plain_ops_required` says so (inside `plain()`, while compile, export or
jit.trace trace, under `torch.func` and forward-mode AD).

**"auto".** Which attention runs for a call:
- the model's eager attention where the probabilities are asked for, attention dropout acts in
  training, or plain ops are required;
- SDPA in 16-bit compute dtypes (bf16/fp16 autocast or parameters), where it is fast and exact to the
  dtype's rounding;
- otherwise (fp32/fp64) the one-node cosine attention (`cosine_attention`), whose scores are the
  eager path's bit for bit and whose backward is written out.
"triton" takes the fused Triton kernels where they apply (CUDA, no dropout, supported head size),
else "auto"; "sdpa" takes SDPA except where the probabilities are asked for.
"""

from __future__ import annotations

import torch

from swinv2.backends import cosine_attention, triton_attention
from swinv2.backends.packed_linear import linear
from swinv2.backends.plain import plain_ops_required
from swinv2.backends.sdpa import sdpa_attention
from swinv2.models.swinv2 import AttentionTerms, Swinv2SelfAttention, eager_attention


def _dropout_acts(module: Swinv2SelfAttention) -> bool:
    return module.training and module.dropout.p > 0


def auto_attention(
    module: Swinv2SelfAttention, windows: torch.Tensor, terms: AttentionTerms, need_weights: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The "auto" rule (module docstring)."""
    if need_weights:
        return eager_attention(module, windows, terms, need_weights)
    if terms.bias.dtype in (torch.float16, torch.bfloat16):
        return sdpa_attention(module, windows, terms, need_weights)
    if _dropout_acts(module) or plain_ops_required(windows):
        return eager_attention(module, windows, terms, need_weights)
    qkv = linear(windows, terms.qkv_weight, terms.qkv_bias)  # (w, N, 3C), let go inside once read
    return cosine_attention.window_attention(qkv, terms.bias, terms.scale, module.num_heads), None


def sdpa_or_eager(
    module: Swinv2SelfAttention, windows: torch.Tensor, terms: AttentionTerms, need_weights: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SDPA, except where the probabilities are asked for."""
    if need_weights:
        return eager_attention(module, windows, terms, need_weights)
    return sdpa_attention(module, windows, terms, need_weights)


def triton_or_auto(
    module: Swinv2SelfAttention, windows: torch.Tensor, terms: AttentionTerms, need_weights: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fused Triton kernels where they apply, else `auto_attention`."""
    dtype = terms.bias.dtype
    applies = (
        not need_weights
        and not _dropout_acts(module)
        and not torch.compiler.is_compiling()
        and triton_attention.supports(dtype, windows.shape[-1] // module.num_heads)
        and triton_attention.available(windows)
    )
    if not applies:
        return auto_attention(module, windows, terms, need_weights)
    qkv = torch.nn.functional.linear(windows, terms.qkv_weight, terms.qkv_bias)  # (w, N, 3C)
    return triton_attention.window_attention(qkv, terms.bias, terms.scale, module.num_heads), None
