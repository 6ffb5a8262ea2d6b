"""Multi-process training helpers (PyTorch DDP) for runs under ``torchrun``.

``torchrun --nproc_per_node N -m export.cli_train ...`` sets RANK / WORLD_SIZE /
MASTER_ADDR / MASTER_PORT; :func:`init` then joins the process group (NCCL when CUDA is
available, gloo otherwise; override with PLANNER_RUNTIME_DDP_BACKEND). Without those
variables everything here is a no-op and training runs single-process.

Semantics the loop relies on: every rank draws different batches (its rank is part of the
per-step seed) of ``batch_size // world`` windows, so the global batch and the learning
rate mean the same thing at any world size; DDP averages gradients, so all ranks hold
identical weights (and EMA weights) after every step; only rank 0 logs and checkpoints.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


def env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init() -> tuple[int, int]:
    """Join the process group if launched by torchrun. Returns (rank, world_size)."""
    world = env_world()
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = os.environ.get("PLANNER_RUNTIME_DDP_BACKEND") or (
            "nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=10))
    return dist.get_rank(), dist.get_world_size()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def wrap(model: nn.Module) -> nn.Module:
    """DistributedDataParallel when a group is active, else the model itself."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model)


def mean(x: torch.Tensor) -> torch.Tensor:
    """All-reduce average of a scalar tensor across ranks (identity single-process)."""
    if not active():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / dist.get_world_size()


def barrier() -> None:
    if active():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
