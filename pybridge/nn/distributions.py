"""Count likelihoods (NB, ZINB, Poisson) and their samplers, parametrised like scvi-tools.

NB is parametrised by its mean ``mu`` and inverse dispersion ``theta`` (variance mu + mu^2 / theta);
ZINB adds ``zi_logits``, the logit of the zero-inflation probability. Every function is elementwise and
broadcasts. Log-likelihoods avoid additive epsilons so that they stay accurate at the extremes
(theta from 1e-4 to 1e6, mu from 1e-8 to 1e5): log(theta + mu) is written as log(theta) + log1p(mu / theta).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pybridge.nn.compiled import CompiledKernel

_TINY = 1e-30


def _log_clamped(t: torch.Tensor) -> torch.Tensor:
    return torch.log(t.clamp_min(_TINY))


def _nb_zero_log_prob(mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """log NB(0; mu, theta) = theta * (log theta - log(theta + mu)), with no lgamma."""
    return -theta * torch.log1p(mu / theta.clamp_min(_TINY))


def log_nb_positive(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, include_constant: bool = True
) -> torch.Tensor:
    """Negative binomial log-pmf.

    ``include_constant=False`` drops -lgamma(x + 1), which does not depend on the parameters (training
    can add it back once per cell instead of once per entry).
    """
    log_theta_mu = _log_clamped(theta) + torch.log1p(mu / theta.clamp_min(_TINY))
    # the lgamma difference first: it cancels exactly at x = 0 and must not swallow the small terms
    res = (torch.lgamma(x + theta) - torch.lgamma(theta)) + (
        _nb_zero_log_prob(mu, theta) + x * (_log_clamped(mu) - log_theta_mu)
    )
    if include_constant:
        res = res - torch.lgamma(x + 1)
    return res


def log_zinb_positive(
    x: torch.Tensor,
    mu: torch.Tensor,
    theta: torch.Tensor,
    zi_logits: torch.Tensor,
    include_constant: bool = True,
) -> torch.Tensor:
    """Zero-inflated negative binomial log-pmf; sigmoid(zi_logits) is the zero-inflation probability."""
    log_not_inflated = -F.softplus(zi_logits)
    log_inflated = -F.softplus(-zi_logits)
    case_zero = torch.logaddexp(log_inflated, log_not_inflated + _nb_zero_log_prob(mu, theta))
    case_non_zero = log_not_inflated + log_nb_positive(x, mu, theta, include_constant=include_constant)
    return torch.where(x < 0.5, case_zero, case_non_zero)


def log_poisson(x: torch.Tensor, rate: torch.Tensor, include_constant: bool = True) -> torch.Tensor:
    """Poisson log-pmf; 0 * log(0) is taken as 0."""
    res = torch.xlogy(x, rate) - rate
    if include_constant:
        res = res - torch.lgamma(x + 1)
    return res


def sample_poisson(rate: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Poisson draws with the rate's shape."""
    return torch.poisson(rate.clamp(min=0.0, max=1e8), generator=generator)


#: On the CPU, NB draws whose mean is at most this, and at most 9 times theta (so that P(X = k + 1) / P(X = k)
#: soon falls below 0.9), invert the distribution function: one uniform and a few products per draw, most of them
#: ending at 0. Other draws, and every draw on other devices, use the gamma-Poisson mixture.
_INVERSION_MAX_MEAN = 16.0
_INVERSION_MAX_MEAN_PER_THETA = 9.0


def sample_nb(mu: torch.Tensor, theta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Negative binomial draws with the broadcast shape of ``mu`` and ``theta``."""
    return _sample_nb(mu, theta, None, generator)


def sample_zinb(
    mu: torch.Tensor, theta: torch.Tensor, zi_logits: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero-inflated negative binomial draws."""
    return _sample_nb(mu, theta, torch.sigmoid(zi_logits), generator)


def _sample_nb(mu, theta, inflation, generator):
    theta = theta.clamp_min(_TINY)
    if not _host_sync_allowed(mu):  # finding the draws to invert reads values back from the device
        mu, theta = torch.broadcast_tensors(mu, theta)
        counts = _sample_mixture(mu, theta, generator)
        if inflation is None:
            return counts
        inflated = torch.rand(counts.shape, generator=generator, device=counts.device) < inflation
        return counts.masked_fill(inflated, 0.0)
    shape = torch.broadcast_shapes(mu.shape, theta.shape)
    mu, theta = mu.expand(shape), theta.expand(shape)
    inflation = None if inflation is None else inflation.expand(shape)
    u = torch.rand(shape, generator=generator, dtype=mu.dtype)
    counts = torch.zeros(shape, dtype=mu.dtype)
    by_mixture = torch.nonzero(mu > (theta * _INVERSION_MAX_MEAN_PER_THETA).clamp_(max=_INVERSION_MAX_MEAN))
    if len(by_mixture):
        where = by_mixture.unbind(1)
        drawn = _sample_mixture(mu[where], theta[where], generator)
        if inflation is not None:
            drawn.masked_fill_(u[where] < inflation[where], 0.0)
        counts[where] = drawn
        u[where] = 0.0  # drawn: not above the zero probability below
    nb_zero = torch.exp(torch.log1p(mu / theta).mul_(theta).neg_())  # P(NB = 0)
    zero_prob = nb_zero if inflation is None else torch.lerp(nb_zero, torch.ones((), dtype=mu.dtype), inflation)
    where = torch.nonzero(u > zero_prob).unbind(1)  # the draws above 0
    uniform = u[where].double()
    if inflation is not None:  # above the inflation probability, rescaled to a uniform draw for the NB part
        above_inflation = inflation[where].double()
        uniform = (uniform - above_inflation).div_(1.0 - above_inflation)
    _invert(counts, where, uniform, nb_zero[where].double(), mu[where].double(), theta[where].double())
    return counts


def _invert(counts, where, uniform, pmf, mean, theta) -> None:
    """Write into ``counts[where]`` the smallest k >= 1 with P(X <= k) >= ``uniform``, P(X = 0) being ``pmf``."""
    ratio = mean.div_(mean + theta)  # P(X = k) / P(X = k - 1) = ratio * (k - 1 + theta) / k
    positions = torch.arange(len(uniform))
    values = torch.zeros(len(uniform), dtype=counts.dtype)
    cdf = pmf.clone()
    k = 0
    while len(positions):
        k += 1
        pmf.mul_(ratio).mul_(theta + (k - 1)).div_(k)
        cdf.add_(pmf)
        stop = uniform <= cdf
        values.index_fill_(0, positions[stop], float(k))
        left = torch.nonzero(stop.logical_not_()).squeeze(1)
        positions, uniform, pmf, cdf, ratio, theta = (t[left] for t in (positions, uniform, pmf, cdf, ratio, theta))
    counts[where] = values


def _sample_mixture(mu: torch.Tensor, theta: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """NB draws as Poisson(Gamma(theta, mu / theta)) (theta above 0)."""
    return sample_poisson(torch._standard_gamma(theta).mul_(mu / theta), generator)


# ---- fused training likelihood ------------------------------------------------------------------------------
# Training evaluates the count log-likelihood over every (cell, gene) entry of each minibatch, which makes it
# the dominant elementwise cost. The kernel below computes the per-cell sum and its analytic gradients in one
# forward call, built from the cheap elementwise operations (exp, log, log1p, sigmoid, arithmetic; torch's
# softplus, logaddexp and where are several times slower on CPU) with in-place temporaries. The only gamma-function
# term, lgamma(x + theta) - lgamma(theta) and its theta-derivative, is read for per-gene theta and integer counts
# from a per-gene cumulative table (lgamma(x + theta) - lgamma(theta) = sum_{k<x} log(theta + k)) for counts
# below _TABLE_SIZE, so no digamma is evaluated for them.

_TABLE_SIZE = 32
_HALF_LOG_2PI = 0.9189385332046727


def _stirling_lgamma(z: torch.Tensor) -> torch.Tensor:
    """lgamma(z) by Stirling's series; absolute error below 1e-9 for z >= 15."""
    inv = 1.0 / z
    inv2 = inv * inv
    return (z - 0.5) * torch.log(z) - z + _HALF_LOG_2PI + inv * (1.0 / 12 - inv2 * (1.0 / 360 - inv2 / 1260))


def _stirling_digamma(z: torch.Tensor) -> torch.Tensor:
    """digamma(z) by its asymptotic series; absolute error below 1e-10 for z >= 15."""
    inv2 = 1.0 / (z * z)
    return torch.log(z) - 0.5 / z - inv2 * (1.0 / 12 - inv2 * (1.0 / 120 - inv2 / 252))


def _cumulative_tables(theta: torch.Tensor, need_grad: bool) -> list[torch.Tensor]:
    """[genes, _TABLE_SIZE] tables of lgamma(k + theta) - lgamma(theta) (and of its theta-derivative) for k below
    _TABLE_SIZE, as cumulative sums of log(theta + j) (and 1 / (theta + j))."""
    steps = theta.unsqueeze(1) + torch.arange(_TABLE_SIZE - 1, device=theta.device, dtype=theta.dtype)
    zeros = steps.new_zeros(theta.shape[0], 1)
    terms = [torch.log(steps)] + ([torch.reciprocal(steps)] if need_grad else [])
    return [torch.cat([zeros, torch.cumsum(t, 1)], 1) for t in terms]


def _gamma_terms(x: torch.Tensor, theta: torch.Tensor, need_grad: bool, integer_counts: bool):
    """lgamma(x + theta) - lgamma(theta) and its theta-derivative (None unless ``need_grad``) on every entry.

    Per-gene theta and integer counts read the cumulative tables below _TABLE_SIZE. Beyond the table, compiled
    or on a GPU, Stirling's series is applied branch-free (no data-dependent shapes, so no host synchronisation
    and one fused loop); eagerly on CPU the few large counts are found and computed directly.
    """
    th = theta.expand_as(x)
    if not integer_counts or theta.dim() != 1 or x.shape[-1] != theta.shape[0]:
        value = torch.lgamma(x + th) - torch.lgamma(th)
        return value, (torch.digamma(x + th) - torch.digamma(th) if need_grad else None)
    tables = _cumulative_tables(theta, need_grad)
    gene_offset = torch.arange(0, theta.shape[0] * _TABLE_SIZE, _TABLE_SIZE, device=x.device, dtype=torch.int32)
    flat = x.to(torch.int32).clamp_(max=_TABLE_SIZE - 1).add_(gene_offset).reshape(-1)
    value, grad = [t.reshape(-1).index_select(0, flat).reshape(x.shape) for t in tables] + [None] * (not need_grad)
    if not _host_sync_allowed(x):
        # lgamma(x + theta) - lgamma(theta + T - 1) + table[T - 1], both arguments >= T - 1
        large, z, last = x >= _TABLE_SIZE, x + th, th + (_TABLE_SIZE - 1)
        value = torch.where(large, _stirling_lgamma(z) - _stirling_lgamma(last) + tables[0][:, -1], value)
        if need_grad:
            grad = torch.where(large, _stirling_digamma(z) - _stirling_digamma(last) + tables[1][:, -1], grad)
        return value, grad
    if x.max() < _TABLE_SIZE:
        return value, grad
    large = torch.nonzero(x.reshape(-1) >= _TABLE_SIZE).squeeze(1)
    xl, tl = x.reshape(-1).index_select(0, large), theta.index_select(0, large % theta.shape[0])
    value.view(-1).index_copy_(0, large, torch.lgamma(xl + tl) - torch.lgamma(tl))
    if need_grad:
        grad.view(-1).index_copy_(0, large, torch.digamma(xl + tl) - torch.digamma(tl))
    return value, grad


def _host_sync_allowed(x: torch.Tensor) -> bool:
    """Whether a step may read a value back from ``x``'s device: eagerly on the CPU (free there), not on a GPU
    (it would stall the stream) nor while compiling (it would break the graph)."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def _softplus(v: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(v)) from exp and log (torch's softplus is several times slower on CPU); error below 1e-7."""
    return torch.exp(v.abs().neg_()).log1p_().add_(v.clamp(min=0))


def _count_log_lik_and_grads(x, log_mu, theta, zi_logits, need, integer_counts=True):
    """Per-entry log-likelihood and the per-entry gradients flagged in ``need`` (log_mu, theta, zi_logits).

    ``theta=None`` is Poisson. (Summing over genes here would make the compiled loop a reduction, about 1.5x
    slower on CPU; callers sum.) Gradients of the NB terms: d/dlog_mu = (x - mu) theta / (theta + mu) and
    d/dtheta = psi(x + theta) - psi(theta) - log1p(mu / theta) + (mu - x) / (theta + mu); with zero inflation
    both are weighted by the NB component's share of each zero (1 where x > 0).
    """
    mu = torch.exp(log_mu)
    grads: list[torch.Tensor | None] = [None, None, None]
    if theta is None:
        if need[0]:
            grads[0] = x - mu
        return (x * log_mu).sub_(mu), grads
    ratio = mu / theta
    log1p_ratio = torch.log1p(ratio)  # log(theta + mu) - log(theta)
    # log NB(x) without the gamma terms: x (log mu - log(theta + mu)) + log NB(0), log NB(0) = -theta log1p_ratio
    ll = (log_mu - torch.log(theta)).sub_(log1p_ratio).mul_(x).addcmul_(log1p_ratio, theta, value=-1.0)
    lg, dlg = _gamma_terms(x, theta, need[1], integer_counts)
    ll.add_(lg)
    inflated = None  # at each zero, the posterior probability that it is an inflated zero (0 where x > 0)
    if zi_logits is not None:
        at_zero = torch.sign(x).neg_().add_(1.0)  # 1 where x = 0 (counts are >= 0; float: bool masks are slower)
        gap = torch.addcmul(zi_logits, log1p_ratio, theta)  # zero case minus the NB case, in log odds
        ll.sub_(_softplus(zi_logits)).add_(_softplus(gap).mul_(at_zero))
        if any(need):
            inflated = torch.sigmoid(gap).mul_(at_zero)
    if need[0] or need[1]:
        grad_log_mu = (x - mu).div_(ratio.add_(1.0))  # (x - mu) theta / (theta + mu)
        if need[1]:
            grads[1] = dlg.sub_(log1p_ratio).addcmul_(grad_log_mu, theta.reciprocal(), value=-1.0)
        if need[0]:
            grads[0] = grad_log_mu
    if inflated is not None:
        for grad in grads[:2]:
            if grad is not None:  # weighted by the NB component's share of each zero
                grad.addcmul_(grad, inflated, value=-1.0)
        if need[2]:
            grads[2] = inflated.sub_(torch.sigmoid(zi_logits))
    return ll, grads


_KERNEL = CompiledKernel(_count_log_lik_and_grads, "count likelihood")
_VALUE_KERNEL = CompiledKernel(_count_log_lik_and_grads, "count likelihood (values only)")


class _CountLogLikSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, log_mu, theta, zi_logits, integer_counts):
        need = tuple(ctx.needs_input_grad[1:4])
        ll, grads = _KERNEL(x.numel(), x, log_mu, theta, zi_logits, need, integer_counts)
        ll = ll.sum(-1)
        ctx.theta_shape = None if theta is None else theta.shape
        ctx.present = [g is not None for g in grads]
        ctx.save_for_backward(*[g if g is not None else torch.empty(0) for g in grads])
        return ll

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, upstream):
        scale = upstream.unsqueeze(-1)
        saved = zip(ctx.present, ctx.saved_tensors)
        grad_log_mu, grad_theta, grad_zi = (g if present else None for present, g in saved)
        if grad_theta is not None and grad_theta.dim() == 2 and len(ctx.theta_shape) == 1:
            with torch.autocast(upstream.device.type, enabled=False):
                grad_theta = upstream @ grad_theta  # per-gene theta: the weighted sum over cells, one pass
        elif grad_theta is not None:
            grad_theta = (scale * grad_theta).sum_to_size(ctx.theta_shape)
        out = [None, None if grad_log_mu is None else scale * grad_log_mu, grad_theta,
               None if grad_zi is None else scale * grad_zi]
        return (*out, None)


def count_log_lik_sum(
    x: torch.Tensor,
    log_mu: torch.Tensor,
    theta: torch.Tensor | None,
    zi_logits: torch.Tensor | None = None,
    integer_counts: bool = True,
) -> torch.Tensor:
    """Per-cell sum over genes of the NB (with ``zi_logits``: ZINB; with ``theta=None``: Poisson) log-pmf
    without -lgamma(x + 1).

    Takes the mean on the log scale (``log_mu``); values equal ``log_nb_positive``/``log_zinb_positive``/
    ``log_poisson`` summed over the last axis, gradients are analytic. ``integer_counts=False`` is required for
    non-integer ``x``. Evaluates in float32 (or float64) even under autocast: half-precision inputs are upcast.
    """
    x, log_mu, theta, zi_logits = (_full_precision(t) for t in (x, log_mu, theta, zi_logits))
    with torch.autocast(x.device.type, enabled=False):
        if not torch.is_grad_enabled():
            no_grads = (False, False, False)
            return _VALUE_KERNEL(x.numel(), x, log_mu, theta, zi_logits, no_grads, integer_counts)[0].sum(-1)
        return _CountLogLikSum.apply(x, log_mu, theta, zi_logits, integer_counts)


class _LgammaShift(torch.autograd.Function):
    """lgamma(x + r) - lgamma(r) for counts x >= 0, evaluated on the non-zero counts only (it is 0 where x = 0)."""

    @staticmethod
    def forward(ctx, x, r):
        positions = torch.nonzero(x.reshape(-1)).squeeze(1)
        xs, rs = x.reshape(-1).index_select(0, positions), r.reshape(-1).index_select(0, positions)
        out = torch.zeros_like(r)
        out.view(-1).index_copy_(0, positions, torch.lgamma(xs + rs) - torch.lgamma(rs))
        ctx.save_for_backward(positions, xs, rs)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, upstream):
        positions, xs, rs = ctx.saved_tensors
        grad = torch.zeros_like(upstream)
        shift = torch.digamma(xs + rs) - torch.digamma(rs)
        grad.view(-1).index_copy_(0, positions, upstream.reshape(-1).index_select(0, positions) * shift)
        return None, grad


def lgamma_shift(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """lgamma(x + r) - lgamma(r) for counts ``x`` >= 0 and ``r`` > 0 of the same shape (gradient for ``r``).

    Most counts are 0, where the value and its gradient are 0: eagerly on the CPU only the non-zero entries are
    evaluated (lgamma and digamma cost tens of ns each); on a GPU or while compiling, the dense formula (no host
    synchronisation).
    """
    if not _host_sync_allowed(x) or x.shape != r.shape or x.requires_grad:
        return torch.lgamma(x + r) - torch.lgamma(r)
    return _LgammaShift.apply(x, r)


def _full_precision(t: torch.Tensor | None) -> torch.Tensor | None:
    return t.float() if t is not None and t.dtype in (torch.float16, torch.bfloat16) else t
