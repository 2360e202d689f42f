"""torch.distributed for training: one process per device under `torchrun`, or a single process.

Nothing here reimplements distribution: the process group, DistributedDataParallel and FSDP are
PyTorch's. This module only reads torchrun's environment and picks the backend (NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    """This process's place among the run's processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this run created the process group (and so destroys it at the end)

    @property
    def main(self) -> bool:
        """Whether this process logs and writes files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start(device: torch.device) -> Processes:
    """Join the process group torchrun describes (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`), or run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Processes()
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), created)


def stop(processes: Processes) -> None:
    """Leave the process group, if this run created it (a caller's own group stays)."""
    if processes.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, processes: Processes) -> torch.Tensor:
    """`values` summed over every process (unchanged when alone)."""
    if processes.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_process(flag: bool, processes: Processes) -> bool:
    """Whether `flag` is set on any process: a decision every process takes together (a stop requested by
    a signal that reached the processes at different steps must end them all after the same step)."""
    if not processes.distributed:
        return flag
    return bool(all_reduce_sum(torch.tensor([int(flag)]), processes).item())


def barrier(processes: Processes) -> None:
    if processes.distributed:
        dist.barrier()


# ------------------------------------------------------------------------------------------ FSDP
#: FSDP's mixed precision: the dtype of the gathered parameters in forward and backward; the sharded
#: master parameters, the optimiser state and the gradient reduction stay fp32.
FSDP_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def shard(model: torch.nn.Module, *, mixed_precision: str = "fp32") -> None:
    """Shard parameters, gradients and optimiser state over the processes with PyTorch's FSDP
    (`fully_shard`): each Swin V2 block is one unit (gathered for its forward and backward, freed
    after), then the rest of the model. Call before building the optimiser.

    Args:
        mixed_precision: "fp32", or "bf16": blocks compute with bf16 copies of the gathered parameters
            (`MixedPrecisionPolicy(param_dtype=bfloat16, reduce_dtype=float32)`); the sharded parameters
            the optimiser updates stay fp32.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if mixed_precision not in FSDP_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {list(FSDP_PRECISIONS)}; got {mixed_precision!r}")
    dtype = FSDP_PRECISIONS[mixed_precision]
    policy = (
        MixedPrecisionPolicy() if dtype is None else MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    )
    units = [module for module in model.modules() if type(module).__name__ == "Swinv2Block"] + [model]
    for module in units:
        fully_shard(module, mp_policy=policy)
    if dtype is not None:  # after FSDP's own hooks, which gather and cast the parameters
        for module in units:
            module.register_forward_pre_hook(functools.partial(_cast_buffers, dtype=dtype))


def _cast_buffers(module: torch.nn.Module, inputs: Any, dtype: torch.dtype) -> None:
    """Cast an FSDP unit's floating buffers (Swin V2's coordinate tables) to the dtype its parameters compute
    in: FSDP's mixed precision casts the parameters only, and the model computes the two together."""
    for owner in module.modules():
        for name, buffer in owner.named_buffers(recurse=False):
            if buffer.is_floating_point() and buffer.dtype != dtype:
                setattr(owner, name, buffer.to(dtype))


def _full() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: torch.nn.Module) -> dict[str, Any]:
    """The whole model's state dict on the CPU, sharded or not (every process must call it)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full())


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The whole optimiser state keyed by parameter names, so that any number of processes can load it
    (every process must call it)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_full())


def load_full_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, model_state: dict[str, Any], optimizer_state: Any
) -> None:
    """Load states written by `full_model_state` / `full_optimizer_state` into a model sharded over any
    number of processes (or none)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=options)
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)
