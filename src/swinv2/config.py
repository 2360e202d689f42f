"""`Swinv2Config`: the model's hyper-parameters, validated in one place, stored as transformers' config.json.

Field names and defaults are transformers' (model_type "swinv2"), so a config.json written by
`transformers.Swinv2Config.save_pretrained` loads here unchanged and the reverse holds too. Keys this
library does not know (`architectures`, `transformers_version`, `dtype`, ...) are kept in `extra` and
written back on save.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swinv2.io.files import atomic_write_text

CONFIG_NAME = "config.json"
MODEL_TYPE = "swinv2"

#: Activation names accepted for `hidden_act` (transformers' names for the same functions).
ACTIVATIONS = (
    "gelu",
    "gelu_new",
    "gelu_pytorch_tanh",
    "gelu_fast",
    "quick_gelu",
    "relu",
    "relu6",
    "leaky_relu",
    "silu",
    "swish",
    "mish",
    "tanh",
    "sigmoid",
    "linear",
)

ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "triton")

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")

# Keys transformers derives from the fields; written for compatibility, recomputed on load.
_DERIVED_KEYS = ("hidden_size", "num_layers", "stage_names", "model_type")


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a (height, width) pair; got {value!r}")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be an int or a (height, width) pair of ints; got {value!r}")


@dataclass
class Swinv2Config:
    """Configuration of a Swin Transformer V2 model (transformers' `Swinv2Config` fields and defaults).

    Args:
        image_size: Input size the model is built for; fixes each stage's window and shift, and the
            absolute position table. Any input size runs; see `Swinv2Model`.
        patch_size: Side of the square (or (h, w)) patches of the stem convolution.
        num_channels: Input image channels.
        embed_dim: Channels of stage 1; stage i has `embed_dim * 2**i`.
        depths: Blocks per stage.
        num_heads: Attention heads per stage.
        window_size: Attention window side (clamped per stage to the stage's grid).
        pretrained_window_sizes: Window the continuous position bias was trained with, per stage
            (0: this model's own window). transformers writes the 4-entry default for any depth,
            so trailing zero entries beyond `len(depths)` are accepted and ignored.
        mlp_ratio: MLP hidden width over block width.
        qkv_bias: Learn biases for queries and values (keys never have one).
        hidden_dropout_prob: Dropout on embeddings and MLP outputs.
        attention_probs_dropout_prob: Dropout on attention probabilities and attention output.
        drop_path_rate: Stochastic depth, increasing linearly to this rate over all blocks.
        hidden_act: MLP activation, one of `ACTIVATIONS`.
        use_absolute_embeddings: Add a learned (1, N, C) position table after the patch norm.
        initializer_range: Std of the truncated normal used for weight initialisation.
        layer_norm_eps: Epsilon of the blocks' and final layer norms.
        encoder_stride: Upsampling factor of the SimMIM decoder.
        out_features / out_indices: Stages a `Swinv2Backbone` returns (`stem`, `stage1`..).
        id2label / label2id: Class names.
        num_labels: Number of classes; builds `LABEL_i` names when `id2label` is not given.
        problem_type: Classification loss: regression, single- or multi-label (None: inferred).
        attn_implementation: "eager" (explicit scores and plain ops: the reference, op for op
            transformers' arithmetic), "sdpa" (fused `scaled_dot_product_attention`: its own
            summation order, less memory) or "auto" (the default: explicit scores in fp32/fp64,
            SDPA in bf16/fp16). "sdpa" and "auto" also take the faster inference kernels of
            `swinv2.kernels`. "triton": one fused Triton kernel per attention on CUDA, forward and
            backward (`swinv2.triton_attention`; opt-in until measured on a GPU), "auto" elsewhere
            (CPU, `torch.compile`, attention dropout in training, no Triton). A runtime choice, as
            in transformers; not written to config.json.
        extra: Keys of a loaded config.json this library does not use, written back unchanged.

    Example:
        >>> config = Swinv2Config(image_size=256, window_size=8)
        >>> config.hidden_size
        768
    """

    image_size: int | tuple[int, int] = 224
    patch_size: int | tuple[int, int] = 4
    num_channels: int = 3
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    pretrained_window_sizes: tuple[int, ...] = (0, 0, 0, 0)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.1
    hidden_act: str = "gelu"
    use_absolute_embeddings: bool = False
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    encoder_stride: int = 32
    out_features: list[str] | None = None
    out_indices: list[int] | None = None
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None
    num_labels: int | None = None
    attn_implementation: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.depths = tuple(self.depths)
        self.num_heads = tuple(self.num_heads)
        self.pretrained_window_sizes = tuple(self.pretrained_window_sizes)
        if isinstance(self.image_size, list):
            self.image_size = tuple(self.image_size)
        if isinstance(self.patch_size, list):
            self.patch_size = tuple(self.patch_size)
        self._init_labels(self.num_labels)
        self._validate()
        self._align_out_features()

    # ----------------------------------------------------------------------------------- labels
    def _init_labels(self, num_labels: int | None) -> None:
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            if num_labels is not None and num_labels != len(self.id2label):
                raise ValueError(
                    f"num_labels ({num_labels}) does not match id2label, which has {len(self.id2label)} "
                    "entries; pass one of them"
                )
        else:
            count = 2 if num_labels is None else num_labels
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"num_labels must be a non-negative int; got {num_labels!r}")
            self.id2label = {i: f"LABEL_{i}" for i in range(count)}
        if self.label2id is None or set(self.label2id.values()) != set(self.id2label):
            self.label2id = {name: i for i, name in self.id2label.items()}
        else:
            self.label2id = {str(k): int(v) for k, v in self.label2id.items()}
        self.num_labels = len(self.id2label)

    # ------------------------------------------------------------------------------- derived
    @property
    def num_layers(self) -> int:
        """Number of stages."""
        return len(self.depths)

    @property
    def hidden_size(self) -> int:
        """Channels of the last stage (the pooled feature width)."""
        return int(self.embed_dim * 2 ** (self.num_layers - 1))

    @property
    def stage_names(self) -> list[str]:
        """Names of the feature levels a backbone can return: `stem`, `stage1`, ..."""
        return ["stem"] + [f"stage{i}" for i in range(1, self.num_layers + 1)]

    @property
    def image_hw(self) -> tuple[int, int]:
        """`image_size` as (height, width)."""
        return _pair(self.image_size, "image_size")

    @property
    def patch_hw(self) -> tuple[int, int]:
        """`patch_size` as (height, width)."""
        return _pair(self.patch_size, "patch_size")

    @property
    def patch_grid(self) -> tuple[int, int]:
        """Token grid of the stem at `image_size` (floor division, as transformers)."""
        (h, w), (ph, pw) = self.image_hw, self.patch_hw
        return (h // ph, w // pw)

    # ----------------------------------------------------------------------------- validation
    def _validate(self) -> None:
        errors: list[str] = []
        (h, w), (ph, pw) = self.image_hw, self.patch_hw
        if min(h, w) <= 0:
            errors.append(f"image_size must be positive; got {self.image_size!r}")
        if min(ph, pw) <= 0:
            errors.append(f"patch_size must be positive; got {self.patch_size!r}")
        for name in ("num_channels", "embed_dim", "window_size", "encoder_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                errors.append(f"{name} must be a positive int; got {value!r}")
        if not self.depths:
            errors.append("depths must name at least one stage; got ()")
        if any((not isinstance(d, int)) or d <= 0 for d in self.depths):
            errors.append(f"depths must be positive ints; got {list(self.depths)}")
        if any((not isinstance(n, int)) or n <= 0 for n in self.num_heads):
            errors.append(f"num_heads must be positive ints; got {list(self.num_heads)}")
        if len(self.depths) != len(self.num_heads):
            errors.append(
                f"len(depths) ({len(self.depths)}) must equal len(num_heads) ({len(self.num_heads)}): "
                f"depths={list(self.depths)}, num_heads={list(self.num_heads)}"
            )
        elif isinstance(self.embed_dim, int) and self.embed_dim > 0:
            for i, heads in enumerate(self.num_heads):
                width = self.embed_dim * 2**i
                if heads > 0 and width % heads:
                    errors.append(
                        f"stage {i + 1} width embed_dim * 2**{i} ({width}) must be divisible by "
                        f"num_heads[{i}] ({heads})"
                    )
        pws = self.pretrained_window_sizes
        if any((not isinstance(p, int)) or p < 0 for p in pws):
            errors.append(f"pretrained_window_sizes must be non-negative ints; got {list(pws)}")
        elif len(pws) < len(self.depths) or any(pws[len(self.depths) :]):
            errors.append(f"pretrained_window_sizes needs one entry per stage ({len(self.depths)}); got {list(pws)}")
        if not (isinstance(self.mlp_ratio, (int, float)) and self.mlp_ratio > 0):
            errors.append(f"mlp_ratio must be positive; got {self.mlp_ratio!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                errors.append(f"{name} must be in [0, 1); got {value!r}")
        if self.hidden_act not in ACTIVATIONS:
            errors.append(f"hidden_act {self.hidden_act!r} is not supported; choose one of {list(ACTIVATIONS)}")
        if not (isinstance(self.layer_norm_eps, (int, float)) and self.layer_norm_eps > 0):
            errors.append(f"layer_norm_eps must be positive; got {self.layer_norm_eps!r}")
        if not (isinstance(self.initializer_range, (int, float)) and self.initializer_range >= 0):
            errors.append(f"initializer_range must be non-negative; got {self.initializer_range!r}")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            errors.append(
                f"attn_implementation {self.attn_implementation!r} is not one of {list(ATTN_IMPLEMENTATIONS)}"
            )
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            errors.append(f"problem_type {self.problem_type!r} is not one of {list(PROBLEM_TYPES)}")
        if errors:
            raise ValueError("invalid Swinv2Config: " + "; ".join(errors))

    def _align_out_features(self) -> None:
        names = self.stage_names
        features, indices = self.out_features, self.out_indices
        if features is not None:
            features = list(features)
            unknown = [f for f in features if f not in names]
            if unknown:
                raise ValueError(f"out_features {unknown} are not stage names; choose from {names}")
            if len(set(features)) != len(features) or features != [n for n in names if n in features]:
                raise ValueError(f"out_features must be unique and in stage order {names}; got {features}")
        if indices is not None:
            indices = [i % len(names) if -len(names) <= i < 0 else i for i in indices]
            bad = [i for i in indices if not 0 <= i < len(names)]
            if bad:
                raise ValueError(f"out_indices {bad} are out of range for {len(names)} stage names {names}")
            if len(set(indices)) != len(indices) or indices != sorted(indices):
                raise ValueError(f"out_indices must be unique and increasing; got {self.out_indices}")
        if features is None and indices is None:
            features, indices = [names[-1]], [len(names) - 1]
        elif features is None:
            features = [names[i] for i in indices]  # type: ignore[union-attr]
        elif indices is None:
            indices = [names.index(f) for f in features]
        elif features != [names[i] for i in indices]:
            raise ValueError(f"out_features {features} and out_indices {indices} name different stages")
        self.out_features, self.out_indices = features, indices

    # ------------------------------------------------------------------------------ edit/copy
    def replace(self, **changes: Any) -> Swinv2Config:
        """A validated copy with some fields changed (`num_labels=` re-creates the label maps)."""
        data = self.to_dict()
        if "num_labels" in changes and "id2label" not in changes:
            data.pop("id2label", None)
            data.pop("label2id", None)
        if "id2label" in changes and "label2id" not in changes:
            data.pop("label2id", None)
        if any(k in changes for k in ("depths", "out_indices", "out_features")):
            for key in ("out_features", "out_indices"):
                if key not in changes:
                    data.pop(key, None)
        data.setdefault("attn_implementation", self.attn_implementation)
        data.update(changes)
        return Swinv2Config.from_dict(data)

    # ---------------------------------------------------------------------------------- JSON
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Swinv2Config:
        """Build from a transformers-style dict; unknown keys go to `extra`."""
        data = dict(data)
        model_type = data.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(f"config is for model_type {model_type!r}, not {MODEL_TYPE!r}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: data.pop(k) for k in list(data) if k in names}
        for key in _DERIVED_KEYS:
            data.pop(key, None)
        extra = dict(data.pop("extra", {}) or {})
        extra.update(data)
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The transformers-format dict (derived keys included, unknown keys kept)."""
        out: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        out.pop("num_labels")  # transformers derives it from id2label
        out.pop("attn_implementation")  # a runtime choice, as in transformers
        out["id2label"] = {str(k): v for k, v in (self.id2label or {}).items()}
        out["hidden_size"] = self.hidden_size
        out["num_layers"] = self.num_layers
        out["stage_names"] = self.stage_names
        out["model_type"] = MODEL_TYPE
        return dict(sorted(out.items()))

    def to_json_string(self) -> str:
        """config.json text: sorted keys, two-space indent, as transformers writes it."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_file(cls, path: str | os.PathLike[str]) -> Swinv2Config:
        """Read a config.json file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no config file at '{path}'") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read config '{path}': not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(f"cannot read config '{path}': expected a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str], **overrides: Any) -> Swinv2Config:
        """Load `config.json` from a directory, a file path or a Hub id; `overrides` replace fields."""
        from swinv2.io.hub import resolve_model_dir

        path = Path(name_or_path)
        config_file = path if path.is_file() else resolve_model_dir(name_or_path) / CONFIG_NAME
        config = cls.from_json_file(config_file)
        return config.replace(**overrides) if overrides else config

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write `config.json` into `directory` (created if needed); returns the file path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / CONFIG_NAME
        atomic_write_text(target, self.to_json_string())
        return target

    def __repr__(self) -> str:
        return f"Swinv2Config {self.to_json_string()}"

