"""The blocks are reusable outside the Swin V2 encoder: a super-resolution-style residual group (no
downsampling, its own window layout, a convolution after the blocks) is a few lines built from them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import perturb_
from swinv2.layers.windows import WindowLayout
from swinv2.models.swinv2 import BlockOptions, Swinv2Block


class ResidualGroup(nn.Module):
    """Blocks alternating plain and shifted windows on one layout, a 3x3 conv, and the group's residual."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, implementation: str) -> None:
        super().__init__()
        options = BlockOptions(implementation=implementation)
        self.windows = WindowLayout(window, window // 2)
        self.blocks = nn.ModuleList(
            Swinv2Block(dim, heads, window, shift=(window // 2) * (j % 2), options=options) for j in range(depth)
        )
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        B, C, H, W = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, L, C)
        layout = self.windows.for_grid((H, W), x.device)
        for block in self.blocks:
            tokens, _ = block(tokens, layout)
        return x + self.conv(tokens.transpose(1, 2).reshape(B, C, H, W))


@pytest.mark.parametrize("size", [(16, 16), (13, 22)])
def test_a_residual_group_runs_at_any_size_and_its_paths_agree(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    eager = perturb_(ResidualGroup(dim=12, depth=2, heads=3, window=4, implementation="eager")).eval()
    fast = ResidualGroup(dim=12, depth=2, heads=3, window=4, implementation="auto").eval()
    fast.load_state_dict(eager.state_dict())
    x = torch.randn(2, 12, *size)
    with torch.no_grad():
        expected = eager(x)
        torch.testing.assert_close(fast(x), expected, atol=1e-5, rtol=0)
    assert expected.shape == x.shape
    assert not torch.allclose(expected, x)  # the blocks and the conv did something


def test_block_parameter_names_are_transformers_layer_names() -> None:
    block = Swinv2Block(8, 2, 4)
    assert sorted(name for name, _ in block.named_parameters()) == sorted(
        [
            "attention.self.logit_scale",
            "attention.self.continuous_position_bias_mlp.0.weight",
            "attention.self.continuous_position_bias_mlp.0.bias",
            "attention.self.continuous_position_bias_mlp.2.weight",
            "attention.self.query.weight",
            "attention.self.query.bias",
            "attention.self.key.weight",
            "attention.self.value.weight",
            "attention.self.value.bias",
            "attention.output.dense.weight",
            "attention.output.dense.bias",
            "layernorm_before.weight",
            "layernorm_before.bias",
            "intermediate.dense.weight",
            "intermediate.dense.bias",
            "output.dense.weight",
            "output.dense.bias",
            "layernorm_after.weight",
            "layernorm_after.bias",
        ]
    )
