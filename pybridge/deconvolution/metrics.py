"""Accuracy of estimated cell-type proportions against a known truth, and ranking of methods.

Metrics follow the spatial-integration benchmark of Li et al. (Nat. Methods 2022): Pearson correlation,
global SSIM (each vector divided by its maximum; L = 1, k1 = 0.01, k2 = 0.03; population moments), RMSE,
Jensen-Shannon (``js_distance`` = ``scipy.spatial.distance.jensenshannon`` with natural log, ``js_divergence``
= its square in base 2, i.e. the divergence in bits), plus the area under the precision-recall curve for
detecting which cell types are present (truth > 0) from the predicted proportions.

``per_cell_type`` compares, for each cell type, the vector of its proportions across spots; ``per_spot``
compares, for each spot, the vector of proportions across cell types. Undefined values (a constant vector's
correlation, a zero vector's JS, AUPR with no present type) are NaN and skipped by the summaries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score

from pybridge.errors import PybridgeError

METRICS = ("pearson", "ssim", "rmse", "js_distance", "js_divergence", "aupr")
HIGHER_IS_BETTER = {
    "pearson": True,
    "ssim": True,
    "rmse": False,
    "js_distance": False,
    "js_divergence": False,
    "aupr": True,
}
# js_distance ranks methods exactly like js_divergence (a monotone transform): count JS once
ACCURACY_SCORE_METRICS = ("pearson", "ssim", "rmse", "js_divergence", "aupr")


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either vector is constant."""
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc**2).sum() * (yc**2).sum())
    return float((xc * yc).sum() / denom) if denom > 0 else float("nan")


def global_ssim(x: np.ndarray, y: np.ndarray, k1: float = 0.01, k2: float = 0.03) -> float:
    """SSIM over whole vectors after dividing each by its maximum (L = 1)."""
    x = x / x.max() if x.max() > 0 else x
    y = y / y.max() if y.max() > 0 else y
    c1, c2 = k1**2, k2**2
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    return float(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (x.var() + y.var() + c2)))


def rmse(x: np.ndarray, y: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(((x - y) ** 2).mean()))


def js_distance(x: np.ndarray, y: np.ndarray) -> float:
    """scipy's Jensen-Shannon distance (natural log; inputs normalised to sum 1); NaN for a zero vector."""
    if x.sum() <= 0 or y.sum() <= 0:
        return float("nan")
    return float(jensenshannon(x, y))


def js_divergence(x: np.ndarray, y: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (log2); NaN for a zero vector."""
    if x.sum() <= 0 or y.sum() <= 0:
        return float("nan")
    return float(jensenshannon(x, y, base=2) ** 2)


def aupr_presence(truth: np.ndarray, score: np.ndarray) -> float:
    """Average precision of ``score`` for ``truth > 0``; NaN when nothing is present."""
    present = truth > 0
    if not present.any():
        return float("nan")
    return float(average_precision_score(present, score))


_FUNCTIONS = {
    "pearson": pearson,
    "ssim": global_ssim,
    "rmse": rmse,
    "js_distance": js_distance,
    "js_divergence": js_divergence,
    "aupr": aupr_presence,
}


def deconvolution_metrics(true: pd.DataFrame, pred: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per-cell-type and per-spot metrics of predicted against true proportions.

    Args:
        true: spots x cell types, true proportions.
        pred: spots x cell types, predictions; aligned to ``true`` by spot and cell-type names
            (a cell type missing from ``pred`` is an error; extra columns such as a noise term are dropped).

    Returns:
        ``{"per_cell_type": DataFrame (cell types x METRICS), "per_spot": DataFrame (spots x METRICS)}``.
    """
    true, pred = _align(true, pred)
    t, p = true.to_numpy(np.float64), pred.to_numpy(np.float64)
    per_type = pd.DataFrame(
        [[_FUNCTIONS[m](t[:, j], p[:, j]) for m in METRICS] for j in range(t.shape[1])],
        index=true.columns,
        columns=list(METRICS),
    )
    per_spot = pd.DataFrame(
        [[_FUNCTIONS[m](t[i], p[i]) for m in METRICS] for i in range(t.shape[0])],
        index=true.index,
        columns=list(METRICS),
    )
    return {"per_cell_type": per_type, "per_spot": per_spot}


def summarize_metrics(metrics: Mapping[str, pd.DataFrame]) -> pd.Series:
    """Means (NaN skipped) of each metric, prefixed ``celltype_`` and ``spot_``."""
    parts = [
        metrics["per_cell_type"].mean(skipna=True).add_prefix("celltype_"),
        metrics["per_spot"].mean(skipna=True).add_prefix("spot_"),
    ]
    return pd.concat(parts)


def accuracy_score(summaries: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.Series:
    """Accuracy score per method: mean over metrics of rank / n_methods, where the best method ranks n_methods.

    Args:
        summaries: methods x metric columns (e.g. rows of :func:`summarize_metrics`, or a per-cell-type table
            with columns from ``METRICS``). A column ``celltype_rmse`` / ``spot_rmse`` takes the direction of
            ``rmse``.
        metrics: columns to use; default every column whose base metric is in ``ACCURACY_SCORE_METRICS``.

    Returns:
        Series indexed by method, in (0, 1], 1 = best on every metric. Ties share the average rank.
    """
    if metrics is None:
        metrics = [c for c in summaries.columns if _base_metric(c) in ACCURACY_SCORE_METRICS]
    if not metrics:
        raise PybridgeError(f"accuracy_score: no known metric columns among {list(summaries.columns)}.")
    n_methods = len(summaries)
    scores = []
    for column in metrics:
        values = summaries[column].to_numpy(np.float64)
        oriented = values if HIGHER_IS_BETTER[_base_metric(column)] else -values
        oriented = np.where(np.isnan(oriented), -np.inf, oriented)  # a NaN metric ranks last
        scores.append(rankdata(oriented, method="average") / n_methods)
    return pd.Series(np.mean(scores, axis=0), index=summaries.index, name="accuracy_score")


def _base_metric(column: str) -> str:
    for prefix in ("celltype_", "spot_"):
        if column.startswith(prefix):
            return column[len(prefix) :]
    return column


def _align(true: pd.DataFrame, pred: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    true, pred = pd.DataFrame(true), pd.DataFrame(pred)
    missing = [c for c in true.columns if c not in pred.columns]
    if missing:
        raise PybridgeError(f"deconvolution_metrics: predictions lack cell types {missing}.")
    if len(true) != len(pred):
        raise PybridgeError(f"deconvolution_metrics: {len(true)} true spots but {len(pred)} predicted.")
    if not true.index.equals(pred.index):
        if set(true.index) != set(pred.index):
            raise PybridgeError("deconvolution_metrics: true and predicted spot names differ.")
        pred = pred.loc[true.index]
    return true, pred[list(true.columns)]
