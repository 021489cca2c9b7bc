"""The one exception type pybridge raises for bad input or bad files, and what a host language needs from it.

A :class:`PybridgeError` carries, besides its (Pythonic) message, a machine-readable ``kind`` and ``details``
(0-based positions, offending names or values, the Python argument concerned), so that a host such as the R
package can say the same thing in its own terms. :class:`WarningRecorder` collects the warnings raised while a
host calls in, for the host to re-issue as its own warnings.
"""

from __future__ import annotations

import warnings
from typing import Any

#: Kinds of structured errors (``PybridgeError.kind``) and the details each carries.
EMPTY_CELLS = "empty_cells"  # positions (0-based, all), n, layer
NON_INTEGER = "non_integer"  # n, example, layer
NEGATIVE = "negative"  # n, minimum, layer
NON_FINITE = "non_finite"  # n, layer
DUPLICATE_GENES = "duplicate_genes"  # names (the duplicated ones)
MISSING_VALUES = "missing_values"  # key, role, positions (0-based, all), n
SINGLE_CATEGORY = "single_category"  # key, role, category (a warning: one batch means no batch correction)
RARE_LABELS = "rare_labels"  # key, counts ({label: n}), threshold (a warning: few cells of some types)
BATCH_EXCEEDS_CELLS = "batch_exceeds_cells"  # batch_size, n_cells (a warning: one minibatch per epoch)

MAX_LISTED = 5  # how many positions or names a message lists


class PybridgeError(ValueError):
    """A user-facing error: the message names the problem and how to fix it.

    ``kind`` (one of the module's kind constants, or ``None``) and ``details`` describe the problem for a host
    language that words its own message.
    """

    def __init__(self, message: str, kind: str | None = None, **details: Any):
        super().__init__(message)
        self.kind = kind
        self.details = details


class PybridgeWarning(UserWarning):
    """A warning with the same ``kind`` and ``details`` as :class:`PybridgeError`, for hosts to word."""

    def __init__(self, message: str, kind: str | None = None, **details: Any):
        super().__init__(message)
        self.kind = kind
        self.details = details


class WarningRecorder:
    """Record every warning raised between :meth:`start` and :meth:`stop` instead of printing it.

    The R package wraps its calls into Python with one, then raises each recorded warning as an R warning.
    """

    def __init__(self) -> None:
        self._context: warnings.catch_warnings | None = None
        self._records: list[warnings.WarningMessage] = []

    def start(self) -> None:
        """Begin recording (every occurrence, including repeats)."""
        self._context = warnings.catch_warnings(record=True)
        self._records = self._context.__enter__()
        warnings.simplefilter("always")

    def stop(self) -> list[dict[str, Any]]:
        """End recording; the warnings seen, as ``{"category", "message", "kind", "details"}`` (no file or line)."""
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None
        return [
            {
                "category": w.category.__name__,
                "message": str(w.message),
                "kind": getattr(w.message, "kind", None),
                "details": getattr(w.message, "details", {}),
            }
            for w in self._records
        ]
