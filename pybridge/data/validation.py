"""Count validation: the checks every entry point applies before a model sees the data."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from pybridge.errors import EMPTY_CELLS, MAX_LISTED, NEGATIVE, NON_FINITE, NON_INTEGER, PybridgeError


def _matrix_values(X) -> np.ndarray:
    if sp.issparse(X):
        return np.asarray(X.data)
    return np.asarray(X).reshape(-1)


def validate_counts(X, layer_name: str, allow_non_integer: bool = False) -> None:
    """Refuse negative, NaN/Inf, non-integer counts (unless allowed) and cells with zero total counts."""
    values = _matrix_values(X)
    n_bad = int(np.count_nonzero(~np.isfinite(values)))
    if n_bad:
        raise PybridgeError(
            f"{layer_name} has {n_bad} NaN or infinite entries; counts must be finite",
            kind=NON_FINITE, n=n_bad, layer=layer_name,
        )
    n_neg = int(np.count_nonzero(values < 0))
    if n_neg:
        raise PybridgeError(
            f"{layer_name} has {n_neg} negative entries (min {values.min():g}); pass raw counts, not "
            f"scaled or centred data (layer=...)",
            kind=NEGATIVE, n=n_neg, minimum=float(values.min()), layer=layer_name,
        )
    if not allow_non_integer:
        fractional = values != np.round(values)
        n_frac = int(np.count_nonzero(fractional))
        if n_frac:
            example = float(values[fractional][0])
            raise PybridgeError(
                f"{layer_name} has {n_frac} non-integer entries (e.g. {example:g}); scVI models raw counts: pass "
                f"the raw-count layer with layer=..., or opt in with allow_non_integer=True for expected counts",
                kind=NON_INTEGER, n=n_frac, example=example, layer=layer_name,
            )
    totals = np.asarray(X.sum(axis=1)).reshape(-1)
    empty = np.flatnonzero(totals <= 0)
    if empty.size:
        raise PybridgeError(
            f"{empty.size} cells have zero total counts in {layer_name} (first positions "
            f"{empty[:MAX_LISTED].tolist()}); filter them first, e.g. "
            f"adata = adata[np.asarray(adata.X.sum(1)).ravel() > 0].copy()",
            kind=EMPTY_CELLS, positions=empty.tolist(), n=int(empty.size), layer=layer_name,
        )
