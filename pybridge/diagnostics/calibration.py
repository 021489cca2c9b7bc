"""Posterior predictive checks: interval coverage, randomised-PIT coverage and CV agreement.

Two coverage measures per nominal level c:

- ``interval``: share of observed counts inside the central c interval of the predictive samples
  (sample quantiles, bounds included). This is the number usually published; with counts it exceeds c
  even for a perfect model, and a model that always predicts 0 already covers every zero.
- ``pit``: randomised probability integral transform, u = F(x-1) + V (F(x) - F(x-1)), V ~ U(0, 1);
  covered iff |u - 1/2| <= c/2. For a calibrated model this is exactly c, discrete or not.

Both are reported overall and on the non-zero entries only, next to the naive all-zero model.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.stats import spearmanr

__all__ = ["CURVE_LEVELS", "DEFAULT_LEVELS", "CalibrationAccumulator", "naive_zero_coverage"]

DEFAULT_LEVELS = (0.5, 0.8, 0.95)
CURVE_LEVELS = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))


def _dense(x) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


class CalibrationAccumulator:
    """Accumulate predictive checks over chunks of cells.

    Call :meth:`update` with posterior-predictive samples ``[n_cells, n_genes, n_samples]`` and the
    matching observed counts ``[n_cells, n_genes]``; then :meth:`result`.
    """

    def __init__(self, n_genes: int, levels=CURVE_LEVELS, seed: int = 0):
        self.levels = tuple(float(c) for c in levels)
        self.rng = np.random.default_rng(seed)
        k = len(self.levels)
        self.covered = {key: np.zeros(k) for key in ("interval_all", "interval_nonzero", "pit_all", "pit_nonzero")}
        self.n_entries = 0
        self.n_nonzero = 0
        self.n_zero = 0
        self.cell_cv_obs: list[np.ndarray] = []
        self.cell_cv_pred: list[np.ndarray] = []
        self.gene_sums = {"obs1": np.zeros(n_genes), "obs2": np.zeros(n_genes), "n": 0}
        self.gene_pred1 = None
        self.gene_pred2 = None

    def update(self, samples: np.ndarray, observed) -> None:
        x = _dense(observed).astype(np.float64)
        s = np.asarray(samples, dtype=np.float64)
        if s.ndim == 2:
            s = s[..., None]
        if s.shape[:2] != x.shape:
            raise ValueError(f"samples {s.shape} do not match observed {x.shape}")
        nonzero = x > 0
        self.n_entries += x.size
        self.n_nonzero += int(nonzero.sum())
        self.n_zero += int(x.size - nonzero.sum())
        n_s = s.shape[-1]
        n_lt = (s < x[..., None]).sum(axis=-1)
        n_le = (s <= x[..., None]).sum(axis=-1)
        u = (n_lt + self.rng.random(x.shape) * (n_le - n_lt)) / n_s
        for j, c in enumerate(self.levels):
            # central interval [s_(lo), s_(hi)] of the sorted samples (0-based order statistics), bounds included:
            # x >= s_(lo) iff #(s <= x) > lo, and x <= s_(hi) iff #(s < x) <= hi
            lo_idx = max(int(np.ceil(n_s * (1 - c) / 2)) - 1, 0)
            hi_idx = min(int(np.ceil(n_s * (1 + c) / 2)) - 1, n_s - 1)
            inside = (n_le > lo_idx) & (n_lt <= hi_idx)
            pit_in = np.abs(u - 0.5) <= c / 2
            self.covered["interval_all"][j] += inside.sum()
            self.covered["interval_nonzero"][j] += (inside & nonzero).sum()
            self.covered["pit_all"][j] += pit_in.sum()
            self.covered["pit_nonzero"][j] += (pit_in & nonzero).sum()
        self.cell_cv_obs.append(_cv(x, axis=1))
        self.cell_cv_pred.append(np.nanmean(_cv(s, axis=1), axis=-1))
        self.gene_sums["obs1"] += x.sum(axis=0)
        self.gene_sums["obs2"] += (x * x).sum(axis=0)
        self.gene_sums["n"] += x.shape[0]
        if self.gene_pred1 is None:
            self.gene_pred1 = np.zeros((x.shape[1], n_s))
            self.gene_pred2 = np.zeros((x.shape[1], n_s))
        self.gene_pred1 += s.sum(axis=0)
        self.gene_pred2 += (s * s).sum(axis=0)

    def result(self) -> dict:
        """Coverage per level (overall / non-zero, interval / PIT), naive-zero reference, CV agreement."""
        naive = naive_zero_coverage_counts(self.n_entries, self.n_zero, self.levels)
        out = {"levels": list(self.levels), "n_entries": self.n_entries, "n_nonzero": self.n_nonzero}
        for key, counts in self.covered.items():
            denom = self.n_nonzero if key.endswith("nonzero") else self.n_entries
            out[key] = (counts / max(denom, 1)).tolist()
        out["naive_zero"] = naive
        n = self.gene_sums["n"]
        gene_cv_obs = _cv_from_sums(self.gene_sums["obs1"], self.gene_sums["obs2"], n)
        gene_cv_pred = np.nanmean(_cv_from_sums(self.gene_pred1, self.gene_pred2, n), axis=1)
        out["cv_agreement"] = {
            "cell": _agreement(np.concatenate(self.cell_cv_obs), np.concatenate(self.cell_cv_pred)),
            "gene": _agreement(gene_cv_obs, gene_cv_pred),
        }
        return out


def _cv(x: np.ndarray, axis: int) -> np.ndarray:
    mean = x.mean(axis=axis)
    sd = x.std(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, sd / np.where(mean > 0, mean, 1.0), np.nan)


def _cv_from_sums(s1: np.ndarray, s2: np.ndarray, n: int) -> np.ndarray:
    mean = s1 / n
    var = np.clip(s2 / n - mean**2, 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, np.sqrt(var) / np.where(mean > 0, mean, 1.0), np.nan)


def _agreement(observed: np.ndarray, predicted: np.ndarray) -> dict:
    ok = np.isfinite(observed) & np.isfinite(predicted) & (observed > 0) & (predicted > 0)
    if ok.sum() < 3:
        return {"n": int(ok.sum()), "spearman": float("nan"), "median_abs_log2_ratio": float("nan")}
    return {
        "n": int(ok.sum()),
        "spearman": float(spearmanr(observed[ok], predicted[ok])[0]),
        "median_abs_log2_ratio": float(np.median(np.abs(np.log2(predicted[ok] / observed[ok])))),
        "median_log2_ratio": float(np.median(np.log2(predicted[ok] / observed[ok]))),
    }


def naive_zero_coverage_counts(n_entries: int, n_zero: int, levels) -> dict:
    """Coverage of the model that always predicts 0 (all predictive mass at zero)."""
    zero_share = n_zero / max(n_entries, 1)
    return {
        "interval_all": [zero_share for _ in levels],
        "interval_nonzero": [0.0 for _ in levels],
        "pit_all": [float(c) * zero_share for c in levels],
        "pit_nonzero": [0.0 for _ in levels],
    }


def naive_zero_coverage(observed, levels=DEFAULT_LEVELS) -> dict:
    """Coverage of the always-zero model on ``observed`` counts (dense or sparse)."""
    n_entries = observed.shape[0] * observed.shape[1]
    if sp.issparse(observed):
        n_nonzero = int((observed.data != 0).sum())
    else:
        n_nonzero = int(np.count_nonzero(observed))
    return naive_zero_coverage_counts(n_entries, n_entries - n_nonzero, levels)
