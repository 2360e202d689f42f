"""Reading and writing weight files, and loading them into a model with a full key report.

Files are read without executing code: safetensors first; `.bin`/`.pt`/`.pth` only through
`torch.load(weights_only=True)`, and a pickle that needs more than tensors is refused.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from swinv2.io.files import atomic_write

logger = logging.getLogger(__name__)

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_WEIGHTS_NAME = "pytorch_model.bin"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
_WRAPPER_KEYS = ("model", "state_dict", "model_ema")


class CheckpointError(RuntimeError):
    """A weight file could not be read, or its tensors do not fit the model (then `report` says how)."""

    def __init__(self, message: str, report: LoadReport | None = None, subject: str = "") -> None:
        super().__init__(message)
        self.report = report
        self.subject = subject


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read '{path}': not a valid safetensors file ({err})") from None


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot read '{path}': the file is empty")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise CheckpointError(
            f"refusing to load '{path}': it is corrupt or needs code beyond plain tensors to unpickle, "
            f"which could run anything ({reason}); re-save it as safetensors where you trust it"
        ) from None
    except Exception as err:  # torch.load raises many types on foreign bytes; all mean the same here
        raise CheckpointError(f"cannot read '{path}': not a PyTorch checkpoint ({type(err).__name__}: {err})") from None
    if isinstance(data, Mapping):
        # training checkpoints (the Microsoft release among them) keep the weights under one key
        for wrapper in _WRAPPER_KEYS:
            if isinstance(data.get(wrapper), Mapping):
                data = data[wrapper]
                break
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(
            f"cannot read '{path}': expected a mapping of names to tensors (or one under {list(_WRAPPER_KEYS)})"
        )
    return dict(data)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read tensors from a weight file, or from a model directory's weight file(s).

    A directory is searched for `model.safetensors`, then a sharded `model.safetensors.index.json`,
    then `pytorch_model.bin`.

    Raises:
        FileNotFoundError: nothing to read at `path`.
        CheckpointError: the file is corrupt, not a checkpoint, or would need arbitrary code.
    """
    path = Path(path)
    if path.is_dir():
        for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, PICKLE_WEIGHTS_NAME):
            if (path / name).is_file():
                return read_state_dict(path / name)
        raise FileNotFoundError(
            f"no weights in '{path}': expected {SAFE_WEIGHTS_NAME}, {SAFE_WEIGHTS_INDEX_NAME} or {PICKLE_WEIGHTS_NAME}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"no weight file at '{path}'")
    if path.name.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"cannot read '{path}': not a safetensors shard index ({err})") from None
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(read_state_dict(path.parent / shard))
        return state
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix in PICKLE_SUFFIXES:
        return _read_pickle(path)
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
        message = report.describe(subject) + "; pass strict=False to load the rest and get this list"
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
_SIZE_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}  # huggingface_hub's (decimal) units


def parse_shard_size(size: int | str) -> int:
    """Bytes in `size`: an int, or digits and a unit as huggingface_hub reads them ("5GB", "200MB", "1.5KB")."""
    if isinstance(size, int) and not isinstance(size, bool):
        if size <= 0:
            raise ValueError(f"max_shard_size must be positive; got {size}")
        return size
    text = str(size).strip()
    unit = text[-2:].upper()
    try:
        value = float(text[:-2].strip()) if unit in _SIZE_UNITS else float("nan")
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise ValueError(
            f"max_shard_size must be bytes (an int) or digits and one of {list(_SIZE_UNITS)}; got {size!r}"
        )
    return int(value * _SIZE_UNITS[unit])


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
