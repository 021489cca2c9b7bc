"""Multi-process data-parallel training with torch DistributedDataParallel (torchrun).

Launched as ``torchrun --nproc_per_node=N -m pybridge.cli train ...``: torchrun sets RANK / WORLD_SIZE /
LOCAL_RANK / MASTER_ADDR / MASTER_PORT, every rank builds the same model (same seed), keeps only its own
equal-sized contiguous shard of the training and validation cells on its device (an on-disk dataset from
:func:`pybridge.ooc.open_backed` is read shard-only), and DDP averages gradients across ranks (gloo on CPU,
nccl on CUDA). ``batch_size`` is the global minibatch: each rank uses ``batch_size // world_size`` cells, so one
step sees as many cells as a single-process step. Rank 0 writes outputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pybridge.data import TensorStore, aligned_counts, covariate_arrays
from pybridge.errors import PybridgeError
from pybridge.training import Trainer, default_max_epochs, split_indices


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


def context_from_env(accelerator: str = "auto") -> DistContext | None:
    """The torchrun context (initialising the process group), or None when not launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
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


def _shard_store(model, rows: np.ndarray, device: torch.device):
    """A store holding only ``rows`` of the model's data (read shard-only when the data are on disk)."""
    from pybridge.ooc import DiskStore, is_backed

    adata = model._adata(None)
    if is_backed(adata):
        return DiskStore.from_adata(adata, model.registry, device), rows
    X = aligned_counts(adata, model.registry)[rows]
    covariates = {k: v[rows] for k, v in covariate_arrays(adata, model.registry).items()}
    return TensorStore(X, covariates, device), np.arange(len(rows))


def train_distributed(
    model,
    ctx: DistContext,
    max_epochs: int | None = None,
    batch_size: int = 128,
    train_size: float = 0.9,
    validation_size: float | None = None,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    eps: float = 0.01,
    n_epochs_kl_warmup: int | None = 400,
    seed: int = 0,
    progress: bool | None = None,
) -> None:
    """Train ``model`` data-parallel across the torchrun job; afterwards every rank holds the same weights."""
    adata = model._adata(None)
    if batch_size < ctx.world_size * 3:
        raise PybridgeError(f"batch_size {batch_size} is too small for {ctx.world_size} ranks (>= 3 cells each)")
    if max_epochs is None:
        max_epochs = default_max_epochs(adata.n_obs)
    model.to_device(ctx.device)
    train_idx, val_idx = split_indices(adata.n_obs, train_size, validation_size, seed)
    my_train, my_val = shard(train_idx, ctx.rank, ctx.world_size), shard(val_idx, ctx.rank, ctx.world_size)
    rows = np.concatenate([my_train, my_val])
    store, local = _shard_store(model, rows, ctx.device)
    wrapped = DistributedModule(model.module, ctx)
    trainer = Trainer(
        wrapped, store, local[: len(my_train)], local[len(my_train) :], batch_size=batch_size // ctx.world_size,
        lr=lr, weight_decay=weight_decay, eps=eps, n_epochs_kl_warmup=n_epochs_kl_warmup,
        progress=ctx.is_main and progress, seed=seed,
    )
    model.history = _averaged_history(trainer.fit(max_epochs, model.history), ctx)
    model.train_indices, model.validation_indices = train_idx, val_idx
    model.is_trained = True
    model.module.eval()


def _averaged_history(history: dict[str, list[float]], ctx: DistContext) -> dict[str, list[float]]:
    """Per-epoch metrics averaged over ranks (each rank measured its own shard of equal size)."""
    keys = sorted(history)
    values = torch.tensor([history[k] for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(values)
    values /= ctx.world_size
    return {k: v.tolist() for k, v in zip(keys, values.cpu())}


def cleanup(ctx: DistContext | None) -> None:
    """Leave the process group (call once, at the end of the command)."""
    if ctx is not None and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
