"""The latent of sparse data runs the encoder's first layer as one sparse product on the stored counts, and
equals the densified computation."""

from __future__ import annotations

import anndata
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from pybridge.models.scvi import SCVI
from pybridge.nn import layers


def _adata(dense: bool, seed: int = 0) -> anndata.AnnData:
    rng = np.random.default_rng(seed)
    counts = sp.random(300, 120, density=0.1, format="csr", random_state=seed, dtype=np.float32)
    counts.data[:] = rng.poisson(3, counts.nnz) + 1
    adata = anndata.AnnData(counts.toarray() if dense else counts)
    adata.obs["batch"] = np.where(np.arange(300) % 3, "a", "b")
    adata.obs["depth"] = rng.normal(size=300).astype(np.float32)
    return adata


def _spy(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = layers._sparse_linear

    def counting(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(layers, "_sparse_linear", counting)
    return calls


@pytest.mark.parametrize("encode_covariates", [False, True])
def test_sparse_latent_equals_dense(monkeypatch, encode_covariates):
    sparse_data, dense_data = _adata(dense=False), _adata(dense=True)
    for adata in (sparse_data, dense_data):
        SCVI.setup_anndata(adata, batch_key="batch", continuous_covariate_keys=["depth"] if encode_covariates else None)
    model = SCVI(sparse_data, encode_covariates=encode_covariates, n_latent=4)
    model.train(max_epochs=2, progress=False)
    calls = _spy(monkeypatch)
    mean_sparse = model.get_latent_representation(sparse_data, batch_size=64)
    m_sparse, v_sparse = model.get_latent_representation(sparse_data, return_dist=True)
    # with continuous covariates in the encoder, the counts are densified (the concatenation needs them dense)
    assert (len(calls) > 0) == (not encode_covariates)
    calls.clear()
    mean_dense = model.get_latent_representation(dense_data, batch_size=64)
    m_dense, v_dense = model.get_latent_representation(dense_data, return_dist=True)
    assert not calls
    np.testing.assert_allclose(mean_sparse, mean_dense, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m_sparse, m_dense, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v_sparse, v_dense, rtol=1e-5, atol=1e-6)
    assert np.isfinite(mean_sparse).all() and mean_sparse.std() > 0


@pytest.mark.parametrize("observed_library", [True, False])
def test_decoder_outputs_of_sparse_data_equal_dense(monkeypatch, observed_library):
    """Normalized expression, likelihood parameters and posterior samples read sparse counts through the sparse
    encoder (and the library size from the sparse rows) and give what the densified computation gives."""
    sparse_data, dense_data = _adata(dense=False), _adata(dense=True)
    for adata in (sparse_data, dense_data):
        SCVI.setup_anndata(adata, batch_key="batch")
    model = SCVI(sparse_data, n_latent=4, use_observed_lib_size=observed_library)
    model.train(max_epochs=2, progress=False)
    calls = _spy(monkeypatch)

    def outputs(adata):
        torch.manual_seed(0)
        return {
            "scaled": model.get_normalized_expression(adata, library_size=1e4, return_numpy=True),
            "own library": model.get_normalized_expression(adata, library_size="latent", return_numpy=True),
            "batch a": model.get_normalized_expression(adata, transform_batch="a", return_numpy=True),
            **model.get_likelihood_parameters(adata),
            "sample": model.posterior_predictive_sample(adata).toarray(),
        }

    sparse, dense = outputs(sparse_data), outputs(dense_data)
    assert calls  # the sparse inputs went through the sparse first layer
    assert sparse.keys() == dense.keys()
    for key in sparse:
        np.testing.assert_allclose(sparse[key], dense[key], rtol=1e-5, atol=1e-6, err_msg=key)
