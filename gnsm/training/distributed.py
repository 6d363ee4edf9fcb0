"""``torch.distributed`` helpers of the trainer: initialization from torchrun's environment, the
process's rank, and a sampler that can start an epoch part-way (resume without replaying the loader)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler

__all__ = ["ResumableDistributedSampler", "dist_info", "init_distributed"]


def init_distributed(backend: str | None = None) -> tuple[int, int]:
    """Initialize ``torch.distributed`` from torchrun's environment when ``WORLD_SIZE > 1``.

    Returns ``(rank, world_size)``; ``(0, 1)`` when not distributed.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` when ``torch.distributed`` is not initialized."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ResumableDistributedSampler(DistributedSampler):
    """A ``DistributedSampler`` whose epoch starts at position ``start`` (set before iterating)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start = 0

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start
