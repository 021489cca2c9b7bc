"""The compiled count likelihood agrees with the eager one, and pybridge falls back to eager when compiling fails.

Compiling is slow (seconds per variant), so the compiled cases use tiny shapes and one dtype each; when this
machine has no working compiler they are skipped (the fallback test below still runs).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from pybridge.errors import PybridgeError, PybridgeWarning
from pybridge.nn import compiled as C
from pybridge.nn import distributions as D

N_CELLS, N_GENES = 6, 9


def _inputs(likelihood: str, integer: bool, dtype=torch.float64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    log_mu = torch.randn(N_CELLS, N_GENES, generator=gen, dtype=dtype) + 1.0
    x = torch.poisson(log_mu.exp() * 2, generator=gen)
    x[0, :3] = torch.tensor([150.0, 64.0, 63.0])  # beyond the lgamma table and at its edges
    x[1, :2] = 0.0
    if not integer:
        x = x + torch.rand(x.shape, generator=gen, dtype=dtype)
    theta = None if likelihood == "poisson" else torch.rand(N_GENES, generator=gen, dtype=dtype) * 3 + 0.05
    zi = torch.randn(N_CELLS, N_GENES, generator=gen, dtype=dtype) if likelihood == "zinb" else None
    params = [t.requires_grad_() for t in (log_mu, theta, zi) if t is not None]
    return x, log_mu, theta, zi, params


def _value_and_grads(x, log_mu, theta, zi, params, integer):
    upstream = torch.linspace(-1.0, 1.0, N_CELLS, dtype=x.dtype)  # distinct per-cell weights
    value = D.count_log_lik_sum(x, log_mu, theta, zi, integer_counts=integer)
    grads = torch.autograd.grad((value * upstream).sum(), params)
    return value.detach(), grads


@pytest.fixture
def compile_on():
    C.set_compile_mode("on")
    yield D._KERNEL
    C.set_compile_mode(None)


def _skip_without_compiler(kernel: C.CompiledKernel) -> None:
    if kernel.failed:
        pytest.skip("torch.compile does not work on this machine (the fallback is tested separately)")


CASES = [("nb", True), ("zinb", True), ("poisson", True), ("zinb", False)]


@pytest.mark.parametrize(("likelihood", "integer"), CASES)
def test_compiled_matches_eager(compile_on, likelihood, integer):
    x, log_mu, theta, zi, params = _inputs(likelihood, integer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PybridgeWarning)
        compiled = _value_and_grads(x, log_mu, theta, zi, params, integer)
    _skip_without_compiler(compile_on)
    C.set_compile_mode("off")
    eager = _value_and_grads(x, log_mu, theta, zi, params, integer)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-5)
    for got, want in zip(compiled[1], eager[1]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if likelihood == "zinb" and integer:  # the exact reference, in float64 through autograd
        ref = D.log_zinb_positive(x, log_mu.exp(), theta, zi, include_constant=False).sum(-1)
        torch.testing.assert_close(compiled[0], ref.detach(), rtol=1e-9, atol=1e-9)


def test_compiled_float32_matches_eager(compile_on):
    x, log_mu, theta, zi, params = _inputs("zinb", True, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PybridgeWarning)
        compiled = _value_and_grads(x, log_mu, theta, zi, params, True)
    _skip_without_compiler(compile_on)
    C.set_compile_mode("off")
    eager = _value_and_grads(x, log_mu, theta, zi, params, True)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-4)
    for got, want in zip(compiled[1], eager[1]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_compiled_serves_other_batch_sizes_and_gene_counts(compile_on):
    """The cells dimension is dynamic and the genes fixed at the first call; a new gene count recompiles."""
    x, log_mu, theta, zi, _ = _inputs("zinb", True)
    shapes = [(N_CELLS, N_GENES), (4, N_GENES), (3, N_GENES), (N_CELLS, 5)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PybridgeWarning)
        compiled = [D.count_log_lik_sum(x[:n, :g], log_mu[:n, :g].detach(), theta[:g].detach(), zi[:n, :g].detach())
                    for n, g in shapes]
    _skip_without_compiler(compile_on)
    C.set_compile_mode("off")
    for (n, g), got in zip(shapes, compiled):
        want = D.count_log_lik_sum(x[:n, :g], log_mu[:n, :g].detach(), theta[:g].detach(), zi[:n, :g].detach())
        assert got.shape == (n,)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_compiled_gradcheck(compile_on):
    x, log_mu, theta, zi, params = _inputs("zinb", True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PybridgeWarning)
        D.count_log_lik_sum(x, log_mu, theta, zi)
    _skip_without_compiler(compile_on)
    assert torch.autograd.gradcheck(lambda *p: D.count_log_lik_sum(x, *p), tuple(params))


@pytest.mark.parametrize(("likelihood", "integer"), CASES)
def test_eager_gradcheck(likelihood, integer):
    C.set_compile_mode("off")
    try:
        x, _log_mu, theta, zi, params = _inputs(likelihood, integer)
        kinds = [t is not None for t in (theta, zi)]

        def fn(*p):
            it = iter(p[1:])
            return D.count_log_lik_sum(x, p[0], *(next(it) if k else None for k in kinds), integer_counts=integer)

        assert torch.autograd.gradcheck(fn, tuple(params))
    finally:
        C.set_compile_mode(None)


def test_fallback_when_compiler_fails(monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("no C++ compiler found")
        return run

    kernel = C.CompiledKernel(D._count_log_lik_and_grads, "count likelihood")
    monkeypatch.setattr(D, "_KERNEL", kernel)
    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setenv("PYBRIDGE_COMPILE", "1")
    x, log_mu, theta, zi, params = _inputs("zinb", True)
    with pytest.warns(PybridgeWarning, match="could not compile its count likelihood .no C.. compiler found"):
        first = _value_and_grads(x, log_mu, theta, zi, params, True)
    assert kernel.failed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: no second warning
        second = _value_and_grads(x, log_mu, theta, zi, params, True)
    ref = D.log_zinb_positive(x, log_mu.exp(), theta, zi, include_constant=False).sum(-1)
    torch.testing.assert_close(first[0], ref.detach(), rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(second[0], first[0])


def test_modes_and_auto_threshold(monkeypatch):
    monkeypatch.setattr(C, "AUTO_COMPILE_ENTRIES", 1000)
    kernel = C.CompiledKernel(D._count_log_lik_and_grads, "test kernel")
    monkeypatch.setenv("PYBRIDGE_COMPILE", "auto")
    assert [kernel.use_compiled(400) for _ in range(3)] == [False, False, True]
    monkeypatch.setenv("PYBRIDGE_COMPILE", "0")
    assert C.compile_mode() == "off" and not kernel.use_compiled(10_000)
    C.set_compile_mode("on")
    try:
        assert C.compile_mode() == "on"
    finally:
        C.set_compile_mode(None)
    monkeypatch.setenv("PYBRIDGE_COMPILE", "sometimes")
    with pytest.raises(PybridgeError, match="PYBRIDGE_COMPILE='sometimes' is not a compile mode"):
        C.compile_mode()


def test_half_precision_inputs_evaluate_in_float32():
    x, log_mu, theta, zi, _ = _inputs("zinb", True, dtype=torch.float32)
    low = log_mu.detach().bfloat16().requires_grad_()
    ref = D.count_log_lik_sum(x, low.detach().float(), theta.detach(), zi.detach())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = D.count_log_lik_sum(x, low, theta, zi)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-5)
    got.sum().backward()
    assert low.grad.dtype == torch.bfloat16
