"""Models too large for one process: built on the meta device, sharded with FSDP, materialised shard by
shard with the exact weights of an ordinary construction, and saved / loaded as sharded checkpoints.

`build_sharded(cls, config, seed=s)` gives, gathered, bit for bit the weights of
`torch.manual_seed(s); cls(config)`. An ordinary construction draws every parameter from the one CPU
generator in the order the constructors and `post_init` run, so the values of a parameter depend on
everything drawn before it. The meta-device construction runs the same code without allocating; a
`TorchDispatchMode` records, per storage, the operations that create and modify it, and the generator's
state before each random draw (a draw is also performed on a scratch tensor of the parameter's shape,
so that the generator advances exactly as in the ordinary construction). After sharding, each
parameter is replayed alone: its full tensor is rebuilt on the CPU from the recorded operations (random
draws replay from their recorded generator states), its local shard is kept and the full tensor freed.

Memory bound: per process, the local shards, plus the largest single parameter in full (in its dtype,
twice on an accelerator: the CPU copy and the device copy it is sharded from) during materialisation (a
scratch tensor of that size during the meta construction), plus about 5 KB of generator state per
random draw of the construction (two or so per linear layer). The whole model is never held by one
process. Non-persistent buffers (Swin V2's coordinate tables, Swin2SR's mean) are replayed the same way
from the operations that computed them, with their (small) intermediate tensors.

Limits of the replay: a tensor computed from another one is rebuilt from that other tensor's final
value, so a construction that modifies a tensor after reading it into a third would not replay (none of
this library's models does; the parameters here are created by factories and modified in place only).
Tensors made from Python data (`torch.tensor([...])`) are recorded through a `TorchFunctionMode`; a
tensor of unknown origin raises `ReplayError` rather than coming out wrong.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from swinv2.train.distributed import shard

#: Operations that draw from a random-number generator (schema names without the overload).
_RANDOM_OPS = frozenset(
    {
        "aten::uniform_",
        "aten::normal_",
        "aten::random_",
        "aten::bernoulli_",
        "aten::exponential_",
        "aten::cauchy_",
        "aten::log_normal_",
        "aten::geometric_",
        "aten::rand",
        "aten::randn",
        "aten::randint",
        "aten::randperm",
        "aten::rand_like",
        "aten::randn_like",
        "aten::randint_like",
        "aten::normal",
        "aten::bernoulli",
        "aten::multinomial",
        "aten::native_dropout",
    }
)
_CPU = torch.device("cpu")


class ReplayError(RuntimeError):
    """A tensor of the meta construction cannot be rebuilt from the recorded operations."""


def _key(tensor: torch.Tensor) -> int:
    return int(tensor.untyped_storage()._cdata)


def _is_meta(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.device.type == "meta"


def _to_cpu_device(value: Any) -> Any:
    return _CPU if isinstance(value, torch.device) and value.type == "meta" else value


class _Entry:
    """One recorded operation: it created (`output` is its index among the results) or modified a storage."""

    __slots__ = ("args", "func", "kwargs", "output", "rng")

    def __init__(self, func: Any, args: Any, kwargs: Any, rng: Any, output: int | None) -> None:
        self.func, self.args, self.kwargs, self.rng, self.output = func, args, kwargs, rng, output


class _Constants(TorchFunctionMode):
    """Tensors made from data (`torch.tensor([...])`) are made on the CPU, then moved to the meta device by
    an operation the recorder sees (on the meta device directly, their values would be lost)."""

    FROM_DATA = (torch.tensor, torch.as_tensor, torch.asarray)

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in self.FROM_DATA and torch.device(kwargs.get("device") or torch.get_default_device()).type == "meta":
            return func(*args, **{**kwargs, "device": _CPU}).to("meta")
        return func(*args, **kwargs)


class MetaRecorder(TorchDispatchMode):
    """Records how every meta-device storage is created and modified, and keeps the CPU generator in step
    with an ordinary construction (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: dict[int, list[_Entry]] = {}
        self._alive: list[Any] = []  # storages stay alive, so that their keys are never reused

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        schema = func._schema
        rng = None
        if schema.name in _RANDOM_OPS:
            generator = kwargs.get("generator") or torch.default_generator
            rng = (generator, generator.get_state())
            self._advance(func, args, kwargs)
        written = [
            value
            for argument, value in zip(schema.arguments, args, strict=False)
            if argument.alias_info is not None and argument.alias_info.is_write and _is_meta(value)
        ] + [
            kwargs[argument.name]
            for argument in schema.arguments
            if argument.kwarg_only
            and argument.name in kwargs
            and argument.alias_info is not None
            and argument.alias_info.is_write
            and _is_meta(kwargs[argument.name])
        ]
        for tensor in written:
            self._record(tensor, _Entry(func, args, kwargs, rng, None))
        if not written and not any(r.alias_info is not None for r in schema.returns):  # fresh results
            results = out if isinstance(out, (tuple, list)) else (out,)
            for index, result in enumerate(results):
                if _is_meta(result):
                    self._record(result, _Entry(func, args, kwargs, rng, index))
        return out

    def __enter__(self) -> MetaRecorder:
        super().__enter__()
        self._constants = _Constants()
        self._constants.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._constants.__exit__(*exc)
        super().__exit__(*exc)

    def _record(self, tensor: torch.Tensor, entry: _Entry) -> None:
        storage = tensor.untyped_storage()
        self._alive.append(storage)
        self.log.setdefault(int(storage._cdata), []).append(entry)

    @staticmethod
    def _advance(func: Any, args: Any, kwargs: Any) -> None:
        """Perform a random draw on scratch CPU tensors, so that the generator moves on as it would have."""

        def scratch(value: Any) -> Any:
            if _is_meta(value):
                return torch.empty_strided(value.size(), value.stride(), dtype=value.dtype, device=_CPU)
            return _to_cpu_device(value)

        func(*tree_map(scratch, args), **tree_map(scratch, kwargs))

    # ------------------------------------------------------------------------------------ replay
    def materialize(self, tensor: torch.Tensor) -> torch.Tensor:
        """The CPU value of a tensor of the recorded meta construction, rebuilt from its operations.

        Raises:
            ReplayError: the tensor was never created by a recorded operation.
        """
        built: dict[int, torch.Tensor] = {}
        base = self._build(_key(tensor), built)
        if (base.size(), base.stride(), base.storage_offset()) == (tensor.size(), tensor.stride(), 0):
            return base  # the tensor is its storage's whole base: no copy
        return base.as_strided(tensor.size(), tensor.stride(), tensor.storage_offset()).clone()

    def _build(self, key: int, built: dict[int, torch.Tensor]) -> torch.Tensor:
        if key in built:
            return built[key]
        entries = self.log.get(key, [])
        if not entries or entries[0].output is None:
            raise ReplayError("a meta tensor was not created by a recorded operation; it cannot be rebuilt")
        for entry in entries:

            def real(value: Any) -> Any:
                if not _is_meta(value):
                    return _to_cpu_device(value)
                base = built[key] if _key(value) == key else self._build(_key(value), built)
                return base.as_strided(value.size(), value.stride(), value.storage_offset())

            args, kwargs = tree_map(real, entry.args), tree_map(real, entry.kwargs)
            saved = None
            if entry.rng is not None:
                generator, state = entry.rng
                saved = generator.get_state()
                generator.set_state(state)
            try:
                out = entry.func(*args, **kwargs)
            finally:
                if saved is not None:
                    entry.rng[0].set_state(saved)
            if entry.output is not None:
                result = out[entry.output] if isinstance(out, (tuple, list)) else out
                built[key] = result
        return built[key]


def build_sharded(
    model_class: Callable[..., nn.Module],
    config: Any,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    mixed_precision: str = "fp32",
    **model_kwargs: Any,
) -> nn.Module:
    """`model_class(config, **model_kwargs)` built on the meta device, sharded over the process group
    (`swinv2.train.distributed.shard`) and materialised on `device`, with the weights and buffers of
    `torch.manual_seed(seed); model_class(config, **model_kwargs)`, gathered, bit for bit.

    Every process of the group must call it. The CPU generator is left where the ordinary construction
    leaves it. Memory: see the module's docstring (one full parameter at a time, never the whole model).

    Raises:
        ReplayError: the model's construction computes a tensor in a way that cannot be replayed.
    """
    from torch.distributed.tensor import DTensor, distribute_tensor

    torch.manual_seed(seed)
    recorder = MetaRecorder()
    with torch.device("meta"), recorder:
        model = model_class(config, **model_kwargs)
    after = torch.get_rng_state()
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    shard(model, mixed_precision=mixed_precision)
    model.to_empty(device=device)
    with torch.no_grad():
        for name, target in model.named_parameters():
            full = recorder.materialize(params[name])
            if isinstance(target, DTensor):
                # src_data_rank=None: every process holds the full tensor; each keeps its shard, nothing is sent
                local = distribute_tensor(
                    full.to(target.device), target.device_mesh, target.placements, src_data_rank=None
                )
                target.to_local().copy_(local.to_local())
            else:
                target.copy_(full)
            del full
        for name, buffer in model.named_buffers():
            buffer.copy_(recorder.materialize(buffers[name]))
    for module in model.modules():
        clear = getattr(module, "clear_cache", None)
        if callable(clear):
            clear()
    torch.set_rng_state(after)
    return model


# ------------------------------------------------------------------------- sharded checkpoints
def save_sharded(
    directory: str | os.PathLike[str], model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> Path:
    """Write the model's (and the optimiser's) shards with `torch.distributed.checkpoint` (DCP): each
    process writes its own shards, no process gathers the model.

    The directory is replaced as a whole: the shards go to `<directory>.partial` and, once every
    process has written, rank 0 moves the previous directory aside, renames the new one into place and
    deletes the old one. Every process must call it (the directory must be on a file system all of
    them see).

    Returns:
        The directory.
    """
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.checkpoint.state_dict_saver import save

    directory = Path(directory)
    staged = directory.with_name(directory.name + ".partial")
    old = directory.with_name(directory.name + ".old")
    grouped = dist.is_available() and dist.is_initialized()
    main = not grouped or dist.get_rank() == 0
    if main:
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
    if grouped:
        dist.barrier()
    model_state, optimizer_state = get_state_dict(model, [] if optimizer is None else [optimizer])
    state: dict[str, Any] = {"model": model_state}
    if optimizer is not None:
        state["optimizer"] = optimizer_state
    save(state, checkpoint_id=staged, no_dist=not grouped)
    if grouped:
        dist.barrier()
    if main:
        shutil.rmtree(old, ignore_errors=True)
        if directory.exists():
            directory.rename(old)
        staged.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    if grouped:
        dist.barrier()
    return directory


def load_sharded(
    directory: str | os.PathLike[str], model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Load what `save_sharded` wrote into `model` (and `optimizer`), sharded over any number of
    processes, or in one process without a process group. Every process must call it.

    Trusted directories only: DCP reads its `.metadata` file with `pickle.load`, which can run code, as
    `torch.load(weights_only=False)` can (the tensor files themselves are read with `weights_only=True`).

    Raises:
        FileNotFoundError: no sharded checkpoint at `directory`.
    """
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.checkpoint.state_dict_loader import load

    directory = Path(directory)
    if not (directory / ".metadata").is_file():
        raise FileNotFoundError(f"no sharded checkpoint in '{directory}' (missing .metadata)")
    optimizers = [] if optimizer is None else [optimizer]
    model_state, optimizer_state = get_state_dict(model, optimizers)
    state: dict[str, Any] = {"model": model_state}
    if optimizer is not None:
        state["optimizer"] = optimizer_state
    alone = not (dist.is_available() and dist.is_initialized())
    with warnings.catch_warnings():
        if alone:  # DCP warns that it assumes a single process: that is what this call asks for
            warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        load(state, checkpoint_id=directory, no_dist=alone)
    set_state_dict(model, optimizers, model_state_dict=state["model"], optim_state_dict=state.get("optimizer", {}))
