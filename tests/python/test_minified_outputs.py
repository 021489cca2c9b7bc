"""Every output of a model on minified data: the stored posterior gives the answer the counts give, or a clear
refusal where the counts themselves are needed. Real counts (cortex), a small model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pybridge
from pybridge.data.datasets import cortex
from pybridge.diagnostics.countsplit import split_anndata
from pybridge.diagnostics.report import evaluate_split
from pybridge.errors import PybridgeError

# float32 resolution: quantities computed in float32 along two different routes (softmax vs exp(logit - lse))
# agree to a few units in the last place of their logarithm, i.e. to a relative error of about
# eps32 * |log value|; the cortex genes' log-frequencies stay above -30.
EPS32 = float(np.finfo(np.float32).eps)
LOG_RANGE = 30.0
REL_TOL = 4 * EPS32 * LOG_RANGE


@pytest.fixture(scope="module")
def fitted():
    """A small SCVI on 300 cortex cells x 200 genes with two batches; its data and their minified copy."""
    adata = cortex()
    adata = adata[np.sort(np.random.default_rng(0).choice(adata.n_obs, 300, replace=False))].copy()
    adata = adata[:, np.argsort(-np.asarray(adata.X.sum(0)).ravel())[:200]].copy()
    adata.obs["batch"] = np.where(np.arange(adata.n_obs) % 2 == 0, "a", "b")
    pybridge.SCVI.setup_anndata(adata, batch_key="batch")
    model = pybridge.SCVI(adata, n_hidden=32, n_latent=4)
    model.train(max_epochs=5, batch_size=64, accelerator="cpu", progress=False)
    return model, adata, model.minify(adata)


def _seeded(fn, *args, **kwargs):
    torch.manual_seed(7)
    return fn(*args, **kwargs)


def test_latent_representation_is_the_stored_posterior(fitted):
    model, adata, mini = fitted
    np.testing.assert_array_equal(model.get_latent_representation(mini), mini.obsm["scvi_latent_qzm"])
    qzm, qzv = model.get_latent_representation(mini, return_dist=True)
    np.testing.assert_array_equal(qzv, mini.obsm["scvi_latent_qzv"])
    np.testing.assert_array_equal(qzm, model.get_latent_representation(adata))
    rows = [9, 0, 4]
    np.testing.assert_array_equal(model.get_latent_representation(mini, indices=rows), qzm[rows])
    sampled = _seeded(model.get_latent_representation, mini, give_mean=False)
    np.testing.assert_array_equal(sampled, _seeded(model.get_latent_representation, adata, give_mean=False))
    assert np.abs(sampled - qzm).max() > 0  # a draw from N(qzm, qzv), not the mean


def test_normalized_expression_at_the_posterior_mean_is_decode(fitted):
    model, adata, mini = fitted
    rho = model.get_normalized_expression(mini, return_numpy=True)
    np.testing.assert_array_equal(rho, model.get_normalized_expression(adata, return_numpy=True))
    np.testing.assert_allclose(rho, model.decode(mini), rtol=REL_TOL, atol=0)
    np.testing.assert_allclose(rho.sum(1), 1.0, rtol=REL_TOL * rho.shape[1])
    latent = model.get_normalized_expression(mini, library_size="latent", return_numpy=True)
    library = np.asarray(adata.X.sum(1)).ravel()
    np.testing.assert_allclose(latent, rho * library[:, None], rtol=REL_TOL)
    genes = list(adata.var_names[[5, 1]])
    frame = model.get_normalized_expression(mini, gene_list=genes, transform_batch="a", library_size=1e4)
    assert list(frame.columns) == genes and list(frame.index) == list(adata.obs_names)
    np.testing.assert_allclose(
        frame.to_numpy(), model.get_normalized_expression(adata, gene_list=genes, transform_batch="a",
                                                          library_size=1e4).to_numpy(), rtol=REL_TOL)
    draws = _seeded(model.get_normalized_expression, mini, n_samples=3, return_mean=False)
    np.testing.assert_array_equal(draws, _seeded(model.get_normalized_expression, adata, n_samples=3,
                                                 return_mean=False))


def test_posterior_predictive_sample_uses_the_stored_library(fitted):
    model, adata, mini = fitted
    draws = _seeded(model.posterior_predictive_sample, mini)
    assert draws.nnz > 0
    np.testing.assert_array_equal(draws.toarray(), _seeded(model.posterior_predictive_sample, adata).toarray())
    library = np.asarray(adata.X.sum(1)).ravel()
    totals = np.asarray(draws.sum(1)).ravel()
    assert np.corrcoef(np.log(totals + 1), np.log(library))[0, 1] > 0.8
    several = _seeded(model.posterior_predictive_sample, mini, n_samples=2, gene_list=list(adata.var_names[:3]))
    assert several.shape == (adata.n_obs, 3, 2)


def test_likelihood_parameters_use_the_stored_posterior(fitted):
    model, adata, mini = fitted
    params = model.get_likelihood_parameters(mini, indices=[3, 1])
    np.testing.assert_allclose(params["mean"].sum(1), np.asarray(adata.X.sum(1)).ravel()[[3, 1]], rtol=REL_TOL * 200)
    seeded = _seeded(model.get_likelihood_parameters, mini, n_samples=2)
    for key, value in _seeded(model.get_likelihood_parameters, adata, n_samples=2).items():
        np.testing.assert_array_equal(seeded[key], value)


def test_minified_data_belong_to_the_model_that_minified_them(fitted, tmp_path):
    model, adata, mini = fitted
    model.save(tmp_path / "m")
    reloaded = pybridge.SCVI.load(tmp_path / "m", accelerator="cpu")
    np.testing.assert_array_equal(reloaded.get_latent_representation(mini), mini.obsm["scvi_latent_qzm"])
    other = pybridge.SCVI(adata, n_hidden=32, n_latent=4)
    for method in ("get_latent_representation", "get_normalized_expression", "posterior_predictive_sample",
                   "decode"):
        with pytest.raises(PybridgeError, match="minified by another model"):
            getattr(other, method)(mini)


@pytest.mark.parametrize("method", ["get_elbo", "get_reconstruction_error", "get_marginal_ll"])
def test_likelihoods_of_the_counts_are_refused(fitted, method):
    model, _, mini = fitted
    with pytest.raises(PybridgeError, match=f"^{method} needs the count matrix, but this AnnData is minified"):
        getattr(model, method)(mini)


def test_differential_expression_from_the_stored_posterior(fitted):
    model, adata, mini = fitted
    for kwargs in ({"mode": "vanilla"}, {"mode": "change", "pseudocounts": 1e-4, "batch_correction": True}):
        args = {"groupby": "cell_type", "group1": "a", "all_stats": False,
                "n_samples_overall": 200, **kwargs}
        from_mini = _seeded(model.differential_expression, mini, **args)
        from_counts = _seeded(model.differential_expression, adata, **args)
        assert "raw_mean1" not in from_mini.columns
        numbers = from_mini.select_dtypes("number").columns
        np.testing.assert_allclose(from_mini[numbers], from_counts.loc[from_mini.index, numbers], rtol=REL_TOL)
    with pytest.raises(PybridgeError, match=r"all_stats=True.*minified.*Pass all_stats=False"):
        model.differential_expression(mini, groupby="cell_type")
    with pytest.raises(PybridgeError, match=r"pseudocounts=None.*minified.*Pass pseudocounts="):
        model.differential_expression(mini, groupby="cell_type", mode="change", all_stats=False)


def test_training_and_set_up_are_refused(fitted, tmp_path):
    model, _, mini = fitted
    with pytest.raises(PybridgeError, match="SCVI.setup_anndata needs the count matrix.*SCVI.load"):
        pybridge.SCVI.setup_anndata(mini.copy())
    with pytest.raises(PybridgeError, match=r"SCVI\(adata\) needs the count matrix.*SCVI.load"):
        pybridge.SCVI(mini)
    model.save(tmp_path / "m")
    loaded = pybridge.SCVI.load(tmp_path / "m", adata=mini.copy(), accelerator="cpu")
    with pytest.raises(PybridgeError, match="SCVI.train needs the count matrix"):
        loaded.train(max_epochs=1)


def test_condscvi_and_destvi_refuse_minified_data(fitted):
    _, adata, mini = fitted
    with pytest.raises(PybridgeError, match="CondSCVI.setup_anndata needs the count matrix"):
        pybridge.CondSCVI.setup_anndata(mini.copy(), labels_key="cell_type")
    with pytest.raises(PybridgeError, match=r"CondSCVI\(adata\) needs the count matrix"):
        pybridge.CondSCVI(mini)
    with pytest.raises(PybridgeError, match="DestVI.setup_anndata needs the count matrix"):
        pybridge.DestVI.setup_anndata(mini.copy())
    reference = adata.copy()
    pybridge.CondSCVI.setup_anndata(reference, labels_key="cell_type")
    sc_model = pybridge.CondSCVI(reference, n_hidden=16, n_latent=2, n_layers=1)
    sc_model.train(max_epochs=1, accelerator="cpu", progress=False)
    with pytest.raises(PybridgeError, match="CondSCVI's posterior .* needs the count matrix"):
        sc_model.get_latent_representation(mini)
    with pytest.raises(PybridgeError, match=r"DestVI \(the spots\) needs the count matrix"):
        pybridge.DestVI(mini.copy(), sc_model)


def test_count_split_diagnostics_refuse_minified_data(fitted):
    model, _, mini = fitted
    with pytest.raises(PybridgeError, match="split_anndata needs the count matrix"):
        split_anndata(mini.copy())
    with pytest.raises(PybridgeError, match="evaluate_split needs the count matrix"):
        evaluate_split(model, mini)
