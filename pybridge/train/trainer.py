"""The one training loop shared by every pybridge model (no Lightning).

Adam with scvi-tools' defaults, linear KL warm-up, a random train/validation split, a validation ELBO every
epoch into ``history``, optional early stopping, and progress where people look (:mod:`pybridge.train.progress`:
a bar in a terminal or notebook, plain lines in logs, or a callback per epoch for hosts whose stderr nobody sees,
such as R under Rscript or knitr). Minibatches come from a
store (:mod:`pybridge.data.stores`); data-parallel training wraps the module and averages the metrics
(:mod:`pybridge.train.distributed`), through the same loop.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections.abc import Callable, Iterable

import numpy as np
import torch

from pybridge.errors import BATCH_EXCEEDS_CELLS, PybridgeError, PybridgeWarning
from pybridge.train.adam import make_adam
from pybridge.train.averaging import WeightAverage, first_averaged_epoch
from pybridge.train.malloc import keep_freed_buffers_in_heap
from pybridge.train.options import autocast_dtype
from pybridge.train.progress import EpochCallback, open_display

MIN_LAST_BATCH = 3  # BatchNorm needs more than one cell; tiny trailing minibatches are dropped


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


def evaluate_loss(module: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Per-cell means of the negative ELBO terms (full KL) over ``batches``, in eval mode, without gradients.

    The one evaluation loop: the Trainer's validation and every model's ``get_elbo`` /
    ``get_reconstruction_error`` go through it.
    """
    module.eval()
    totals = None
    n_cells = n_chunks = 0
    with torch.inference_mode():
        for batch in batches:
            out = module.loss(batch, 1.0)
            terms = _summed_terms(out)
            totals = terms if totals is None else totals + terms
            n_cells += len(out.reconstruction)
            n_chunks += 1
    rec, kl_local, kl_global = (0.0, 0.0, 0.0) if totals is None else totals.tolist()
    return _epoch_metrics(rec, kl_local, kl_global / max(n_chunks, 1), n_cells)


class Trainer:
    """Trains ``module`` (any object with ``loss(batch, kl_weight) -> LossOutput``) on a store's rows.

    ``train_indices`` / ``validation_indices`` are positions within ``store``. ``sync`` (data-parallel training)
    turns this process's per-epoch metrics into the job's, so that every rank records and stops alike.
    ``progress``: ``None`` (or ``True``) shows progress as fits where stderr is seen (a bar in a terminal or a
    notebook, a line every tenth of the epochs elsewhere), ``False`` hides it, and a callable
    ``progress(epoch, max_epochs, record)`` is called after each epoch (1-based) instead. ``precision``
    ("32-true" or "bf16-mixed") sets the autocast dtype of the training forward pass. ``max_steps`` (Lightning's
    keyword; None or -1: no limit) stops training after that many optimizer steps of this ``fit``, mid-epoch if
    need be, or at ``max_epochs`` if that comes first. The epoch in which it stops is recorded like any other:
    training metrics averaged over the minibatches it ran, validated when due. ``swa_epoch_start`` (a fraction
    of ``max_epochs`` or a 1-based epoch; None: off) ends training with the mean of the weights at the end of
    that epoch and every later one (:mod:`pybridge.train.averaging`); the history records the running weights.
    """

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
        validation_every: int = 1,
        early_stopping: bool = False,
        early_stopping_patience: int = 45,
        early_stopping_monitor: str = "elbo_validation",
        early_stopping_min_delta: float = 0.0,
        early_stopping_warmup_epochs: int = 0,
        progress: bool | EpochCallback | None = None,
        seed: int = 0,
        precision: int | str = "32-true",
        sync: Callable[[dict[str, float]], dict[str, float]] | None = None,
        max_steps: int | None = None,
        swa_epoch_start: float | None = None,
    ):
        if swa_epoch_start is not None:
            first_averaged_epoch(swa_epoch_start, 1)  # refuses a bad value before any training
        if max_steps is not None and max_steps != -1 and (int(max_steps) != max_steps or max_steps < 1):
            raise PybridgeError(f"max_steps must be a whole number >= 1 (or -1: no limit), got {max_steps!r}")
        if int(validation_every) != validation_every or validation_every < 1:
            raise PybridgeError(f"validation_every (check_val_every_n_epoch) must be a whole number >= 1, "
                                f"got {validation_every!r}")
        if len(train_indices) < MIN_LAST_BATCH:
            raise PybridgeError(
                f"only {len(train_indices)} training cells; at least {MIN_LAST_BATCH} are needed "
                f"(use more cells or train_size=1.0)"
            )
        if batch_size > len(train_indices):
            warnings.warn(PybridgeWarning(
                f"batch_size={batch_size} exceeds the {len(train_indices)} training cells; each epoch is one "
                f"minibatch of {len(train_indices)} cells",
                kind=BATCH_EXCEEDS_CELLS, batch_size=int(batch_size), n_cells=len(train_indices),
            ), stacklevel=4)  # the caller of model.train()
            batch_size = len(train_indices)
        self.module, self.store = module, store
        self.device = store.device
        self.train_idx = torch.as_tensor(np.asarray(train_indices, dtype=np.int64), device=self.device)
        self.val_idx = torch.as_tensor(np.asarray(validation_indices, dtype=np.int64), device=self.device)
        self.batch_size = batch_size
        params = [p for p in module.parameters() if p.requires_grad]
        self.optimizer = make_adam(params, lr=lr, eps=eps, weight_decay=weight_decay)
        self.n_epochs_kl_warmup, self.max_kl_weight = n_epochs_kl_warmup, max_kl_weight
        self.validation_every = int(validation_every)
        self.stopper = EarlyStopping(
            early_stopping_monitor, early_stopping_patience, early_stopping_min_delta, early_stopping_warmup_epochs
        ) if early_stopping and len(validation_indices) > 0 else None
        self.progress = progress
        self.autocast_dtype = autocast_dtype(precision)
        self.sync = sync
        self.max_steps = None if max_steps in (None, -1) else int(max_steps)
        self.swa_epoch_start = swa_epoch_start
        self.trained_params = params
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

    def _train_epoch(self, kl_weight: float, steps_left: int | None = None) -> tuple[dict[str, float], int]:
        """One epoch (at most ``steps_left`` minibatches): its training metrics and the optimizer steps taken."""
        self.module.train()
        totals = torch.zeros(3, device=self.device)
        n_seen = n_steps = 0
        with contextlib.closing(self._train_batches()) as batches:  # closing stops a store's prefetch thread
            for batch in itertools.islice(batches, steps_left):
                with self._forward_precision():
                    out = self.module.loss(batch, kl_weight)
                self.optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                self.optimizer.step()
                with torch.no_grad():
                    totals += _summed_terms(out)
                n_seen += len(out.reconstruction)
                n_steps += 1
        if not torch.isfinite(totals).all():
            raise PybridgeError(
                "the training loss became NaN or infinite; check the counts for extreme values or lower lr"
            )
        rec, kl_local, kl_global = totals.tolist()
        return _epoch_metrics(rec, kl_local, kl_global / max(n_steps, 1), n_seen), n_steps

    def _forward_precision(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def evaluate(self, indices: torch.Tensor) -> dict[str, float]:
        """Per-cell means of the negative ELBO terms (full KL) on the store's rows ``indices``."""
        size = max(self.batch_size, 1024)
        if hasattr(self.store, "iter_minibatches"):
            batches = self.store.iter_minibatches(indices, size, shuffle=False)
        else:
            batches = (self.store.gather(idx) for idx in torch.split(indices, size))
        return evaluate_loss(self.module, batches)

    def fit(self, max_epochs: int, history: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
        """Run up to ``max_epochs`` epochs; returns (and extends) the per-epoch history."""
        if self.device.type == "cpu":
            keep_freed_buffers_in_heap()
        history = {} if history is None else history
        start_epoch = len(history.get("elbo_train", []))
        display = open_display(self.progress, max_epochs)
        n_steps = 0
        average, first_averaged = None, max_epochs
        if self.swa_epoch_start is not None:
            average = WeightAverage(self.trained_params)
            first_averaged = first_averaged_epoch(self.swa_epoch_start, max_epochs)
        try:
            for step in range(max_epochs):
                epoch = start_epoch + step
                kl_weight = kl_weight_at(epoch, self.n_epochs_kl_warmup, self.max_kl_weight)
                steps_left = None if self.max_steps is None else self.max_steps - n_steps
                metrics, taken = self._train_epoch(kl_weight, steps_left)
                n_steps += taken
                if step >= first_averaged:
                    average.update()
                record = {f"{k}_train": v for k, v in metrics.items()}
                record["kl_weight"] = kl_weight
                if len(self.val_idx) and (epoch + 1) % self.validation_every == 0:
                    record.update({f"{k}_validation": v for k, v in self.evaluate(self.val_idx).items()})
                if self.sync is not None:
                    record = self.sync(record)
                _append(history, record, epoch)
                display.update(step + 1, record)
                if self.stopper is not None and self.stopper.should_stop(epoch, record):
                    break
                if self.max_steps is not None and n_steps >= self.max_steps:
                    break
        finally:
            display.close()
        if average is not None:
            average.apply()
        self.module.eval()
        return history


class EarlyStopping:
    """Stop after ``patience`` checks of ``monitor`` (a validation loss) without an improvement larger than
    ``min_delta``; epochs before ``warmup_epochs`` and epochs without validation are not checks."""

    MONITORS = ("elbo_validation", "reconstruction_loss_validation", "kl_local_validation")

    def __init__(self, monitor: str, patience: int, min_delta: float = 0.0, warmup_epochs: int = 0):
        if monitor not in self.MONITORS:
            raise PybridgeError(f"early_stopping_monitor must be one of {list(self.MONITORS)}, got {monitor!r}")
        self.monitor, self.patience, self.min_delta, self.warmup_epochs = monitor, patience, min_delta, warmup_epochs
        self.best, self.since_best = math.inf, 0

    def should_stop(self, epoch: int, record: dict[str, float]) -> bool:
        value = record.get(self.monitor)
        if value is None or epoch < self.warmup_epochs:
            return False
        if value < self.best - self.min_delta:
            self.best, self.since_best = value, 0
        else:
            self.since_best += 1
        return self.since_best >= self.patience


def _append(history: dict[str, list[float | None]], record: dict[str, float], epoch: int) -> None:
    """Add one epoch's ``record`` to ``history``: one list per metric, aligned by epoch, None where a metric was
    not computed (validation every k epochs)."""
    for key in [*history, *(k for k in record if k not in history)]:
        history.setdefault(key, [None] * epoch).append(record.get(key))


def _summed_terms(out) -> torch.Tensor:
    """[reconstruction summed over cells, KL summed over cells, global KL] of one minibatch's LossOutput."""
    return torch.stack([
        out.reconstruction.sum(), out.kl_local.sum(),
        torch.as_tensor(out.kl_global, device=out.reconstruction.device),
    ])


def _epoch_metrics(rec: float, kl_local: float, kl_global: float, n: int) -> dict[str, float]:
    n = max(n, 1)
    return {
        "elbo": (rec + kl_local) / n + kl_global,
        "reconstruction_loss": rec / n,
        "kl_local": kl_local / n,
        "kl_global": kl_global,
    }
