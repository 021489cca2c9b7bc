"""Spearman with ties (vs scipy), all-zero rows reported, decile stratification."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import rankdata, spearmanr

from pybridge.diagnostics.ranks import decile_of, rank_agreement, row_ranks, spearman_rows


def _tied_counts(seed, shape=(40, 150)):
    rng = np.random.default_rng(seed)
    return rng.poisson(rng.gamma(0.3, 1.5, shape)).astype(np.float32)


def test_sparse_row_ranks_equal_scipy_average_ranks():
    X = _tied_counts(0)
    np.testing.assert_allclose(row_ranks(sp.csr_matrix(X)), rankdata(X, axis=1))
    np.testing.assert_allclose(row_ranks(X), rankdata(X, axis=1))


@pytest.mark.parametrize("kinds", [("sparse", "sparse"), ("dense", "sparse"), ("dense", "dense")])
def test_spearman_rows_matches_scipy_with_ties(kinds):
    X, Y = _tied_counts(1), _tied_counts(2)
    Y[:, :10] += X[:, :10]  # some real association
    X[5] = 0  # an all-zero row
    expected = np.array(
        [np.nan if X[i].max() == 0 else spearmanr(X[i], Y[i])[0] for i in range(X.shape[0])]
    )
    x = sp.csr_matrix(X) if kinds[0] == "sparse" else X
    y = sp.csr_matrix(Y) if kinds[1] == "sparse" else Y
    got = spearman_rows(x, y, chunk_size=7)
    assert np.isnan(got[5])
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_rank_agreement_counts_all_zero_cells_and_genes():
    rng = np.random.default_rng(3)
    Y = _tied_counts(4, (120, 60))
    Y[[3, 7]] = 0
    Y[:, 11] = 0
    expected = Y + rng.random(Y.shape)
    out = rank_agreement(expected, sp.csr_matrix(Y))
    assert out["n_undefined_cells"] == 2 and out["n_undefined_genes"] == 1
    table = out["by_library_decile"]
    assert table["n"].sum() == 120 and table["n_undefined"].sum() == 2
    # the two all-zero cells have the lowest library size: first decile
    assert table.loc[0, "n_undefined"] == 2
    per_gene = spearman_rows(expected.T, Y.T)
    np.testing.assert_allclose(out["per_gene"], per_gene)
    assert out["by_gene_mean_decile"]["n"].sum() == 60


def test_deciles_are_equal_sized_even_with_ties():
    values = np.array([0] * 50 + list(range(50)))
    bins = decile_of(values, 10)
    assert np.bincount(bins).tolist() == [10] * 10
    assert bins[values.argmax()] == 9
