"""`Swinv2Config`: the model's hyper-parameters, validated in one place, stored as transformers' config.json.

Field names and defaults are transformers' (model_type "swinv2"), so a config.json written by
`transformers.Swinv2Config.save_pretrained` loads here unchanged and the reverse holds too. Keys this
library does not know (`architectures`, `transformers_version`, ...) are kept in `extra` and written
back on save; keys that transformers does not write either (a typo, a newer version's field) also log
one warning per load, with the closest field name where one is close.

Besides the model fields, the config has transformers' common surface: `return_dict`,
`output_hidden_states`, `output_attentions`, `torchscript`, `dtype` (`torch_dtype` is its old alias),
`use_return_dict`, a `num_labels` that re-creates the label maps when set, `to_diff_dict`,
`to_json_string(use_diff=True)`, `to_json_file` and `from_pretrained(..., subfolder=...)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any

from swinv2.config.common import (
    LEGACY_TRANSFORMERS_KEYS,
    MAX_DEPTH,
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

MODEL_TYPE = "swinv2"

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")

#: Most classes: every class keeps a name in `id2label`.
MAX_LABELS = 1_000_000

# Keys transformers derives from the fields; written for compatibility, recomputed on load.
_DERIVED_KEYS = ("hidden_size", "num_layers", "stage_names", "model_type")


@dataclass
class Swinv2Config(ConfigFile):
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
        extra_norm_period: Put one more layer norm on the main branch (the residual stream) after every
            `extra_norm_period`-th block of each stage, counted from 1 within the stage (blocks k, 2k,
            ... of every stage; the count restarts after each patch merging). 0 (the default, and every
            released checkpoint): none. The V2 paper's SwinV2-H and -G use 6 ("an additional layer
            normalization layer on the main branch every 6 layers", section "Model configurations");
            counting per stage is what timm's `swinv2_cr` does with its `extra_norm_period`. Not a
            transformers field: written to config.json only when non-zero, so a released model's
            config.json stays transformers' own. The norms are `encoder.layers.i.blocks.j.extra_norm`.
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
        return_dict: Models return output dataclasses (True) or plain tuples (False).
        output_hidden_states: Models also return every stage's hidden states.
        output_attentions: Models also return the attention probabilities.
        torchscript: transformers' (4.x) TorchScript flag; tuples instead of dataclasses
            (`use_return_dict` is False). Written to config.json only when True.
        dtype: Name of the parameter dtype the weights were saved in ("float32", "bfloat16", ...;
            a `torch.dtype` or "torch.float16" is stored as its name), or None. `torch_dtype=` is
            transformers' old name for it (`dtype` wins when both are given).
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
    return_dict: bool = True
    output_hidden_states: bool = False
    output_attentions: bool = False
    dtype: str | None = None
    # Not a transformers field: after all of them, so transformers' positional order stays the same.
    extra_norm_period: int = 0  # 0: no extra main-branch norms (every released model); SwinV2-H/G: 6
    extra: dict[str, Any] = field(default_factory=dict)
    model_type = MODEL_TYPE  # a class attribute (no annotation: not a field), as in transformers
    derived_keys = _DERIVED_KEYS  # written by to_dict, dropped when read
    # Init-only, then properties (below the class): `torchscript` is no attribute of transformers 5's
    # config (its `dataclasses.fields`), `torch_dtype` is the old name of `dtype`.
    torchscript: InitVar[bool] = False
    torch_dtype: InitVar[str | None] = None

    def __post_init__(self, torchscript: bool, torch_dtype: str | None) -> None:
        object.__setattr__(self, "_ready", False)  # plain attribute writes until validated
        object.__setattr__(self, "_torchscript", torchscript)
        if not isinstance(self.extra, Mapping):
            raise ConfigError(f"extra must be a dict of unused config.json keys; got {quote(self.extra)}")
        self.extra = dict(self.extra)
        # transformers' `dtype`, else its old name; a key of `extra` counts as given too.
        candidates = (self.dtype, torch_dtype, self.extra.pop("dtype", None), self.extra.pop("torch_dtype", None))
        self.dtype = dtype_name(next((c for c in candidates if c is not None), None))
        self.depths = as_tuple(self.depths)
        self.num_heads = as_tuple(self.num_heads)
        self.pretrained_window_sizes = as_tuple(self.pretrained_window_sizes)
        if isinstance(self.image_size, list):
            self.image_size = tuple(self.image_size)
        if isinstance(self.patch_size, list):
            self.patch_size = tuple(self.patch_size)
        self._init_labels(self.num_labels)
        self._validate()
        self._align_out_features()
        object.__setattr__(self, "_ready", True)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Swinv2Config)
        return _get_torchscript(self) == _get_torchscript(other) and all(
            getattr(self, f.name) == getattr(other, f.name) for f in dataclasses.fields(self)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, as dataclasses make it

    def __setattr__(self, name: str, value: Any) -> None:
        """After construction, `num_labels` and `id2label` keep the label maps consistent (as transformers)."""
        if not self.__dict__.get("_ready", False):
            object.__setattr__(self, name, value)
        elif name == "num_labels":
            self._set_num_labels(value)
        elif name == "id2label":
            id2label = _int_keys(value if value is not None else {0: "LABEL_0", 1: "LABEL_1"})
            object.__setattr__(self, "id2label", id2label)
            if self.label2id is None or set(self.label2id.values()) != set(id2label):
                object.__setattr__(self, "label2id", {label: i for i, label in id2label.items()})
            object.__setattr__(self, "num_labels", len(id2label))
        elif name == "dtype":
            object.__setattr__(self, name, dtype_name(value))
        else:
            object.__setattr__(self, name, value)

    # ----------------------------------------------------------------------------------- labels
    def _set_num_labels(self, num_labels: Any) -> None:
        _check_num_labels(num_labels)
        # As transformers' setter: the maps are re-created only when the count changes.
        if self.id2label is None or len(self.id2label) != num_labels:
            id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
            object.__setattr__(self, "id2label", id2label)
            object.__setattr__(self, "label2id", {label: i for i, label in id2label.items()})
        object.__setattr__(self, "num_labels", num_labels)

    def _init_labels(self, num_labels: Any) -> None:
        if self.id2label is not None:
            self.id2label = _int_keys(self.id2label)
            if num_labels is not None and num_labels != len(self.id2label):
                raise ConfigError(
                    f"num_labels ({quote(num_labels)}) does not match id2label, which has {len(self.id2label)} "
                    "entries; pass one of them"
                )
        else:
            count = 2 if num_labels is None else num_labels
            _check_num_labels(count)
            self.id2label = {i: f"LABEL_{i}" for i in range(count)}
        label2id = self.label2id
        if label2id is not None and not (
            isinstance(label2id, Mapping) and all(isinstance(k, str) and is_int(v) for k, v in label2id.items())
        ):
            raise ConfigError(f"label2id must map class names to class indices (str to int); got {quote(label2id)}")
        if label2id is None or set(label2id.values()) != set(self.id2label):
            self.label2id = {name: i for i, name in self.id2label.items()}
        else:
            self.label2id = dict(label2id)
        self.num_labels = len(self.id2label)

    # ------------------------------------------------------------------------------- derived
    @property
    def use_return_dict(self) -> bool:
        """Whether models return output dataclasses: `return_dict` and not `torchscript`."""
        return self.return_dict and not _get_torchscript(self)

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
        return pair(self.image_size, "image_size")

    @property
    def patch_hw(self) -> tuple[int, int]:
        """`patch_size` as (height, width)."""
        return pair(self.patch_size, "patch_size")

    @property
    def patch_grid(self) -> tuple[int, int]:
        """Token grid of the stem at `image_size` (floor division, as transformers)."""
        (h, w), (ph, pw) = self.image_hw, self.patch_hw
        return (h // ph, w // pw)

    # ----------------------------------------------------------------------------- validation
    def _validate(self) -> None:
        """Check every field's type and range; raise one `ConfigError` listing every problem."""
        problems = Problems()
        image = problems.side_pair("image_size", self.image_size)
        patch = problems.side_pair("patch_size", self.patch_size)
        if image and patch and any(p > i for p, i in zip(patch, image, strict=True)):
            problems.add(f"patch_size {quote(self.patch_size)} must not exceed image_size {quote(self.image_size)}")
        for name in ("num_channels", "embed_dim", "window_size", "encoder_stride"):
            problems.size(name, getattr(self, name))
        problems.size("extra_norm_period", self.extra_norm_period, minimum=0, maximum=MAX_DEPTH)
        depths_ok, stages_ok = problems.stages(self.depths, self.num_heads)
        if stages_ok and is_int(self.embed_dim) and 0 < self.embed_dim <= MAX_SIZE:
            for i, heads in enumerate(self.num_heads):
                width = self.embed_dim * 2**i
                if width % heads:
                    problems.add(
                        f"stage {i + 1} width embed_dim * 2**{i} ({width}) must be divisible by "
                        f"num_heads[{i}] ({heads})"
                    )
        if problems.int_list("pretrained_window_sizes", self.pretrained_window_sizes, 0, MAX_SIZE) and depths_ok:
            pws = self.pretrained_window_sizes
            if len(pws) < len(self.depths) or any(pws[len(self.depths) :]):
                problems.add(f"pretrained_window_sizes needs one entry per stage ({len(self.depths)}); got {list(pws)}")
        problems.block_fields(self)
        if self.problem_type is not None and not (
            isinstance(self.problem_type, str) and self.problem_type in PROBLEM_TYPES
        ):
            problems.add(f"problem_type {quote(self.problem_type)} is not one of {list(PROBLEM_TYPES)}")
        if self.problem_type == "single_label_classification" and self.num_labels == 1:
            problems.add(
                "problem_type 'single_label_classification' needs num_labels > 1; got num_labels=1 "
                "(use num_labels=2 for binary classification, or problem_type 'regression' for one output)"
            )
        problems.flags(self)
        problems.raise_if_any("Swinv2Config")

    def _align_out_features(self) -> None:
        names = self.stage_names
        features, indices = self.out_features, self.out_indices
        if features is not None and not (
            isinstance(features, (list, tuple)) and all(isinstance(f, str) for f in features)
        ):
            raise ConfigError(f"out_features must be a list of stage names {names}; got {quote(features)}")
        if indices is not None and not (isinstance(indices, (list, tuple)) and all(map(is_int, indices))):
            raise ConfigError(f"out_indices must be a list of ints; got {quote(indices)}")
        if features is not None:
            features = list(features)
            unknown = [f for f in features if f not in names]
            if unknown:
                raise ConfigError(f"out_features {quote(unknown)} are not stage names; choose from {names}")
            if len(set(features)) != len(features) or features != [n for n in names if n in features]:
                raise ConfigError(f"out_features must be unique and in stage order {names}; got {quote(features)}")
        if indices is not None:
            indices = [i % len(names) if -len(names) <= i < 0 else i for i in indices]
            bad = [i for i in indices if not 0 <= i < len(names)]
            if bad:
                raise ConfigError(f"out_indices {quote(bad)} are out of range for {len(names)} stage names {names}")
            if len(set(indices)) != len(indices) or indices != sorted(indices):
                raise ConfigError(f"out_indices must be unique and increasing; got {quote(self.out_indices)}")
        if features is None and indices is None:
            features, indices = [names[-1]], [len(names) - 1]
        elif features is None:
            features = [names[i] for i in indices]  # type: ignore[union-attr]
        elif indices is None:
            indices = [names.index(f) for f in features]
        elif features != [names[i] for i in indices]:
            raise ConfigError(f"out_features {quote(features)} and out_indices {quote(indices)} name different stages")
        self.out_features, self.out_indices = features, indices

    # ------------------------------------------------------------------------------ edit/copy
    def _replace(self, changes: Mapping[str, Any], source: str | None) -> Swinv2Config:
        """`replace` (`num_labels=` re-creates the label maps); `source` names where unknown keys came from."""
        if source is not None:
            self._warn_unknown(changes, source)
        data = self.to_dict()
        if "num_labels" in changes and "id2label" not in changes:
            data.pop("id2label", None)
            data.pop("label2id", None)
        if "id2label" in changes and "label2id" not in changes:
            data.pop("label2id", None)
        if "torch_dtype" in changes and "dtype" not in changes:
            data.pop("dtype", None)
        if any(k in changes for k in ("depths", "out_indices", "out_features")):
            for key in ("out_features", "out_indices"):
                if key not in changes:
                    data.pop(key, None)
        data.setdefault("attn_implementation", self.attn_implementation)
        data.update(changes)
        return Swinv2Config._from_dict(data)

    # ---------------------------------------------------------------------------------- JSON
    @classmethod
    def _init_names(cls) -> set[str]:
        """Names `Swinv2Config(...)` takes: the fields and the init-only `torchscript` and `torch_dtype`."""
        return {f.name for f in dataclasses.fields(cls)} | {"torchscript", "torch_dtype"}

    @classmethod
    def unknown_keys(cls, keys: Iterable[str]) -> list[str]:
        """The keys that name no field and that transformers does not write either."""
        known = cls._init_names() | set(_DERIVED_KEYS) | set(TRANSFORMERS_KEYS) | set(LEGACY_TRANSFORMERS_KEYS)
        return [key for key in keys if key not in known]

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
        if _get_torchscript(self):
            out["torchscript"] = True  # transformers 5 writes it only when it was set
        if out.get("extra_norm_period") == 0:
            del out["extra_norm_period"]  # not transformers': a released model's config.json stays its own
        # Code that still records the dtype in `extra` after construction wins over the field.
        for key in ("dtype", "torch_dtype"):
            if self.extra.get(key) is not None:
                out["dtype"] = dtype_name(self.extra[key])
        out.pop("torch_dtype", None)
        out["id2label"] = {str(k): v for k, v in (self.id2label or {}).items()}
        out["hidden_size"] = self.hidden_size
        out["num_layers"] = self.num_layers
        out["stage_names"] = self.stage_names
        out["model_type"] = MODEL_TYPE
        return dict(sorted(out.items()))

    def __repr__(self) -> str:
        return f"Swinv2Config {self.to_json_string()}"


def _get_torchscript(self: Swinv2Config) -> bool:
    torchscript: bool = self.__dict__["_torchscript"]
    return torchscript


def _set_torchscript(self: Swinv2Config, value: bool) -> None:
    self.__dict__["_torchscript"] = value


def _get_torch_dtype(self: Swinv2Config) -> str | None:
    return self.dtype


def _set_torch_dtype(self: Swinv2Config, value: Any) -> None:
    self.dtype = value


Swinv2Config.torchscript = property(  # type: ignore[attr-defined]
    _get_torchscript, _set_torchscript, doc="transformers' (4.x) TorchScript flag: models return tuples."
)
# `torch_dtype`: an init-only alias of `dtype` in the constructor, and a property afterwards (as in
# transformers, where reading or setting it reads or sets `dtype`).
Swinv2Config.torch_dtype = property(_get_torch_dtype, _set_torch_dtype, doc="Old name of `dtype`.")  # type: ignore[attr-defined]


def _check_num_labels(num_labels: Any) -> None:
    if not (is_int(num_labels) and num_labels >= 0):
        raise ConfigError(f"num_labels must be a non-negative int; got {quote(num_labels)}")
    if num_labels > MAX_LABELS:
        raise ConfigError(f"num_labels must be at most {MAX_LABELS}; got {quote(num_labels)}")


def _int_keys(id2label: Any) -> dict[int, str]:
    """`id2label` with int keys (JSON writes them as strings) and str names."""
    if not isinstance(id2label, Mapping):
        raise ConfigError(f"id2label must be a mapping of class index to name; got {quote(id2label)}")
    if len(id2label) > MAX_LABELS:
        raise ConfigError(f"id2label may name at most {MAX_LABELS} classes; got {len(id2label)}")
    converted: dict[int, str] = {}
    for key, name in id2label.items():
        index = key if is_int(key) else None
        if isinstance(key, str) and key.strip().lstrip("-").isdigit() and len(key) <= 12:
            index = int(key)
        if index is None:
            raise ConfigError(f"id2label keys must be ints (or int strings); got {quote(list(id2label))}")
        if not isinstance(name, str):
            raise ConfigError(f"id2label names must be strings; got {quote(name)} for class {index}")
        converted[index] = name
    return converted


def unknown_keys(keys: Iterable[str]) -> list[str]:
    """The keys that name no `Swinv2Config` field and that transformers does not write either."""
    return Swinv2Config.unknown_keys(keys)
