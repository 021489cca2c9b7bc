"""Count validation: the checks every entry point applies before a model sees the data.

The checks run over row blocks (:func:`validate_count_blocks`), so that counts on disk are validated one chunk
at a time with the same messages, totals and cell positions as counts in memory (:func:`validate_counts`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp

from pybridge.errors import EMPTY_CELLS, MAX_LISTED, NEGATIVE, NON_FINITE, NON_INTEGER, PybridgeError


def _matrix_values(X) -> np.ndarray:
    if sp.issparse(X):
        return np.asarray(X.data)
    return np.asarray(X).reshape(-1)


class _Tally:
    """Problems found so far in the blocks of one count matrix."""

    def __init__(self):
        self.n_non_finite = self.n_negative = self.n_fractional = 0
        self.minimum = np.inf
        self.example: float | None = None
        self.empty: list[np.ndarray] = []

    def add(self, X, start: int) -> None:
        """Count the problems of the block ``X`` of rows ``start, start + 1, ...``."""
        values = _matrix_values(X)
        finite = np.isfinite(values)
        self.n_non_finite += int(values.size - np.count_nonzero(finite))
        values = values[finite]
        negative = values < 0
        self.n_negative += int(np.count_nonzero(negative))
        if negative.any():
            self.minimum = min(self.minimum, float(values.min()))
        fractional = values != np.round(values)
        self.n_fractional += int(np.count_nonzero(fractional))
        if self.example is None and fractional.any():
            self.example = float(values[fractional][0])
        totals = np.asarray(X.sum(axis=1)).reshape(-1)
        self.empty.append(np.flatnonzero(totals <= 0) + start)

    def raise_first(self, layer_name: str, allow_non_integer: bool) -> None:
        """Refuse the first problem in the order non-finite, negative, non-integer, empty cells."""
        if self.n_non_finite:
            raise PybridgeError(
                f"{layer_name} has {self.n_non_finite} NaN or infinite entries; counts must be finite",
                kind=NON_FINITE, n=self.n_non_finite, layer=layer_name,
            )
        if self.n_negative:
            raise PybridgeError(
                f"{layer_name} has {self.n_negative} negative entries (min {self.minimum:g}); pass raw counts, not "
                f"scaled or centred data (layer=...)",
                kind=NEGATIVE, n=self.n_negative, minimum=self.minimum, layer=layer_name,
            )
        if self.n_fractional and not allow_non_integer:
            raise PybridgeError(
                f"{layer_name} has {self.n_fractional} non-integer entries (e.g. {self.example:g}); scVI models raw "
                f"counts: pass the raw-count layer with layer=..., or opt in with allow_non_integer=True for "
                f"expected counts",
                kind=NON_INTEGER, n=self.n_fractional, example=self.example, layer=layer_name,
            )
        empty = np.concatenate(self.empty) if self.empty else np.zeros(0, np.int64)
        if empty.size:
            raise PybridgeError(
                f"{empty.size} cells have zero total counts in {layer_name} (first positions "
                f"{empty[:MAX_LISTED].tolist()}); filter them first, e.g. "
                f"adata = adata[np.asarray(adata.X.sum(1)).ravel() > 0].copy()",
                kind=EMPTY_CELLS, positions=empty.tolist(), n=int(empty.size), layer=layer_name,
            )


def validate_count_blocks(blocks: Iterable, layer_name: str, allow_non_integer: bool = False) -> None:
    """:func:`validate_counts` of the matrix made of consecutive row ``blocks``, holding one block at a time."""
    tally, start = _Tally(), 0
    for block in blocks:
        tally.add(block, start)
        start += block.shape[0]
    tally.raise_first(layer_name, allow_non_integer)


def validate_counts(X, layer_name: str, allow_non_integer: bool = False) -> None:
    """Refuse negative, NaN/Inf, non-integer counts (unless allowed) and cells with zero total counts."""
    validate_count_blocks([X], layer_name, allow_non_integer)
