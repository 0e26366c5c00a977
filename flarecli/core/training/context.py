"""Where a process trains: its device, and its place in a data-parallel (``torchrun``) run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


@dataclass
class Context:
    """Where this process trains: its device and its place in a distributed run."""

    device: Any
    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


def make_context(device_name: str) -> Context:
    """Device, threads and, under ``torchrun`` (WORLD_SIZE > 1), the process group."""
    import torch

    from flarecli.core.runtime import join_process_group, resolve_device, setup_torch

    rank, world, local_rank = _dist_info()
    device = resolve_device(device_name)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        join_process_group("nccl" if device.type == "cuda" else "gloo")
    setup_torch(device, benchmark=True)
    return Context(device, rank, world)
