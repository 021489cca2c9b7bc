"""Count splitting: divide one count matrix into two folds that sum back to it exactly.

Binomial thinning (``overdispersion=None``): each count x is split as A ~ Binomial(x, f), B = x - A.
If x ~ Poisson(mu), A ~ Poisson(f mu) and B ~ Poisson((1 - f) mu) are independent.

Dirichlet-multinomial (beta-binomial) splitting with per-gene overdispersion theta (the NB "size",
Var = mu + mu^2 / theta): p ~ Beta(f theta, (1 - f) theta), A ~ Binomial(x, p), B = x - A.
If x ~ NB(mu, theta), A ~ NB(f mu, f theta) and B ~ NB((1 - f) mu, (1 - f) theta) are independent
(Neufeld et al. 2023, "Negative binomial count splitting").
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from pybridge.data.minified import require_counts
from pybridge.data.setup import refuse_view
from pybridge.errors import PybridgeError

__all__ = ["count_split", "split_anndata"]


def _check_counts(values: np.ndarray, what: str) -> None:
    if values.size == 0:
        return
    if not np.all(np.isfinite(values)):
        raise PybridgeError(f"{what} contains NaN or infinite values; count splitting needs raw counts.")
    if values.min() < 0:
        raise PybridgeError(f"{what} contains negative values (min {values.min()}); pass raw counts.")
    if not np.array_equal(values, np.round(values)):
        bad = values[values != np.round(values)][0]
        raise PybridgeError(
            f"{what} contains non-integer values (e.g. {bad}); count splitting needs raw integer counts, "
            "not normalised or log-transformed data."
        )


def _overdispersion_per_entry(overdispersion, n_genes: int, gene_of_entry: np.ndarray) -> np.ndarray:
    theta = np.asarray(overdispersion, dtype=np.float64)
    if theta.ndim == 0:
        theta = np.full(n_genes, float(theta))
    if theta.shape != (n_genes,):
        raise PybridgeError(
            f"overdispersion has shape {theta.shape}; give a scalar or one value per gene ({n_genes},)."
        )
    if not np.all(theta > 0):
        raise PybridgeError("overdispersion (NB theta) must be > 0 for every gene; np.inf means Poisson.")
    return theta[gene_of_entry]


def _split_values(
    values: np.ndarray, theta: np.ndarray | None, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Fold-A share of each count in ``values`` (1-d, integer valued)."""
    n = values.astype(np.int64)
    if theta is None:
        return rng.binomial(n, fraction)
    p = np.full(n.shape, fraction)
    finite = np.isfinite(theta)
    p[finite] = rng.beta(fraction * theta[finite], (1.0 - fraction) * theta[finite])
    return rng.binomial(n, p)


def count_split(X, fraction: float = 0.5, overdispersion=None, seed: int = 0):
    """Split counts ``X`` (cells x genes) into folds ``(A, B)`` with ``A + B == X`` exactly.

    Parameters
    ----------
    X
        Raw integer counts, dense ndarray or scipy sparse matrix. Never modified.
    fraction
        Expected share of each count that goes to fold A, in (0, 1).
    overdispersion
        None for binomial thinning (Poisson model); else NB theta, a scalar or one value per gene
        (column), for Dirichlet-multinomial splitting. ``np.inf`` entries fall back to binomial.
    seed
        Seed of the random generator.

    Returns
    -------
    (A, B) with the type, format, shape and dtype of ``X`` (sparse in, sparse out).
    """
    if not 0.0 < float(fraction) < 1.0:
        raise PybridgeError(f"fraction must be strictly between 0 and 1, got {fraction}.")
    rng = np.random.default_rng(seed)
    if sp.issparse(X):
        fmt = X.format
        coo = X.tocoo()
        values = np.asarray(coo.data)
        _check_counts(values, "X")
        theta = None
        if overdispersion is not None:
            theta = _overdispersion_per_entry(overdispersion, X.shape[1], coo.col)
        a_vals = _split_values(values, theta, fraction, rng).astype(X.dtype)
        b_vals = (values - a_vals).astype(X.dtype)
        folds = []
        for vals in (a_vals, b_vals):
            keep = vals != 0
            fold = sp.coo_matrix((vals[keep], (coo.row[keep], coo.col[keep])), shape=X.shape)
            folds.append(fold.asformat(fmt))
        return folds[0], folds[1]
    dense = np.asarray(X)
    _check_counts(dense, "X")
    theta = None
    if overdispersion is not None:
        cols = np.broadcast_to(np.arange(dense.shape[1]), dense.shape).ravel()
        theta = _overdispersion_per_entry(overdispersion, dense.shape[1], cols)
    a = _split_values(dense.ravel(), theta, fraction, rng).reshape(dense.shape).astype(dense.dtype)
    return a, (dense - a).astype(dense.dtype)


def split_anndata(
    adata,
    fraction: float = 0.5,
    overdispersion=None,
    seed: int = 0,
    layer: str | None = None,
    train_layer: str = "fold_A",
    test_layer: str = "fold_B",
):
    """Add count-split folds of ``adata.layers[layer]`` (or ``X``) as two layers, in place.

    Train on ``train_layer`` (``SCVI.setup_anndata(adata, layer="fold_A")``), then evaluate on
    ``test_layer`` with :func:`pybridge.diagnostics.report.build_report` or ``pybridge report``.
    """
    refuse_view(adata, "split_anndata", "adds the count-split folds to adata.layers")
    require_counts(adata, "split_anndata", "Split the counts before minifying.")
    X = adata.X if layer is None else adata.layers[layer]
    a, b = count_split(X, fraction=fraction, overdispersion=overdispersion, seed=seed)
    adata.layers[train_layer] = a
    adata.layers[test_layer] = b
    adata.uns["pybridge_count_split"] = {
        "fraction": float(fraction),
        "seed": int(seed),
        "source_layer": "X" if layer is None else layer,
        "overdispersion": "none" if overdispersion is None else "per-gene NB theta",
        "train_layer": train_layer,
        "test_layer": test_layer,
    }
    return adata
