"""Reading and writing weight files, and loading them into a model with a full key report.

Files are read without executing code: safetensors first; `.bin`/`.pt`/`.pth` only through
`torch.load(weights_only=True)`, and a pickle that needs more than tensors is refused.
"""

from __future__ import annotations

import logging
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from swinv2.io.errors import ConfigError, InputError, quote
from swinv2.io.files import atomic_write
from swinv2.io.jsonfile import read_json_object
from swinv2.io.limits import check_memory, parse_bytes

logger = logging.getLogger(__name__)

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_WEIGHTS_NAME = "pytorch_model.bin"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
#: Keys a training checkpoint keeps its weights under, tried in this order: the first that holds a mapping wins.
#: BasicSR (the Swin2SR and SwinIR trainers) writes "params" and, for EMA runs, "params_ema" beside it; the
#: EMA weights are the ones those releases evaluate, so they come first.
_WRAPPER_KEYS = ("model", "state_dict", "model_ema", "params_ema", "params")


#: Keys of each kind a load error names in its message (the error's `report` holds all of them).
REPORT_KEYS_SHOWN = 3


class CheckpointError(InputError):
    """A weight file could not be read, or its tensors do not fit the model (then `report` says how)."""

    def __init__(self, message: str, report: LoadReport | None = None, subject: str = "") -> None:
        super().__init__(message)
        self.report = report
        self.subject = subject


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    check_memory(path.stat().st_size, f"reading '{path}'")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot read '{path}': not a valid safetensors file ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return text if len(text) <= 200 else text[:200] + "..."


def _exotic(tensor: torch.Tensor) -> str | None:
    """Why `tensor` is not a plain dense CPU tensor this library can load, or None."""
    if type(tensor) not in (torch.Tensor, nn.Parameter):
        return f"a {type(tensor).__name__} (a tensor subclass)"
    if tensor.is_meta:
        return "a meta tensor (it holds no values)"
    if tensor.layout != torch.strided:
        return f"a {str(tensor.layout).removeprefix('torch.')} tensor (only dense tensors load)"
    if tensor.is_quantized:
        return f"a quantized tensor ({str(tensor.dtype).removeprefix('torch.')})"
    if tensor.is_complex() or tensor.dtype == torch.bool:
        return f"a {str(tensor.dtype).removeprefix('torch.')} tensor"
    return None


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"cannot read '{path}': the file is empty")
    check_memory(size, f"reading '{path}'")
    try:
        # mmap: tensors stay in the file until copied, so a storage that claims more bytes than the file
        # has cannot make torch allocate it first; it needs the zip format every torch since 1.6 writes.
        zipped = zipfile.is_zipfile(path)
        with warnings.catch_warnings():  # torch's notes on pickle protocols and beta layouts: refused below
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load '{path}': it is corrupt or needs code beyond plain tensors to unpickle, "
            f"which could run anything ({_first_line(err)}); re-save it as safetensors where you trust it"
        ) from None
    except Exception as err:  # torch.load raises many types on foreign bytes; all mean the same here
        raise CheckpointError(
            f"cannot read '{path}': not a PyTorch checkpoint ({type(err).__name__}: {_first_line(err)})"
        ) from None
    if isinstance(data, Mapping):
        # training checkpoints (the Microsoft release among them) keep the weights under one key
        for wrapper in _WRAPPER_KEYS:
            if isinstance(data.get(wrapper), Mapping):
                data = data[wrapper]
                break
    if not isinstance(data, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()
    ):
        raise CheckpointError(
            f"cannot read '{path}': expected a mapping of names to tensors (or one under {list(_WRAPPER_KEYS)})"
        )
    for key, tensor in data.items():
        reason = _exotic(tensor)
        if reason is not None:
            raise CheckpointError(f"cannot load '{path}': tensor {quote(key)} is {reason}")
    return dict(data)


def _shard_paths(index: Path) -> list[Path]:
    """The shard files a `*.index.json` names: existing weight files inside its own directory, each once."""
    try:
        data = read_json_object(index, "shard index")
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(
            f"cannot read shard index '{index}': expected \"weight_map\", an object of tensor names to shard "
            f"file names; got {quote(weight_map)}"
        )
    root = index.parent.resolve()
    shards = []
    for name in sorted(set(weight_map.values())):
        shard = (index.parent / name).resolve()
        if Path(name).is_absolute() or not shard.is_relative_to(root):
            raise CheckpointError(f"refusing shard index '{index}': shard {quote(name)} is outside '{index.parent}'")
        if shard.suffix not in (".safetensors", *PICKLE_SUFFIXES):
            raise CheckpointError(
                f"cannot read shard index '{index}': shard {quote(name)} is not a weight file "
                "(.safetensors, .bin, .pt or .pth)"
            )
        if not shard.is_file():
            raise FileNotFoundError(f"no weight file at '{index.parent / name}' (a shard named by '{index}')")
        shards.append(index.parent / name)
    return shards


def _read_shards(index: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    where: dict[str, Path] = {}
    for shard in _shard_paths(index):
        for key, tensor in read_state_dict(shard).items():
            if key in state:
                raise CheckpointError(
                    f"cannot read shard index '{index}': tensor {quote(key)} is in both '{where[key].name}' "
                    f"and '{shard.name}'"
                )
            state[key], where[key] = tensor, shard
    return state


#: Prefixes a wrapper puts before every key of the model it wraps: DistributedDataParallel / DataParallel,
#: and `torch.compile`'s OptimizedModule.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def strip_wrapper_prefixes(state: dict[str, torch.Tensor], source: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """`state` without a wrapper prefix that every key carries (`module.`, `_orig_mod.`, or both nested), as
    a state dict saved from a wrapped model has; anything else unchanged."""
    stripped = []
    while state:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix) :]: v for k, v in state.items()}
        stripped.append(prefix)
    if stripped:
        logger.info("'%s': removed the wrapper prefix %s from every key", source, "".join(stripped))
    return state


def _directory_weights(path: Path) -> Path | None:
    for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, PICKLE_WEIGHTS_NAME):
        if (path / name).is_file():
            return path / name
    return None


def weight_file_bytes(directory: str | os.PathLike[str]) -> int | None:
    """Total size of a model directory's weight file(s), None when it has none (or an unreadable index)."""
    found = _directory_weights(Path(directory))
    if found is None:
        return None
    if not found.name.endswith(".index.json"):
        return found.stat().st_size
    try:
        return sum(shard.stat().st_size for shard in _shard_paths(found))
    except (CheckpointError, OSError):
        return None  # reading the weights reports it


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read tensors from a weight file, or from a model directory's weight file(s).

    A directory is searched for `model.safetensors`, then a sharded `model.safetensors.index.json`,
    then `pytorch_model.bin`. A pickled training checkpoint may keep its tensors under one key: `model`,
    `state_dict`, `model_ema`, or BasicSR's `params_ema` / `params` (the Swin2SR release's trainer); when a
    file has both of the latter, `params_ema` (the weights such releases evaluate) is read. A shard index
    may only name weight files in its own directory, and no tensor twice.

    Raises:
        FileNotFoundError: nothing to read at `path`.
        CheckpointError: the file is corrupt, not a checkpoint, would need arbitrary code, holds tensors
            that are not plain dense ones (meta, sparse, quantized), or is a malformed shard index.
        LimitError: the file is larger than the memory limit.
    """
    path = Path(path)
    if path.is_dir():
        found = _directory_weights(path)
        if found is None:
            raise FileNotFoundError(
                f"no weights in '{path}': expected {SAFE_WEIGHTS_NAME}, {SAFE_WEIGHTS_INDEX_NAME} "
                f"or {PICKLE_WEIGHTS_NAME}"
            )
        return read_state_dict(found)
    if not path.is_file():
        raise FileNotFoundError(f"no weight file at '{path}'")
    if path.name.endswith(".index.json"):
        return _read_shards(path)
    if path.suffix == ".safetensors":
        return strip_wrapper_prefixes(_read_safetensors(path), path)
    if path.suffix in PICKLE_SUFFIXES:
        return strip_wrapper_prefixes(_read_pickle(path), path)
    raise CheckpointError(f"cannot read '{path}': unknown weight file type (use .safetensors, .bin, .pt or .pth)")


def write_safetensors(path: str | os.PathLike[str], state: Mapping[str, torch.Tensor]) -> None:
    """Write tensors to a safetensors file atomically (contiguous CPU copies, `format: pt` metadata)."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))


@dataclass
class LoadReport:
    """What a load did with each key.

    Attributes:
        missing: model keys the checkpoint lacks.
        unexpected: checkpoint keys that name nothing this library knows.
        mismatched: (key, checkpoint shape, model shape) for tensors of the wrong shape.
        unused: known Swin V2 weights this model class has no place for (another head's, say).
        reinitialized: mismatched keys left freshly initialised on request.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    reinitialized: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is missing, unexpected or mismatched."""
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, subject: str, limit: int | None = None) -> str:
        """One message listing every problem (at most `limit` keys of each kind, if given).

        Args:
            subject: What was loaded, as it should read in the message ("checkpoint 'x.pth'").
            limit: Show at most this many keys of each kind, then a count.
        """

        def listing(items: list[str]) -> str:
            shown = items if limit is None else items[:limit]
            more = len(items) - len(shown)
            return ", ".join(shown) + (f" and {more} more" if more else "")

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {listing(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {listing(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{k} (checkpoint {list(a)}, model {list(b)})" for k, a, b in self.mismatched]
            parts.append(f"{len(self.mismatched)} with the wrong shape: {listing(shapes)}")
        return f"{subject} does not fit the model: " + "; ".join(parts)


def load_into_model(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    strict: bool = True,
    ignore_mismatched_sizes: bool = False,
    report: LoadReport | None = None,
    display_names: Callable[[str], str] | None = None,
    context: str = "",
) -> LoadReport:
    """Copy `state` (our parameter names) into `model`, checking every key first.

    Args:
        model: The target module.
        state: Tensors keyed by the model's own state_dict names.
        source: Where the tensors came from, for messages.
        context: A note to add after the source in messages (the layout and variant, say).
        strict: Raise one `CheckpointError` listing all missing, unexpected and mismatched keys.
        ignore_mismatched_sizes: Leave wrong-shaped tensors at their fresh initialisation instead
            (for a new classification head, say); they are listed as `reinitialized`.
        report: A report to extend (keys the caller already classified).
        display_names: Maps a model key to the name the report should use (the file's naming).

    Returns:
        The `LoadReport`; with `strict=False` the caller inspects it.
    """
    report = report or LoadReport()
    subject = f"checkpoint '{source}'" + (f" ({context})" if context else "")
    name = display_names or (lambda key: key)
    expected = model.state_dict()
    loadable: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key not in expected:
            report.unexpected.append(name(key))
        elif tensor.shape != expected[key].shape and ignore_mismatched_sizes:
            report.reinitialized.append(name(key))
        elif tensor.shape != expected[key].shape:
            report.mismatched.append((name(key), tuple(tensor.shape), tuple(expected[key].shape)))
        else:
            loadable[key] = tensor
    report.missing.extend(name(k) for k in expected if k not in state)
    if strict and not report.ok:
        message = report.describe(subject, limit=REPORT_KEYS_SHOWN) + (
            "; pass strict=False to load the rest (the error's `report` lists every key)"
        )
        raise CheckpointError(message, report, subject)
    if not report.ok:
        logger.warning(report.describe(subject))
    if report.reinitialized:
        logger.warning(
            "re-initialised %d tensors of mismatched shape: %s", len(report.reinitialized), report.reinitialized
        )
    with torch.no_grad():
        for key, tensor in loadable.items():
            expected[key].copy_(tensor)
    return report


# ---------------------------------------------------------------------------------- shards
def parse_shard_size(size: int | str) -> int:
    """Bytes in `size`: an int, or digits and a unit as huggingface_hub reads them ("5GB", "200MB", "1.5KB")."""
    return parse_bytes(size, "max_shard_size")


def split_into_shards(state: Mapping[str, torch.Tensor], max_bytes: int) -> list[list[str]]:
    """Group the keys, in order, into shards of at most `max_bytes` (a larger tensor gets a shard of its own),
    as huggingface_hub's `split_torch_state_dict_into_shards` does."""
    shards: list[list[str]] = []
    current: list[str] = []
    current_bytes = 0
    for key, tensor in state.items():
        size = tensor.numel() * tensor.element_size()
        if size > max_bytes:
            shards.append([key])
            continue
        if current and current_bytes + size > max_bytes:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(key)
        current_bytes += size
    if current:
        shards.append(current)
    return shards
