"""Training checkpoints that survive being killed and resume a run exactly.

A checkpoint is one directory, `RUN/checkpoint/`, replaced as a whole at every save through
`swinv2.io.files.staged_output`: a run killed at any moment leaves the previous checkpoint or the new
one, complete, never a mix (and a full disk fails the save, not the previous checkpoint). It holds:

- `model.safetensors`: the model's parameters and buffers under transformers' names;
- `ema.safetensors`: the exponential moving average of the parameters, when one is kept;
- `training_state.pt`: optimiser, schedule and gradient-scaler state, every random-number generator's
  state, and the position in the data (step, epoch, step within the epoch). It holds tensors, numbers,
  strings, lists and dicts only, and is read back with `torch.load(weights_only=True)`, so a checkpoint
  from elsewhere cannot run code;
- `settings.json`: the settings of the run, compared on `--resume` so that a run is never continued
  with another model, data or recipe.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from swinv2.io.checkpoints import CheckpointError
from swinv2.io.errors import InputError, quote
from swinv2.io.files import staged_output
from swinv2.io.jsonfile import read_json_object

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "training_state.pt"
SETTINGS_FILE = "settings.json"


class ResumeError(InputError):
    """A run cannot be resumed from the directory given: no checkpoint, or one of another run."""


@dataclass(frozen=True)
class Progress:
    """Where a run is: optimiser steps taken, the epoch it is in and the steps taken in that epoch."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0


@dataclass
class TrainingCheckpoint:
    """What `load_training_checkpoint` read back."""

    model: dict[str, torch.Tensor]
    state: dict[str, Any]
    settings: dict[str, Any]
    ema: dict[str, torch.Tensor] | None = None
    progress: Progress = field(default_factory=Progress)


# ----------------------------------------------------------------------------------- random state
def capture_rng(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every random-number generator a training step may draw from: torch's (CPU and each CUDA device),
    Python's and numpy's global ones, and the named `generators` of the run. Stored as tensors and
    plain lists, so `weights_only` loading reads them."""
    python_version, python_state, python_gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [python_version, list(python_state), python_gauss],
        "numpy": json.dumps(numpy_state, default=lambda array: array.tolist()),  # its key is a uint32 array
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }


def restore_rng(saved: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Put back what `capture_rng` recorded (CUDA states only where as many devices are present)."""
    torch.set_rng_state(saved["torch"])
    cuda = list(saved.get("cuda", []))
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
    version, state, gauss = saved["python"]
    random.setstate((version, tuple(state), gauss))
    numpy_state = json.loads(saved["numpy"])
    numpy_state["state"]["key"] = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)
    for name, generator in (generators or {}).items():
        if name in saved.get("generators", {}):
            generator.set_state(saved["generators"][name])


# ------------------------------------------------------------------------------------ save / load
def _cpu_copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_training_checkpoint(
    directory: str | os.PathLike[str],
    *,
    model_state: Mapping[str, torch.Tensor],
    state: Mapping[str, Any],
    settings: Mapping[str, Any],
    progress: Progress,
    ema_state: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint directory, replacing the previous one only once the new one is complete.

    Args:
        directory: The checkpoint directory (`RUN/checkpoint`).
        model_state: The model's state dict (parameters and persistent buffers).
        state: Optimiser, schedule, scaler and RNG state (`capture_rng`): tensors and plain data only.
        settings: The run's settings, as JSON.
        progress: Where the run is.
        ema_state: The moving average of the parameters, if kept.

    Returns:
        The directory.
    """
    directory = Path(directory)
    training_state = {**state, "progress": vars(progress).copy()}
    with staged_output(directory, overwrite=True) as staged:
        staged.mkdir()
        save_file(_cpu_copy(model_state), str(staged / MODEL_FILE), metadata={"format": "pt"})
        if ema_state is not None:
            save_file(_cpu_copy(ema_state), str(staged / EMA_FILE), metadata={"format": "pt"})
        torch.save(training_state, staged / STATE_FILE)
        (staged / SETTINGS_FILE).write_text(json.dumps(dict(settings), indent=2, sort_keys=True) + "\n")
    return directory


def load_training_checkpoint(directory: str | os.PathLike[str]) -> TrainingCheckpoint:
    """Read a checkpoint directory written by `save_training_checkpoint` (CPU tensors).

    Raises:
        ResumeError: no checkpoint at `directory`.
        CheckpointError: a file of it is damaged (the message names it).
    """
    directory = Path(directory)
    missing = [name for name in (MODEL_FILE, STATE_FILE, SETTINGS_FILE) if not (directory / name).is_file()]
    if missing:
        raise ResumeError(f"no training checkpoint in '{directory}' (missing {', '.join(missing)})")
    try:
        model = load_file(directory / MODEL_FILE)
        ema = load_file(directory / EMA_FILE) if (directory / EMA_FILE).is_file() else None
    except Exception as err:  # safetensors raises its own error types on damaged files
        raise CheckpointError(f"cannot read the checkpoint in '{directory}': {err}") from None
    try:
        state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read '{directory / STATE_FILE}': {type(err).__name__}: {err}") from None
    if not isinstance(state, dict) or not isinstance(state.get("progress"), dict):
        raise CheckpointError(f"'{directory / STATE_FILE}' is not a training state written by swinv2")
    try:
        progress = Progress(**{k: int(v) for k, v in state["progress"].items()})
    except (TypeError, ValueError):
        raise CheckpointError(f"'{directory / STATE_FILE}' has a damaged progress record") from None
    settings = read_json_object(directory / SETTINGS_FILE, "training settings")
    return TrainingCheckpoint(model=model, state=state, settings=settings, ema=ema, progress=progress)


def check_same_run(saved: Mapping[str, Any], current: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
    """Refuse to resume when a setting that decides the result differs from the checkpoint's.

    Raises:
        ResumeError: naming every differing setting with both values.
    """
    differing = [
        f"{key} (checkpoint {quote(saved.get(key))}, now {quote(current.get(key))})"
        for key in keys
        if saved.get(key) != current.get(key)
    ]
    if differing:
        raise ResumeError(
            f"'{where}' holds a checkpoint of another run: {'; '.join(differing)}; resume with the same "
            "settings, or start a new run in another directory"
        )
