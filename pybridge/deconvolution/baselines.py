"""Baseline deconvolution: non-negative least squares of each spot on the reference's cell-type mean profiles."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import nnls

from pybridge.errors import PybridgeError


def cell_type_mean_profiles(reference: ad.AnnData, labels_key: str, layer: str | None = None) -> pd.DataFrame:
    """Mean raw counts per cell type (cell types x genes)."""
    if labels_key not in reference.obs:
        raise PybridgeError(f"reference obs has no column {labels_key!r}; pass the cell-type column name.")
    labels = pd.Categorical(reference.obs[labels_key].astype(str))
    counts = reference.layers[layer] if layer is not None else reference.X
    onehot = sp.csr_matrix(
        (np.ones(reference.n_obs), (labels.codes, np.arange(reference.n_obs))),
        shape=(len(labels.categories), reference.n_obs),
    )
    sums = np.asarray((onehot @ sp.csr_matrix(counts, dtype=np.float64)).todense())
    means = sums / np.asarray(onehot.sum(1))
    return pd.DataFrame(means, index=list(labels.categories), columns=reference.var_names)


def nnls_proportions(
    spots: ad.AnnData, reference: ad.AnnData, labels_key: str, layer: str | None = None
) -> pd.DataFrame:
    """Proportions (spots x cell types) from NNLS on the shared genes, each spot's weights scaled to sum 1.

    The weights on mean count profiles estimate numbers of cells, so the normalised weights estimate cell
    fractions. A spot whose fit is all zero gets uniform proportions, with a warning.
    """
    genes = reference.var_names.intersection(spots.var_names)
    if len(genes) == 0:
        raise PybridgeError("nnls_proportions: the spots and the reference share no gene names.")
    profiles = cell_type_mean_profiles(reference[:, genes], labels_key, layer)
    design = profiles.to_numpy().T  # genes x types
    counts = spots[:, genes].layers[layer] if layer is not None else spots[:, genes].X
    counts = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    weights = np.vstack([nnls(design, row.astype(np.float64))[0] for row in counts])
    totals = weights.sum(1, keepdims=True)
    empty = totals.ravel() <= 0
    if empty.any():
        warnings.warn(f"nnls_proportions: {empty.sum()} spot(s) got an all-zero fit; set to uniform.", stacklevel=2)
        weights[empty] = 1.0
        totals[empty] = weights.shape[1]
    return pd.DataFrame(weights / totals, index=spots.obs_names, columns=profiles.index)
