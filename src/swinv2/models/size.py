"""What a config implies before anything is built: its parameter count and the memory to hold the
weights and run one image through them. Arithmetic on the config only (exact Python ints, no tensors),
so a hostile config.json is refused before it can allocate anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from swinv2.config import Swin2SRConfig, Swinv2Config
from swinv2.layers.windows import clamp_window, padded_grid

Head = Literal["none", "classifier", "decoder"]
SRHead = Literal["none", "upsampler"]  # Swin2SRModel, or Swin2SRForImageSuperResolution with `config.upsampler`
SR_FEATURES = 64  # channels of the Swin2SR upsamplers (transformers' and the paper's)
CPB_HIDDEN = 512  # the continuous position bias MLP's hidden width (the paper's)
FLOAT_BYTES = 4  # models are built in fp32
INDEX_BYTES = 8  # int64 relative-position indices
ACTIVATION_COPIES = 8  # tensors of a block's token size alive at once in one forward (residual, norms, q/k/v, ...)


@dataclass(frozen=True)
class ModelSize:
    """Parameters of a model and the memory one fp32 forward of one image at `image_size` needs."""

    parameters: int
    parameter_bytes: int
    activation_bytes: int

    @property
    def total_bytes(self) -> int:
        """Weights plus activations: what building and running the model needs at least."""
        return self.parameter_bytes + self.activation_bytes


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def block_parameters(dim: int, heads: int, mlp_ratio: float, qkv_bias: bool) -> int:
    """Parameters of one Swin V2 block of width `dim`."""
    hidden = int(dim * mlp_ratio)
    position_bias = 2 * CPB_HIDDEN + CPB_HIDDEN + CPB_HIDDEN * heads  # MLP 2 -> 512 -> nH, second without bias
    attention = 4 * dim * dim + dim + heads + (2 * dim if qkv_bias else 0)  # q, k, v, output (+ biases), logit scale
    mlp = 2 * dim * hidden + hidden + dim
    norms = 2 * 2 * dim
    return position_bias + attention + mlp + norms


def model_size(
    config: Swinv2Config, head: Head = "classifier", mask_token: bool = False, final_norm: bool = True
) -> ModelSize:
    """Parameters and memory of a model built from `config`.

    Args:
        config: The configuration.
        head: "classifier" (a linear layer on the pooled features), "decoder" (SimMIM's 1x1 convolution)
            or "none" (a bare encoder or backbone).
        mask_token: Whether the embeddings hold SimMIM's mask token.
        final_norm: Whether a layer norm follows the last stage (not in a backbone).

    Returns:
        A `ModelSize`; the parameter count is exact, the activation memory an estimate that errs large
        (a forward of one image at `config.image_size`, attention scores and position tables included).
    """
    C, (ph, pw) = config.embed_dim, config.patch_hw
    height, width = config.patch_grid
    parameters = config.num_channels * C * ph * pw + C + 2 * C  # stem convolution and its norm
    parameters += C if mask_token else 0
    parameters += (height * width + 1) * C if config.use_absolute_embeddings else 0
    activations = FLOAT_BYTES * config.num_channels * config.image_hw[0] * config.image_hw[1]
    for stage, (depth, heads) in enumerate(zip(config.depths, config.num_heads, strict=True)):
        dim = C * 2**stage
        parameters += depth * block_parameters(dim, heads, config.mlp_ratio, config.qkv_bias)
        if config.extra_norm_period:
            parameters += depth // config.extra_norm_period * 2 * dim  # main-branch norms
        window, _ = clamp_window(config.patch_grid[0] // 2**stage, config.window_size, config.window_size // 2)
        tokens = _ceil_to(max(height, 1), window) * _ceil_to(max(width, 1), window)  # padded grid
        per_window = window * window
        tables = per_window * per_window * (INDEX_BYTES + FLOAT_BYTES * (heads + 1))  # index, bias, shift mask
        scores = FLOAT_BYTES * heads * tokens * per_window  # every window's (nH, N, N) scores
        mlp_tokens = FLOAT_BYTES * tokens * int(dim * config.mlp_ratio)
        activations = max(
            activations, depth * tables + scores + mlp_tokens + FLOAT_BYTES * ACTIVATION_COPIES * tokens * dim
        )
        if stage < config.num_layers - 1:
            parameters += 4 * dim * 2 * dim + 2 * 2 * dim  # patch merging: reduction and norm
            height, width = -(-height // 2), -(-width // 2)
    hidden = config.hidden_size
    parameters += 2 * hidden if final_norm else 0
    if head == "classifier":
        labels = config.num_labels or 0
        parameters += hidden * labels + labels
    elif head == "decoder":
        out = config.encoder_stride**2 * config.num_channels
        parameters += hidden * out + out
    return ModelSize(parameters, FLOAT_BYTES * parameters, activations)


def _conv3(cin: int, cout: int) -> int:
    """Parameters of a 3x3 convolution with bias."""
    return cin * cout * 9 + cout


def _pixel_shuffle_upsample(features: int, scale: int) -> int:
    """Parameters of the 2x-steps (or one 3x) convolution + pixel shuffle upsampling of Swin2SR."""
    if scale & (scale - 1) == 0:
        return (scale.bit_length() - 1) * _conv3(features, 4 * features)
    return _conv3(features, 9 * features)


def swin2sr_size(config: Swin2SRConfig, head: SRHead = "upsampler") -> ModelSize:
    """Parameters and memory of a Swin2SR model built from `config`.

    Args:
        config: The configuration.
        head: "upsampler" (`Swin2SRForImageSuperResolution` with `config.upsampler`) or "none"
            (`Swin2SRModel`).

    Returns:
        A `ModelSize`; the parameter count is exact, the activation memory an estimate that errs large
        (a forward of one image at `config.image_size`, upsampled output included).
    """
    C, F = config.embed_dim, SR_FEATURES
    c_in, c_out = config.num_channels, config.num_channels_out or config.num_channels
    height, width = padded_grid(config.image_hw, config.window_size)  # inputs are padded to whole windows
    window, _ = clamp_window(config.image_hw[0], config.window_size, config.window_size // 2)
    tokens = _ceil_to(height, window) * _ceil_to(width, window)
    if config.resi_connection == "1conv":
        residual = _conv3(C, C)
    else:
        quarter = C // 4
        residual = _conv3(C, quarter) + quarter * quarter + quarter + _conv3(quarter, C)
    parameters = _conv3(c_in, C) + (C * C + C) + 2 * C  # first convolution, patch projection (1x1) and norm
    activations = 0
    per_window = window * window
    for depth, heads in zip(config.depths, config.num_heads, strict=True):
        parameters += depth * block_parameters(C, heads, config.mlp_ratio, config.qkv_bias)
        parameters += residual + C * C + C  # the stage's closing convolution(s) and 1x1 re-embedding
        tables = per_window * per_window * (INDEX_BYTES + FLOAT_BYTES * (heads + 1))
        scores = FLOAT_BYTES * heads * tokens * per_window
        mlp_tokens = FLOAT_BYTES * tokens * int(C * config.mlp_ratio)
        stage = depth * tables + scores + mlp_tokens + FLOAT_BYTES * ACTIVATION_COPIES * tokens * C
        activations = max(activations, stage)
    parameters += 2 * C + _conv3(C, C)  # final norm, convolution after the body
    scale, upsampler = config.upscale, config.upsampler
    if head == "upsampler":
        if upsampler == "pixelshuffle":
            parameters += _conv3(C, F) + _pixel_shuffle_upsample(F, scale) + _conv3(F, c_out)
        elif upsampler == "pixelshuffle_aux":
            parameters += _conv3(c_in, F) + _conv3(C, F) + _conv3(F, c_in) + _conv3(c_in, F)
            parameters += _pixel_shuffle_upsample(F, scale) + _conv3(F, c_out)
        elif upsampler == "pixelshuffledirect":
            parameters += _conv3(C, scale * scale * c_out)
        elif upsampler == "nearest+conv":
            parameters += _conv3(C, F) + 3 * _conv3(F, F) + _conv3(F, c_out)
        else:
            parameters += _conv3(C, c_out)
        upsampled = FLOAT_BYTES * height * width * scale * scale * (4 * F + c_in + c_out)  # a few F-wide maps
        activations = max(activations, upsampled + FLOAT_BYTES * ACTIVATION_COPIES * height * width * F)
    return ModelSize(parameters, FLOAT_BYTES * parameters, activations)
