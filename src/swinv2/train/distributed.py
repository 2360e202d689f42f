"""torch.distributed for training: one process per device under `torchrun`, or a single process.

Nothing here reimplements distribution: the process group, DistributedDataParallel and FSDP are
PyTorch's. This module only reads torchrun's environment and picks the backend (NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    """This process's place among the run's processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

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
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def stop(processes: Processes) -> None:
    """Leave the process group, if this run joined one."""
    if processes.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, processes: Processes) -> torch.Tensor:
    """`values` summed over every process (unchanged when alone)."""
    if processes.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(processes: Processes) -> None:
    if processes.distributed:
        dist.barrier()
