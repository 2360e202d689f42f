"""What both configs share: transformers' constants, value checks, the JSON form and file I/O.

`Swinv2Config` (`swinv2.config.swinv2`) and `Swin2SRConfig` (`swinv2.config.swin2sr`) are dataclasses
that validate in one place and read and write transformers' config.json; the rules for a size field,
a list of per-stage ints, a bounded number or a choice are written once here (`Problems`), and so is
the file handling (`ConfigFile`): `to_json_string`, `to_json_file`, `from_json_file`,
`from_pretrained`, `save_pretrained`, `from_dict`. Warnings about unknown keys go to the
`swinv2.config` logger, whichever config logs them.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from swinv2.io.errors import ConfigError, quote
from swinv2.io.files import atomic_write_text
from swinv2.io.jsonfile import read_json_object

logger = logging.getLogger("swinv2.config")

CONFIG_NAME = "config.json"

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

ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "triton", "graph")

#: Parameter dtypes `dtype` may name (as transformers writes them: `str(torch.float32)` less "torch.").
DTYPES = ("float32", "float16", "bfloat16", "float64")

#: Largest value of a size field (sides, channels, widths, strides): beyond it no model fits any memory,
#: and the bound keeps the arithmetic on a hostile config small. What a model needs in memory is checked
#: separately, before it is built (`swinv2.models.size`).
MAX_SIZE = 2**24
#: Most stages, and most blocks in one stage (the largest published model has 42).
MAX_STAGES = 16
MAX_DEPTH = 4096

# Fields that must be True or False (as in transformers' `PreTrainedConfig`).
BOOL_FIELDS = ("return_dict", "output_hidden_states", "output_attentions", "torchscript")

#: Keys of `transformers.Swinv2Config().to_dict()` (5.x) that no config here models: kept in
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
BASE_DEFAULTS: dict[str, Any] = {
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


def encode_special_floats(obj: Any) -> Any:
    """transformers' JSON form of inf/nan: `{"__float__": "Infinity"}` (plain JSON has no such numbers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return {_FLOAT_TAG: "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")}
    if isinstance(obj, dict):
        return {k: encode_special_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode_special_floats(v) for v in obj]
    return obj


def decode_special_floats(obj: Any) -> Any:
    """The inverse of `encode_special_floats`."""
    if isinstance(obj, dict):
        tag = obj.get(_FLOAT_TAG)
        if set(obj) == {_FLOAT_TAG} and tag in ("Infinity", "-Infinity", "NaN"):
            return float({"Infinity": "inf", "-Infinity": "-inf", "NaN": "nan"}[tag])
        return {k: decode_special_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_special_floats(v) for v in obj]
    return obj


def dtype_name(value: Any) -> Any:
    """A `torch.dtype` or "torch.float16" as transformers stores it ("float16"); anything else unchanged."""
    if type(value).__module__ == "torch" and type(value).__name__ == "dtype":
        return str(value).removeprefix("torch.")
    if isinstance(value, str):
        return value.removeprefix("torch.")
    return value


def pair(value: Any, name: str) -> tuple[int, int]:
    """An int or a (height, width) pair of ints as (height, width); ConfigError naming `name` otherwise."""
    if is_int(value):
        return (value, value)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2 and all(map(is_int, value)):
        return (int(value[0]), int(value[1]))
    raise ConfigError(f"{name} must be an int or a (height, width) pair of ints; got {quote(value)}")


def is_int(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A finite int or float (not a bool): what a numeric field may hold."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def as_tuple(value: Any) -> Any:
    """Lists and tuples as tuples; anything else as it is (validation names it)."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


# ----------------------------------------------------------------------------- validation
class Problems:
    """Every problem found in a config, collected so that one `ConfigError` can list them all.

    Each check appends a message that quotes the value and states the rule, and returns whether the
    value passed (so that checks depending on it can be skipped).
    """

    def __init__(self) -> None:
        self.errors: list[str] = []

    def add(self, message: str) -> None:
        self.errors.append(message)

    def size(self, name: str, value: Any, minimum: int = 1, maximum: int = MAX_SIZE) -> bool:
        """An int in [minimum, maximum] (a side, a channel count, a width)."""
        kind = "positive" if minimum == 1 else "non-negative"
        if not (is_int(value) and value >= minimum):
            self.add(f"{name} must be a {kind} int; got {quote(value)}")
        elif value > maximum:
            self.add(f"{name} must be at most {maximum}; got {quote(value)}")
        else:
            return True
        return False

    def int_list(self, name: str, value: Any, minimum: int, maximum: int) -> bool:
        """A tuple of at most `MAX_STAGES` ints, each in [minimum, maximum] (one per stage)."""
        kind = "positive" if minimum == 1 else "non-negative"
        if not isinstance(value, tuple):
            self.add(f"{name} must be a list of {kind} ints; got {quote(value)}")
        elif len(value) > MAX_STAGES:
            self.add(f"{name} may have at most {MAX_STAGES} entries (stages); got {len(value)}")
        elif not all(is_int(v) and v >= minimum for v in value):
            self.add(f"{name} must be {kind} ints; got {quote(list(value))}")
        elif any(v > maximum for v in value):
            self.add(f"{name} must be at most {maximum} each; got {quote(list(value))}")
        else:
            return True
        return False

    def real(self, name: str, value: Any, rule: str, accept: Callable[[float], bool], maximum: float) -> None:
        """A finite number that `accept`s (`rule` says what that means) and is at most `maximum`."""
        if isinstance(value, float) and not math.isfinite(value):
            self.add(f"{name} must be a finite number; got {quote(value)}")
        elif not (is_real(value) and accept(value)):
            self.add(f"{name} must be {rule}; got {quote(value)}")
        elif value > maximum:
            self.add(f"{name} must be at most {maximum:g}; got {quote(value)}")

    def side_pair(self, name: str, value: Any) -> tuple[int, int] | None:
        """An int or (height, width) pair of positive sides at most `MAX_SIZE`, as (height, width)."""
        try:
            hw = pair(value, name)
        except ConfigError as err:
            self.add(str(err))
            return None
        if min(hw) <= 0:
            self.add(f"{name} must be positive; got {quote(value)}")
        elif max(hw) > MAX_SIZE:
            self.add(f"{name} must be at most {MAX_SIZE}; got {quote(value)}")
        else:
            return hw
        return None

    def boolean(self, name: str, value: Any) -> None:
        if not isinstance(value, bool):
            self.add(f"{name} must be True or False; got {quote(value)}")

    def choice(self, name: str, value: Any, choices: Sequence[str], phrase: str = "is not one of") -> bool:
        """A string among `choices`."""
        if isinstance(value, str) and value in choices:
            return True
        self.add(f"{name} {quote(value)} {phrase} {list(choices)}")
        return False

    def stages(self, depths: Any, num_heads: Any) -> tuple[bool, bool]:
        """Blocks and heads per stage: (depths are valid, both are valid lists of one equal length)."""
        depths_ok = self.int_list("depths", depths, 1, MAX_DEPTH)
        heads_ok = self.int_list("num_heads", num_heads, 1, MAX_SIZE)
        if depths_ok and not depths:
            self.add("depths must name at least one stage; got []")
        if depths_ok and heads_ok and len(depths) != len(num_heads):
            self.add(
                f"len(depths) ({len(depths)}) must equal len(num_heads) ({len(num_heads)}): "
                f"depths={list(depths)}, num_heads={list(num_heads)}"
            )
            return depths_ok, False
        return depths_ok, depths_ok and heads_ok

    def block_fields(self, config: Any) -> None:
        """The fields every Swin V2 block reads: MLP ratio, dropouts, activation, norm epsilon, init
        range and the attention implementation."""
        self.real("mlp_ratio", config.mlp_ratio, "positive", lambda v: v > 0, 1e3)
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            self.real(name, getattr(config, name), "in [0, 1)", lambda v: 0 <= v < 1, 1.0)
        self.choice("hidden_act", config.hidden_act, ACTIVATIONS, "is not supported; choose one of")
        self.real("layer_norm_eps", config.layer_norm_eps, "positive", lambda v: v > 0, 1.0)
        self.real("initializer_range", config.initializer_range, "non-negative", lambda v: v >= 0, 1e3)
        self.choice("attn_implementation", config.attn_implementation, ATTN_IMPLEMENTATIONS)

    def flags(self, config: Any) -> None:
        """transformers' common switches and the blocks' booleans are True or False; `dtype` is a name."""
        for name in (*BOOL_FIELDS, "qkv_bias", "use_absolute_embeddings"):
            self.boolean(name, getattr(config, name))
        if config.dtype is not None and not (isinstance(config.dtype, str) and config.dtype in DTYPES):
            self.add(f"dtype {quote(config.dtype)} is not a parameter dtype name; choose one of {list(DTYPES)} or None")

    def raise_if_any(self, title: str) -> None:
        """Raise one `ConfigError` "invalid <title>: first; second; ..." when anything was found."""
        if self.errors:
            raise ConfigError(f"invalid {title}: " + "; ".join(self.errors))


# ---------------------------------------------------------------------------------- files
ConfigT = TypeVar("ConfigT", bound="ConfigFile")


def read_json(path: Path) -> dict[str, Any]:
    """A config.json as a dict, transformers' encoded inf/nan decoded (bounded reading, library errors)."""
    decoded: dict[str, Any] = decode_special_floats(read_json_object(path, "config file"))
    return decoded


class ConfigFile:
    """transformers' config.json surface, shared by the configs (which are dataclasses).

    A subclass provides `model_type`, `_init_names` (what its constructor takes), `unknown_keys`,
    `derived_keys`, `_replace` and `to_dict`; this class writes and reads
    the files from those.
    """

    model_type: ClassVar[str]
    derived_keys: ClassVar[tuple[str, ...]] = ()  # keys transformers writes that follow from the fields
    # fields every config has (declared here for the models' shared code; the dataclasses define them)
    extra: dict[str, Any]
    dtype: str | None
    attn_implementation: str
    initializer_range: float
    output_attentions: bool
    output_hidden_states: bool

    @property
    def use_return_dict(self) -> bool:
        """Whether models return output dataclasses."""
        raise NotImplementedError

    # ------------------------------------------------------------------------- subclass hooks
    @classmethod
    def _init_names(cls) -> set[str]:
        raise NotImplementedError

    @classmethod
    def unknown_keys(cls, keys: Iterable[str]) -> list[str]:
        """The keys that name no field of this config and that transformers does not write either."""
        raise NotImplementedError

    @classmethod
    def _from_dict(cls: type[ConfigT], data: Mapping[str, Any]) -> ConfigT:
        """Build from a transformers dict: fields by name, the derived keys (`derived_keys`) dropped, every
        other key kept in `extra` (after the dict's own `extra`)."""
        data = dict(data)
        cls._check_model_type(data)
        names = cls._init_names() - {"extra"}
        kwargs = {k: data.pop(k) for k in list(data) if k in names}
        for key in cls.derived_keys:
            data.pop(key, None)
        extra = data.pop("extra", {}) or {}
        if not isinstance(extra, Mapping):
            raise ConfigError(f"extra must be a dict of unused config.json keys; got {quote(extra)}")
        return cls(**kwargs, extra={**extra, **data})  # type: ignore[call-arg]  # the subclass is a dataclass

    def _replace(self: ConfigT, changes: Mapping[str, Any], source: str | None) -> ConfigT:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------ shared
    def replace(self: ConfigT, **changes: Any) -> ConfigT:
        """A validated copy with some fields changed.

        A key that names no field is kept in `extra` and logs a warning (unless transformers writes it).
        """
        return self._replace(changes, source="replace()")

    @classmethod
    def _warn_unknown(cls, data: Iterable[str], source: str) -> None:
        """One warning naming every unknown key of `data`, with the closest field name where one is close."""
        if isinstance(data, Mapping) and data.get("model_type", cls.model_type) != cls.model_type:
            return  # another model's config: refused with that reason, not warned about key by key
        unknown = cls.unknown_keys(data)
        if not unknown:
            return
        fields = sorted(cls._init_names() - {"extra"})
        parts = []
        for key in unknown:
            close = difflib.get_close_matches(key, fields, n=1)
            parts.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
        logger.warning(
            "%s: unknown keys in %s, kept in `extra` and written back on save but not used: %s",
            cls.__name__,
            source,
            ", ".join(parts),
        )

    @classmethod
    def _check_model_type(cls, data: Mapping[str, Any]) -> None:
        model_type = data.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ConfigError(
                f"config is for model_type {quote(model_type)}, not {cls.model_type!r}" + _other_class_hint(model_type)
            )

    @classmethod
    def from_dict(cls: type[ConfigT], data: Mapping[str, Any]) -> ConfigT:
        """Build from a transformers-style dict; unknown keys go to `extra` (with one logged warning)."""
        if not isinstance(data, Mapping) or not all(isinstance(k, str) for k in data):
            raise ConfigError(f"a config dict needs string keys; got {quote(data)}")
        cls._warn_unknown(data, "the config dict")
        return cls._from_dict(data)

    @classmethod
    def _from_file(cls: type[ConfigT], data: Mapping[str, Any], path: Path) -> ConfigT:
        """`cls._from_dict(data)`, with a validation error naming the file it came from."""
        try:
            return cls._from_dict(data)
        except ConfigError as err:
            detail = str(err).removeprefix(f"invalid {cls.__name__}: ")
            raise ConfigError(f"invalid config '{path}': {detail}") from None

    def to_diff_dict(self) -> dict[str, Any]:
        """`to_dict` less the common keys that hold transformers' `PreTrainedConfig` defaults.

        As transformers' `to_diff_dict`: `return_dict`, `output_hidden_states`, `output_attentions`,
        `dtype`, `problem_type`, two-label `id2label` / `label2id` (and the unmodelled `architectures`,
        `chunk_size_feed_forward`, `is_encoder_decoder`) are left out while they hold the default, and
        `_name_or_path` always; the model's fields, derived keys and `model_type` are always written.
        """
        out = self.to_dict()
        for key, default in BASE_DEFAULTS.items():
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
        return json.dumps(encode_special_floats(data), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | os.PathLike[str], use_diff: bool = True) -> Path:
        """Write `to_json_string(use_diff)` to `path` atomically; returns the path."""
        path = Path(path)
        atomic_write_text(path, self.to_json_string(use_diff=use_diff))
        return path

    @classmethod
    def from_json_file(cls: type[ConfigT], path: str | os.PathLike[str]) -> ConfigT:
        """Read a config.json file."""
        path = Path(path)
        data = read_json(path)
        cls._warn_unknown(data, f"'{path}'")
        return cls._from_file(data, path)

    @classmethod
    def from_pretrained(
        cls: type[ConfigT], name_or_path: str | os.PathLike[str], subfolder: str = "", **overrides: Any
    ) -> ConfigT:
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
        data = read_json(config_file)
        cls._warn_unknown({**data, **overrides}, f"'{config_file}'")
        config = cls._from_file(data, config_file)
        return config._replace(overrides, source=None) if overrides else config

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write the full `config.json` (`to_dict`) into `directory` (created if needed); returns the file path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return self.to_json_file(directory / CONFIG_NAME, use_diff=False)


#: The config class of each model_type this library reads, named in the error for a config of another.
CONFIG_CLASSES = {"swinv2": "Swinv2Config", "swin2sr": "Swin2SRConfig"}


def _other_class_hint(model_type: Any) -> str:
    name = CONFIG_CLASSES.get(model_type) if isinstance(model_type, str) else None
    return f"; load it with {name}" if name else ""
