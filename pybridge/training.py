"""The one training loop shared by every pybridge model (no Lightning).

Adam with scvi-tools' defaults, linear KL warm-up, a random train/validation split, a validation ELBO every
epoch into ``history``, optional early stopping and a tqdm progress bar on stderr. Minibatches are gathered
from a device-resident :class:`~pybridge.data.TensorStore`.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import sys
import warnings
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from pybridge.errors import PybridgeError

MIN_LAST_BATCH = 3  # BatchNorm needs more than one cell; tiny trailing minibatches are dropped


@functools.cache
def keep_freed_buffers_in_heap() -> bool:
    """Ask glibc to keep freed buffers up to 64 MB in the heap (trimmed back to the OS past 256 MB).

    Each step allocates and frees [cells x genes] temporaries of a few MB; with glibc's defaults they are mapped
    and unmapped from the OS every step, and the page faults cost ~7 % of CPU training time. Process-wide, done
    once; set PYBRIDGE_MALLOC_TUNING=0 to leave malloc alone. Returns whether the setting was applied.
    """
    if os.environ.get("PYBRIDGE_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 64 << 20)) and bool(libc.mallopt(m_trim_threshold, 256 << 20))
    except (OSError, AttributeError):  # not glibc
        return False


def resolve_device(accelerator: str = "auto", device: int | str | None = None) -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; ``"gpu"``/``"cuda"`` insist on CUDA."""
    if accelerator not in ("auto", "cpu", "gpu", "cuda"):
        raise PybridgeError(f"accelerator must be 'auto', 'cpu', 'gpu' or 'cuda', got {accelerator!r}")
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise PybridgeError(f"accelerator={accelerator!r} but no CUDA device is available; use accelerator='cpu'")
    if torch.cuda.is_available():
        index = 0 if device in (None, "auto") else int(device)
        return torch.device(f"cuda:{index}")
    return torch.device("cpu")


def default_max_epochs(n_cells: int) -> int:
    """scvi-tools' heuristic: min(round(20000 / n_cells * 400), 400)."""
    return int(min(round(20000 / max(n_cells, 1) * 400), 400))


def split_indices(
    n: int, train_size: float = 0.9, validation_size: float | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A random train/validation split (validation = the rest unless ``validation_size`` is given)."""
    if not 0 < train_size <= 1:
        raise PybridgeError(f"train_size must be in (0, 1], got {train_size}")
    n_train = math.ceil(train_size * n)
    n_val = n - n_train if validation_size is None else math.floor(validation_size * n)
    if n_train + n_val > n:
        raise PybridgeError(f"train_size + validation_size exceeds 1 ({train_size} + {validation_size})")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val : n_val + n_train]), np.sort(perm[:n_val])


def kl_weight_at(epoch: int, n_epochs_kl_warmup: int | None, max_kl_weight: float = 1.0) -> float:
    """Linear warm-up from 0 at epoch 0 to ``max_kl_weight`` at ``n_epochs_kl_warmup``."""
    if not n_epochs_kl_warmup:
        return max_kl_weight
    return max_kl_weight * min(1.0, epoch / n_epochs_kl_warmup)


class Trainer:
    """Trains ``module`` (any object with ``loss(batch, kl_weight) -> LossOutput``) on a store's rows."""

    def __init__(
        self,
        module: torch.nn.Module,
        store,
        train_indices: np.ndarray,
        validation_indices: np.ndarray,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        eps: float = 0.01,
        n_epochs_kl_warmup: int | None = 400,
        max_kl_weight: float = 1.0,
        early_stopping: bool = False,
        early_stopping_patience: int = 45,
        early_stopping_min_delta: float = 0.0,
        progress: bool | None = None,
        seed: int = 0,
        optimizer_params: Callable[[torch.nn.Module], list] | None = None,
    ):
        if len(train_indices) < MIN_LAST_BATCH:
            raise PybridgeError(
                f"only {len(train_indices)} training cells; at least {MIN_LAST_BATCH} are needed "
                f"(use more cells or train_size=1.0)"
            )
        if batch_size > len(train_indices):
            warnings.warn(
                f"batch_size={batch_size} exceeds the {len(train_indices)} training cells; each epoch is one "
                f"minibatch of {len(train_indices)} cells", stacklevel=3,
            )
            batch_size = len(train_indices)
        self.module, self.store = module, store
        self.device = store.device
        self.train_idx = torch.as_tensor(np.asarray(train_indices, dtype=np.int64), device=self.device)
        self.val_idx = torch.as_tensor(np.asarray(validation_indices, dtype=np.int64), device=self.device)
        self.batch_size = batch_size
        params = optimizer_params(module) if optimizer_params else [p for p in module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=lr, eps=eps, weight_decay=weight_decay, fused=True)
        self.n_epochs_kl_warmup, self.max_kl_weight = n_epochs_kl_warmup, max_kl_weight
        self.early_stopping = early_stopping and len(validation_indices) > 0
        self.patience, self.min_delta = early_stopping_patience, early_stopping_min_delta
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        torch.manual_seed(seed)

    def _minibatches(self) -> list[torch.Tensor]:
        order = self.train_idx[
            torch.randperm(len(self.train_idx), generator=self.generator, device=self.device)
        ]
        chunks = list(torch.split(order, self.batch_size))
        if len(chunks) > 1 and len(chunks[-1]) < MIN_LAST_BATCH:
            chunks.pop()
        return chunks

    def _train_batches(self):
        """One epoch's minibatches; a store with its own read order (on-disk data) provides them itself."""
        if hasattr(self.store, "iter_minibatches"):
            return self.store.iter_minibatches(
                self.train_idx, self.batch_size, self.generator, min_last=MIN_LAST_BATCH
            )
        return (self.store.gather(idx) for idx in self._minibatches())

    def _train_epoch(self, kl_weight: float) -> dict[str, float]:
        self.module.train()
        totals = torch.zeros(3, device=self.device)
        n_seen = n_steps = 0
        for batch in self._train_batches():
            out = self.module.loss(batch, kl_weight)
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                totals += torch.stack(
                    [out.reconstruction.sum(), out.kl_local.sum(), torch.as_tensor(out.kl_global, device=self.device)]
                )
            n_seen += len(out.reconstruction)
            n_steps += 1
        if not torch.isfinite(totals).all():
            raise PybridgeError(
                "the training loss became NaN or infinite; check the counts for extreme values or lower lr"
            )
        rec, kl_local, kl_global = totals.tolist()
        return _epoch_metrics(rec, kl_local, kl_global / max(n_steps, 1), n_seen)

    @torch.inference_mode()
    def evaluate(self, indices: torch.Tensor) -> dict[str, float]:
        """Per-cell means of the negative ELBO terms (full KL) on ``indices``, in eval mode."""
        self.module.eval()
        totals = torch.zeros(3, device=self.device)
        size = max(self.batch_size, 1024)
        if hasattr(self.store, "iter_minibatches"):
            batches = self.store.iter_minibatches(indices, size, shuffle=False)
        else:
            batches = (self.store.gather(idx) for idx in torch.split(indices, size))
        n_chunks = 0
        for batch in batches:
            n_chunks += 1
            out = self.module.loss(batch, 1.0)
            totals += torch.stack(
                [out.reconstruction.sum(), out.kl_local.sum(), torch.as_tensor(out.kl_global, device=self.device)]
            )
        rec, kl_local, kl_global = totals.tolist()
        return _epoch_metrics(rec, kl_local, kl_global / max(n_chunks, 1), len(indices))

    def fit(self, max_epochs: int, history: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
        """Run up to ``max_epochs`` epochs; returns (and extends) the per-epoch history."""
        if self.device.type == "cpu":
            keep_freed_buffers_in_heap()
        history = {} if history is None else history
        start_epoch = len(history.get("elbo_train", []))
        best, since_best = math.inf, 0
        bar = tqdm(range(max_epochs), disable=not self.progress, file=sys.stderr, desc="Training", unit="epoch")
        for step in bar:
            kl_weight = kl_weight_at(start_epoch + step, self.n_epochs_kl_warmup, self.max_kl_weight)
            record = {f"{k}_train": v for k, v in self._train_epoch(kl_weight).items()}
            record["kl_weight"] = kl_weight
            if len(self.val_idx):
                record.update({f"{k}_validation": v for k, v in self.evaluate(self.val_idx).items()})
            for key, value in record.items():
                history.setdefault(key, []).append(value)
            shown = record.get("elbo_validation", record["elbo_train"])
            bar.set_postfix_str(f"elbo={record['elbo_train']:.1f}" + (
                f" val={shown:.1f}" if "elbo_validation" in record else ""))
            if self.early_stopping:
                if shown < best - self.min_delta:
                    best, since_best = shown, 0
                else:
                    since_best += 1
                if since_best >= self.patience:
                    break
        bar.close()
        self.module.eval()
        return history


def _epoch_metrics(rec: float, kl_local: float, kl_global: float, n: int) -> dict[str, float]:
    n = max(n, 1)
    return {
        "elbo": (rec + kl_local) / n + kl_global,
        "reconstruction_loss": rec / n,
        "kl_local": kl_local / n,
        "kl_global": kl_global,
    }
