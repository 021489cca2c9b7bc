"""Count validation: the checks every entry point applies before a model sees the data."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from pybridge.errors import PybridgeError


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
