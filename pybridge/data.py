"""Registering an AnnData (setup_anndata), validating counts, and the device-resident minibatch source.

The registry is a small JSON-serialisable record of which layer and obs columns a model reads and how
categories map to integer codes; it is stored in ``adata.uns["_pybridge_setup"]`` (a JSON string, so it
survives ``write_h5ad``) and in every saved model.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scipy.special import gammaln

from pybridge.errors import PybridgeError

SETUP_KEY = "_pybridge_setup"


@dataclass
class Registry:
    """What a model reads from an AnnData and how categories are coded."""

    layer: str | None = None
    batch_key: str | None = None
    labels_key: str | None = None
    categorical_covariate_keys: list[str] = field(default_factory=list)
    continuous_covariate_keys: list[str] = field(default_factory=list)
    batch_categories: list[str] = field(default_factory=lambda: ["0"])
    label_categories: list[str] = field(default_factory=lambda: ["0"])
    covariate_categories: dict[str, list[str]] = field(default_factory=dict)
    var_names: list[str] = field(default_factory=list)
    allow_non_integer: bool = False

    @property
    def n_batch(self) -> int:
        return len(self.batch_categories)

    @property
    def n_labels(self) -> int:
        return len(self.label_categories)

    @property
    def n_cats_per_cov(self) -> list[int]:
        return [len(self.covariate_categories[k]) for k in self.categorical_covariate_keys]

    @property
    def layer_name(self) -> str:
        return "adata.X" if self.layer is None else f'adata.layers["{self.layer}"]'

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> Registry:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def _check_obs_key(adata: AnnData, key: str, role: str) -> None:
    if key not in adata.obs.columns:
        cols = ", ".join(map(str, adata.obs.columns)) or "(none)"
        raise PybridgeError(f"{role} {key!r} is not a column of adata.obs; available columns: {cols}")


def _categories(values: pd.Series, key: str, role: str) -> list[str]:
    n_na = int(values.isna().sum())
    if n_na:
        raise PybridgeError(
            f"{role} {key!r} has {n_na} missing (NA) values; fill them (e.g. with 'unknown') or drop those "
            f"cells before setup_anndata"
        )
    if isinstance(values.dtype, pd.CategoricalDtype):
        return [str(c) for c in values.cat.categories]
    return sorted({str(v) for v in values})


def _codes(values: pd.Series, categories: list[str], key: str, role: str) -> np.ndarray:
    n_na = int(values.isna().sum())
    if n_na:
        raise PybridgeError(f"{role} {key!r} has {n_na} missing (NA) values; fill or drop those cells")
    as_str = values.astype(str).to_numpy()
    lookup = {c: i for i, c in enumerate(categories)}
    codes = np.fromiter((lookup.get(v, -1) for v in as_str), dtype=np.int64, count=len(as_str))
    unknown = sorted(set(as_str[codes < 0]))
    if unknown:
        raise PybridgeError(
            f"{role} {key!r} has categories the model was not trained with: {unknown[:10]}; "
            f"known categories: {categories[:20]}"
        )
    return codes


def get_layer(adata: AnnData, layer: str | None):
    """The count matrix in ``layer`` (``None`` = X), with a clear error when it is missing."""
    if layer is None:
        if adata.X is None:
            raise PybridgeError("adata.X is empty; pass layer= naming the layer that holds raw counts")
        return adata.X
    if layer not in adata.layers:
        layers = ", ".join(adata.layers.keys()) or "(none)"
        raise PybridgeError(f"layer {layer!r} not found in adata.layers; available layers: {layers} (or layer=None for X)")
    return adata.layers[layer]


def _matrix_values(X) -> np.ndarray:
    if sp.issparse(X):
        return np.asarray(X.data)
    return np.asarray(X).reshape(-1)


def validate_counts(X, layer_name: str, allow_non_integer: bool = False) -> None:
    """Refuse negative, NaN/Inf, non-integer counts (unless allowed) and cells with zero total counts."""
    values = _matrix_values(X)
    n_bad = int(np.count_nonzero(~np.isfinite(values)))
    if n_bad:
        raise PybridgeError(f"{layer_name} has {n_bad} NaN or infinite entries; counts must be finite")
    n_neg = int(np.count_nonzero(values < 0))
    if n_neg:
        raise PybridgeError(
            f"{layer_name} has {n_neg} negative entries (min {values.min():g}); pass raw counts, not "
            f"scaled or centred data (layer=...)"
        )
    if not allow_non_integer:
        n_frac = int(np.count_nonzero(values != np.round(values)))
        if n_frac:
            raise PybridgeError(
                f"{layer_name} has {n_frac} non-integer entries (e.g. {values[values != np.round(values)][0]:g}); "
                f"scVI models raw counts: pass the raw-count layer with layer=..., or opt in with "
                f"allow_non_integer=True for expected counts"
            )
    totals = np.asarray(X.sum(axis=1)).reshape(-1)
    n_empty = int(np.count_nonzero(totals <= 0))
    if n_empty:
        first = np.flatnonzero(totals <= 0)[:5].tolist()
        raise PybridgeError(
            f"{n_empty} cells have zero total counts in {layer_name} (first positions {first}); filter them "
            f"first, e.g. adata = adata[np.asarray(adata.X.sum(1)).ravel() > 0].copy()"
        )


def setup_anndata(
    adata: AnnData,
    layer: str | None = None,
    batch_key: str | None = None,
    labels_key: str | None = None,
    categorical_covariate_keys: list[str] | None = None,
    continuous_covariate_keys: list[str] | None = None,
    allow_non_integer: bool = False,
) -> Registry:
    """Validate ``adata`` and record the registry in ``adata.uns``; the data themselves are not touched."""
    if not isinstance(adata, AnnData):
        raise PybridgeError(f"setup_anndata expects an AnnData, got {type(adata).__name__}")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise PybridgeError(f"adata has shape {adata.shape}; it needs at least one cell and one gene")
    if not adata.var_names.is_unique:
        dups = adata.var_names[adata.var_names.duplicated()].unique()[:5].tolist()
        raise PybridgeError(f"adata.var_names are not unique (e.g. {dups}); call adata.var_names_make_unique()")
    X = get_layer(adata, layer)
    reg = Registry(
        layer=layer,
        batch_key=batch_key,
        labels_key=labels_key,
        categorical_covariate_keys=list(categorical_covariate_keys or []),
        continuous_covariate_keys=list(continuous_covariate_keys or []),
        var_names=[str(v) for v in adata.var_names],
        allow_non_integer=allow_non_integer,
    )
    validate_counts(X, reg.layer_name, allow_non_integer)
    if batch_key is not None:
        _check_obs_key(adata, batch_key, "batch_key")
        reg.batch_categories = _categories(adata.obs[batch_key], batch_key, "batch_key")
        if reg.n_batch == 1:
            warnings.warn(
                f"batch_key {batch_key!r} has a single category ({reg.batch_categories[0]!r}): the model is "
                f"trained without batch correction", stacklevel=3,
            )
    if labels_key is not None:
        _check_obs_key(adata, labels_key, "labels_key")
        reg.label_categories = _categories(adata.obs[labels_key], labels_key, "labels_key")
    for key in reg.categorical_covariate_keys:
        _check_obs_key(adata, key, "categorical covariate")
        reg.covariate_categories[key] = _categories(adata.obs[key], key, "categorical covariate")
    for key in reg.continuous_covariate_keys:
        _check_obs_key(adata, key, "continuous covariate")
        vals = pd.to_numeric(adata.obs[key], errors="coerce").to_numpy(dtype=float)
        n_bad = int(np.count_nonzero(~np.isfinite(vals)))
        if n_bad:
            raise PybridgeError(f"continuous covariate {key!r} has {n_bad} missing or non-numeric values")
    adata.uns[SETUP_KEY] = reg.to_json()
    return reg


def registry_of(adata: AnnData) -> Registry:
    """The registry stored by ``setup_anndata``."""
    if SETUP_KEY not in adata.uns:
        raise PybridgeError("adata is not set up; call pybridge.SCVI.setup_anndata(adata, ...) first")
    return Registry.from_dict(json.loads(adata.uns[SETUP_KEY]))


def aligned_counts(adata: AnnData, reg: Registry):
    """The registered count matrix with columns in the registry's gene order (reordered by name if needed)."""
    X = get_layer(adata, reg.layer)
    names = adata.var_names
    if list(names) == reg.var_names:
        return X
    position = pd.Index(names).get_indexer(reg.var_names)
    missing = [g for g, p in zip(reg.var_names, position) if p < 0]
    if missing:
        raise PybridgeError(
            f"{len(missing)} of the model's {len(reg.var_names)} genes are missing from adata.var_names "
            f"(e.g. {missing[:5]}); subset or pad the data to the model's genes"
        )
    return X[:, position]


def covariate_arrays(adata: AnnData, reg: Registry) -> dict[str, np.ndarray]:
    """Integer codes for batch, labels and categorical covariates, floats for continuous covariates."""
    n = adata.n_obs
    out: dict[str, np.ndarray] = {
        "batch": np.zeros(n, np.int64)
        if reg.batch_key is None
        else _codes(adata.obs[reg.batch_key], reg.batch_categories, reg.batch_key, "batch_key"),
        "labels": np.zeros(n, np.int64)
        if reg.labels_key is None or reg.labels_key not in adata.obs
        else _codes(adata.obs[reg.labels_key], reg.label_categories, reg.labels_key, "labels_key"),
    }
    if reg.categorical_covariate_keys:
        out["cat_covs"] = np.stack(
            [
                _codes(adata.obs[k], reg.covariate_categories[k], k, "categorical covariate")
                for k in reg.categorical_covariate_keys
            ],
            axis=1,
        )
    if reg.continuous_covariate_keys:
        for k in reg.continuous_covariate_keys:
            _check_obs_key(adata, k, "continuous covariate")
        out["cont_covs"] = np.stack(
            [adata.obs[k].to_numpy(dtype=np.float32) for k in reg.continuous_covariate_keys], axis=1
        )
    return out


def log_factorial_per_cell(X) -> np.ndarray:
    """Sum over genes of lgamma(x + 1) per cell: the likelihood constant, computed once per dataset."""
    if sp.issparse(X):
        csr = sp.csr_matrix(X)
        vals = gammaln(np.asarray(csr.data, dtype=np.float64) + 1)
        return np.add.reduceat(np.append(vals, 0.0), csr.indptr[:-1])[: csr.shape[0]] * (np.diff(csr.indptr) > 0)
    return gammaln(np.asarray(X, dtype=np.float64) + 1).sum(axis=1)


class TensorStore:
    """A minibatch source that keeps the data on the compute device and gathers rows there.

    Dense when the data are dense enough and fit ``dense_budget_bytes``; otherwise CSR arrays on the device,
    densified one minibatch at a time by vectorised gathers (no per-minibatch pandas or AnnData work).
    """

    def __init__(
        self,
        X,
        covariates: dict[str, np.ndarray],
        device: torch.device,
        dense_budget_bytes: int | None = None,
    ):
        n, g = X.shape
        self.n_obs, self.n_vars, self.device = n, g, torch.device(device)
        if dense_budget_bytes is None:
            dense_budget_bytes = _default_dense_budget(self.device)
        csr = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else None
        density = csr.nnz / max(n * g, 1) if csr is not None else 1.0
        self.dense = csr is None or (density > 0.25 and n * g * 4 <= dense_budget_bytes)
        if self.dense:
            arr = csr.toarray() if csr is not None else np.asarray(X, dtype=np.float32)
            self.X = torch.as_tensor(arr, dtype=torch.float32).to(self.device)
        else:
            self.indptr = torch.as_tensor(csr.indptr.astype(np.int64)).to(self.device)
            self.indices = torch.as_tensor(csr.indices.astype(np.int64)).to(self.device)
            self.values = torch.as_tensor(csr.data).to(self.device)
        self.fields = {k: torch.as_tensor(v).to(self.device) for k, v in covariates.items()}
        self.fields["log_x_factorial"] = torch.as_tensor(
            log_factorial_per_cell(csr if csr is not None else X), dtype=torch.float32
        ).to(self.device)

    def _dense_rows(self, idx: torch.Tensor) -> torch.Tensor:
        if self.dense:
            return self.X.index_select(0, idx)
        starts, ends = self.indptr[idx], self.indptr[idx + 1]
        lengths = ends - starts
        row_of_entry = torch.repeat_interleave(torch.arange(len(idx), device=self.device), lengths)
        offsets = torch.arange(int(lengths.sum()), device=self.device) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths
        )
        entry = starts[row_of_entry] + offsets
        out = torch.zeros(len(idx), self.n_vars, device=self.device)
        out[row_of_entry, self.indices[entry]] = self.values[entry]
        return out

    def gather(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The minibatch of rows ``idx`` (a long tensor on the store's device)."""
        batch = {k: v.index_select(0, idx) for k, v in self.fields.items()}
        batch["X"] = self._dense_rows(idx)
        batch["indices"] = idx
        return batch


def _default_dense_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.4)
    return 4 * 1024**3
