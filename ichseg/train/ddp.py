"""DistributedDataParallel under ``torchrun``: rank/world size from the environment.

``torchrun --nproc_per_node N -m ichseg train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; the process group uses ``gloo`` on CPU and ``nccl`` on CUDA
(each rank on ``cuda:LOCAL_RANK``).  Every rank samples its own patches (its rank is part of the
per-sample seed), gradients are averaged by DDP, and only rank 0 validates and writes
checkpoints and the package; the others wait at barriers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "dist_info",
    "init_distributed",
    "barrier",
    "wrap_model",
    "unwrap",
    "all_equal",
    "broadcast_object",
    "cleanup",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Rank, world size and local rank from the environment (defaults: a single process)."""
    return DistInfo(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def init_distributed(device: torch.device, timeout_s: float = 7200.0) -> DistInfo:
    """Join the process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    info = dist_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend=backend, rank=info.rank, world_size=info.world_size, timeout=timedelta(seconds=timeout_s)
        )
    return info


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DistributedDataParallel when running distributed (parameters broadcast from rank 0)."""
    if not info.enabled:
        return model
    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_equal(model: nn.Module, info: DistInfo) -> bool:
    """True when every rank holds the same weights (compares float64 checksums of all parameters)."""
    if not info.enabled:
        return True
    params = list(unwrap(model).state_dict().values())
    local = torch.stack([p.detach().double().sum() for p in params] + [p.detach().double().abs().sum() for p in params])
    device = params[0].device
    gathered = [torch.zeros_like(local, device=device) for _ in range(info.world_size)]
    dist.all_gather(gathered, local.to(device))
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's object on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
