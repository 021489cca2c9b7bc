"""Noise ceiling and model-free baselines for count-split evaluation.

A predictor sees fold A and is scored on fold B. Its expected counts for a cell are a profile p (a
distribution over genes) times the cell's fold-B depth. Baselines:

- ``mean_cell``: every cell is the average cell (the pooled fold-A profile);
- ``fold_A``: the cell's own fold-A counts (no model), shrunk towards the pooled profile with a
  pseudocount so that the likelihood of fold B is finite;
- ``pca``: PCA of log-normalised fold A, mapped back to count space.

The noise ceiling is what an oracle that knows the true rates would reach. Two estimates:

- split-half (model-free): with independent folds A and B of equal depth and noise independent of the
  rate, corr(A, B) = corr(rate, A) * corr(rate, B), so the oracle's correlation with fold B is
  sqrt(corr(A, B)) (exact for Pearson, a close approximation for Spearman);
- simulated: take the model's rates as the truth, draw counts from its likelihood, and correlate.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import gammaln

from pybridge.diagnostics.ranks import spearman_rows

__all__ = [
    "count_loglik",
    "library_size",
    "mean_cell_profile",
    "moment_theta",
    "pca_profiles",
    "simulate_counts",
    "smoothed_count_profiles",
    "split_half_ceiling",
]


def library_size(X) -> np.ndarray:
    """Total counts per cell (row)."""
    return np.asarray(X.sum(axis=1), dtype=np.float64).ravel()


def mean_cell_profile(A) -> np.ndarray:
    """The pooled expression profile of fold A (sums to 1): 'every cell is the mean cell'."""
    totals = np.asarray(A.sum(axis=0), dtype=np.float64).ravel()
    return totals / totals.sum()


def smoothed_count_profiles(A, pseudocount: float, profile: np.ndarray | None = None) -> np.ndarray:
    """Each cell's own fold-A counts plus ``pseudocount`` spread along the pooled profile, normalised."""
    profile = mean_cell_profile(A) if profile is None else profile
    dense = A.toarray() if sp.issparse(A) else np.asarray(A, dtype=np.float64)
    smoothed = dense + pseudocount * profile[None, :]
    return smoothed / smoothed.sum(axis=1, keepdims=True)


def pca_profiles(A, n_components: int = 10, seed: int = 0, floor_weight: float = 0.0) -> np.ndarray:
    """PCA on log1p(counts / library * median library) of fold A, reconstructed and mapped back.

    Returns row profiles (n_cells x n_genes, rows sum to 1). ``floor_weight`` mixes in the pooled
    profile so that no expected count is exactly zero.
    """
    from sklearn.utils.extmath import randomized_svd

    lib = library_size(A)
    scale = np.median(lib[lib > 0]) if np.any(lib > 0) else 1.0
    dense = A.toarray() if sp.issparse(A) else np.asarray(A, dtype=np.float64)
    logn = np.log1p(dense / np.maximum(lib, 1.0)[:, None] * scale)
    centre = logn.mean(axis=0)
    k = int(min(n_components, min(logn.shape) - 1))
    u, s, vt = randomized_svd(logn - centre, n_components=k, random_state=seed)
    recon = np.clip(np.expm1((u * s) @ vt + centre), 0.0, None)
    totals = recon.sum(axis=1, keepdims=True)
    pooled = mean_cell_profile(A)
    profiles = np.where(totals > 0, recon / np.where(totals > 0, totals, 1.0), pooled[None, :])
    return (1.0 - floor_weight) * profiles + floor_weight * pooled[None, :]


def moment_theta(X, mean: np.ndarray, max_theta: float = 1e6) -> np.ndarray:
    """Per-gene NB theta by moments given expected counts: sum mu^2 / sum((x - mu)^2 - mu).

    Genes without extra-Poisson variance get ``max_theta`` (practically Poisson).
    """
    dense = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    excess = ((dense - mean) ** 2 - mean).sum(axis=0)
    mu2 = (mean**2).sum(axis=0)
    theta = np.full(dense.shape[1], max_theta)
    ok = excess > 0
    theta[ok] = np.clip(mu2[ok] / excess[ok], 1e-3, max_theta)
    return theta


def _zero_loglik(mu, theta, zi_prob) -> np.ndarray:
    """log p(0) for Poisson / NB / ZINB, broadcasting."""
    ll = -mu if theta is None else -theta * np.log1p(mu / theta)
    if zi_prob is not None:
        ll = np.log(zi_prob + (1.0 - zi_prob) * np.exp(ll))
    return ll


def _positive_loglik(x, mu, theta, zi_prob) -> np.ndarray:
    """log p(x) for x > 0 (1-d arrays of the non-zero entries)."""
    if theta is None:
        ll = x * np.log(mu) - mu - gammaln(x + 1.0)
    else:
        log1p_mu_th = np.log1p(mu / theta)  # log(theta + mu) - log(theta), accurate for huge theta
        ll = (gammaln(x + theta) - gammaln(theta) - gammaln(x + 1.0) - theta * log1p_mu_th
              + x * (np.log(mu) - np.log(theta) - log1p_mu_th))
    if zi_prob is not None:
        ll = ll + np.log1p(-zi_prob)
    return ll


def _at(a, rows: np.ndarray, cols: np.ndarray):
    """Values of a parameter (scalar, per gene, or per entry) at the given entries."""
    if a is None:
        return None
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return a
    if a.ndim == 1:
        return a[cols]
    return a[rows, cols]


def count_loglik(X, mean, theta=None, zi_prob=None) -> np.ndarray:
    """Per-cell log-likelihood sum_g log p(x_g) of counts ``X`` (dense or sparse, cells x genes).

    Poisson when ``theta`` is None, else negative binomial with mean ``mean`` and inverse dispersion
    ``theta`` (scalar, per gene, or per entry); zero-inflated when ``zi_prob`` (the zero-inflation
    probability, per entry) is given. ``mean`` is dense, broadcastable to X. Scored as the all-zero
    likelihood of every entry plus a correction on the non-zero entries only (fast for sparse counts).
    """
    csr = sp.csr_matrix(X, dtype=np.float64)
    csr.eliminate_zeros()
    mu = np.asarray(mean, dtype=np.float64)
    th = None if theta is None else np.asarray(theta, dtype=np.float64)
    zi = None if zi_prob is None else np.asarray(zi_prob, dtype=np.float64)
    total = np.broadcast_to(_zero_loglik(mu, th, zi), csr.shape).sum(axis=1)
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    cols = csr.indices
    mu_nz = np.broadcast_to(mu, csr.shape)[rows, cols]
    th_nz, zi_nz = _at(th, rows, cols), _at(zi, rows, cols)
    delta = _positive_loglik(csr.data, mu_nz, th_nz, zi_nz) - _zero_loglik(mu_nz, th_nz, zi_nz)
    return total + np.bincount(rows, weights=delta, minlength=csr.shape[0])


def split_half_ceiling(A, B) -> dict:
    """Model-free noise ceiling from two folds of equal depth: sqrt(max(Spearman(A, B), 0)).

    Returns per-cell and per-gene ceilings and the raw fold-A vs fold-B correlations.
    """
    per_cell_ab = spearman_rows(A, B)
    per_gene_ab = spearman_rows(_t(A), _t(B))
    return {
        "per_cell": np.sqrt(np.clip(per_cell_ab, 0.0, None)),
        "per_gene": np.sqrt(np.clip(per_gene_ab, 0.0, None)),
        "per_cell_fold_ab": per_cell_ab,
        "per_gene_fold_ab": per_gene_ab,
    }


def _t(m):
    return m.tocsc().T.tocsr() if sp.issparse(m) else np.asarray(m).T


def simulate_counts(mean, theta=None, zi_prob=None, seed: int = 0) -> np.ndarray:
    """Draw counts from Poisson / NB(mean, theta) / ZINB (zero-inflation probability ``zi_prob``), numpy."""
    rng = np.random.default_rng(seed)
    mu = np.asarray(mean, dtype=np.float64)
    if theta is None:
        rate = mu
    else:
        th = np.broadcast_to(np.asarray(theta, dtype=np.float64), mu.shape)
        rate = rng.gamma(th, mu / np.maximum(th, 1e-12))
    counts = rng.poisson(rate).astype(np.float64)
    if zi_prob is not None:
        counts[rng.random(mu.shape) < np.broadcast_to(zi_prob, mu.shape)] = 0.0
    return counts
