"""Data parallelism over torch.distributed: nccl on GPUs, gloo on CPU, launched by torchrun.

Each rank computes gradients on its own chunks of the global batch; `all_reduce_gradients` sums
them (every rank's loss is already divided by the global batch), so all ranks take the same
Adam step from the same weights and stay identical without broadcasting parameters.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from full.errors import ConfigError


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:local_rank when a GPU is present, else cpu."""
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError:
        raise ConfigError(f"--device {preference!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {preference!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {preference} asked for a GPU but none is available; use --device cpu")
    return device


def init(preference: str = "auto") -> Ranks:
    """Join the process group torchrun describes (WORLD_SIZE/RANK/LOCAL_RANK), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(preference, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Ranks(int(os.environ.get("RANK", "0")), world, device)


def all_reduce_gradients(parameters, ranks: Ranks) -> None:
    """Sum the gradients of `parameters` over ranks, in one flat buffer."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if ranks.world == 1 or not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_sum(values: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Sum a small statistics tensor over ranks (for logging)."""
    if ranks.world > 1:
        values = values.clone()
        dist.all_reduce(values)
    return values


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group together: the main rank may still be writing files when the others finish, and
    gloo aborts a process whose peer tears its connection down first."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
