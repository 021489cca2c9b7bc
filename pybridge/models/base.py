"""What every user-facing model shares: AnnData registration, device-resident data, training, save/load."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anndata import AnnData

from pybridge import __version__
from pybridge.data import Registry, TensorStore, aligned_counts, covariate_arrays, registry_of, setup_anndata
from pybridge.errors import PybridgeError
from pybridge.io import load_model_dir, save_model_dir
from pybridge.training import Trainer, default_max_epochs, resolve_device, split_indices


class BaseModel:
    """Holds an AnnData's registry, a torch module and the training history.

    Subclasses define ``_build_module(registry, **init_params)`` and may override ``_store_fields``.
    """

    _init_params: dict[str, Any]

    def __init__(self, adata: AnnData | None, registry: Registry | None = None):
        self.adata = adata
        self.registry = registry if registry is not None else registry_of(adata)
        self.history: dict[str, list[float]] = {}
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
        setup_anndata(
            adata, layer, batch_key, labels_key, categorical_covariate_keys, continuous_covariate_keys,
            allow_non_integer,
        )

    def _adata(self, adata: AnnData | None) -> AnnData:
        if adata is not None:
            return adata
        if self.adata is None:
            raise PybridgeError("this model was loaded without data; pass adata=...")
        return self.adata

    def _store(self, adata: AnnData | None = None) -> TensorStore:
        """A device-resident store of ``adata``, read afresh (so later edits of the data are seen); minified
        data give a store of latent posteriors, data opened with :func:`pybridge.ooc.open_backed` an on-disk
        store."""
        from pybridge.minify import MinifiedStore, is_minified, latent_cells_from_minified
        from pybridge.ooc import DiskStore, is_backed

        adata = self._adata(adata)
        if is_minified(adata):
            return MinifiedStore(latent_cells_from_minified(adata, self.registry), self.device)
        if is_backed(adata):
            return DiskStore.from_adata(adata, self.registry, self.device)
        return TensorStore(aligned_counts(adata, self.registry), covariate_arrays(adata, self.registry), self.device)

    def _index_tensor(self, adata: AnnData | None, indices) -> torch.Tensor:
        n = self._adata(adata).n_obs
        idx = np.arange(n) if indices is None else np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise PybridgeError(f"indices must lie in [0, {n}); got values from {idx.min()} to {idx.max()}")
        return torch.as_tensor(idx.astype(np.int64), device=self.device)

    # ---- training -----------------------------------------------------------------------------------------
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
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        eps: float = 0.01,
        n_epochs_kl_warmup: int | None = 400,
        accelerator: str = "auto",
        device: int | str | None = None,
        seed: int = 0,
        progress: bool | None = None,
    ) -> None:
        """Train with Adam and KL warm-up; per-epoch train and validation ELBO go to ``self.history``."""
        from pybridge.minify import require_counts

        adata = self._adata(None)
        require_counts(adata, "training")
        self.to_device(resolve_device(accelerator, device))
        if max_epochs is None:
            max_epochs = default_max_epochs(adata.n_obs)
        train_idx, val_idx = split_indices(adata.n_obs, train_size, validation_size, seed)
        self.train_indices, self.validation_indices = train_idx, val_idx
        trainer = Trainer(
            self.module, self._store(), train_idx, val_idx, batch_size=batch_size, lr=lr,
            weight_decay=weight_decay, eps=eps, n_epochs_kl_warmup=n_epochs_kl_warmup,
            early_stopping=early_stopping, early_stopping_patience=early_stopping_patience,
            progress=progress, seed=seed,
        )
        self.history = trainer.fit(max_epochs, self.history)
        self.is_trained = True

    # ---- persistence -----------------------------------------------------------------------------------
    def _metadata(self) -> dict:
        return {
            "pybridge_version": __version__,
            "model_class": type(self).__name__,
            "init_params": self._init_params,
            "registry": self.registry.__dict__,
            "history": self.history,
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
        target = resolve_device(accelerator, device)
        tensors, meta = load_model_dir(dir_path)
        if meta.get("model_class") != cls.__name__:
            raise PybridgeError(
                f"{dir_path} holds a {meta.get('model_class')!r} model; load it with pybridge.{meta.get('model_class')}.load"
            )
        registry = Registry.from_dict(meta["registry"])
        saved_adata = Path(dir_path) / "adata.h5ad"
        if adata is None and saved_adata.is_file():
            import anndata

            adata = anndata.read_h5ad(saved_adata)
        if adata is not None:
            _check_genes(adata, registry, dir_path)
            adata.uns["_pybridge_setup"] = registry.to_json()
        model = cls.__new__(cls)
        BaseModel.__init__(model, adata, registry)
        model._init_params = meta["init_params"]
        model.module = model._build_module(registry, **meta["init_params"])
        try:
            model.module.load_state_dict(tensors)
        except RuntimeError as err:
            raise PybridgeError(f"weights in {dir_path} do not fit a {cls.__name__} of the recorded shape: {err}") from None
        model.history = meta.get("history", {})
        model.is_trained = meta.get("is_trained", True)
        for attr in ("train_indices", "validation_indices"):
            if meta.get(attr) is not None:
                setattr(model, attr, np.asarray(meta[attr], dtype=np.int64))
        model.to_device(target)
        model.module.eval()
        return model

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._init_params.items())
        state = "trained" if self.is_trained else "untrained"
        return f"{type(self).__name__}({params}) [{state}, {len(self.registry.var_names)} genes]"


def _check_genes(adata: AnnData, registry: Registry, source) -> None:
    have = set(map(str, adata.var_names))
    missing = [g for g in registry.var_names if g not in have]
    if missing:
        raise PybridgeError(
            f"adata lacks {len(missing)} of the {len(registry.var_names)} genes the model in {source} was trained "
            f"on (e.g. {missing[:5]}); pass data with the same genes (order may differ)"
        )
