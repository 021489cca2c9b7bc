"""The imputation benchmark of the scVI paper (Lopez et al. 2018).

Hide a share of the non-zero entries (set them to zero, chosen uniformly), train on the corrupted
counts, and score the model's expected counts on the hidden entries against the true counts by the
median absolute error.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from pybridge.errors import PybridgeError

__all__ = ["HiddenEntries", "hide_nonzero_entries", "median_absolute_error"]


class HiddenEntries:
    """Positions and true values of the entries hidden by :func:`hide_nonzero_entries`."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray):
        self.rows = rows
        self.cols = cols
        self.values = values

    def take(self, expected: np.ndarray) -> np.ndarray:
        """The entries of a dense cells x genes matrix at the hidden positions."""
        return np.asarray(expected)[self.rows, self.cols]


def hide_nonzero_entries(X, rate: float = 0.1, seed: int = 0):
    """Return a corrupted copy of ``X`` with ``rate`` of its non-zero entries set to 0, and what was hidden.

    ``X`` (dense or sparse) is not modified; sparse input gives CSR output.
    """
    if not 0.0 < rate < 1.0:
        raise PybridgeError(f"rate must be strictly between 0 and 1, got {rate}.")
    rng = np.random.default_rng(seed)
    csr = sp.csr_matrix(X, copy=True)
    csr.eliminate_zeros()
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    n_hide = round(rate * csr.nnz)
    chosen = np.sort(rng.choice(csr.nnz, size=n_hide, replace=False))
    hidden = HiddenEntries(rows[chosen], csr.indices[chosen].copy(), csr.data[chosen].astype(np.float64))
    csr.data[chosen] = 0
    csr.eliminate_zeros()
    corrupted = csr if sp.issparse(X) else csr.toarray().astype(np.asarray(X).dtype)
    return corrupted, hidden


def median_absolute_error(imputed: np.ndarray, hidden: HiddenEntries) -> float:
    """Median |imputed - true| over the hidden entries (``imputed`` given at those entries)."""
    imputed = np.asarray(imputed, dtype=np.float64)
    if imputed.shape != hidden.values.shape:
        raise ValueError(f"expected {hidden.values.shape[0]} imputed values, got {imputed.shape}")
    return float(np.median(np.abs(imputed - hidden.values)))
