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
import difflib
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

from swinv2.io.errors import ConfigError, quote
from swinv2.io.files import atomic_write_text
from swinv2.io.jsonfile import read_json_object

logger = logging.getLogger(__name__)

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

#: Parameter dtypes `dtype` may name (as transformers writes them: `str(torch.float32)` less "torch.").
DTYPES = ("float32", "float16", "bfloat16", "float64")

#: Largest value of a size field (sides, channels, widths, strides): beyond it no model fits any memory,
#: and the bound keeps the arithmetic on a hostile config small. What a model needs in memory is checked
#: separately, before it is built (`swinv2.models.size`).
MAX_SIZE = 2**24
#: Most stages, and most blocks in one stage (the largest published model has 42).
MAX_STAGES = 16
MAX_DEPTH = 4096
#: Most classes: every class keeps a name in `id2label`.
MAX_LABELS = 1_000_000

# Keys transformers derives from the fields; written for compatibility, recomputed on load.
_DERIVED_KEYS = ("hidden_size", "num_layers", "stage_names", "model_type")

# Fields that must be True or False (as in transformers' `PreTrainedConfig`).
_BOOL_FIELDS = ("return_dict", "output_hidden_states", "output_attentions", "torchscript")

#: Keys of `transformers.Swinv2Config().to_dict()` (5.x) that this config does not model: kept in
#: `extra` and written back, never warned about. (`tests/unit/config/test_config_api.py` checks this
#: list against the installed transformers.)
TRANSFORMERS_KEYS = (
    "_name_or_path",
    "architectures",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "transformers_version",
)

#: Keys that older transformers (4.x `PretrainedConfig.to_dict`) wrote into every config.json, and the
#: generation parameters transformers 5 drops on load; also kept and never warned about. `path_norm`
#: is a stray key of the Swin-family Hub configs.
LEGACY_TRANSFORMERS_KEYS = (
    "_attn_implementation_autoset",
    "_commit_hash",
    "add_cross_attention",
    "bad_words_ids",
    "begin_suppress_tokens",
    "bos_token_id",
    "cross_attention_hidden_size",
    "decoder_start_token_id",
    "diversity_penalty",
    "do_sample",
    "early_stopping",
    "encoder_no_repeat_ngram_size",
    "encoder_repetition_penalty",
    "eos_token_id",
    "epsilon_cutoff",
    "eta_cutoff",
    "exponential_decay_length_penalty",
    "finetuning_task",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "is_decoder",
    "length_penalty",
    "max_length",
    "min_length",
    "no_repeat_ngram_size",
    "num_assistant_tokens",
    "num_assistant_tokens_schedule",
    "num_beam_groups",
    "num_beams",
    "num_return_sequences",
    "output_scores",
    "pad_token_id",
    "path_norm",
    "prefix",
    "pruned_heads",
    "remove_invalid_values",
    "repetition_penalty",
    "return_dict_in_generate",
    "sep_token_id",
    "suppress_tokens",
    "task_specific_params",
    "temperature",
    "tf_legacy_loss",
    "tie_encoder_decoder",
    "tie_word_embeddings",
    "tokenizer_class",
    "top_k",
    "top_p",
    "typical_p",
    "use_bfloat16",
    "use_cache",
    "assistant_confidence_threshold",
    "assistant_lookbehind",
    "target_lookbehind",
)

# transformers' `PreTrainedConfig()` defaults of the keys its `to_diff_dict` may leave out; every other
# key (all the Swin V2 fields, the derived ones, `model_type`) it always writes.
_BASE_DEFAULTS: dict[str, Any] = {
    "architectures": None,
    "chunk_size_feed_forward": 0,
    "dtype": None,
    "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
    "is_encoder_decoder": False,
    "label2id": {"LABEL_0": 0, "LABEL_1": 1},
    "output_attentions": False,
    "output_hidden_states": False,
    "problem_type": None,
    "return_dict": True,
}

_FLOAT_TAG = "__float__"


def _encode_special_floats(obj: Any) -> Any:
    """transformers' JSON form of inf/nan: `{"__float__": "Infinity"}` (plain JSON has no such numbers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return {_FLOAT_TAG: "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")}
    if isinstance(obj, dict):
        return {k: _encode_special_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode_special_floats(v) for v in obj]
    return obj


def _decode_special_floats(obj: Any) -> Any:
    if isinstance(obj, dict):
        tag = obj.get(_FLOAT_TAG)
        if set(obj) == {_FLOAT_TAG} and tag in ("Infinity", "-Infinity", "NaN"):
            return float({"Infinity": "inf", "-Infinity": "-inf", "NaN": "nan"}[tag])
        return {k: _decode_special_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode_special_floats(v) for v in obj]
    return obj


def _dtype_name(value: Any) -> Any:
    """A `torch.dtype` or "torch.float16" as transformers stores it ("float16"); anything else unchanged."""
    if type(value).__module__ == "torch" and type(value).__name__ == "dtype":
        return str(value).removeprefix("torch.")
    if isinstance(value, str):
        return value.removeprefix("torch.")
    return value


def _pair(value: Any, name: str) -> tuple[int, int]:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if is_int(value):
        return (value, value)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2 and all(map(is_int, value)):
        return (int(value[0]), int(value[1]))
    raise ConfigError(f"{name} must be an int or a (height, width) pair of ints; got {quote(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A finite int or float (not a bool): what a numeric field may hold."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _as_tuple(value: Any) -> Any:
    """Lists and tuples as tuples; anything else as it is (validation names it)."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


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
    extra: dict[str, Any] = field(default_factory=dict)
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
        self.dtype = _dtype_name(next((c for c in candidates if c is not None), None))
        self.depths = _as_tuple(self.depths)
        self.num_heads = _as_tuple(self.num_heads)
        self.pretrained_window_sizes = _as_tuple(self.pretrained_window_sizes)
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
            object.__setattr__(self, name, _dtype_name(value))
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
            isinstance(label2id, Mapping) and all(isinstance(k, str) and _is_int(v) for k, v in label2id.items())
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
        """Check every field's type and range; raise one `ConfigError` listing every problem."""
        errors: list[str] = []

        def sizes(name: str, value: Any, minimum: int = 1, maximum: int = MAX_SIZE) -> bool:
            kind = "positive" if minimum == 1 else "non-negative"
            if not (_is_int(value) and value >= minimum):
                errors.append(f"{name} must be a {kind} int; got {quote(value)}")
            elif value > maximum:
                errors.append(f"{name} must be at most {maximum}; got {quote(value)}")
            else:
                return True
            return False

        def int_list(name: str, value: Any, minimum: int, maximum: int) -> bool:
            kind = "positive" if minimum == 1 else "non-negative"
            if not isinstance(value, tuple):
                errors.append(f"{name} must be a list of {kind} ints; got {quote(value)}")
            elif len(value) > MAX_STAGES:
                errors.append(f"{name} may have at most {MAX_STAGES} entries (stages); got {len(value)}")
            elif not all(_is_int(v) and v >= minimum for v in value):
                errors.append(f"{name} must be {kind} ints; got {quote(list(value))}")
            elif any(v > maximum for v in value):
                errors.append(f"{name} must be at most {maximum} each; got {quote(list(value))}")
            else:
                return True
            return False

        def real(name: str, rule: str, accept: Callable[[float], bool], maximum: float) -> None:
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                errors.append(f"{name} must be a finite number; got {quote(value)}")
            elif not (_is_real(value) and accept(value)):
                errors.append(f"{name} must be {rule}; got {quote(value)}")
            elif value > maximum:
                errors.append(f"{name} must be at most {maximum:g}; got {quote(value)}")

        pairs = {}
        for name in ("image_size", "patch_size"):
            try:
                pair = _pair(getattr(self, name), name)
            except ConfigError as err:
                errors.append(str(err))
                continue
            if min(pair) <= 0:
                errors.append(f"{name} must be positive; got {quote(getattr(self, name))}")
            elif max(pair) > MAX_SIZE:
                errors.append(f"{name} must be at most {MAX_SIZE}; got {quote(getattr(self, name))}")
            else:
                pairs[name] = pair
        if len(pairs) == 2 and any(p > i for p, i in zip(pairs["patch_size"], pairs["image_size"], strict=True)):
            errors.append(f"patch_size {quote(self.patch_size)} must not exceed image_size {quote(self.image_size)}")
        for name in ("num_channels", "embed_dim", "window_size", "encoder_stride"):
            sizes(name, getattr(self, name))
        depths_ok = int_list("depths", self.depths, 1, MAX_DEPTH)
        heads_ok = int_list("num_heads", self.num_heads, 1, MAX_SIZE)
        if depths_ok and not self.depths:
            errors.append("depths must name at least one stage; got []")
        if depths_ok and heads_ok and len(self.depths) != len(self.num_heads):
            errors.append(
                f"len(depths) ({len(self.depths)}) must equal len(num_heads) ({len(self.num_heads)}): "
                f"depths={list(self.depths)}, num_heads={list(self.num_heads)}"
            )
        elif depths_ok and heads_ok and _is_int(self.embed_dim) and 0 < self.embed_dim <= MAX_SIZE:
            for i, heads in enumerate(self.num_heads):
                width = self.embed_dim * 2**i
                if width % heads:
                    errors.append(
                        f"stage {i + 1} width embed_dim * 2**{i} ({width}) must be divisible by "
                        f"num_heads[{i}] ({heads})"
                    )
        if int_list("pretrained_window_sizes", self.pretrained_window_sizes, 0, MAX_SIZE) and depths_ok:
            pws = self.pretrained_window_sizes
            if len(pws) < len(self.depths) or any(pws[len(self.depths) :]):
                errors.append(
                    f"pretrained_window_sizes needs one entry per stage ({len(self.depths)}); got {list(pws)}"
                )
        real("mlp_ratio", "positive", lambda v: v > 0, 1e3)
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            real(name, "in [0, 1)", lambda v: 0 <= v < 1, 1.0)
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACTIVATIONS:
            errors.append(f"hidden_act {quote(self.hidden_act)} is not supported; choose one of {list(ACTIVATIONS)}")
        real("layer_norm_eps", "positive", lambda v: v > 0, 1.0)
        real("initializer_range", "non-negative", lambda v: v >= 0, 1e3)
        if not isinstance(self.attn_implementation, str) or self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            errors.append(
                f"attn_implementation {quote(self.attn_implementation)} is not one of {list(ATTN_IMPLEMENTATIONS)}"
            )
        if self.problem_type is not None and not (
            isinstance(self.problem_type, str) and self.problem_type in PROBLEM_TYPES
        ):
            errors.append(f"problem_type {quote(self.problem_type)} is not one of {list(PROBLEM_TYPES)}")
        if self.problem_type == "single_label_classification" and self.num_labels == 1:
            errors.append(
                "problem_type 'single_label_classification' needs num_labels > 1; got num_labels=1 "
                "(use num_labels=2 for binary classification, or problem_type 'regression' for one output)"
            )
        for name in (*_BOOL_FIELDS, "qkv_bias", "use_absolute_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                errors.append(f"{name} must be True or False; got {quote(value)}")
        if self.dtype is not None and not (isinstance(self.dtype, str) and self.dtype in DTYPES):
            errors.append(
                f"dtype {quote(self.dtype)} is not a parameter dtype name; choose one of {list(DTYPES)} or None"
            )
        if errors:
            raise ConfigError("invalid Swinv2Config: " + "; ".join(errors))

    def _align_out_features(self) -> None:
        names = self.stage_names
        features, indices = self.out_features, self.out_indices
        if features is not None and not (
            isinstance(features, (list, tuple)) and all(isinstance(f, str) for f in features)
        ):
            raise ConfigError(f"out_features must be a list of stage names {names}; got {quote(features)}")
        if indices is not None and not (isinstance(indices, (list, tuple)) and all(map(_is_int, indices))):
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
    def replace(self, **changes: Any) -> Swinv2Config:
        """A validated copy with some fields changed (`num_labels=` re-creates the label maps).

        A key that names no field is kept in `extra` and logs a warning (unless transformers writes it).
        """
        return self._replace(changes, source="replace()")

    def _replace(self, changes: Mapping[str, Any], source: str | None) -> Swinv2Config:
        if source is not None:
            _warn_unknown(changes, source)
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
    def from_dict(cls, data: Mapping[str, Any]) -> Swinv2Config:
        """Build from a transformers-style dict; unknown keys go to `extra` (with one logged warning)."""
        if not isinstance(data, Mapping) or not all(isinstance(k, str) for k in data):
            raise ConfigError(f"a config dict needs string keys; got {quote(data)}")
        _warn_unknown(data, "the config dict")
        return cls._from_dict(data)

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> Swinv2Config:
        data = dict(data)
        model_type = data.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ConfigError(f"config is for model_type {quote(model_type)}, not {MODEL_TYPE!r}")
        names = _init_names() - {"extra"}
        kwargs = {k: data.pop(k) for k in list(data) if k in names}
        for key in _DERIVED_KEYS:
            data.pop(key, None)
        extra = data.pop("extra", {}) or {}
        if not isinstance(extra, Mapping):
            raise ConfigError(f"extra must be a dict of unused config.json keys; got {quote(extra)}")
        extra = dict(extra)
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
        if _get_torchscript(self):
            out["torchscript"] = True  # transformers 5 writes it only when it was set
        # Code that still records the dtype in `extra` after construction wins over the field.
        for key in ("dtype", "torch_dtype"):
            if self.extra.get(key) is not None:
                out["dtype"] = _dtype_name(self.extra[key])
        out.pop("torch_dtype", None)
        out["id2label"] = {str(k): v for k, v in (self.id2label or {}).items()}
        out["hidden_size"] = self.hidden_size
        out["num_layers"] = self.num_layers
        out["stage_names"] = self.stage_names
        out["model_type"] = MODEL_TYPE
        return dict(sorted(out.items()))

    def to_diff_dict(self) -> dict[str, Any]:
        """`to_dict` less the common keys that hold transformers' `PreTrainedConfig` defaults.

        As transformers' `to_diff_dict`: `return_dict`, `output_hidden_states`, `output_attentions`,
        `dtype`, `problem_type`, two-label `id2label` / `label2id` (and the unmodelled `architectures`,
        `chunk_size_feed_forward`, `is_encoder_decoder`) are left out while they hold the default, and
        `_name_or_path` always; the Swin V2 fields, derived keys and `model_type` are always written.
        """
        out = self.to_dict()
        for key, default in _BASE_DEFAULTS.items():
            if key in out and out[key] == default:
                del out[key]
        out.pop("_name_or_path", None)
        return out

    def to_json_string(self, use_diff: bool = True) -> str:
        """config.json text: sorted keys, two-space indent, as transformers writes it.

        Args:
            use_diff: Write `to_diff_dict()` (transformers' default) rather than the full `to_dict()`.
        """
        data = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(_encode_special_floats(data), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | os.PathLike[str], use_diff: bool = True) -> Path:
        """Write `to_json_string(use_diff)` to `path` atomically; returns the path."""
        path = Path(path)
        atomic_write_text(path, self.to_json_string(use_diff=use_diff))
        return path

    @classmethod
    def from_json_file(cls, path: str | os.PathLike[str]) -> Swinv2Config:
        """Read a config.json file."""
        path = Path(path)
        data = _read_json(path)
        _warn_unknown(data, f"'{path}'")
        return _from_file(cls, data, path)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike[str], subfolder: str = "", **overrides: Any
    ) -> Swinv2Config:
        """Load `config.json` from a directory (or its `subfolder`), a file path or a Hub id.

        `overrides` replace fields afterwards, as `replace` does. Keys of the file or of `overrides`
        that name no field are kept in `extra`, with one logged warning for the load.
        """
        from swinv2.io.hub import resolve_model_dir

        path = Path(name_or_path)
        if path.is_file():
            config_file = path
        elif subfolder and (Path(subfolder) / path).is_file():  # transformers: a file inside `subfolder`
            config_file = Path(subfolder) / path
        else:
            config_file = resolve_model_dir(name_or_path) / subfolder / CONFIG_NAME
        data = _read_json(config_file)
        _warn_unknown({**data, **overrides}, f"'{config_file}'")
        config = _from_file(cls, data, config_file)
        return config._replace(overrides, source=None) if overrides else config

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write the full `config.json` (`to_dict`) into `directory` (created if needed); returns the file path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return self.to_json_file(directory / CONFIG_NAME, use_diff=False)

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
    if not (_is_int(num_labels) and num_labels >= 0):
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
        index = key if _is_int(key) else None
        if isinstance(key, str) and key.strip().lstrip("-").isdigit() and len(key) <= 12:
            index = int(key)
        if index is None:
            raise ConfigError(f"id2label keys must be ints (or int strings); got {quote(list(id2label))}")
        if not isinstance(name, str):
            raise ConfigError(f"id2label names must be strings; got {quote(name)} for class {index}")
        converted[index] = name
    return converted


def _init_names() -> set[str]:
    """Names `Swinv2Config(...)` takes: the fields and the init-only `torchscript` and `torch_dtype`."""
    return {f.name for f in dataclasses.fields(Swinv2Config)} | {"torchscript", "torch_dtype"}


def _read_json(path: Path) -> dict[str, Any]:
    decoded: dict[str, Any] = _decode_special_floats(read_json_object(path, "config file"))
    return decoded


def _from_file(cls: type[Swinv2Config], data: Mapping[str, Any], path: Path) -> Swinv2Config:
    """`cls._from_dict(data)`, with a validation error naming the file it came from."""
    try:
        return cls._from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"invalid config '{path}': {str(err).removeprefix('invalid Swinv2Config: ')}") from None


def unknown_keys(keys: Iterable[str]) -> list[str]:
    """The keys that name no config field and that transformers does not write either."""
    known = _init_names() | set(_DERIVED_KEYS) | set(TRANSFORMERS_KEYS) | set(LEGACY_TRANSFORMERS_KEYS)
    return [key for key in keys if key not in known]


def _warn_unknown(data: Iterable[str], source: str) -> None:
    """One warning naming every unknown key of `data`, with the closest field name where one is close."""
    unknown = unknown_keys(data)
    if not unknown:
        return
    fields = sorted(_init_names() - {"extra"})
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, fields, n=1)
        parts.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    logger.warning(
        "Swinv2Config: unknown keys in %s, kept in `extra` and written back on save but not used: %s",
        source,
        ", ".join(parts),
    )
