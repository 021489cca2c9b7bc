"""Rank agreement between expected expression and counts: Spearman per cell and per gene.

Ties get average ranks (as ``scipy.stats.spearmanr``). Sparse rows are ranked through their non-zero
entries only: all zeros of a row share the rank (z + 1) / 2, where z is the number of zeros. A row
that is constant (e.g. an all-zero cell) has no defined correlation: it is reported as NaN and counted,
never dropped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import rankdata

__all__ = ["decile_of", "rank_agreement", "row_ranks", "spearman_rows", "spearman_rows_many", "summarise_by_decile"]


def _sparse_row_ranks(m: sp.csr_matrix) -> np.ndarray:
    """Dense average ranks of each row of a sparse matrix with non-negative entries."""
    m = m.tocsr()
    m.sum_duplicates()
    n_rows, n_cols = m.shape
    row_of = np.repeat(np.arange(n_rows), np.diff(m.indptr))
    data = np.asarray(m.data, dtype=np.float64)
    if data.size and data.min() < 0:
        raise ValueError("sparse ranking assumes non-negative entries (counts)")
    nonzero = data != 0
    row_of, cols, data = row_of[nonzero], m.indices[nonzero], data[nonzero]
    n_nz = np.bincount(row_of, minlength=n_rows)
    n_zero = n_cols - n_nz
    ranks = np.repeat(((n_zero + 1) / 2.0)[:, None], n_cols, axis=1)
    if data.size == 0:
        return ranks
    if np.all(data == np.round(data)) and data.max() < 2**31:
        order = np.argsort(row_of * (int(data.max()) + 1) + data.astype(np.int64), kind="stable")  # integer counts
    else:
        order = np.lexsort((data, row_of))
    r_sorted, v_sorted = row_of[order], data[order]
    starts = np.concatenate(([0], np.cumsum(n_nz)[:-1]))
    position = np.arange(data.size) - starts[r_sorted]  # 0-based position among the row's non-zeros
    new_group = np.ones(data.size, dtype=bool)
    new_group[1:] = (r_sorted[1:] != r_sorted[:-1]) | (v_sorted[1:] != v_sorted[:-1])
    group = np.cumsum(new_group) - 1
    first = position[new_group]
    last = np.append(position[np.flatnonzero(new_group)[1:] - 1], position[-1])
    avg = (first + last) / 2.0 + 1.0
    ranks[r_sorted, cols[order]] = n_zero[r_sorted] + avg[group]
    return ranks


def row_ranks(m) -> np.ndarray:
    """Average ranks (1-based, ties averaged) within each row, as a dense float64 array."""
    if sp.issparse(m):
        return _sparse_row_ranks(m)
    return rankdata(np.asarray(m, dtype=np.float64), axis=1)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    num = (a * b).sum(axis=1)
    out = np.full(a.shape[0], np.nan)
    ok = denom > 0
    out[ok] = num[ok] / denom[ok]
    return out


def _rows(m, start: int, stop: int):
    return m[start:stop] if sp.issparse(m) else np.asarray(m[start:stop])


def spearman_rows(x, y, chunk_size: int = 256) -> np.ndarray:
    """Spearman correlation between matching rows of ``x`` and ``y`` (dense or sparse, same shape).

    NaN where either row is constant. Works in chunks of rows to bound memory.
    """
    return spearman_rows_many({"x": x}, y, chunk_size)["x"]


def spearman_rows_many(xs: dict, y, chunk_size: int = 256) -> dict:
    """:func:`spearman_rows` of several predictors against one ``y``, ranking ``y`` once per chunk."""
    for name, x in xs.items():
        if x.shape != y.shape:
            raise ValueError(f"shapes differ for {name}: {x.shape} vs {y.shape}")
    xs = {k: (x.tocsr() if sp.issparse(x) else x) for k, x in xs.items()}
    y = y.tocsr() if sp.issparse(y) else y
    out = {k: np.empty(y.shape[0]) for k in xs}
    for start in range(0, y.shape[0], chunk_size):
        stop = min(start + chunk_size, y.shape[0])
        ranks_y = row_ranks(_rows(y, start, stop))
        for k, x in xs.items():
            out[k][start:stop] = _pearson_rows(row_ranks(_rows(x, start, stop)), ranks_y)
    return out


def _transpose(m):
    return m.tocsc().T.tocsr() if sp.issparse(m) else np.asarray(m).T


def decile_of(values: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Equal-sized bins 0..n_bins-1 by rank of ``values`` (ties broken by position, stable)."""
    order = np.argsort(values, kind="stable")
    bins = np.empty(len(values), dtype=np.int64)
    bins[order] = (np.arange(len(values)) * n_bins) // max(len(values), 1)
    return bins


def summarise_by_decile(
    correlations: np.ndarray, stratifier: np.ndarray, n_bins: int = 10, name: str = "library_size"
) -> pd.DataFrame:
    """Median / quartiles of ``correlations`` per decile of ``stratifier``; NaNs counted, not used."""
    bins = decile_of(np.asarray(stratifier), n_bins)
    rows = []
    for b in range(n_bins):
        sel = bins == b
        vals = correlations[sel]
        finite = vals[np.isfinite(vals)]
        rows.append(
            {
                "decile": b + 1,
                f"{name}_min": float(np.min(stratifier[sel])) if sel.any() else np.nan,
                f"{name}_max": float(np.max(stratifier[sel])) if sel.any() else np.nan,
                "n": int(sel.sum()),
                "n_undefined": int((~np.isfinite(vals)).sum()),
                "median": float(np.median(finite)) if finite.size else np.nan,
                "mean": float(np.mean(finite)) if finite.size else np.nan,
                "q25": float(np.quantile(finite, 0.25)) if finite.size else np.nan,
                "q75": float(np.quantile(finite, 0.75)) if finite.size else np.nan,
            }
        )
    return pd.DataFrame(rows)


def rank_agreement(
    expected,
    observed,
    library_size: np.ndarray | None = None,
    gene_mean: np.ndarray | None = None,
    n_bins: int = 10,
) -> dict:
    """Per-cell and per-gene Spearman between ``expected`` and ``observed`` (cells x genes).

    Stratifies per-cell values by library-size decile and per-gene values by mean-expression decile
    (both taken from ``observed`` unless given). Constant rows/columns (all-zero cells or genes) give
    NaN and are counted in ``n_undefined_cells`` / ``n_undefined_genes``.
    """
    if library_size is None:
        library_size = np.asarray(observed.sum(axis=1)).ravel()
    if gene_mean is None:
        gene_mean = np.asarray(observed.mean(axis=0)).ravel()
    per_cell = spearman_rows(expected, observed)
    per_gene = spearman_rows(_transpose(expected), _transpose(observed))
    return {
        "per_cell": per_cell,
        "per_gene": per_gene,
        "n_undefined_cells": int(np.isnan(per_cell).sum()),
        "n_undefined_genes": int(np.isnan(per_gene).sum()),
        "by_library_decile": summarise_by_decile(per_cell, library_size, n_bins, "library_size"),
        "by_gene_mean_decile": summarise_by_decile(per_gene, gene_mean, n_bins, "gene_mean"),
    }
