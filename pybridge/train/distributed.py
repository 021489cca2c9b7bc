"""The data-parallel strategy of ``model.train()``: torch DistributedDataParallel under torchrun.

Launched as ``torchrun --nproc_per_node=N script.py`` (or ``-m pybridge.cli train ...``), ``model.train()``
detects the job (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT): every rank builds the
same model (same seed), keeps only its own equal-sized contiguous shard of the training and validation cells
(an on-disk dataset from :func:`pybridge.data.disk.open_backed` is read shard-only), DDP averages gradients
across ranks (gloo on CPU, nccl on CUDA) and each epoch's metrics are averaged, so history and early stopping
agree on every rank. ``batch_size`` is the global minibatch: each rank uses ``batch_size // world_size`` cells.
Rank 0 writes outputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pybridge.errors import PybridgeError


@dataclass
class DistContext:
    """Where this process sits in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


STRATEGIES = ("auto", "single", "ddp")


def context_for(strategy: str = "auto", accelerator: str = "auto") -> DistContext | None:
    """The torchrun context (joining the process group) for ``strategy``, or None for one process.

    ``"auto"`` is data-parallel when launched by torchrun (WORLD_SIZE > 1) and single-process otherwise;
    ``"ddp"`` insists on torchrun, ``"single"`` ignores it.
    """
    if strategy not in STRATEGIES:
        raise PybridgeError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if strategy == "ddp" and world <= 1:
        raise PybridgeError(
            "strategy='ddp' needs several processes: launch with torchrun --nproc_per_node=N (WORLD_SIZE is unset or 1)"
        )
    if strategy == "single" or world <= 1:
        return None
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if accelerator in ("gpu", "cuda") and not use_cuda:
        raise PybridgeError(f"accelerator={accelerator!r} but no CUDA device is available on rank {rank}")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise PybridgeError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs on this node; "
                f"use --nproc_per_node <= the number of GPUs"
            )
        torch.cuda.set_device(local_rank)
        device, backend = torch.device(f"cuda:{local_rank}"), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local_rank, device, backend)


def shard(indices: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's contiguous slice of ``indices``; every rank gets the same count (the remainder is dropped)."""
    per_rank = len(indices) // world_size
    return np.asarray(indices)[rank * per_rank : (rank + 1) * per_rank]


class _LossForward(nn.Module):
    """Makes ``module.loss`` the forward pass, so that DDP's gradient hooks see it."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.inner = module

    def forward(self, batch: dict, kl_weight: float):
        return self.inner.loss(batch, kl_weight)


class DistributedModule(nn.Module):
    """What the Trainer trains: ``loss`` runs through DDP when gradients are needed, locally otherwise
    (evaluation issues no collective calls, so ranks may evaluate different numbers of cells)."""

    def __init__(self, module: nn.Module, ctx: DistContext):
        super().__init__()
        self.ddp = DistributedDataParallel(
            _LossForward(module), device_ids=[ctx.local_rank] if ctx.backend == "nccl" else None,
            find_unused_parameters=True,
        )

    @property
    def inner(self) -> nn.Module:
        return self.ddp.module.inner

    def loss(self, batch: dict, kl_weight: float = 1.0):
        if torch.is_grad_enabled() and self.training:
            return self.ddp(batch, kl_weight)
        return self.inner.loss(batch, kl_weight)


def check_batch_size(batch_size: int, ctx: DistContext) -> int:
    """Each rank's share of the global minibatch (at least 3 cells each)."""
    if batch_size < ctx.world_size * 3:
        raise PybridgeError(f"batch_size {batch_size} is too small for {ctx.world_size} ranks (>= 3 cells each)")
    return batch_size // ctx.world_size


def averaged(record: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """One epoch's metrics averaged over ranks (each rank measured its own shard of equal size)."""
    keys = sorted(record)
    values = torch.tensor([record[k] for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(values)
    values /= ctx.world_size
    return dict(zip(keys, values.cpu().tolist()))


def is_main_process() -> bool:
    """True unless this is a rank other than 0 of an initialised process group."""
    return not dist.is_initialized() or dist.get_rank() == 0


def cleanup() -> None:
    """Leave the process group, if one was joined (call once, at the end of the command)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
