"""Window attention by `scaled_dot_product_attention`, with the cosine scores folded into q and k."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from swinv2.backends.cosine_attention import NORM_EPS
from swinv2.backends.packed_linear import linear

if TYPE_CHECKING:
    from swinv2.models.swinv2 import AttentionTerms, Swinv2SelfAttention


def sdpa_attention(
    module: Swinv2SelfAttention, windows: torch.Tensor, terms: AttentionTerms, need_weights: bool = False
) -> tuple[torch.Tensor, None]:
    """q and k normalised (in fp32) straight from the projection's output, the temperature folded into
    q, and SDPA with the bias (+ shift mask) as its additive mask. Returns ((w, N, C), None)."""
    w, N, C = windows.shape
    nH, Dh, nW = module.num_heads, C // module.num_heads, terms.bias.shape[0]
    qkv = linear(windows, terms.qkv_weight, terms.qkv_bias)  # (w, N, 3C)
    q, k, v = qkv.view(w, N, 3, nH, Dh).permute(2, 0, 3, 1, 4).unbind(0)  # (w, nH, N, Dh) strided views
    q, k = q.float(), k.float()  # no-ops in fp32; 16-bit q and k are normalised in fp32
    q = q * (terms.scale / torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(NORM_EPS))
    k = k / torch.linalg.vector_norm(k, dim=-1, keepdim=True).clamp_min(NORM_EPS)
    # Windows join the head dimension, so that each window's bias (+ mask) broadcasts over the
    # images instead of being copied once per image (an (w, nH, N, N) tensor, the size of the scores).
    images = w // nW
    q, k, v = (t.to(v.dtype).reshape(images, nW * nH, N, Dh) for t in (q, k, v))  # (B, nW*nH, N, Dh)
    bias = terms.bias.view(1, nW * nH, N, N)
    dropout = module.dropout.p if module.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout, scale=1.0)  # like q
    return out.view(w, nH, N, Dh).transpose(1, 2).reshape(w, N, C), None  # (w, N, C)
