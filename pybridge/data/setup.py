"""``setup_anndata``: validate an AnnData's counts and obs columns and record the registry in ``adata.uns``."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from anndata import AnnData

from pybridge.data.fields import check_obs_key, get_layer
from pybridge.data.registry import SETUP_KEY, Registry
from pybridge.data.validation import validate_counts
from pybridge.errors import MISSING_VALUES, SINGLE_CATEGORY, PybridgeError, PybridgeWarning


def _categories(values: pd.Series, key: str, role: str) -> list[str]:
    missing = np.flatnonzero(values.isna().to_numpy())
    if missing.size:
        raise PybridgeError(
            f"{role} {key!r} has {missing.size} missing (NA) values; fill them (e.g. with 'unknown') or drop those "
            f"cells before setup_anndata",
            kind=MISSING_VALUES, key=key, role=role, positions=missing.tolist(), n=int(missing.size),
        )
    if isinstance(values.dtype, pd.CategoricalDtype):
        return [str(c) for c in values.cat.categories]
    return sorted({str(v) for v in values})


def setup_anndata(
    adata: AnnData,
    layer: str | None = None,
    batch_key: str | None = None,
    labels_key: str | None = None,
    categorical_covariate_keys: list[str] | None = None,
    continuous_covariate_keys: list[str] | None = None,
    allow_non_integer: bool = False,
) -> Registry:
    """Validate ``adata`` and record the registry in ``adata.uns``; the data themselves are not touched.

    Duplicated ``var_names`` are accepted: a model reads this AnnData's genes by position. Applying it to data
    whose genes are in another order, or choosing genes by name, then needs unique names.
    """
    if not isinstance(adata, AnnData):
        raise PybridgeError(f"setup_anndata expects an AnnData, got {type(adata).__name__}")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise PybridgeError(f"adata has shape {adata.shape}; it needs at least one cell and one gene")
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
        check_obs_key(adata, batch_key, "batch_key")
        reg.batch_categories = _categories(adata.obs[batch_key], batch_key, "batch_key")
        if reg.n_batch == 1:
            message = (
                f"batch_key {batch_key!r} has a single category ({reg.batch_categories[0]!r}): the model is "
                f"trained without batch correction"
            )
            details = {"key": batch_key, "role": "batch_key", "category": reg.batch_categories[0]}
            warnings.warn(PybridgeWarning(message, kind=SINGLE_CATEGORY, **details), stacklevel=3)
    if labels_key is not None:
        check_obs_key(adata, labels_key, "labels_key")
        reg.label_categories = _categories(adata.obs[labels_key], labels_key, "labels_key")
    for key in reg.categorical_covariate_keys:
        check_obs_key(adata, key, "categorical covariate")
        reg.covariate_categories[key] = _categories(adata.obs[key], key, "categorical covariate")
    for key in reg.continuous_covariate_keys:
        check_obs_key(adata, key, "continuous covariate")
        vals = pd.to_numeric(adata.obs[key], errors="coerce").to_numpy(dtype=float)
        n_bad = int(np.count_nonzero(~np.isfinite(vals)))
        if n_bad:
            raise PybridgeError(f"continuous covariate {key!r} has {n_bad} missing or non-numeric values")
    adata.uns[SETUP_KEY] = reg.to_json()
    return reg
