"""Predictive checks on known distributions; ceiling and likelihood helpers; imputation corruption."""

import numpy as np
import scipy.sparse as sp
from scipy.stats import nbinom, poisson

from pybridge.diagnostics.calibration import CalibrationAccumulator, naive_zero_coverage
from pybridge.diagnostics.ceiling import count_loglik, moment_theta, simulate_counts, split_half_ceiling
from pybridge.diagnostics.imputation import hide_nonzero_entries, median_absolute_error
from pybridge.diagnostics.ranks import spearman_rows

LEVELS = (0.5, 0.8, 0.95)


def _poisson_setup(seed=0, n=200, g=150, s=200):
    rng = np.random.default_rng(seed)
    lam = rng.gamma(0.6, 2.0, (n, g))
    return lam, rng.poisson(lam), rng.poisson(lam[..., None], size=(n, g, s))


def test_calibrated_model_has_nominal_pit_coverage_and_intervals_overcover():
    _lam, obs, samples = _poisson_setup()
    acc = CalibrationAccumulator(obs.shape[1], levels=LEVELS)
    acc.update(samples[:120], obs[:120])
    acc.update(samples[120:], sp.csr_matrix(obs[120:]))
    res = acc.result()
    np.testing.assert_allclose(res["pit_all"], LEVELS, atol=0.015)
    assert all(cov >= lvl for cov, lvl in zip(res["interval_all"], LEVELS))
    # CV of predictive samples agrees with the data's CV
    assert abs(res["cv_agreement"]["gene"]["median_log2_ratio"]) < 0.05
    assert abs(res["cv_agreement"]["cell"]["median_log2_ratio"]) < 0.05


def test_miscalibrated_model_is_detected_and_naive_zero_reference():
    lam, obs, _ = _poisson_setup(1)
    rng = np.random.default_rng(2)
    too_narrow = rng.poisson(lam[..., None] * 0.3, size=lam.shape + (200,))
    acc = CalibrationAccumulator(obs.shape[1], levels=LEVELS)
    acc.update(too_narrow, obs)
    res = acc.result()
    assert res["pit_all"][1] < 0.65
    zero_share = (obs == 0).mean()
    naive = naive_zero_coverage(sp.csr_matrix(obs), LEVELS)
    np.testing.assert_allclose(naive["interval_all"], [zero_share] * 3)
    np.testing.assert_allclose(naive["pit_all"], np.array(LEVELS) * zero_share)
    assert naive["interval_nonzero"] == [0.0, 0.0, 0.0]
    assert res["naive_zero"]["interval_all"][0] == naive["interval_all"][0]


def test_count_loglik_matches_scipy():
    rng = np.random.default_rng(3)
    mu = rng.gamma(1.0, 2.0, (5, 7))
    theta = rng.gamma(2.0, 1.0, 7)
    x = rng.poisson(mu)
    np.testing.assert_allclose(count_loglik(x, mu), poisson.logpmf(x, mu).sum(1))
    ref = nbinom.logpmf(x, theta, theta / (theta + mu)).sum(1)
    np.testing.assert_allclose(count_loglik(sp.csr_matrix(x), mu, theta), ref, rtol=1e-8)
    logits = rng.normal(size=(5, 7))
    pi = 1 / (1 + np.exp(-logits))
    nb = nbinom.pmf(x, theta, theta / (theta + mu))
    zinb = np.where(x == 0, pi + (1 - pi) * nb, (1 - pi) * nb)
    np.testing.assert_allclose(count_loglik(x, mu, theta, pi), np.log(zinb).sum(1), rtol=1e-8)
    np.testing.assert_allclose(count_loglik(sp.csr_matrix(x), mu, theta[None, :] + 0 * mu, pi), np.log(zinb).sum(1),
                               rtol=1e-8)
    np.testing.assert_allclose(count_loglik(sp.csr_matrix(x), mu), poisson.logpmf(x, mu).sum(1))


def test_split_half_ceiling_estimates_oracle_correlation():
    rng = np.random.default_rng(4)
    lam = rng.gamma(0.5, 4.0, (150, 400))
    # two independent Poisson folds at half depth, and a third draw to score the oracle directly
    a, b = rng.poisson(lam / 2), rng.poisson(lam / 2)
    oracle = np.nanmedian(spearman_rows(lam, sp.csr_matrix(rng.poisson(lam / 2))))
    ceiling = np.nanmedian(split_half_ceiling(sp.csr_matrix(a), sp.csr_matrix(b))["per_cell"])
    assert abs(ceiling - oracle) < 0.05


def test_moment_theta_recovers_nb_dispersion():
    mu = np.full((20000, 2), 4.0)
    x = simulate_counts(mu, theta=np.array([0.5, 5.0]), seed=5)
    theta = moment_theta(x, mu)
    np.testing.assert_allclose(theta, [0.5, 5.0], rtol=0.1)


def test_hide_nonzero_entries():
    rng = np.random.default_rng(6)
    X = sp.csr_matrix(rng.poisson(1.0, (100, 50)).astype(np.float32))
    corrupted, hidden = hide_nonzero_entries(X, rate=0.1, seed=0)
    assert len(hidden.values) == round(0.1 * X.nnz)
    assert np.all(hidden.values > 0)
    np.testing.assert_array_equal(X[hidden.rows, hidden.cols].A1, hidden.values)
    assert np.all(corrupted[hidden.rows, hidden.cols].A1 == 0)
    assert corrupted.nnz == X.nnz - len(hidden.values)
    assert median_absolute_error(hidden.values, hidden) == 0.0
    assert X.nnz == (X != 0).nnz  # input untouched


def test_split_half_ceiling_bounds_rank_correlation_when_most_counts_are_zero():
    """With ~85% zeros sqrt(rho_AB) matches the best achievable correlation with fold-B ranks, the correlation
    of E[rank(B) | rate]; ranking genes by their true rate (the rank oracle) reaches less."""
    from pybridge.diagnostics.ranks import _pearson_rows, row_ranks

    rng = np.random.default_rng(7)
    prof = rng.gamma(0.3, 1.0, 1000)
    rate = prof * rng.gamma(5.0, 0.2, (80, 1000))
    rate = rate / rate.sum(1, keepdims=True) * 300
    a, b = sp.csr_matrix(rng.poisson(rate)), sp.csr_matrix(rng.poisson(rate))
    assert (b.toarray() == 0).mean() > 0.8
    expected_rank = np.mean([row_ranks(sp.csr_matrix(rng.poisson(rate))) for _ in range(60)], axis=0)
    best = np.nanmedian(_pearson_rows(expected_rank, row_ranks(b)))
    ceiling = np.nanmedian(split_half_ceiling(a, b)["per_cell"])
    rank_oracle = np.nanmedian(spearman_rows(rate, b))
    assert abs(ceiling - best) < 0.03
    assert rank_oracle < ceiling - 0.05
