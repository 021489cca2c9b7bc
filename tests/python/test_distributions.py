"""Log-likelihoods against scipy on random parameters, extremes included; samplers' moments."""

import mpmath
import numpy as np
import pytest
import torch
from scipy import stats

from pybridge.nn import distributions as D

RNG = np.random.default_rng(0)
N = 4000
THETA = 10 ** RNG.uniform(-4, 6, N)
MU = 10 ** RNG.uniform(-8, 5, N)
EXTREMES = [(t, m) for t in (1e-4, 1.0, 1e6) for m in (1e-8, 1.0, 1e5)]
THETA = np.concatenate([THETA, [t for t, _ in EXTREMES] * 4])
MU = np.concatenate([MU, [m for _, m in EXTREMES] * 4])


def _counts(mu, theta):
    """Counts drawn near the distribution's bulk, plus zeros and a few large values."""
    draws = stats.nbinom.rvs(theta, theta / (theta + mu), random_state=1).astype(float)
    draws[::7] = 0.0
    draws[::11] = np.round(mu[::11] * 2 + 3)
    return draws


X = _counts(MU, THETA)


def _nb_logpmf_exact(x, mu, theta):
    """NB log-pmf in 50-digit arithmetic (scipy's p = theta / (theta + mu) loses digits when mu << theta)."""
    mpmath.mp.dps = 50
    out = np.empty(len(x))
    for i, (xi, mi, ti) in enumerate(zip(x, mu, theta)):
        xi, mi, ti = mpmath.mpf(xi), mpmath.mpf(mi), mpmath.mpf(ti)
        val = (
            mpmath.loggamma(xi + ti) - mpmath.loggamma(ti) - mpmath.loggamma(xi + 1)
            + ti * (mpmath.log(ti) - mpmath.log(ti + mi)) + xi * (mpmath.log(mi) - mpmath.log(ti + mi))
        )
        out[i] = float(val)
    return out


LOG_NB_EXACT = _nb_logpmf_exact(X, MU, THETA)


def _t(a):
    return torch.as_tensor(a, dtype=torch.float64)


def test_nb_matches_scipy():
    ours = D.log_nb_positive(_t(X), _t(MU), _t(THETA)).numpy()
    ref = LOG_NB_EXACT
    well_conditioned = MU / THETA > 1e-6
    scipy_ref = stats.nbinom.logpmf(X, THETA, THETA / (THETA + MU))
    np.testing.assert_allclose(scipy_ref[well_conditioned], ref[well_conditioned], rtol=1e-5, atol=1e-12)
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-12)


def test_zinb_matches_mixture():
    logits = RNG.normal(0, 3, X.shape)
    pi = 1 / (1 + np.exp(-logits))
    log_nb = LOG_NB_EXACT
    ref = np.logaddexp(np.log(pi), np.log1p(-pi) + log_nb)  # x = 0: inflated zero or NB zero
    nonzero = X > 0
    ref[nonzero] = np.log1p(-pi[nonzero]) + log_nb[nonzero]
    ours = D.log_zinb_positive(_t(X), _t(MU), _t(THETA), _t(logits)).numpy()
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-12)


def test_poisson_matches_scipy():
    ours = D.log_poisson(_t(X), _t(MU)).numpy()
    ref = stats.poisson.logpmf(X, MU)
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-12)


def test_constant_is_lgamma_x_plus_one():
    full = D.log_nb_positive(_t(X), _t(MU), _t(THETA))
    partial = D.log_nb_positive(_t(X), _t(MU), _t(THETA), include_constant=False)
    np.testing.assert_allclose((partial - full).numpy(), torch.lgamma(_t(X) + 1).numpy(), rtol=1e-10)


def test_float32_is_finite_at_extremes():
    theta = torch.tensor([t for t, _ in EXTREMES], dtype=torch.float32)
    mu = torch.tensor([m for _, m in EXTREMES], dtype=torch.float32)
    for x in (0.0, 1.0, 50.0):
        xs = torch.full_like(mu, x)
        assert torch.isfinite(D.log_nb_positive(xs, mu, theta)).all()
        assert torch.isfinite(D.log_zinb_positive(xs, mu, theta, torch.zeros_like(mu))).all()
        assert torch.isfinite(D.log_poisson(xs, mu)).all()


@pytest.mark.parametrize("mu,theta", [(0.5, 0.3), (20.0, 2.0), (300.0, 50.0)])
def test_nb_sampler_moments(mu, theta):
    torch.manual_seed(0)
    draws = D.sample_nb(torch.full((200_000,), mu), torch.tensor(theta)).double()
    assert abs(draws.mean().item() - mu) < 0.02 * mu + 0.01
    var = mu + mu**2 / theta
    assert abs(draws.var().item() - var) < 0.05 * var


@pytest.mark.parametrize("zero_inflated", [False, True])
def test_nb_sampler_matches_pmf(zero_inflated):
    """Columns drawn by inverting the distribution function (small means) and by the gamma-Poisson mixture (the
    last two: mean above 9 theta, mean above 16) both follow the pmf."""
    gen = torch.Generator().manual_seed(0)
    n = 100_000
    mu = torch.tensor([0.05, 0.8, 3.0, 12.0, 15.0, 40.0], dtype=torch.float64)
    theta = torch.tensor([0.5, 0.1, 2.0, 30.0, 1.0, 3.0], dtype=torch.float64)
    zi = torch.tensor([-1.0, 0.5, -2.0, 0.0, 1.0, -0.5], dtype=torch.float64)
    if zero_inflated:
        draws = D.sample_zinb(mu.expand(n, -1), theta, zi.expand(n, -1), generator=gen)
    else:
        draws = D.sample_nb(mu.expand(n, -1), theta, generator=gen)
    assert draws.shape == (n, 6) and draws.dtype == torch.float64
    ks = torch.arange(0, 15, dtype=torch.float64)
    for j in range(6):
        if zero_inflated:
            pmf = D.log_zinb_positive(ks, mu[j], theta[j], zi[j]).exp()
        else:
            pmf = D.log_nb_positive(ks, mu[j], theta[j]).exp()
        freq = (draws[:, j : j + 1] == ks).double().mean(0)
        assert ((freq - pmf).abs() <= 5 * (pmf * (1 - pmf) / n).sqrt() + 1e-4).all(), (j, freq, pmf)


def test_zinb_sampler_zero_fraction():
    torch.manual_seed(0)
    mu, theta, logit = torch.full((200_000,), 5.0), torch.tensor(2.0), torch.tensor(0.0)
    draws = D.sample_zinb(mu, theta, logit)
    expected_zero = 0.5 + 0.5 * (2 / 7) ** 2
    assert abs((draws == 0).double().mean().item() - expected_zero) < 0.01


def test_poisson_sampler_mean():
    torch.manual_seed(0)
    draws = D.sample_poisson(torch.full((100_000,), 3.0))
    assert abs(draws.mean().item() - 3.0) < 0.03


@pytest.mark.parametrize("per_cell_theta", [False, True])
@pytest.mark.parametrize("zero_inflated", [False, True])
def test_fused_training_likelihood_matches_and_differentiates(per_cell_theta, zero_inflated):
    gen = torch.Generator().manual_seed(0)
    n, g = 5, 8
    x = torch.poisson(torch.rand(n, g, generator=gen, dtype=torch.float64) * 30)
    x[0, :4] = torch.tensor([100.0, 500.0, 63.0, 64.0])  # beyond the lgamma table
    x[1, :3] = 0.0
    log_mu = torch.randn(n, g, generator=gen, dtype=torch.float64, requires_grad=True)
    shape = (n, g) if per_cell_theta else (g,)
    theta = (torch.rand(*shape, generator=gen, dtype=torch.float64) * 3 + 0.05).requires_grad_()
    zi = torch.randn(n, g, generator=gen, dtype=torch.float64, requires_grad=True) if zero_inflated else None

    def fused(lm, th, z):
        return D.count_log_lik_sum(x, lm, th, z)

    if zero_inflated:
        ref = D.log_zinb_positive(x, log_mu.exp(), theta, zi, include_constant=False).sum(-1)
    else:
        ref = D.log_nb_positive(x, log_mu.exp(), theta, include_constant=False).sum(-1)
    torch.testing.assert_close(fused(log_mu, theta, zi), ref, rtol=1e-10, atol=1e-9)
    assert torch.autograd.gradcheck(fused, (log_mu, theta, zi))
    with torch.no_grad():
        torch.testing.assert_close(fused(log_mu, theta, zi), ref.detach(), rtol=1e-10, atol=1e-9)


def test_fused_likelihood_non_integer_counts():
    x = torch.tensor([[0.5, 2.25, 70.5]], dtype=torch.float64)
    log_mu = torch.zeros(1, 3, dtype=torch.float64)
    theta = torch.tensor([0.7, 2.0, 9.0], dtype=torch.float64)
    ref = D.log_nb_positive(x, log_mu.exp(), theta, include_constant=False).sum(-1)
    torch.testing.assert_close(D.count_log_lik_sum(x, log_mu, theta, integer_counts=False), ref)


def test_lgamma_shift_skips_zero_counts_exactly():
    x = torch.as_tensor(X[:3200].reshape(-1, 8), dtype=torch.float64)
    r = torch.as_tensor(THETA[:3200].reshape(-1, 8), dtype=torch.float64).clamp(1e-3, 1e4).requires_grad_()
    dense = torch.lgamma(x + r) - torch.lgamma(r)
    torch.testing.assert_close(D.lgamma_shift(x, r), dense, rtol=0, atol=0)
    (grad,) = torch.autograd.grad(D.lgamma_shift(x, r).sum(), r)
    torch.testing.assert_close(grad, torch.where(x > 0, torch.digamma(x + r) - torch.digamma(r), 0.0))
    small = (x[:20, :4].clone(), r[:20, :4].detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda rr: D.lgamma_shift(small[0], rr), (small[1],))
