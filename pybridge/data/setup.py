"""``setup_anndata``: validate an AnnData's counts and obs columns and record the registry in ``adata.uns``.

Counts that stay on disk (:func:`pybridge.data.fields.counts_file`) are validated one chunk of rows at a time.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from anndata import AnnData

from pybridge.data.fields import BACKED_KEY, check_obs_key, counts_file, get_layer
from pybridge.data.ondisk import DiskMatrix
from pybridge.data.registry import SETUP_KEY, Registry
from pybridge.data.validation import validate_count_blocks, validate_counts
from pybridge.errors import MISSING_VALUES, SINGLE_CATEGORY, PybridgeError, PybridgeWarning

VALIDATE_CHUNK_CELLS = 20_000  # rows of on-disk counts validated at a time


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


def refuse_view(adata: AnnData, what: str, writes: str = "records the set-up in adata.uns") -> None:
    """Refuse an AnnData view where ``what`` would write into it (anndata would silently turn it into a copy)."""
    if adata.is_view:
        copy = "adata[...].to_memory()" if adata.isbacked else "adata[...].copy()"
        raise PybridgeError(
            f"adata is a view of another AnnData; {what} {writes}, which would silently turn the view into a "
            f"copy: make the copy first, adata = {copy}"
        )


def _validate_on_disk(adata: AnnData, path: str, layer: str | None, layer_name: str, allow_non_integer: bool) -> None:
    """Validate the counts in ``path`` one chunk of rows at a time; they must match adata's shape."""
    info = adata.uns.get(BACKED_KEY, {})
    chunk_cells = int(info.get("validate_chunk_cells", VALIDATE_CHUNK_CELLS))
    matrix = DiskMatrix(path, layer)
    try:
        if matrix.shape != adata.shape:
            raise PybridgeError(
                f"{path}: obs/var have {adata.n_obs}/{adata.n_vars} rows but the matrix is "
                f"{matrix.shape[0]} x {matrix.shape[1]}"
            )
        validate_count_blocks(matrix.blocks(chunk_cells), f"{layer_name} (on disk in {path})", allow_non_integer)
    finally:
        matrix.close()


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
    whose genes are in another order, or choosing genes by name, then needs unique names. Views are refused
    (the registry would turn them into copies). Counts on disk (``anndata.read_h5ad(path, backed="r")``, or
    :func:`pybridge.data.disk.open_backed`) are validated chunk by chunk and stay there.
    """
    if not isinstance(adata, AnnData):
        raise PybridgeError(f"setup_anndata expects an AnnData, got {type(adata).__name__}")
    refuse_view(adata, "setup_anndata")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise PybridgeError(f"adata has shape {adata.shape}; it needs at least one cell and one gene")
    reg = Registry(
        layer=layer,
        batch_key=batch_key,
        labels_key=labels_key,
        categorical_covariate_keys=list(categorical_covariate_keys or []),
        continuous_covariate_keys=list(continuous_covariate_keys or []),
        var_names=[str(v) for v in adata.var_names],
        allow_non_integer=allow_non_integer,
    )
    path = counts_file(adata, layer)
    if path is None:
        validate_counts(get_layer(adata, layer), reg.layer_name, allow_non_integer)
    else:
        _validate_on_disk(adata, path, layer, reg.layer_name, allow_non_integer)
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
