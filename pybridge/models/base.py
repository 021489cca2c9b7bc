"""What every user-facing model shares: AnnData registration, reading cells, training, save/load."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anndata
import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from pybridge._version import __version__
from pybridge.data.factory import make_store
from pybridge.data.minified import check_minified_by, require_counts
from pybridge.data.registry import SETUP_KEY, Registry, registry_of
from pybridge.data.setup import refuse_view, setup_anndata
from pybridge.errors import PybridgeError
from pybridge.io.model_dir import load_model_dir, save_model_dir
from pybridge.train import distributed
from pybridge.train.device import resolve_device
from pybridge.train.options import autocast_dtype, device_for, translate_train_kwargs
from pybridge.train.trainer import EpochCallback, Trainer, default_max_epochs, evaluate_loss, split_indices

DEFAULT_CHUNK = 1024
#: Cells per minibatch of calls that run the encoder alone (small outputs; fewer, larger sparse products).
ENCODER_CHUNK = 4096


class BaseModel:
    """Holds an AnnData's registry, a torch module and the training history.

    Subclasses define ``_build_module(registry, **init_params)``; ``_data_parallel = False`` for those that
    cannot train under DDP.
    """

    _init_params: dict[str, Any]

    def __init__(self, adata: AnnData | None, registry: Registry | None = None):
        self.adata = adata
        self.registry = registry if registry is not None else registry_of(adata)
        self._epoch_metrics: dict[str, list[float | None]] = {}
        self.train_indices: np.ndarray | None = None
        self.validation_indices: np.ndarray | None = None
        self.is_trained = False
        self.device = torch.device("cpu")

    # ---- data -------------------------------------------------------------------------------------------
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        allow_non_integer: bool = False,
    ) -> None:
        """Validate the counts and record which layer and obs columns the model uses (scvi-tools API)."""
        cls._refuse_minified(adata, f"{cls.__name__}.setup_anndata")
        setup_anndata(
            adata, layer, batch_key, labels_key, categorical_covariate_keys, continuous_covariate_keys,
            allow_non_integer,
        )

    @classmethod
    def _refuse_minified(cls, adata: AnnData, what: str) -> None:
        """Refuse minified data where a model is set up or built on counts; they go to the model that made them."""
        require_counts(
            adata, what,
            f"To use minified data, load the model that minified it: {cls.__name__}.load(path, adata=minified).",
        )

    def _init_module(self, registry: Registry, **params) -> None:
        """Build ``self.module`` with deterministic initial weights (scvi-tools gets them from its default
        global seed), without touching the caller's random state."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.module = self._build_module(registry, **params)

    def _adata(self, adata: AnnData | None) -> AnnData:
        if adata is not None:
            return adata
        if self.adata is None:
            raise PybridgeError("this model was loaded without data; pass adata=...")
        return self.adata

    def _data(self, adata: AnnData | None) -> AnnData:
        """The data to read outputs from (default: the model's); minified data must be this model's."""
        adata = self._adata(adata)
        check_minified_by(adata, self.module)
        return adata

    def _rows(self, adata: AnnData | None, indices) -> np.ndarray | None:
        """Validated cell positions of ``indices`` (None = all cells)."""
        if indices is None:
            return None
        n = self._adata(adata).n_obs
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise PybridgeError(f"a boolean mask of cells needs {n} entries, got {idx.shape[0]}")
            idx = np.flatnonzero(idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise PybridgeError(f"indices must lie in [0, {n}); got values from {idx.min()} to {idx.max()}")
        return idx.astype(np.int64)

    def _minibatches(
        self, adata: AnnData | None, indices, batch_size: int | None, likelihood: bool = False,
        sparse_counts: bool = False,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Minibatches of the chosen cells, in their order, with the module in eval mode: the one loop that
        every output call of every model reads through. Only the chosen cells are read and moved.
        ``sparse_counts=True``: sparse data may come as a sparse CSR tensor, for calls that read the counts only
        through the encoder and the library size (SCVI's inference handles both layouts)."""
        self.module.eval()
        store = make_store(self._data(adata), self.registry, self.device, self._rows(adata, indices), likelihood)
        size = batch_size or DEFAULT_CHUNK
        for start in range(0, len(store), size):
            stop = min(start + size, len(store))
            if hasattr(store, "gather_range"):
                # measured on CPU only (a GPU densifies and multiplies faster than cuSPARSE at these densities)
                yield store.gather_range(start, stop, sparse_counts=sparse_counts and self.device.type == "cpu")
            else:
                yield store.gather(torch.arange(start, stop, device=self.device))

    def _evaluate(self, adata: AnnData | None, indices, batch_size: int | None, what: str) -> dict[str, float]:
        """Per-cell means of the negative ELBO terms on the chosen cells (see :func:`evaluate_loss`); ``what``
        names the caller in the refusal of minified data."""
        require_counts(self._adata(adata), what)
        return evaluate_loss(self.module, self._minibatches(adata, indices, batch_size, likelihood=True))

    # ---- training -----------------------------------------------------------------------------------------
    _data_parallel = True  # False for models with per-cell parameters, whose gradients DDP would average
    _mixed_precision = False  # True where the module keeps its likelihood and KL terms in float32 under autocast

    def to_device(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.module.to(self.device)

    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = 128,
        train_size: float = 0.9,
        validation_size: float | None = None,
        early_stopping: bool = False,
        early_stopping_patience: int = 45,
        early_stopping_monitor: str = "elbo_validation",
        early_stopping_min_delta: float = 0.0,
        early_stopping_warmup_epochs: int = 0,
        validation_every: int = 1,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        eps: float = 0.01,
        n_epochs_kl_warmup: int | None = 400,
        max_kl_weight: float = 1.0,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        device: int | str | None = None,
        seed: int = 0,
        progress: bool | EpochCallback | None = None,
        strategy: str = "auto",
        precision: int | str = "32-true",
        swa_epoch_start: float | None = None,
        plan_kwargs: dict[str, Any] | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        """Train with Adam and KL warm-up; per-epoch train and validation losses go to ``self.history``.

        The validation loss is computed every ``validation_every`` epochs (scvi-tools: ``check_val_every_n_epoch``).
        Early stopping watches ``early_stopping_monitor`` and stops after ``early_stopping_patience`` checks
        without an improvement larger than ``early_stopping_min_delta``, counted once ``early_stopping_warmup_epochs``
        have passed. scvi-tools' keywords (``enable_progress_bar``, ``check_val_every_n_epoch``, ``devices``,
        ``plan_kwargs={"lr": ...}``) are mapped onto these; the ones without a counterpart are refused by name
        (:mod:`pybridge.train.options`). Lightning's ``max_steps=N`` stops after N optimizer steps, within an
        epoch if need be (that partial epoch is recorded in the history like the others).

        ``strategy="auto"`` trains data-parallel when the process was launched by torchrun and in this process
        otherwise (``"ddp"`` / ``"single"`` force one or the other); both run the same loop, checks, early
        stopping and history.

        ``precision="bf16-mixed"`` (Lightning's name, as in scvi-tools) runs the training forward pass's linear
        layers in bfloat16 under autocast, with the likelihood, the KL terms and the weights in float32; it pays
        off on GPUs and on CPUs with bfloat16 instructions (AVX512-BF16, AMX). Validation and outputs stay in float32.

        ``swa_epoch_start`` (a fraction of ``max_epochs`` in (0, 1), or a 1-based epoch; named as in Lightning's
        ``StochasticWeightAveraging``, which also changes the learning rate, this does not) ends training with
        the mean of the weights at the end of that epoch and of every later one; None (the default here) keeps
        the last weights.
        """
        arguments = locals()
        options = {name: arguments[name] for name in _TRAIN_DEFAULTS}
        options.update(translate_train_kwargs(trainer_kwargs, plan_kwargs, options, _TRAIN_DEFAULTS))
        options["device"] = device_for(devices, options["device"])
        self._fit(**options)

    def _fit(
        self, max_epochs, batch_size, train_size, validation_size, accelerator, device, seed, progress, strategy,
        **trainer_options,
    ) -> None:
        """The training run behind :meth:`train`, with scvi-tools' keywords already translated."""
        adata = self._adata(None)
        require_counts(adata, f"{type(self).__name__}.train")
        if autocast_dtype(trainer_options["precision"]) is not None and not self._mixed_precision:
            raise PybridgeError(
                f"precision={trainer_options['precision']!r} is available for SCVI; {type(self).__name__} trains in "
                "float32: drop precision="
            )
        ctx = distributed.context_for(strategy, accelerator)
        if ctx is not None and not self._data_parallel:
            raise PybridgeError(
                f"{type(self).__name__} has per-cell parameters and trains in one process; launch it without "
                "torchrun or pass strategy='single'"
            )
        self.to_device(ctx.device if ctx is not None else resolve_device(accelerator, device))
        if max_epochs is None:
            max_epochs = default_max_epochs(adata.n_obs)
        train_idx, val_idx = split_indices(adata.n_obs, train_size, validation_size, seed)
        self.train_indices, self.validation_indices = train_idx, val_idx
        module, rows, sync = self.module, None, None
        if ctx is not None:
            batch_size = distributed.check_batch_size(batch_size, ctx)
            train_idx = distributed.shard(train_idx, ctx.rank, ctx.world_size)
            val_idx = distributed.shard(val_idx, ctx.rank, ctx.world_size)
            rows = np.concatenate([train_idx, val_idx])
            train_idx, val_idx = np.arange(len(train_idx)), np.arange(len(train_idx), len(rows))
            module = distributed.DistributedModule(self.module, ctx)
            sync = functools.partial(distributed.averaged, ctx=ctx)
            progress = ctx.is_main and progress
        trainer = Trainer(
            module, make_store(adata, self.registry, self.device, rows, likelihood=True), train_idx, val_idx,
            batch_size=batch_size, progress=progress, seed=seed, sync=sync, **trainer_options,
        )
        self._epoch_metrics = trainer.fit(max_epochs, self._epoch_metrics)
        self.is_trained = True

    @property
    def history(self) -> dict[str, pd.DataFrame]:
        """Per-epoch metrics as in scvi-tools: one DataFrame per metric, indexed by ``epoch`` (from 0), with one
        column named like the metric. ``elbo_*`` hold the loss (negative ELBO per cell, lower is better);
        validation metrics exist for the epochs that were validated."""
        return {key: _metric_frame(key, values) for key, values in self._epoch_metrics.items()}

    def view_anndata_setup(self, adata: AnnData | None = None) -> None:
        """Print what ``setup_anndata`` recorded: layer, obs columns, their categories, genes (scvi-tools API)."""
        registry = self.registry if adata is None else registry_of(adata)
        print(registry.describe())

    @property
    def summary_stats(self) -> dict[str, int | None]:
        """Counts of cells, genes, batches, labels and covariates, under scvi-tools' names (``n_cells`` is None
        for a model loaded without data)."""
        return {
            "n_cells": None if self.adata is None else int(self.adata.n_obs),
            "n_vars": len(self.registry.var_names),
            "n_batch": self.registry.n_batch,
            "n_labels": self.registry.n_labels,
            "n_extra_categorical_covs": len(self.registry.categorical_covariate_keys),
            "n_extra_continuous_covs": len(self.registry.continuous_covariate_keys),
        }

    # ---- persistence -----------------------------------------------------------------------------------
    def _metadata(self) -> dict:
        return {
            "pybridge_version": __version__,
            "model_class": type(self).__name__,
            "init_params": self._init_params,
            "registry": self.registry.__dict__,
            "history": self._epoch_metrics,
            "is_trained": self.is_trained,
            "train_indices": None if self.train_indices is None else self.train_indices.tolist(),
            "validation_indices": None if self.validation_indices is None else self.validation_indices.tolist(),
        }

    def save(self, dir_path: str | os.PathLike, overwrite: bool = False, save_anndata: bool = False) -> None:
        """Save to ``dir_path`` (model.safetensors + model.json, optionally adata.h5ad), atomically."""
        target = save_model_dir(dir_path, self.module.state_dict(), self._metadata(), overwrite)
        if save_anndata and self.adata is not None:
            tmp = target / ".adata.h5ad.tmp"
            self.adata.write_h5ad(tmp)
            os.replace(tmp, target / "adata.h5ad")

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: AnnData | None = None,
        accelerator: str = "auto",
        device: int | str | None = None,
    ):
        """Load a saved model; ``adata`` (if given) must hold the model's genes (any order)."""
        tensors, meta = load_model_dir(dir_path)
        if meta.get("model_class") != cls.__name__:
            raise PybridgeError(
                f"{dir_path} holds a {meta.get('model_class')!r} model; load it with pybridge.{meta.get('model_class')}.load"
            )
        model = cls._restore(
            dir_path, tensors, Registry.from_dict(meta["registry"]), meta["init_params"], adata,
            resolve_device(accelerator, device), meta.get("is_trained", True),
        )
        model._epoch_metrics = meta.get("history", {})
        for attr in ("train_indices", "validation_indices"):
            if meta.get(attr) is not None:
                setattr(model, attr, np.asarray(meta[attr], dtype=np.int64))
        return model

    @classmethod
    def _restore(
        cls, source: str | os.PathLike, tensors: dict[str, torch.Tensor], registry: Registry, init_params: dict,
        adata: AnnData | None, device: torch.device, is_trained: bool,
    ):
        """A model of ``cls`` built from saved parts, with ``adata`` (or the data saved beside it) attached.

        The one construction path for every saved model, pybridge's own or scvi-tools'.
        """
        saved_adata = Path(source) / "adata.h5ad"
        if adata is None and saved_adata.is_file():
            adata = anndata.read_h5ad(saved_adata)
        if adata is not None:
            refuse_view(adata, f"{cls.__name__}.load(adata=...)")
            _check_genes(adata, registry, source)
            adata.uns[SETUP_KEY] = registry.to_json()
        model = cls.__new__(cls)
        BaseModel.__init__(model, adata, registry)
        model._init_params = init_params
        model.module = model._build_module(registry, **init_params)
        try:
            model.module.load_state_dict(tensors)
        except RuntimeError as err:
            raise PybridgeError(f"weights in {source} do not fit a {cls.__name__} of the recorded shape: {err}") from None
        model.is_trained = is_trained
        model.to_device(device)
        model.module.eval()
        return model

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._init_params.items())
        state = "trained" if self.is_trained else "untrained"
        return f"{type(self).__name__}({params}) [{state}, {len(self.registry.var_names)} genes]"


_TRAIN_DEFAULTS = {
    name: p.default for name, p in inspect.signature(BaseModel.train).parameters.items()
    if p.default is not inspect.Parameter.empty and name not in ("devices", "plan_kwargs")
}


def _metric_frame(key: str, values: list[float | None]) -> pd.DataFrame:
    """scvi-tools' history layout: the epochs with a value, as index ``epoch``, and one column ``key``."""
    epochs = [epoch for epoch, value in enumerate(values) if value is not None]
    return pd.DataFrame({key: [values[e] for e in epochs]}, index=pd.Index(epochs, name="epoch"), dtype=float)


def _check_genes(adata: AnnData, registry: Registry, source) -> None:
    have = set(map(str, adata.var_names))
    missing = [g for g in registry.var_names if g not in have]
    if missing:
        raise PybridgeError(
            f"adata lacks {len(missing)} of the {len(registry.var_names)} genes the model in {source} was trained "
            f"on (e.g. {missing[:5]}); pass data with the same genes (order may differ)"
        )
