"""`Swin2SRConfig`: the super-resolution model's hyper-parameters, validated, stored as transformers' config.json.

Field names and defaults are transformers' `Swin2SRConfig` (model_type "swin2sr"), so a config.json
written by `transformers.Swin2SRConfig.save_pretrained` loads here unchanged and the reverse holds.
Keys this library does not model (`architectures`, `id2label`, ...) are kept in `extra` and written back;
keys transformers does not write either log one warning per load (`swinv2.config` logger).

Validation refuses what transformers' Swin2SR cannot run (it checks none of it at construction and
fails in the forward or builds a model that cannot produce the promised size):

* `upsampler` "nearest+conv" upsamples exactly 4x; "pixelshuffle" and "pixelshuffle_aux" by a power
  of 2 or by 3; "" (no upsampler: denoising, JPEG artefact removal) keeps the size, so `upscale` is 1.
* `patch_size` is 1: every stage re-embeds its grid with a `patch_size` convolution and adds the
  stage's input back, which only fits at stride 1.
* `use_absolute_embeddings` is False: transformers' table has one row more than there are tokens and
  its forward fails on the sum.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from swinv2.config.common import (
    LEGACY_TRANSFORMERS_KEYS,
    MAX_SIZE,
    TRANSFORMERS_KEYS,
    ConfigFile,
    Problems,
    as_tuple,
    dtype_name,
    is_int,
    pair,
)
from swinv2.io.errors import ConfigError, quote

MODEL_TYPE = "swin2sr"

#: Values of `upsampler` ("" is no upsampler: the output keeps the input's size).
UPSAMPLERS = ("pixelshuffle", "pixelshuffle_aux", "pixelshuffledirect", "nearest+conv", "")
#: Values of `resi_connection`: one 3x3 convolution, or a 3x3 -> 1x1 -> 3x3 bottleneck at a quarter width.
RESI_CONNECTIONS = ("1conv", "3conv")

# Keys transformers derives from the fields; written for compatibility, recomputed on load.
_DERIVED_KEYS = ("num_layers", "model_type")
# transformers' `PreTrainedConfig` keys that a Swin2SR config.json holds and this config does not model.
_LABEL_KEYS = ("id2label", "label2id", "problem_type")


@dataclass
class Swin2SRConfig(ConfigFile):
    """Configuration of a Swin2SR model (transformers' `Swin2SRConfig` fields and defaults).

    Args:
        image_size: Input size the model is built for; fixes the window and shift of every block (a
            grid no larger than the window is one unshifted window). Any input size runs.
        patch_size: Must be 1 (see the module docstring); kept for transformers' field set.
        num_channels: Input image channels.
        num_channels_out: Output image channels (None: `num_channels`).
        embed_dim: Channels of every stage (Swin2SR does not downsample).
        depths: Swin V2 blocks per residual stage.
        num_heads: Attention heads per stage.
        window_size: Attention window side; inputs are reflect-padded to a multiple of it.
        mlp_ratio: MLP hidden width over block width.
        qkv_bias: Learn biases for queries and values.
        hidden_dropout_prob: Dropout on embeddings and MLP outputs.
        attention_probs_dropout_prob: Dropout on attention probabilities and attention output.
        drop_path_rate: Stochastic depth, increasing linearly to this rate over all blocks (applied in
            training; transformers computes the rates and never passes them on).
        hidden_act: MLP activation, one of `ACTIVATIONS`.
        use_absolute_embeddings: Must be False (see the module docstring).
        initializer_range: Std of the truncated normal used for weight initialisation.
        layer_norm_eps: Epsilon of the blocks' and final layer norms.
        upscale: Output size over input size (1 for restoration without upsampling).
        img_range: Pixel values are scaled by this after the mean is subtracted, and back at the end.
        resi_connection: The convolution closing each residual stage: "1conv" or "3conv".
        upsampler: "pixelshuffle", "pixelshuffle_aux", "pixelshuffledirect", "nearest+conv" or "".
        attn_implementation: As `Swinv2Config.attn_implementation`; a runtime choice, not written.
        return_dict, output_hidden_states, output_attentions, torchscript, dtype: transformers' common
            switches, as in `Swinv2Config` (`torch_dtype` in a file is read as `dtype`).
        extra: Keys of a loaded config.json this library does not use, written back unchanged.

    Example:
        >>> config = Swin2SRConfig(embed_dim=60, depths=(6, 6, 6, 6), num_heads=(6, 6, 6, 6),
        ...                        upsampler="pixelshuffledirect", upscale=4)
        >>> config.num_channels_out
        3
    """

    image_size: int | tuple[int, int] = 64
    patch_size: int | tuple[int, int] = 1
    num_channels: int = 3
    num_channels_out: int | None = None
    embed_dim: int = 180
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    window_size: int = 8
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.1
    hidden_act: str = "gelu"
    use_absolute_embeddings: bool = False
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    upscale: int = 2
    img_range: float = 1.0
    resi_connection: str = "1conv"
    upsampler: str = "pixelshuffle"
    attn_implementation: str = "auto"
    return_dict: bool = True
    output_hidden_states: bool = False
    output_attentions: bool = False
    torchscript: bool = False
    dtype: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    model_type = MODEL_TYPE  # a class attribute (no annotation: not a field), as in transformers
    derived_keys = _DERIVED_KEYS  # written by to_dict, dropped when read

    def __post_init__(self) -> None:
        if not isinstance(self.extra, Mapping):
            raise ConfigError(f"extra must be a dict of unused config.json keys; got {quote(self.extra)}")
        self.extra = dict(self.extra)
        candidates = (self.dtype, self.extra.pop("dtype", None), self.extra.pop("torch_dtype", None))
        self.dtype = dtype_name(next((c for c in candidates if c is not None), None))
        self.depths = as_tuple(self.depths)
        self.num_heads = as_tuple(self.num_heads)
        if isinstance(self.image_size, list):
            self.image_size = tuple(self.image_size)
        if isinstance(self.patch_size, list):
            self.patch_size = tuple(self.patch_size)
        if self.num_channels_out is None:
            self.num_channels_out = self.num_channels
        self._validate()

    # ------------------------------------------------------------------------------- derived
    @property
    def use_return_dict(self) -> bool:
        """Whether models return output dataclasses: `return_dict` and not `torchscript`."""
        return self.return_dict and not self.torchscript

    @property
    def num_layers(self) -> int:
        """Number of residual stages."""
        return len(self.depths)

    @property
    def hidden_size(self) -> int:
        """Channels of every stage (transformers maps `hidden_size` to `embed_dim`)."""
        return self.embed_dim

    @property
    def image_hw(self) -> tuple[int, int]:
        """`image_size` as (height, width)."""
        return pair(self.image_size, "image_size")

    @property
    def patch_grid(self) -> tuple[int, int]:
        """Token grid at `image_size` (patches are single pixels)."""
        return self.image_hw

    # ----------------------------------------------------------------------------- validation
    def _validate(self) -> None:
        """Check every field's type and range; raise one `ConfigError` listing every problem."""
        problems = Problems()
        problems.side_pair("image_size", self.image_size)
        patch = problems.side_pair("patch_size", self.patch_size)
        if patch is not None and patch != (1, 1):
            problems.add(
                f"patch_size must be 1 (Swin2SR works at full resolution: every stage re-embeds its grid and "
                f"adds its input back); got {quote(self.patch_size)}"
            )
        for name in ("num_channels", "num_channels_out", "embed_dim", "window_size", "upscale"):
            problems.size(name, getattr(self, name))
        _, stages_ok = problems.stages(self.depths, self.num_heads)
        if stages_ok and is_int(self.embed_dim) and 0 < self.embed_dim <= MAX_SIZE:
            for i, heads in enumerate(self.num_heads):
                if self.embed_dim % heads:
                    problems.add(f"embed_dim ({self.embed_dim}) must be divisible by num_heads[{i}] ({heads})")
        problems.block_fields(self)
        problems.real("img_range", self.img_range, "positive", lambda v: v > 0, 1e6)
        problems.choice("resi_connection", self.resi_connection, RESI_CONNECTIONS)
        if self.resi_connection == "3conv" and is_int(self.embed_dim) and 0 < self.embed_dim < 4:
            problems.add(
                f"resi_connection '3conv' needs embed_dim >= 4 (its bottleneck has embed_dim // 4 channels); "
                f"got embed_dim={self.embed_dim}"
            )
        if problems.choice("upsampler", self.upsampler, UPSAMPLERS) and is_int(self.upscale) and self.upscale > 0:
            self._check_upscale(problems)
        problems.flags(self)
        if self.use_absolute_embeddings is True:
            problems.add(
                "use_absolute_embeddings=True is not supported for Swin2SR (transformers' table has one row more "
                "than there are tokens and its forward fails); set use_absolute_embeddings=False"
            )
        problems.raise_if_any("Swin2SRConfig")

    def _check_upscale(self, problems: Problems) -> None:
        """The scales each upsampler can produce."""
        scale, upsampler = self.upscale, self.upsampler
        power_of_two = scale & (scale - 1) == 0
        if upsampler == "nearest+conv" and scale != 4:
            problems.add(f"upsampler 'nearest+conv' upsamples 4x only; got upscale={scale} (set upscale=4)")
        elif upsampler in ("pixelshuffle", "pixelshuffle_aux") and not (power_of_two or scale == 3):
            problems.add(
                f"upsampler {upsampler!r} needs upscale a power of 2 or 3; got upscale={scale} "
                "(use upsampler 'pixelshuffledirect' for other scales)"
            )
        elif upsampler == "" and scale != 1:
            problems.add(f"upsampler '' (none) keeps the input size; got upscale={scale} (set upscale=1)")
        if upsampler == "" and self.num_channels_out != self.num_channels:
            problems.add(
                f"upsampler '' (none) adds the input to the output: num_channels_out ({quote(self.num_channels_out)}) "
                f"must equal num_channels ({quote(self.num_channels)})"
            )

    # ------------------------------------------------------------------------------ edit/copy
    def _replace(self, changes: Mapping[str, Any], source: str | None) -> Swin2SRConfig:
        """`replace`; `source` names where unknown keys came from (None: warned already)."""
        if source is not None:
            self._warn_unknown(changes, source)
        data = self.to_dict()
        if "torch_dtype" in changes and "dtype" not in changes:
            data.pop("dtype", None)
        follows = self.num_channels_out == self.num_channels
        if "num_channels" in changes and "num_channels_out" not in changes and follows:
            data.pop("num_channels_out")  # it followed num_channels: keep following
        data.setdefault("attn_implementation", self.attn_implementation)
        data.setdefault("torchscript", self.torchscript)
        data.update(changes)
        return Swin2SRConfig._from_dict(data)

    # ---------------------------------------------------------------------------------- JSON
    @classmethod
    def _init_names(cls) -> set[str]:
        """Names `Swin2SRConfig(...)` takes."""
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def unknown_keys(cls, keys: Iterable[str]) -> list[str]:
        """The keys that name no field and that transformers does not write either."""
        known = (
            cls._init_names()
            | {"torch_dtype"}
            | set(_DERIVED_KEYS)
            | set(_LABEL_KEYS)
            | set(TRANSFORMERS_KEYS)
            | set(LEGACY_TRANSFORMERS_KEYS)
        )
        return [key for key in keys if key not in known]

    def to_dict(self) -> dict[str, Any]:
        """The transformers-format dict (derived keys included, unknown keys kept)."""
        out: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name != "extra":
                value = getattr(self, f.name)
                out[f.name] = list(value) if isinstance(value, tuple) else value
        out.pop("attn_implementation")  # a runtime choice, as in transformers
        if not self.torchscript:
            out.pop("torchscript")  # transformers 5 writes it only when it was set
        out["num_layers"] = self.num_layers
        out["model_type"] = MODEL_TYPE
        return dict(sorted(out.items()))

    def __repr__(self) -> str:
        return f"Swin2SRConfig {self.to_json_string()}"
