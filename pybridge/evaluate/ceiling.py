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
from scipy.special import expit, gammaln

from pybridge.evaluate.ranks import spearman_rows

__all__ = [
    "library_size",
    "mean_cell_profile",
    "smoothed_count_profiles",
    "pca_profiles",
    "moment_theta",
    "count_loglik",
    "split_half_ceiling",
    "simulate_counts",
    "simulated_oracle_spearman",
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


def _entry_loglik(x, mu, theta, zi_logits) -> np.ndarray:
    """Elementwise log p(x) for Poisson / NB / ZINB (all arguments of one shape, or theta/zi None)."""
    if theta is None:
        ll = x * np.log(mu + 1e-300) - mu - gammaln(x + 1.0)
    else:
        log1p_mu_th = np.log1p(mu / theta)  # log(theta + mu) - log(theta), accurate for huge theta
        ll = -theta * log1p_mu_th
        if np.any(x):
            ll = ll + gammaln(x + theta) - gammaln(theta) - gammaln(x + 1.0)
            ll = ll + x * (np.log(mu + 1e-300) - np.log(theta) - log1p_mu_th)
    if zi_logits is not None:
        log_pi = -np.logaddexp(0.0, -zi_logits)  # log sigmoid
        log_not_pi = -np.logaddexp(0.0, zi_logits)
        ll = np.where(x == 0, np.logaddexp(log_pi, log_not_pi + ll), log_not_pi + ll)
    return ll


def count_loglik(X, mean, theta=None, zi_logits=None) -> np.ndarray:
    """Per-cell log-likelihood sum_g log p(x_g) of counts ``X`` (dense or sparse, cells x genes).

    Poisson when ``theta`` is None, else negative binomial with mean ``mean`` and inverse dispersion
    ``theta`` (per gene or per entry); zero-inflated when ``zi_logits`` (logit of the dropout
    probability) is given. ``mean`` is dense, broadcastable to X. Sparse X is scored as the all-zero
    likelihood plus a correction on its non-zero entries only.
    """
    shape = X.shape
    mu = np.broadcast_to(np.asarray(mean, dtype=np.float64), shape)
    th = None if theta is None else np.broadcast_to(np.asarray(theta, dtype=np.float64), shape)
    zi = None if zi_logits is None else np.broadcast_to(np.asarray(zi_logits, dtype=np.float64), shape)
    if not sp.issparse(X):
        return _entry_loglik(np.asarray(X, dtype=np.float64), mu, th, zi).sum(axis=1)
    csr = sp.csr_matrix(X)
    zeros = np.zeros(shape)
    total = _entry_loglik(zeros, mu, th, zi).sum(axis=1)
    rows = np.repeat(np.arange(shape[0]), np.diff(csr.indptr))
    cols = csr.indices
    x = np.asarray(csr.data, dtype=np.float64)

    def at(a):
        return None if a is None else a[rows, cols]

    delta = _entry_loglik(x, at(mu), at(th), at(zi)) - _entry_loglik(np.zeros_like(x), at(mu), at(th), at(zi))
    return total + np.bincount(rows, weights=delta, minlength=shape[0])


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


def simulate_counts(mean, theta=None, zi_logits=None, seed: int = 0) -> np.ndarray:
    """Draw counts from Poisson / NB(mean, theta) / ZINB with the given parameters (numpy)."""
    rng = np.random.default_rng(seed)
    mu = np.asarray(mean, dtype=np.float64)
    if theta is None:
        rate = mu
    else:
        th = np.broadcast_to(np.asarray(theta, dtype=np.float64), mu.shape)
        rate = rng.gamma(th, mu / np.maximum(th, 1e-12))
    counts = rng.poisson(rate).astype(np.float64)
    if zi_logits is not None:
        drop = rng.random(mu.shape) < expit(np.broadcast_to(zi_logits, mu.shape))
        counts[drop] = 0.0
    return counts


def simulated_oracle_spearman(mean, theta=None, zi_logits=None, seed: int = 0) -> dict:
    """Spearman of the true rates with counts drawn from them: the ceiling if the model were true."""
    draws = simulate_counts(mean, theta, zi_logits, seed)
    mean = np.asarray(mean, dtype=np.float64)
    return {"per_cell": spearman_rows(mean, draws), "per_gene": spearman_rows(mean.T, draws.T), "draws": draws}
