"""Plain-array hand-off between R and Python, used by the R package through reticulate.

R hosts Python in that direction, so this module must never import rpy2 (rpy2 inside a
reticulate-hosted interpreter crashes the R session). Everything here takes and returns
NumPy arrays, pandas objects and Python scalars only.

Counts: a genes x cells ``dgCMatrix`` stores, column by column, the non-zeros of each cell.
Its slots ``x`` (values), ``i`` (0-based gene index) and ``p`` (column pointers) are therefore,
unchanged, the ``data``/``indices``/``indptr`` of a cells x genes CSR matrix: no transpose and
no copy. The arrays are marked read-only so nothing downstream writes into the user's matrix.

Tables: reticulate 1.28 corrupts NA in integer/logical/character columns going R -> pandas, so
columns travel one at a time as (values, NA mask, levels) and are rebuilt here, and the
reverse (:func:`frame_to_columns`) hands R the same triplets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pybridge.errors import PybridgeError

INT32_MAX = np.iinfo(np.int32).max

#: reducedDims name (SingleCellExperiment / Seurat) -> obsm key (AnnData)
REDUCED_DIM_TO_OBSM = {"scVI": "X_scVI", "PCA": "X_pca", "UMAP": "X_umap", "TSNE": "X_tsne"}
OBSM_TO_REDUCED_DIM = {v: k for k, v in REDUCED_DIM_TO_OBSM.items()}


def obsm_key(reduced_dim_name: str) -> str:
    """obsm key for an R reducedDim name: the explicit map, else ``"X_" + name``."""
    return REDUCED_DIM_TO_OBSM.get(reduced_dim_name, "X_" + reduced_dim_name)


def reduced_dim_name(key: str) -> str:
    """R reducedDim name for an obsm key: the explicit map, else the key without ``"X_"``."""
    if key in OBSM_TO_REDUCED_DIM:
        return OBSM_TO_REDUCED_DIM[key]
    return key[2:] if key.startswith("X_") and len(key) > 2 else key


def _readonly(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


def csr_from_dgc_slots(x: np.ndarray, i: np.ndarray, p: np.ndarray, n_genes: int, n_cells: int) -> sp.csr_matrix:
    """Cells x genes CSR sharing memory with the slots of a genes x cells dgCMatrix.

    ``x``/``i``/``p`` are the ``dgCMatrix`` slots as reticulate hands them over (float64, int32,
    int32, no copy). The result is read-only.
    """
    x, i, p = np.asarray(x), np.asarray(i), np.asarray(p)
    n_genes, n_cells = int(n_genes), int(n_cells)
    if p.shape != (n_cells + 1,):
        raise PybridgeError(f"dgCMatrix slot p has length {p.shape[0]}, expected ncol + 1 = {n_cells + 1}")
    if x.shape != i.shape or x.shape[0] != int(p[-1]):
        raise PybridgeError(
            f"dgCMatrix slots disagree: length(x) = {x.shape[0]}, length(i) = {i.shape[0]}, p[ncol+1] = {int(p[-1])}"
        )
    m = sp.csr_matrix((n_cells, n_genes), dtype=x.dtype)
    # assign the arrays directly: the (data, indices, indptr) constructor may copy or re-cast them
    m.data, m.indices, m.indptr = _readonly(x), _readonly(i), _readonly(p)
    return m


def dense_cells_by_genes(x: np.ndarray) -> np.ndarray:
    """Cells x genes view (no copy) of an R genes x cells dense matrix (arrives Fortran-ordered)."""
    return _readonly(np.asarray(x).T)


class CSRBlockBuilder:
    """Assemble a cells x genes CSR from consecutive column blocks of a genes x cells matrix.

    Used for DelayedArray / HDF5-backed assays, which R reads block by block as dgCMatrix.
    """

    def __init__(self, n_genes: int):
        self.n_genes = int(n_genes)
        self._data: list[np.ndarray] = []
        self._indices: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        self.nnz = 0

    def add_block(self, x: np.ndarray, i: np.ndarray, p: np.ndarray) -> None:
        """Append one dgCMatrix block (its x, i, p slots); its columns are the next cells."""
        p = np.asarray(p, dtype=np.int64)
        self.nnz += int(p[-1])
        if self.nnz > INT32_MAX:
            raise PybridgeError(
                f"the assay has more than 2^31-1 = {INT32_MAX} non-zero counts, which one sparse matrix cannot "
                "index; subset it (subset.row = highly variable genes, or fewer cells) or write it to .h5ad and "
                "train from Python with pybridge"
            )
        self._data.append(np.array(x, dtype=np.float64, copy=True))
        self._indices.append(np.array(i, dtype=np.int32, copy=True))
        self._counts.append(np.diff(p))

    def finish(self) -> sp.csr_matrix:
        """The assembled read-only CSR matrix."""
        counts = np.concatenate(self._counts) if self._counts else np.zeros(0, dtype=np.int64)
        indptr = np.zeros(counts.shape[0] + 1, dtype=np.int32)
        np.cumsum(counts, out=indptr[1:])
        data = np.concatenate(self._data) if self._data else np.zeros(0)
        indices = np.concatenate(self._indices) if self._indices else np.zeros(0, dtype=np.int32)
        self._data, self._indices, self._counts = [], [], []
        return csr_from_dgc_slots(data, indices, indptr, self.n_genes, counts.shape[0])


def csr_to_dgc_slots(m: Any) -> dict[str, Any]:
    """Slots (x, i, p, Dim) of the genes x cells dgCMatrix equal to a cells x genes matrix ``m``.

    ``x`` is float64 (R has no float32) and row indices are sorted, as dgCMatrix requires.
    """
    if not sp.issparse(m):
        m = sp.csr_matrix(np.asarray(m))
    m = m.tocsr()
    if m.nnz > INT32_MAX:
        raise PybridgeError(
            f"the matrix has {m.nnz} non-zeros, more than a dgCMatrix can hold (2^31-1); subset genes or cells first"
        )
    if not m.has_sorted_indices:
        m = m.copy()
        m.sort_indices()
    return {
        "x": np.asarray(m.data, dtype=np.float64),
        "i": np.asarray(m.indices, dtype=np.int32),
        "p": np.asarray(m.indptr, dtype=np.int32),
        "Dim": [int(m.shape[1]), int(m.shape[0])],
    }


# ---------------------------------------------------------------- tables, column by column

def column_from_r(kind: str, values: Any, na: Any, levels: Sequence[str] | None = None, ordered: bool = False):
    """Rebuild one R vector as a pandas-ready array.

    kind: "factor" (values = 0-based codes), "logical", "integer", "double" or "character".
    na: boolean mask of NA positions (R's is.na), applied explicitly.
    """
    na = np.asarray(na, dtype=bool).reshape(-1)
    if kind == "factor":
        codes = np.asarray(values, dtype=np.int64).reshape(-1).copy()
        codes[na] = -1
        cats = pd.Index(np.asarray([] if levels is None else list(levels), dtype=object))
        return pd.Categorical.from_codes(codes, categories=cats, ordered=bool(ordered))
    if kind == "logical":
        v = np.asarray(values, dtype=bool).reshape(-1)
        return pd.arrays.BooleanArray(v.copy(), na.copy()) if na.any() else v.copy()
    if kind == "integer":
        v = np.asarray(values, dtype=np.int32).reshape(-1)
        if na.any():
            return pd.arrays.IntegerArray(v.copy(), na.copy())
        return v.copy()
    if kind == "double":
        v = np.array(values, dtype=np.float64).reshape(-1)
        v[na] = np.nan
        return v
    if kind == "character":
        v = np.asarray(values, dtype=object).reshape(-1).copy()
        v[na] = None
        return pd.array(v, dtype="string")
    raise PybridgeError(f"unknown column kind {kind!r}")


def frame_from_columns(columns: Sequence[dict[str, Any]], index: Sequence[str] | None, n: int) -> pd.DataFrame:
    """DataFrame from column specs ``{"name", "kind", "values", "na", "levels", "ordered"}``.

    Duplicated and non-ASCII column names are kept as they are.
    """
    idx = pd.Index(np.asarray(list(index), dtype=object)) if index is not None else pd.RangeIndex(int(n)).astype(str)
    if len(columns) == 0:
        return pd.DataFrame(index=idx)
    series = [
        pd.Series(
            column_from_r(c["kind"], c["values"], c["na"], c.get("levels"), bool(c.get("ordered", False))),
            index=idx,
            name=c["name"],
            copy=False,
        )
        for c in columns
    ]
    df = pd.concat(series, axis=1)
    df.columns = pd.Index([c["name"] for c in columns], dtype=object)
    return df


def _column_to_r(name: str, col: pd.Series) -> dict[str, Any]:
    na = np.asarray(pd.isna(col), dtype=bool)
    dtype = col.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return {
            "name": name,
            "kind": "factor",
            "values": np.asarray(col.cat.codes, dtype=np.int32) + 1,  # R factor codes are 1-based
            "na": na,
            "levels": np.asarray([str(c) for c in dtype.categories], dtype=str),
            "ordered": bool(dtype.ordered),
        }
    if pd.api.types.is_bool_dtype(dtype):
        return {"name": name, "kind": "logical", "values": np.asarray(col.fillna(False), dtype=bool), "na": na}
    if pd.api.types.is_integer_dtype(dtype):
        filled = np.asarray(col.fillna(0), dtype=np.int64)
        if filled.size and (filled.max() > INT32_MAX or filled.min() <= -INT32_MAX - 1):
            return {"name": name, "kind": "double", "values": filled.astype(np.float64), "na": na}
        return {"name": name, "kind": "integer", "values": filled.astype(np.int32), "na": na}
    if pd.api.types.is_float_dtype(dtype):
        return {"name": name, "kind": "double", "values": np.asarray(col.astype("float64").fillna(0.0)), "na": na}
    if pd.api.types.is_string_dtype(dtype) or dtype == object:
        values = col.to_numpy(dtype=object, na_value=None)
        bad = [v for v in values if v is not None and not isinstance(v, str)]
        if bad:
            raise PybridgeError(
                f"obs/var column {name!r} mixes strings with {type(bad[0]).__name__} values, which R cannot hold "
                "in one column; convert it with .astype(str) or to a categorical first"
            )
        return {
            "name": name,
            "kind": "character",
            "values": np.asarray(["" if v is None else v for v in values], dtype=str),
            "na": na,
        }
    raise PybridgeError(
        f"obs/var column {name!r} has dtype {dtype}, which has no R equivalent here; "
        "convert it to a number, string or categorical column first"
    )


def frame_to_columns(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Column specs for R (factor codes 1-based, placeholder values at NA, explicit ``na`` masks)."""
    return [_column_to_r(str(name), df.iloc[:, j]) for j, name in enumerate(df.columns)]


def index_to_r(index: pd.Index) -> np.ndarray:
    """Row names as a unicode array (reticulate turns it into a character vector)."""
    return np.asarray([str(v) for v in index], dtype=str)


# ---------------------------------------------------------------- AnnData assembly

def build_anndata(
    X: Any,
    obs: pd.DataFrame,
    var: pd.DataFrame,
    obsm: dict[str, np.ndarray] | None = None,
    layers: dict[str, Any] | None = None,
):
    """AnnData from already-converted parts; reducedDims are expected under their R names."""
    import warnings

    import anndata as ad

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*names are not unique.*")
        adata = ad.AnnData(X=X, obs=obs, var=var)
        for name, emb in (obsm or {}).items():
            adata.obsm[obsm_key(name)] = np.asarray(emb)
        for name, m in (layers or {}).items():
            adata.layers[name] = m
    return adata


def anndata_parts(adata: Any, layer: str | None = None) -> dict[str, Any]:
    """Everything R needs to rebuild a SingleCellExperiment/Seurat object from an AnnData.

    Returns counts slots (from ``layer`` or X), the other layers' slots, obs/var column specs,
    names and reducedDims under their R names.
    """
    X = adata.layers[layer] if layer is not None else adata.X
    if X is None:
        raise PybridgeError("the AnnData has no X; pass layer= to pick the counts layer")
    layers = {k: csr_to_dgc_slots(v) for k, v in adata.layers.items() if k != layer}
    reduced = {
        reduced_dim_name(k): np.asarray(v, dtype=np.float64)
        for k, v in adata.obsm.items()
        if not isinstance(v, pd.DataFrame) and np.asarray(v).ndim == 2
    }
    return {
        "X": csr_to_dgc_slots(X),
        "layers": layers,
        "obs": frame_to_columns(adata.obs),
        "var": frame_to_columns(adata.var),
        "obs_names": index_to_r(adata.obs_names),
        "var_names": index_to_r(adata.var_names),
        "reduced_dims": reduced,
    }
