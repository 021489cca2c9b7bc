"""Differential expression on counts with planted DE genes: power, observed FDR, scvi-tools layout."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import pybridge
from pybridge.de import differential_expression, fdr_de_calls
from pybridge.errors import PybridgeError

N_GENES, N_UP, N_DOWN, FOLD = 250, 15, 15, 3.0


def _planted_data(seed=0, n_per_group=300):
    """Two groups of cells from an NB model; genes 0..14 up and 15..29 down in group B (mass-balanced)."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(0.7, 1.0, N_GENES) / N_GENES * 4
    up_mass = rng.uniform(0.5, 1.5, N_UP) / N_GENES * 4
    base[:N_UP] = up_mass
    base[N_UP : N_UP + N_DOWN] = 3.0 * rng.permutation(up_mass)  # x3 up and /3 down leave the total unchanged
    base /= base.sum()
    prof_b = base.copy()
    prof_b[:N_UP] *= FOLD
    prof_b[N_UP : N_UP + N_DOWN] /= FOLD
    assert np.isclose(prof_b.sum(), 1.0)
    # cell-to-cell heterogeneity inside each group through a latent factor shared by both groups
    loadings = rng.normal(0, 0.2, N_GENES)
    n = 2 * n_per_group
    factor = rng.normal(0, 1, n)
    profiles = np.where(np.arange(n)[:, None] < n_per_group, base, prof_b) * np.exp(np.outer(factor, loadings))
    profiles /= profiles.sum(axis=1, keepdims=True)
    lib = rng.lognormal(np.log(1500), 0.3, n)
    mu = profiles * lib[:, None]
    counts = rng.poisson(rng.gamma(5.0, mu / 5.0)).astype(np.float32)
    obs = pd.DataFrame({"group": np.repeat(["A", "B"], n_per_group)}, index=[f"c{i}" for i in range(n)])
    var = pd.DataFrame(index=[f"g{j}" for j in range(N_GENES)])
    true_lfc = np.log2(prof_b / base)
    return AnnData(sp.csr_matrix(counts), obs=obs, var=var), true_lfc


@pytest.fixture(scope="module")
def trained():
    adata, true_lfc = _planted_data()
    pybridge.SCVI.setup_anndata(adata)
    model = pybridge.SCVI(adata, n_latent=5, n_hidden=64)
    model.train(max_epochs=100, batch_size=128, n_epochs_kl_warmup=20, seed=0, progress=False, accelerator="cpu")
    return model, adata, true_lfc


def test_change_mode_recovers_planted_genes_with_fdr_control(trained):
    model, adata, true_lfc = trained
    res = differential_expression(model, groupby="group", group1="B", group2="A", mode="change", delta=0.5,
                                  n_samples_overall=2000)
    planted = {f"g{j}" for j in range(N_UP + N_DOWN)}
    assert set(res.index) == set(adata.var_names) and len(res) == N_GENES
    called = set(res.index[res["is_de_fdr_0.05"]])
    true_pos = len(called & planted)
    fdr = 1 - true_pos / max(len(called), 1)
    power = true_pos / len(planted)
    assert fdr <= 0.1, (fdr, sorted(called - planted))
    assert power >= 0.7, power
    # signs and sizes of the estimated LFCs follow the planted ones
    up = [f"g{j}" for j in range(N_UP)]
    down = [f"g{j}" for j in range(N_UP, N_UP + N_DOWN)]
    assert (res.loc[up, "lfc_mean"] > 0.8).all() and (res.loc[down, "lfc_mean"] < -0.8).all()
    assert (res.loc[up, "bayes_factor"] > 0).all() and (res.loc[down, "bayes_factor"] < 0).all()
    assert np.corrcoef(res.loc[sorted(planted), "lfc_mean"], true_lfc[[int(g[1:]) for g in sorted(planted)]])[0, 1] > 0.9
    for col in ("proba_de", "proba_not_de", "bayes_factor", "scale1", "scale2", "lfc_mean", "lfc_median", "lfc_std",
                "lfc_min", "lfc_max", "raw_mean1", "raw_mean2", "non_zeroes_proportion1", "non_zeroes_proportion2",
                "raw_normalized_mean1", "raw_normalized_mean2", "delta", "pseudocounts", "comparison", "group1", "group2"):
        assert col in res.columns, col
    assert res["proba_de"].is_monotonic_decreasing
    assert (res["comparison"] == "B vs A").all()


def test_vanilla_mode_and_one_vs_rest(trained):
    model, adata, _ = trained
    res = model.differential_expression(groupby="group", mode="vanilla", n_samples_overall=1000)  # SCVI method
    assert set(res["comparison"]) == {"A vs Rest", "B vs Rest"} and len(res) == 2 * N_GENES
    b = res[res["group1"] == "B"]
    assert list(b.columns[:5]) == ["proba_m1", "proba_m2", "bayes_factor", "scale1", "scale2"]
    assert b["bayes_factor"].is_monotonic_decreasing
    np.testing.assert_allclose(b["proba_m1"] + b["proba_m2"], 1.0)
    top_up = set(b.index[:10])
    assert len(top_up & {f"g{j}" for j in range(N_UP)}) >= 8
    # batch correction with the single (implicit) batch decodes every sample in that batch: same scales
    corrected = differential_expression(model, groupby="group", group1="B", mode="vanilla", batch_correction=True,
                                        n_samples_overall=1000)
    assert np.corrcoef(corrected.loc[b.index, "scale1"], b["scale1"])[0, 1] > 0.99
    raw = adata.X[adata.obs["group"].to_numpy() == "B"].toarray()
    np.testing.assert_allclose(b.loc["g0", "raw_mean1"], raw[:, 0].mean(), rtol=1e-6)


def test_bad_arguments_raise_clear_errors(trained):
    model, _, _ = trained
    with pytest.raises(PybridgeError, match="not a column"):
        differential_expression(model, groupby="nope", group1="A")
    with pytest.raises(PybridgeError, match="not a value"):
        differential_expression(model, groupby="group", group1="C")
    with pytest.raises(PybridgeError, match="mode"):
        differential_expression(model, groupby="group", group1="A", mode="fast")


def test_fdr_calls_follow_posterior_expected_fdr():
    p = np.array([0.99, 0.2, 0.97, 0.9, 0.5])
    # sorted: .99 .97 .9 .5 .2 -> expected FDR .01 .02 .0467 .16 ...
    np.testing.assert_array_equal(fdr_de_calls(p, 0.05), [True, False, True, True, False])
    np.testing.assert_array_equal(fdr_de_calls(p, 0.015), [True, False, False, False, False])


def test_batch_correction_with_two_batches():
    from conftest import simulate_counts

    adata = simulate_counts(n_cells=240, n_genes=40, n_batches=2, seed=1)
    pybridge.SCVI.setup_anndata(adata, batch_key="batch")
    model = pybridge.SCVI(adata, n_latent=3, n_hidden=32)
    model.train(max_epochs=15, batch_size=64, n_epochs_kl_warmup=5, seed=0, progress=False, accelerator="cpu")
    res = model.differential_expression(groupby="cell_type", group1="type0", group2="type1", mode="change",
                                        batch_correction=True, n_samples_overall=400)
    assert len(res) == 40 and res["proba_de"].between(0, 1).all()
    assert np.isfinite(res[["lfc_mean", "scale1", "scale2"]].to_numpy()).all()
    one_batch = model.differential_expression(groupby="cell_type", group1="type0", group2="type1", mode="change",
                                              batch_correction=True, batchid1=["b0"], batchid2=["b0"],
                                              n_samples_overall=400)
    assert len(one_batch) == 40
    with pytest.raises(PybridgeError, match="not batches of the model"):
        model.differential_expression(groupby="cell_type", group1="type0", batch_correction=True, batchid1=["b9"])
