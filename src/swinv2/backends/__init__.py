"""Every fast path, registered with `swinv2.models.registry` under the names `attn_implementation` takes.

- "auto" (the default): the `dispatch.auto_attention` rule, packed CPU linears, the training MLP node,
  window gathers and CPU row blocks.
- "sdpa": the same, with `scaled_dot_product_attention` for every attention that can take it.
- "triton": the same, with fused Triton kernels on CUDA where they apply ("auto" elsewhere).
- "graph": plain ops laid out for graph runtimes (one q/k/v MatMul, window gathers along the token
  axis); what `swinv2.export` traces.
- "eager" is the model file's own reference arithmetic.

`plain()` switches every fast path to the plain ops (for export and deliberate tracing).
"""

from swinv2.backends.dispatch import auto_attention, sdpa_or_eager, triton_or_auto
from swinv2.backends.graph import GRAPH
from swinv2.backends.mlp import fast_mlp
from swinv2.backends.packed_linear import forget_packed, in_row_chunks, linear
from swinv2.backends.plain import plain, plain_ops_required
from swinv2.backends.window_gather import GatherWindows
from swinv2.models.registry import Backend, register_backend, register_cache_release

_GATHER = GatherWindows()
for _name, _attention in (("auto", auto_attention), ("sdpa", sdpa_or_eager), ("triton", triton_or_auto)):
    register_backend(Backend(_name, _attention, linear, fast_mlp, in_row_chunks, _GATHER))
register_cache_release(forget_packed)

__all__ = ["GRAPH", "plain", "plain_ops_required"]
