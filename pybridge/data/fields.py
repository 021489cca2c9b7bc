"""What a model reads from an AnnData: the registered counts in the model's gene order and the covariate codes.

Both take ``rows`` (positions of cells) so that a call about k cells reads and converts only those k cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from pybridge.data.registry import Registry
from pybridge.errors import DUPLICATE_GENES, MAX_LISTED, MISSING_VALUES, PybridgeError

BACKED_KEY = "_pybridge_backed"  # adata.uns entry of an AnnData made by pybridge.data.disk.open_backed


def check_obs_key(adata: AnnData, key: str, role: str) -> None:
    """Refuse an obs column that does not exist, listing the ones that do."""
    if key not in adata.obs.columns:
        cols = ", ".join(map(str, adata.obs.columns)) or "(none)"
        raise PybridgeError(f"{role} {key!r} is not a column of adata.obs; available columns: {cols}")


def counts_file(adata: AnnData, layer: str | None) -> str | None:
    """The file the counts in ``layer`` are streamed from, or None when they are in memory.

    An AnnData from :func:`pybridge.data.disk.open_backed` reads every layer from its file; one read with
    ``anndata.read_h5ad(path, backed="r")`` keeps only X there (anndata loads its layers into memory).
    """
    if BACKED_KEY in adata.uns:
        return str(adata.uns[BACKED_KEY]["path"])
    if adata.isbacked and layer is None:
        return str(adata.filename)
    return None


def get_layer(adata: AnnData, layer: str | None):
    """The count matrix in ``layer`` (``None`` = X) in memory, with a clear error when it is missing."""
    path = counts_file(adata, layer)
    if path is not None:
        name = "adata.X" if layer is None else f'adata.layers["{layer}"]'
        raise PybridgeError(
            f"{name} stays on disk in {path} (streamed for training and per-cell outputs), but this call reads all "
            f"counts at once: load them with adata = anndata.read_h5ad({path!r})"
        )
    if layer is None:
        if adata.X is None:
            raise PybridgeError("adata.X is empty; pass layer= naming the layer that holds raw counts")
        return adata.X
    if layer not in adata.layers:
        layers = ", ".join(adata.layers.keys()) or "(none)"
        raise PybridgeError(f"layer {layer!r} not found in adata.layers; available layers: {layers} (or layer=None for X)")
    return adata.layers[layer]


def require_unique_names(names: pd.Index, what: str) -> None:
    """Refuse duplicated gene names where genes must be found by name."""
    if not names.is_unique:
        dups = [str(v) for v in names[names.duplicated()].unique()]
        raise PybridgeError(
            f"{what} has duplicated gene names (e.g. {dups[:MAX_LISTED]}), so genes cannot be matched by name; "
            f"make them unique, e.g. adata.var_names_make_unique()",
            kind=DUPLICATE_GENES, names=dups, of=what,
        )


def gene_positions(var_names, reg: Registry) -> np.ndarray | None:
    """Column positions of the model's genes in ``var_names`` (None when they are already in the model's order).

    Names need to be unique only when the genes are not already in the model's order.
    """
    names = pd.Index(var_names)
    if len(names) == len(reg.var_names) and names.equals(pd.Index(reg.var_names)):
        return None
    require_unique_names(names, "adata.var_names")
    require_unique_names(pd.Index(reg.var_names), "the model's genes")
    position = names.get_indexer(reg.var_names)
    missing = [g for g, p in zip(reg.var_names, position) if p < 0]
    if missing:
        raise PybridgeError(
            f"{len(missing)} of the model's {len(reg.var_names)} genes are missing from adata.var_names "
            f"(e.g. {missing[:5]}); subset or pad the data to the model's genes"
        )
    return position


def aligned_counts(adata: AnnData, reg: Registry, rows: np.ndarray | None = None):
    """The registered counts of ``rows`` (all cells when None), columns in the registry's gene order."""
    X = get_layer(adata, reg.layer)
    if rows is not None:
        X = X[rows]
    columns = gene_positions(adata.var_names, reg)
    return X if columns is None else X[:, columns]


def _codes(values: pd.Series, categories: list[str], key: str, role: str) -> np.ndarray:
    missing = np.flatnonzero(values.isna().to_numpy())
    if missing.size:
        raise PybridgeError(
            f"{role} {key!r} has {missing.size} missing (NA) values; fill or drop those cells",
            kind=MISSING_VALUES, key=key, role=role, positions=missing.tolist(), n=int(missing.size),
        )
    if isinstance(values.dtype, pd.CategoricalDtype):  # map the categories once, not every cell's string
        mapping = pd.Index(categories).get_indexer(values.cat.categories.astype(str)).astype(np.int64)
        codes = mapping[values.cat.codes.to_numpy()]
        unknown = sorted(set(values[codes < 0].astype(str))) if (codes < 0).any() else []
    else:
        as_str = values.astype(str).to_numpy()
        codes = pd.Index(categories).get_indexer(as_str).astype(np.int64)
        unknown = sorted(set(as_str[codes < 0]))
    if unknown:
        raise PybridgeError(
            f"{role} {key!r} has categories the model was not trained with: {unknown[:10]}; "
            f"known categories: {categories[:20]}"
        )
    return codes


def obs_rows(adata: AnnData, rows, keys: list[str]):
    """``adata.obs`` narrowed to ``rows`` (None: all); an in-memory obs copies only the ``keys`` columns it has.

    Per-chunk reads then cost the same however many other columns obs holds. A lazy obs (on-disk minified
    store) narrows its rows without reading and reads a column when it is asked for.
    """
    obs = adata.obs
    if rows is None:
        return obs
    if isinstance(obs, pd.DataFrame):
        return obs.iloc[rows, obs.columns.get_indexer([k for k in dict.fromkeys(keys) if k in obs])]
    return obs.iloc[rows]


def covariate_arrays(adata: AnnData, reg: Registry, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Integer codes for batch, labels and categorical covariates, floats for continuous covariates."""
    keys = [reg.batch_key, reg.labels_key, *reg.categorical_covariate_keys, *reg.continuous_covariate_keys]
    obs = obs_rows(adata, rows, [k for k in keys if k is not None])
    n = len(obs)
    out: dict[str, np.ndarray] = {
        "batch": np.zeros(n, np.int64)
        if reg.batch_key is None
        else _codes(obs[reg.batch_key], reg.batch_categories, reg.batch_key, "batch_key"),
        "labels": np.zeros(n, np.int64)
        if reg.labels_key is None or reg.labels_key not in obs
        else _codes(obs[reg.labels_key], reg.label_categories, reg.labels_key, "labels_key"),
    }
    if reg.categorical_covariate_keys:
        out["cat_covs"] = np.stack(
            [
                _codes(obs[k], reg.covariate_categories[k], k, "categorical covariate")
                for k in reg.categorical_covariate_keys
            ],
            axis=1,
        )
    if reg.continuous_covariate_keys:
        for k in reg.continuous_covariate_keys:
            check_obs_key(adata, k, "continuous covariate")
        out["cont_covs"] = np.stack(
            [obs[k].to_numpy(dtype=np.float32) for k in reg.continuous_covariate_keys], axis=1
        )
    return out
