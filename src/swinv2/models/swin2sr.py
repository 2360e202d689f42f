"""Swin2SR: image super-resolution and restoration from Swin V2 blocks.

References:
    Conde et al., "Swin2SR: SwinV2 Transformer for Compressed Image Super-Resolution and Restoration",
    ECCV Workshops 2022 (arXiv 2209.11345): SwinIR with the Swin V2 block.
    Liang et al., "SwinIR: Image Restoration Using Swin Transformer", ICCV Workshops 2021
    (arXiv 2108.10257): shallow convolution, residual stages of window blocks closed by a convolution,
    a global residual, and the upsamplers.

The blocks are `swinv2.models.swinv2.Swinv2Block`s on a `WindowLayout`, run by the same `run_blocks`
as a Swin V2 stage; nothing of the attention is copied. The module tree and parameter names are
transformers' (`swin2sr.first_convolution`, `swin2sr.encoder.stages.i.layers.j.attention.self.query`,
`swin2sr.encoder.stages.i.conv`, `upsample.*`), so transformers' Swin2SR state dicts and directories load
unchanged, and the reverse.

Shape legend (as `swinv2.models.swinv2`, plus):
    Hi, Wi  input image            Hp, Wp  image padded to whole windows (and the token grid: patches are pixels)
    s       upscale                F       upsampler channels (64)            C   embed_dim
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from swinv2.config import Swin2SRConfig
from swinv2.layers.windows import Grid, WindowLayout, clamp_window
from swinv2.models.base import PreTrainedModel
from swinv2.models.outputs import Swin2SRImageSuperResolutionOutput, Swin2SRModelOutput
from swinv2.models.size import SR_FEATURES, ModelSize, SRHead, swin2sr_size
from swinv2.models.swinv2 import BlockOptions, Swinv2Block, check_pixel_values, init_encoder_weights, run_blocks

#: Mean subtracted from RGB inputs (the DIV2K training set's, as in SwinIR and transformers); other
#: channel counts subtract nothing.
RGB_MEAN = (0.4488, 0.4371, 0.4040)

_ENCODER_KEY = re.compile(
    r"(first_convolution|embeddings\.patch_embeddings|encoder\.stages\.\d+|layernorm|conv_after_body)\."
)


def reflect_pad(pixel_values: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (B, C, Hi, Wi) at the bottom and right up to multiples of `multiple` by mirroring (`reflect`:
    the edge pixel is not repeated), as transformers' Swin2SR pads.

    torch's reflect pad needs the pad smaller than the side; a side too small for its pad is mirrored
    again and again, and a side of one pixel is repeated. Returns (B, C, Hp, Wp).
    """
    for dim in (2, 3):
        missing = -pixel_values.shape[dim] % multiple
        while missing:
            side = pixel_values.shape[dim]
            step = missing if side == 1 else min(missing, side - 1)
            pad = (0, 0, 0, step) if dim == 2 else (0, step, 0, 0)
            pixel_values = F.pad(pixel_values, pad, mode="replicate" if side == 1 else "reflect")
            missing -= step
    return pixel_values


def out_channels(config: Swin2SRConfig) -> int:
    """Channels of the reconstruction (`num_channels_out`, which the config sets from `num_channels`)."""
    return config.num_channels if config.num_channels_out is None else config.num_channels_out


def tokens_to_map(tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(B, L, C) tokens -> (B, C, H, W) map (contiguous, for convolutions)."""
    B, _, C = tokens.shape
    return tokens.transpose(1, 2).reshape(B, C, grid[0], grid[1])  # (B, C, H, W)


# -------------------------------------------------------------------------------- encoder
class Swin2SRPatchEmbeddings(nn.Module):
    """A `patch_size` (1x1) convolution, flattened to tokens, then (optionally) a layer norm."""

    def __init__(self, config: Swin2SRConfig, normalize: bool = True) -> None:
        super().__init__()
        C = config.embed_dim
        self.projection = nn.Conv2d(C, C, kernel_size=config.patch_size, stride=config.patch_size)
        self.layernorm = nn.LayerNorm(C) if normalize else None

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        """Args: features (B, C, H, W). Returns (B, L, C) tokens and their grid (H, W)."""
        x = self.projection(features)  # (B, C, H, W)
        grid = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)  # (B, L, C)
        if self.layernorm is not None:
            x = self.layernorm(x)
        return x, grid


class Swin2SREmbeddings(nn.Module):
    """Tokens of the shallow features: `patch_embeddings` (projection and norm), then dropout."""

    def __init__(self, config: Swin2SRConfig) -> None:
        super().__init__()
        self.patch_embeddings = Swin2SRPatchEmbeddings(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        tokens, grid = self.patch_embeddings(features)  # (B, L, C)
        return self.dropout(tokens), grid


def residual_convolution(dim: int, kind: str) -> nn.Module:
    """The convolution closing a residual stage: "1conv" one 3x3; "3conv" a 3x3 -> 1x1 -> 3x3 bottleneck
    at a quarter of the width, with LeakyReLU(0.2) between (fewer parameters)."""
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    quarter = dim // 4
    return nn.Sequential(
        nn.Conv2d(dim, quarter, 3, 1, 1),
        nn.LeakyReLU(negative_slope=0.2),
        nn.Conv2d(quarter, quarter, 1, 1, 0),
        nn.LeakyReLU(negative_slope=0.2),
        nn.Conv2d(quarter, dim, 3, 1, 1),
    )


class Swin2SRStage(nn.Module):
    """A residual Swin transformer block (RSTB): Swin V2 blocks alternating plain and shifted windows,
    a convolution, a 1x1 re-embedding, plus the stage's input.

    Args:
        config: The model configuration (block fields, `resi_connection`).
        num_heads: nH of this stage's blocks.
        window, shift: The blocks' window side and the shifted blocks' roll.
        drop_paths: Stochastic depth rate of each block (their count is the stage's depth).
    """

    def __init__(self, config: Swin2SRConfig, num_heads: int, window: int, shift: int, drop_paths: list[float]) -> None:
        super().__init__()
        C = config.embed_dim
        options = BlockOptions.from_config(config)
        self.windows = WindowLayout(window, shift if len(drop_paths) > 1 else 0)
        self.layers = nn.ModuleList(
            Swinv2Block(C, num_heads, window, shift if j % 2 else 0, drop_path=rate, options=options)
            for j, rate in enumerate(drop_paths)
        )
        self.conv = residual_convolution(C, config.resi_connection)
        self.patch_embed = Swin2SRPatchEmbeddings(config, normalize=False)
        self.gradient_checkpointing = False
        self.checkpoint_kwargs: dict[str, Any] = {"use_reentrant": False}  # for torch.utils.checkpoint

    def forward(
        self, x: torch.Tensor, grid: Grid, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: x (B, L, C) on `grid`. Returns (B, L, C) and, if asked, the last block's probabilities."""
        layout = self.windows.for_grid(grid, x.device)
        checkpointing = self.gradient_checkpointing and self.training
        out, probs = run_blocks(self.layers, x, layout, need_weights, self.checkpoint_kwargs if checkpointing else None)
        out, _ = self.patch_embed(self.conv(tokens_to_map(out, grid)))  # (B, L, C)
        return out + x, probs


class Swin2SREncoder(nn.Module):
    """The residual stages, all at width `embed_dim` on the full-resolution grid."""

    def __init__(self, config: Swin2SRConfig) -> None:
        super().__init__()
        # window and shift fixed from config.image_size, as transformers does (keyed on the height)
        window, shift = clamp_window(config.image_hw[0], config.window_size, config.window_size // 2)
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths), device="cpu").tolist()  # not on meta
        starts = [sum(config.depths[:i]) for i in range(config.num_layers)]
        self.stages = nn.ModuleList(
            Swin2SRStage(config, heads, window, shift, rates[start : start + depth])
            for start, depth, heads in zip(starts, config.depths, config.num_heads, strict=True)
        )

    def forward(
        self, x: torch.Tensor, grid: Grid, need_weights: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Args: x (B, L, C). Returns the last tokens, every stage's output and the attentions asked for."""
        states, attentions = [], []
        for stage in self.stages:
            x, probs = stage(x, grid, need_weights)
            states.append(x)
            if probs is not None:
                attentions.append(probs)
        return x, states, attentions


# ---------------------------------------------------------------------------- base model
class Swin2SRPreTrainedModel(PreTrainedModel):
    """Base of the Swin2SR models (`swin2sr.` prefix in the head; `upsample.` / `final_convolution.` head)."""

    config_class: type[Swin2SRConfig] = Swin2SRConfig
    config: Swin2SRConfig
    size_head: SRHead = "none"  # what `swin2sr_size` counts for this class
    base_model_prefix = "swin2sr"
    head_modules = ("upsample.", "final_convolution.")

    def __init__(self, config: Swin2SRConfig) -> None:
        super().__init__(config)

    @classmethod
    def config_size(cls, config: Swin2SRConfig) -> ModelSize:
        return swin2sr_size(config, cls.size_head)

    @classmethod
    def encoder_parameters(cls, config: Swin2SRConfig) -> int:
        return swin2sr_size(config, "none").parameters

    @staticmethod
    def is_encoder_key(key: str) -> bool:
        return _ENCODER_KEY.match(key) is not None


@dataclass(frozen=True)
class Encoded:
    """What one `Swin2SRModel` pass produced, on the padded grid (the head needs it uncropped)."""

    padded: torch.Tensor  # (B, C_in, Hp, Wp) input pixels, reflect-padded, not normalised
    features: torch.Tensor  # (B, C, Hp, Wp)
    states: tuple[torch.Tensor, ...]  # embedding + each stage, (B, Hp*Wp, C)
    attentions: list[torch.Tensor]  # each stage's last probabilities, when asked for


class Swin2SRModel(Swin2SRPreTrainedModel):
    """The Swin2SR body: shallow 3x3 convolution, residual stages of Swin V2 blocks, norm, 3x3
    convolution, plus the shallow features (a global residual).

    Any input height and width run: the image is reflect-padded at the bottom and right to whole
    `config.window_size` windows (as transformers pads; a side smaller than its padding is mirrored
    repeatedly), the stages run on the padded grid, and `last_hidden_state` is cropped back to the input's
    H, W. (transformers pads too, then fails to reshape unless H and W are multiples of the window.)
    Windows and shifts are fixed from `config.image_size`.

    Args:
        config: The model configuration.

    Example:
        >>> config = Swin2SRConfig(image_size=16, embed_dim=16, depths=(2,), num_heads=(2,), window_size=4)
        >>> Swin2SRModel(config)(torch.rand(1, 3, 10, 13)).last_hidden_state.shape
        torch.Size([1, 16, 10, 13])
    """

    mean: torch.Tensor  # (1, 3 or 1, 1, 1), a non-persistent buffer

    def __init__(self, config: Swin2SRConfig) -> None:
        super().__init__(config)
        C = config.embed_dim
        rgb = config.num_channels == 3 and config.num_channels_out == 3
        mean = torch.tensor(RGB_MEAN).view(1, 3, 1, 1) if rgb else torch.zeros(1, 1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.img_range = config.img_range
        self.first_convolution = nn.Conv2d(config.num_channels, C, 3, 1, 1)
        self.embeddings = Swin2SREmbeddings(config)
        self.encoder = Swin2SREncoder(config)
        self.layernorm = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.conv_after_body = nn.Conv2d(C, C, 3, 1, 1)
        self.post_init()

    def _initialize_weights(self) -> None:
        init_encoder_weights(self, self.config.initializer_range)

    def normalize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(pixels - mean) * img_range: what the network sees."""
        return (pixel_values - self.mean.to(pixel_values)) * self.img_range

    def denormalize(self, values: torch.Tensor) -> torch.Tensor:
        """values / img_range + mean: back to pixel values."""
        return values / self.img_range + self.mean.to(values)

    def encode(self, pixel_values: torch.Tensor, need_weights: bool = False) -> Encoded:
        """The body on the reflect-padded input; everything stays on the padded grid."""
        check_pixel_values(pixel_values, self.config.num_channels)
        padded = reflect_pad(pixel_values, self.config.window_size)  # (B, C_in, Hp, Wp)
        shallow = self.first_convolution(self.normalize(padded))  # (B, C, Hp, Wp)
        tokens, grid = self.embeddings(shallow)  # (B, L, C)
        last, states, attentions = self.encoder(tokens, grid, need_weights)
        deep = tokens_to_map(self.layernorm(last), grid)  # (B, C, Hp, Wp)
        features = self.conv_after_body(deep) + shallow  # (B, C, Hp, Wp)
        return Encoded(padded, features, (tokens, *states), attentions)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> Swin2SRModelOutput | tuple[Any, ...]:
        """Encode images.

        Args:
            pixel_values: (B, num_channels, Hi, Wi) float, pixel values in [0, 1] (times `img_range`
                is the network's scale).
            output_attentions: Also return every stage's last attention probabilities.
            output_hidden_states: Also return the embedding and every stage output (padded grid).
            return_dict: False returns a tuple: (last_hidden_state, then those of hidden_states,
                attentions that were asked for), as transformers does.
            (Each left None takes the config's value.)
        """
        output_attentions, output_hidden_states, return_dict = self._output_options(
            output_attentions, output_hidden_states, return_dict
        )
        encoded = self.encode(pixel_values, output_attentions)
        H, W = pixel_values.shape[2:]
        out = Swin2SRModelOutput(
            last_hidden_state=encoded.features[:, :, :H, :W],  # (B, C, Hi, Wi)
            hidden_states=encoded.states if output_hidden_states else None,
            attentions=tuple(encoded.attentions) if output_attentions else None,
        )
        return out if return_dict else out.to_tuple()


# ------------------------------------------------------------------------------ upsamplers
class PixelShuffleUpsample(nn.Module):
    """Upsampling by `scale` with 3x3 convolutions to 4F (or 9F) channels and pixel shuffles: one 2x step
    per factor 2 (`convolution_i`), or one 3x step (`convolution`). (B, F, H, W) -> (B, F, sH, sW)."""

    def __init__(self, scale: int, features: int) -> None:
        super().__init__()
        if scale & (scale - 1) == 0:
            for i in range(scale.bit_length() - 1):
                self.add_module(f"convolution_{i}", nn.Conv2d(features, 4 * features, 3, 1, 1))
                self.add_module(f"pixelshuffle_{i}", nn.PixelShuffle(2))
            names = [(f"convolution_{i}", f"pixelshuffle_{i}") for i in range(scale.bit_length() - 1)]
        else:  # 3, as the config allows
            self.convolution = nn.Conv2d(features, 9 * features, 3, 1, 1)
            self.pixelshuffle = nn.PixelShuffle(3)
            names = [("convolution", "pixelshuffle")]
        self.step_names = names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, shuffle in self.step_names:
            x = self.get_submodule(shuffle)(self.get_submodule(conv)(x))  # (B, F, 2H, 2W) or (B, F, 3H, 3W)
        return x


class PixelShuffleUpsampler(nn.Module):
    """The "pixelshuffle" upsampler (classical SR): conv to F, LeakyReLU, `PixelShuffleUpsample`, conv to the output."""

    def __init__(self, config: Swin2SRConfig) -> None:
        super().__init__()
        self.conv_before_upsample = nn.Conv2d(config.embed_dim, SR_FEATURES, 3, 1, 1)
        self.activation = nn.LeakyReLU()
        self.upsample = PixelShuffleUpsample(config.upscale, SR_FEATURES)
        self.final_convolution = nn.Conv2d(SR_FEATURES, out_channels(config), 3, 1, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C_out, sH, sW)."""
        return self.final_convolution(self.upsample(self.activation(self.conv_before_upsample(features))))


class PixelShuffleAuxUpsampler(nn.Module):
    """The "pixelshuffle_aux" upsampler (compressed-input SR): the features predict an auxiliary low-resolution image,
    which is re-embedded, upsampled and added to the embedded bicubic upsampling of the input.

    transformers' `conv_after_aux` takes 3 channels whatever `num_channels` is (so it runs only on RGB);
    here it takes `num_channels`, which is the same for RGB.
    """

    def __init__(self, config: Swin2SRConfig) -> None:
        super().__init__()
        c_in = config.num_channels
        self.conv_bicubic = nn.Conv2d(c_in, SR_FEATURES, 3, 1, 1)
        self.conv_before_upsample = nn.Conv2d(config.embed_dim, SR_FEATURES, 3, 1, 1)
        self.activation = nn.LeakyReLU()
        self.conv_aux = nn.Conv2d(SR_FEATURES, c_in, 3, 1, 1)
        self.conv_after_aux = nn.Sequential(nn.Conv2d(c_in, SR_FEATURES, 3, 1, 1), nn.LeakyReLU())
        self.upsample = PixelShuffleUpsample(config.upscale, SR_FEATURES)
        self.final_convolution = nn.Conv2d(SR_FEATURES, out_channels(config), 3, 1, 1)

    def forward(self, features: torch.Tensor, bicubic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: features (B, C, H, W); bicubic (B, C_in, sH, sW), the input upsampled.

        Returns the reconstruction (B, C_out, sH, sW) and the auxiliary image (B, C_in, H, W), normalised.
        """
        aux = self.conv_aux(self.activation(self.conv_before_upsample(features)))  # (B, C_in, H, W)
        x = self.upsample(self.conv_after_aux(aux)) + self.conv_bicubic(bicubic)  # (B, F, sH, sW)
        return self.final_convolution(x), aux


class UpsampleOneStep(nn.Module):
    """The "pixelshuffledirect" upsampler (lightweight SR): one 3x3 conv to s*s*C_out channels and one pixel shuffle."""

    def __init__(self, config: Swin2SRConfig) -> None:
        super().__init__()
        scale = config.upscale
        self.conv = nn.Conv2d(config.embed_dim, scale * scale * out_channels(config), 3, 1, 1)
        self.pixel_shuffle = nn.PixelShuffle(scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.pixel_shuffle(self.conv(features))  # (B, C_out, sH, sW)


class NearestConvUpsampler(nn.Module):
    """The "nearest+conv" upsampler (real-world SR, 4x): two nearest-neighbour 2x steps, each followed by a 3x3 conv and
    LeakyReLU(0.2), then a 3x3 conv, LeakyReLU(0.2) and the output conv."""

    def __init__(self, config: Swin2SRConfig) -> None:
        super().__init__()
        self.conv_before_upsample = nn.Conv2d(config.embed_dim, SR_FEATURES, 3, 1, 1)
        self.activation = nn.LeakyReLU()
        self.conv_up1 = nn.Conv2d(SR_FEATURES, SR_FEATURES, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(SR_FEATURES, SR_FEATURES, 3, 1, 1)
        self.conv_hr = nn.Conv2d(SR_FEATURES, SR_FEATURES, 3, 1, 1)
        self.final_convolution = nn.Conv2d(SR_FEATURES, out_channels(config), 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.conv_before_upsample(features))  # (B, F, H, W)
        x = self.lrelu(self.conv_up1(F.interpolate(x, scale_factor=2, mode="nearest")))  # (B, F, 2H, 2W)
        x = self.lrelu(self.conv_up2(F.interpolate(x, scale_factor=2, mode="nearest")))  # (B, F, 4H, 4W)
        return self.final_convolution(self.lrelu(self.conv_hr(x)))  # (B, C_out, 4H, 4W)


# ------------------------------------------------------------------------------------ head
class Swin2SRForImageSuperResolution(Swin2SRPreTrainedModel):
    """`Swin2SRModel` + the upsampler `config.upsampler` names: images in, images `upscale` times larger out.

    Any input size works: the input is reflect-padded to whole windows once, everything (the bicubic
    branch of "pixelshuffle_aux" and the input residual of "" included) runs on the padded image, and the
    reconstruction is cropped to (Hi*s, Wi*s). The result equals transformers' Swin2SR run on the same
    padded input and cropped; transformers itself runs only inputs whose sides are multiples of
    `window_size` (it pads, then fails to reshape).

    With no upsampler (""), the reconstruction is the input plus the features' convolution, then mapped
    back with `/ img_range + mean`, as transformers computes it.

    `labels` (B, C_out, Hi*s, Wi*s), when given, give the L1 loss of the reconstruction: the loss Swin2SR
    and SwinIR train classical SR with (transformers raises NotImplementedError instead).
    """

    size_head: SRHead = "upsampler"

    def __init__(self, config: Swin2SRConfig) -> None:
        super().__init__(config)
        self.swin2sr = Swin2SRModel(config)
        self.upsampler = config.upsampler
        self.upscale = config.upscale
        if config.upsampler == "pixelshuffle":
            self.upsample: nn.Module = PixelShuffleUpsampler(config)
        elif config.upsampler == "pixelshuffle_aux":
            self.upsample = PixelShuffleAuxUpsampler(config)
        elif config.upsampler == "pixelshuffledirect":
            self.upsample = UpsampleOneStep(config)
        elif config.upsampler == "nearest+conv":
            self.upsample = NearestConvUpsampler(config)
        else:
            self.final_convolution = nn.Conv2d(config.embed_dim, out_channels(config), 3, 1, 1)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> Swin2SRImageSuperResolutionOutput | tuple[Any, ...]:
        """Upscale images: `reconstruction` (B, C_out, Hi*s, Wi*s); `loss` (L1) when `labels` are given."""
        output_attentions, output_hidden_states, return_dict = self._output_options(
            output_attentions, output_hidden_states, return_dict
        )
        encoded = self.swin2sr.encode(pixel_values, output_attentions)
        features, padded, s = encoded.features, encoded.padded, self.upscale
        if self.upsampler == "pixelshuffle_aux":
            Hp, Wp = padded.shape[2:]
            bicubic = F.interpolate(padded, size=(Hp * s, Wp * s), mode="bicubic", align_corners=False)
            reconstruction, _ = self.upsample(features, bicubic)  # (B, C_out, sHp, sWp)
        elif self.upsampler:
            reconstruction = self.upsample(features)  # (B, C_out, sHp, sWp)
        else:  # transformers adds the (padded) input as given, not normalised
            reconstruction = padded + self.final_convolution(features)  # (B, C_out, Hp, Wp)
        H, W = pixel_values.shape[2:]
        reconstruction = self.swin2sr.denormalize(reconstruction)[:, :, : H * s, : W * s]  # (B, C_out, sHi, sWi)
        out = Swin2SRImageSuperResolutionOutput(
            loss=None if labels is None else self.reconstruction_loss(reconstruction, labels),
            reconstruction=reconstruction,
            hidden_states=encoded.states if output_hidden_states else None,
            attentions=tuple(encoded.attentions) if output_attentions else None,
        )
        return out if return_dict else out.to_tuple()

    @staticmethod
    def reconstruction_loss(reconstruction: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean absolute error against the high-resolution targets (same shape as the reconstruction)."""
        if not isinstance(labels, torch.Tensor) or labels.shape != reconstruction.shape:
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(
                f"labels must be the high-resolution images, shaped like the reconstruction "
                f"{tuple(reconstruction.shape)}; got {got}"
            )
        return F.l1_loss(reconstruction, labels.to(reconstruction))
