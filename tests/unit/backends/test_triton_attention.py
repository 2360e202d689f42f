"""The fused Triton window attention, checked without a GPU.

Values: `triton_interpreted_cases.py`, run here in a subprocess under Triton's CPU interpreter (the
same kernel, op by op in numpy) against a float64 reference of the formula and against the eager model.
Compilation: ahead of time for Hopper (sm_90) and Ampere (sm_80) with the ptxas Triton ships, so a
kernel that would not build for those GPUs fails here. On a GPU, `tests/gpu` checks it end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")


def test_values_under_the_interpreter() -> None:
    cases = Path(__file__).with_name("triton_interpreted_cases.py")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", str(cases)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]


FP32_POINTERS = {"scale_ptr", "lse_ptr", "delta_ptr", "dbias_ptr", "dscale_ptr"}  # the rest: the input dtype
KERNELS = ["window_attention_forward", "window_attention_backward_kv", "window_attention_backward_q"]


# Hopper in every dtype at the usual shape (head dim 32, blocks of 64 tokens); Ampere in bf16; a padded
# head dim (24) with the smallest blocks (16) in fp32.
TARGETS = [(90, dtype, 32, 64) for dtype in ("fp32", "bf16", "fp16")] + [(80, "bf16", 32, 64), (90, "fp32", 24, 16)]


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="compiles for the GPU, not interpreted")
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("arch", "dtype", "head_dim", "block"), TARGETS, ids=["-".join(map(str, t)) for t in TARGETS])
def test_kernel_compiles_for_the_gpu(kernel: str, arch: int, dtype: str, head_dim: int, block: int) -> None:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from swinv2.backends import _triton_kernels
    from swinv2.backends.triton_attention import _Launch

    function = getattr(_triton_kernels, kernel)
    names = function.arg_names
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    options = _Launch(block, head_dim, torch_dtype).options  # the launch the wrapper makes for N = block
    num_warps = options.pop("num_warps")
    constants = {**options, "STORE_LSE": True, "TERM_GRADS": True}
    constants = {name: value for name, value in constants.items() if name in names}
    signature = {name: "i32" for name in names}
    pointers = [name for name in names if name.endswith("_ptr")]
    signature.update({name: f"*{'fp32' if name in FP32_POINTERS else dtype}" for name in pointers})
    signature.update(dict.fromkeys(constants, "constexpr"))
    source = ASTSource(function, signature, constexprs={(names.index(k),): v for k, v in constants.items()})
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    assert compiled.asm["cubin"]  # ptxas built machine code for the architecture
    assert compiled.metadata.shared <= 163 * 1024  # fits an sm_80/sm_90 block's shared memory
    assert compiled.metadata.num_warps == num_warps


def test_wrapper_refuses_what_the_kernels_do_not_take() -> None:
    from swinv2.backends import triton_attention

    bias, scale = torch.zeros(1, 2, 16, 16), torch.ones(2)
    with pytest.raises(ValueError, match="got float64 and 8"):
        triton_attention.window_attention(torch.zeros(4, 16, 48, dtype=torch.float64), bias.double(), scale, 2)
    with pytest.raises(ValueError, match="heads of at most 256 channels; got float32 and 264"):
        triton_attention.window_attention(torch.zeros(4, 16, 3 * 528), bias, scale, 2)
    with pytest.raises(ValueError, match=r"qkv's last dimension \(50\) must be 3 \* C with C divisible by 2 heads"):
        triton_attention.window_attention(torch.zeros(4, 16, 50), bias, scale, 2)
    assert triton_attention.supports(torch.bfloat16, 32) and not triton_attention.supports(torch.float64, 32)
