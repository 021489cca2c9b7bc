"""SCVI: every option trains and produces outputs of the right shape; outputs follow genes by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import pybridge
from pybridge.train.trainer import default_max_epochs, kl_weight_at, split_indices


def _model(adata, setup=None, **kwargs):
    pybridge.SCVI.setup_anndata(adata, **(setup or {}))
    return pybridge.SCVI(adata, n_hidden=32, n_latent=4, **kwargs)


@pytest.mark.parametrize(
    "setup,kwargs",
    [
        ({}, {}),
        ({"batch_key": "batch"}, {"dispersion": "gene-batch", "gene_likelihood": "nb"}),
        ({"labels_key": "cell_type"}, {"dispersion": "gene-label", "gene_likelihood": "poisson"}),
        ({"batch_key": "batch"}, {"dispersion": "gene-cell", "use_observed_lib_size": False}),
        ({"batch_key": "batch", "categorical_covariate_keys": ["donor"], "continuous_covariate_keys": ["percent_mito"]},
         {"encode_covariates": True, "use_batch_norm": "none", "use_layer_norm": "both", "n_layers": 2}),
        ({}, {"latent_distribution": "ln", "deeply_inject_covariates": False}),
    ],
)
def test_options_train_and_decode(small_adata, setup, kwargs):
    model = _model(small_adata, setup, **kwargs)
    model.train(max_epochs=3, batch_size=64, progress=False)
    n, g = small_adata.shape
    assert len(model.history["elbo_train"]) == 3 and len(model.history["elbo_validation"]) == 3
    assert np.isfinite(model.history["elbo_validation"].to_numpy()).all()
    assert model.get_latent_representation().shape == (n, 4)
    qzm, qzv = model.get_latent_representation(return_dist=True)
    assert qzm.shape == qzv.shape == (n, 4) and (qzv > 0).all()
    expr = model.get_normalized_expression()
    assert isinstance(expr, pd.DataFrame) and expr.shape == (n, g)
    np.testing.assert_allclose(expr.sum(1), 1.0, rtol=1e-4)
    pp = model.posterior_predictive_sample(n_samples=2)
    assert pp.shape == (n, g, 2) and (pp >= 0).all() and np.all(pp == np.round(pp))
    params = model.get_likelihood_parameters()
    assert params["mean"].shape == (n, g)
    elbo, rec = model.get_elbo(), model.get_reconstruction_error()["reconstruction_loss"]
    assert np.isfinite(elbo) and elbo < 0 < rec < -elbo  # ELBO = -(reconstruction NLL + KL)


def test_split_and_indices(small_adata):
    model = _model(small_adata)
    model.train(max_epochs=1, progress=False)
    train, val = model.train_indices, model.validation_indices
    assert len(train) == 270 and len(val) == 30 and not set(train) & set(val)
    model2 = _model(small_adata)
    model2.train(max_epochs=1, train_size=1.0, progress=False)
    assert len(model2.train_indices) == 300 and len(model2.validation_indices) == 0
    assert "elbo_validation" not in model2.history


def test_seed_reproducible_on_cpu(small_adata):
    latents = []
    for _ in range(2):
        model = _model(small_adata.copy())
        model.train(max_epochs=2, seed=7, progress=False, accelerator="cpu")
        latents.append(model.get_latent_representation())
    np.testing.assert_array_equal(latents[0], latents[1])


def test_heuristics():
    assert default_max_epochs(3005) == 400 and default_max_epochs(100_000) == 80
    assert kl_weight_at(0, 400) == 0 and kl_weight_at(200, 400) == 0.5 and kl_weight_at(900, 400) == 1
    train, val = split_indices(100, 0.9, seed=1)
    assert len(train) == 90 and len(val) == 10


def test_new_adata_with_reordered_genes(small_adata):
    model = _model(small_adata)
    model.train(max_epochs=2, progress=False)
    shuffled = small_adata[:, np.random.default_rng(0).permutation(small_adata.n_vars)].copy()
    np.testing.assert_allclose(
        model.get_latent_representation(shuffled), model.get_latent_representation(), rtol=1e-5, atol=1e-6
    )
    expr = model.get_normalized_expression(shuffled, gene_list=["gene3", "gene1"])
    assert list(expr.columns) == ["gene3", "gene1"]
    np.testing.assert_allclose(expr.to_numpy(), model.get_normalized_expression()[["gene3", "gene1"]].to_numpy(),
                               rtol=1e-5)


def test_missing_genes_error(small_adata):
    model = _model(small_adata)
    with pytest.raises(pybridge.PybridgeError, match="2 of the model's 60 genes are missing"):
        model.get_latent_representation(small_adata[:, 2:].copy())


def test_transform_batch_and_library(small_adata):
    model = _model(small_adata, {"batch_key": "batch"})
    model.train(max_epochs=2, progress=False)
    b0 = model.get_normalized_expression(transform_batch="b0", library_size=1e4)
    b1 = model.get_normalized_expression(transform_batch="b1", library_size=1e4)
    assert not np.allclose(b0, b1)
    np.testing.assert_allclose(b0.sum(1), 1e4, rtol=1e-4)
    latent_lib = model.get_normalized_expression(library_size="latent").sum(1)
    np.testing.assert_allclose(latent_lib, np.asarray(small_adata.X.sum(1)).ravel(), rtol=1e-3)
    with pytest.raises(pybridge.PybridgeError, match="not a batch category"):
        model.get_normalized_expression(transform_batch="b9")


def test_marginal_ll_bounds_elbo(small_adata):
    model = _model(small_adata)
    model.train(max_epochs=20, progress=False)
    cells = model.validation_indices
    elbo = model.get_elbo(indices=cells)
    mll = model.get_marginal_ll(indices=cells, n_mc_samples=200, mc_chunk=50)
    assert elbo < mll < 0
    assert mll - elbo < 0.05 * abs(elbo)


def test_sparse_and_dense_inputs_agree(small_adata):
    dense = small_adata.copy()
    dense.X = small_adata.X.toarray()
    model = _model(small_adata)
    model.train(max_epochs=1, progress=False)
    np.testing.assert_allclose(model.get_latent_representation(dense), model.get_latent_representation(), rtol=1e-6)


def test_sparse_store_matches_dense(small_adata):
    import torch

    from pybridge.data.stores import TensorStore

    X = sp.csr_matrix(small_adata.X)
    dense = TensorStore(X, {}, torch.device("cpu"), likelihood=True)
    sparse = TensorStore(X, {}, torch.device("cpu"), likelihood=True, dense_budget_bytes=0)
    assert dense.dense and not sparse.dense
    idx = torch.tensor([5, 0, 299, 17])
    assert torch.equal(dense.gather(idx)["X"], sparse.gather(idx)["X"])
    assert torch.allclose(dense.gather(idx)["log_x_factorial"], sparse.gather(idx)["log_x_factorial"])


def test_outputs_read_the_data_afresh(small_adata):
    model = _model(small_adata)
    model.train(max_epochs=1, progress=False)
    before = model.get_latent_representation()
    small_adata.X = small_adata.X * 3  # the user edits the data after training
    assert not np.allclose(model.get_latent_representation(), before)
