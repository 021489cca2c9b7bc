"""Count splitting: exact folds, and thinning moments against theory on large samples."""

import numpy as np
import pytest
import scipy.sparse as sp

from pybridge.diagnostics.countsplit import count_split, split_anndata
from pybridge.errors import PybridgeError


def _counts(seed=0, shape=(300, 80)):
    rng = np.random.default_rng(seed)
    return rng.poisson(rng.gamma(0.4, 3.0, shape)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc"])
@pytest.mark.parametrize("overdispersion", [None, 1.5])
def test_folds_sum_to_x_exactly_and_keep_format(fmt, overdispersion):
    dense = _counts()
    X = dense if fmt == "dense" else sp.csr_matrix(dense).asformat(fmt)
    before = X.copy()
    A, B = count_split(X, fraction=0.3, overdispersion=overdispersion, seed=1)
    if fmt == "dense":
        assert isinstance(A, np.ndarray) and isinstance(B, np.ndarray)
        total = A + B
    else:
        assert A.format == fmt and B.format == fmt
        total = (A + B).toarray()
        assert np.all(A.data != 0) and np.all(B.data != 0)  # no explicit zeros stored
    assert A.dtype == X.dtype and B.dtype == X.dtype
    np.testing.assert_array_equal(total, dense)
    assert A.min() >= 0 and B.min() >= 0
    # input untouched
    np.testing.assert_array_equal(before if fmt == "dense" else before.toarray(), dense)


def test_same_seed_same_split_other_seed_differs():
    X = sp.csr_matrix(_counts())
    a1, _ = count_split(X, seed=3)
    a2, _ = count_split(X, seed=3)
    a3, _ = count_split(X, seed=4)
    assert (a1 != a2).nnz == 0
    assert (a1 != a3).nnz > 0


def test_binomial_thinning_of_poisson_matches_theory():
    rng = np.random.default_rng(0)
    lam, f, n = 4.0, 0.3, 400_000
    X = rng.poisson(lam, size=(n, 1)).astype(np.float64)
    A, B = count_split(X, fraction=f, seed=5)
    a, b = A.ravel(), B.ravel()
    # A ~ Poisson(f lam), B ~ Poisson((1-f) lam), independent
    assert abs(a.mean() - f * lam) < 0.01
    assert abs(a.var() - f * lam) < 0.02
    assert abs(b.mean() - (1 - f) * lam) < 0.015
    assert abs(b.var() - (1 - f) * lam) < 0.04
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01
    # conditional on x: Binomial(x, f)
    sel = X.ravel() == 6
    assert abs(a[sel].mean() - 6 * f) < 0.02
    assert abs(a[sel].var() - 6 * f * (1 - f)) < 0.04


def test_dirichlet_multinomial_split_of_nb_gives_independent_nb_folds():
    rng = np.random.default_rng(1)
    mu, theta, f, n = 5.0, 0.8, 0.5, 400_000
    X = rng.poisson(rng.gamma(theta, mu / theta, size=(n, 2))).astype(np.float64)
    A, B = count_split(X, fraction=f, overdispersion=np.array([theta, theta]), seed=2)
    a, b = A[:, 0], B[:, 0]
    # A ~ NB(f mu, f theta): variance f mu + (f mu)^2 / (f theta)
    var_a = f * mu + (f * mu) ** 2 / (f * theta)
    assert abs(a.mean() - f * mu) < 0.03
    assert abs(a.var() / var_a - 1) < 0.03
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01
    # binomial thinning of the same NB data leaves the folds positively correlated
    A2, B2 = count_split(X, fraction=f, seed=2)
    assert np.corrcoef(A2[:, 0], B2[:, 0])[0, 1] > 0.3


def test_bad_input_gives_clear_errors():
    X = _counts()
    with pytest.raises(PybridgeError, match="non-integer"):
        count_split(X + 0.5)
    with pytest.raises(PybridgeError, match="negative"):
        count_split(-X)
    with pytest.raises(PybridgeError, match="fraction"):
        count_split(X, fraction=1.0)
    with pytest.raises(PybridgeError, match="one value per gene"):
        count_split(X, overdispersion=np.ones(3))
    with pytest.raises(PybridgeError, match="> 0"):
        count_split(X, overdispersion=np.zeros(X.shape[1]))


def test_split_anndata_adds_layers():
    anndata = pytest.importorskip("anndata")
    X = sp.csr_matrix(_counts())
    adata = anndata.AnnData(X)
    split_anndata(adata, fraction=0.5, seed=0)
    np.testing.assert_array_equal((adata.layers["fold_A"] + adata.layers["fold_B"]).toarray(), X.toarray())
    assert adata.uns["pybridge_count_split"]["seed"] == 0
