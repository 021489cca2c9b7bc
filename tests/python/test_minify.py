"""Minified data (scvi-tools layout) and decoding on demand."""

from __future__ import annotations

import anndata
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import simulate_counts

import pybridge
from pybridge.data.minified import LOG_NORMALIZER_KEY, MINIFY_TYPE, payload_bytes_per_cell
from pybridge.errors import PybridgeError


@pytest.fixture(scope="module")
def trained_model():
    adata = simulate_counts(n_cells=240, n_genes=50)
    pybridge.SCVI.setup_anndata(adata, batch_key="batch", continuous_covariate_keys=["percent_mito"])
    model = pybridge.SCVI(adata, n_hidden=32, n_latent=5)
    model.train(max_epochs=4, batch_size=64, accelerator="cpu", progress=False)
    return model, adata


def test_minified_layout_and_payload(trained_model):
    model, adata = trained_model
    mini = model.minify()
    d = model.module.n_latent
    assert mini.uns["_scvi_adata_minify_type"] == MINIFY_TYPE
    assert mini.obsm["scvi_latent_qzm"].shape == (adata.n_obs, d)
    assert mini.obsm["scvi_latent_qzv"].dtype == np.float32
    np.testing.assert_allclose(mini.obs["observed_lib_size"], np.asarray(adata.X.sum(1)).ravel())
    assert sp.issparse(mini.X) and mini.X.nnz == 0 and mini.shape == adata.shape
    assert payload_bytes_per_cell(mini) <= 2 * d * 4 + 12
    qzm, qzv = model.get_latent_representation(return_dist=True)
    np.testing.assert_allclose(mini.obsm["scvi_latent_qzm"], qzm, atol=1e-6)
    np.testing.assert_allclose(mini.obsm["scvi_latent_qzv"], qzv, rtol=1e-6)


def test_subset_decode_equals_full_decode_columns(trained_model):
    model, adata = trained_model
    mini = model.minify()
    full = model.decode(adata=mini)
    genes = [adata.var_names[i] for i in (7, 0, 33, 12)]
    subset = model.decode(adata=mini, genes=genes)
    np.testing.assert_allclose(subset, full[:, [7, 0, 33, 12]], atol=1e-6)
    reference = model.get_normalized_expression(return_numpy=True)
    np.testing.assert_allclose(full, reference, atol=1e-6)
    cells = [5, 2, 40]
    latent = model.decode(adata=mini, cells=cells, genes=genes, library_size="latent")
    expected = reference[cells][:, [7, 0, 33, 12]] * np.asarray(adata.X.sum(1)).ravel()[cells, None]
    np.testing.assert_allclose(latent, expected, rtol=1e-5)


def test_decode_with_counts_and_dask_match(trained_model):
    model, adata = trained_model
    genes = list(adata.var_names[:5])
    eager = model.decode(genes=genes, chunk_size=64, library_size=1e4)
    lazy = model.decode(genes=genes, chunk_size=64, library_size=1e4, as_dask=True)
    assert lazy.chunks[0][0] == 64 and lazy.shape == eager.shape
    np.testing.assert_allclose(lazy.compute(), eager, rtol=1e-6)


def test_saved_model_serves_decoding_methods_on_minified_data(trained_model, tmp_path):
    model, adata = trained_model
    mini = model.minify()
    model.save(tmp_path / "m")
    loaded = pybridge.SCVI.load(tmp_path / "m", adata=mini, accelerator="cpu")
    np.testing.assert_allclose(loaded.get_latent_representation(), mini.obsm["scvi_latent_qzm"], atol=1e-6)
    expected = model.get_normalized_expression(adata, return_numpy=True)
    np.testing.assert_allclose(loaded.get_normalized_expression(return_numpy=True), expected, atol=1e-6)
    params = loaded.get_likelihood_parameters()
    assert params["mean"].shape == adata.shape
    draws = loaded.posterior_predictive_sample()
    assert draws.shape == adata.shape
    for method in (loaded.get_elbo, loaded.get_reconstruction_error, loaded.train):
        with pytest.raises(PybridgeError, match="minified"):
            method()


def test_decode_without_normaliser_falls_back_to_full_softmax(trained_model):
    model, _ = trained_model
    mini = model.minify()
    with_norm = model.decode(adata=mini, genes=["gene3"])
    del mini.obs[LOG_NORMALIZER_KEY]
    np.testing.assert_allclose(model.decode(adata=mini, genes=["gene3"]), with_norm, atol=1e-7)
    # minifying such a file (as scvi-tools writes it) adds the normaliser back, on a copy
    restored = model.minify(mini)
    assert LOG_NORMALIZER_KEY not in mini.obs
    np.testing.assert_allclose(restored.obs[LOG_NORMALIZER_KEY], model.minify().obs[LOG_NORMALIZER_KEY], rtol=1e-6)
    np.testing.assert_allclose(restored.obsm["scvi_latent_qzm"], mini.obsm["scvi_latent_qzm"])


def test_bad_requests_are_clear(trained_model):
    model, _ = trained_model
    with pytest.raises(PybridgeError, match="not in the model"):
        model.decode(genes=["no_such_gene"])
    with pytest.raises(PybridgeError, match="n_latent"):
        model.decode(n_latent=99)
    with pytest.raises(PybridgeError, match="library_size"):
        model.decode(genes=["gene1"], library_size=-1)
    mini = model.minify()
    del mini.obsm["scvi_latent_qzv"]
    with pytest.raises(PybridgeError, match="scvi_latent_qzv"):
        model.decode(adata=mini)
    with pytest.raises(PybridgeError, match="already minified"):
        model.minify(model.minify())


def test_cli_minify_then_decode_genes(trained_model, tmp_path):
    from pybridge.cli.main import main

    model, adata = trained_model
    model.save(tmp_path / "model")
    adata.write_h5ad(tmp_path / "counts.h5ad")
    assert main(["minify", str(tmp_path / "model"), str(tmp_path / "counts.h5ad"), "-o", str(tmp_path / "mini.h5ad"),
                 "--accelerator", "cpu"]) == 0
    mini = anndata.read_h5ad(tmp_path / "mini.h5ad")
    assert mini.uns["_scvi_adata_minify_type"] == MINIFY_TYPE and mini.X.nnz == 0
    out = tmp_path / "decoded.h5ad"
    assert main(["decode", str(tmp_path / "model"), str(tmp_path / "mini.h5ad"), "--genes", "gene2", "gene0",
                 "--library-size", "1e4", "-o", str(out), "--accelerator", "cpu"]) == 0
    decoded = anndata.read_h5ad(out)
    assert list(decoded.var_names) == ["gene2", "gene0"]
    expected = model.get_normalized_expression(adata, gene_list=["gene2", "gene0"], library_size=1e4, return_numpy=True)
    np.testing.assert_allclose(decoded.X, expected, rtol=1e-5)


def test_minified_from_arrays_decodes_like_minify(trained_model):
    from pybridge.data.minified import minified_from_arrays

    model, adata = trained_model
    mini = model.minify()
    rebuilt = minified_from_arrays(
        mini.obsm["scvi_latent_qzm"], mini.obsm["scvi_latent_qzv"], mini.obs["observed_lib_size"].to_numpy(),
        list(mini.var_names), obs=adata.obs[["batch", "percent_mito"]],
        log_normalizer=mini.obs[LOG_NORMALIZER_KEY].to_numpy(),
    )
    np.testing.assert_array_equal(model.decode(rebuilt, genes=["gene1"]), model.decode(mini, genes=["gene1"]))
    with pytest.raises(PybridgeError, match="same cells"):
        minified_from_arrays(mini.obsm["scvi_latent_qzm"][:3], mini.obsm["scvi_latent_qzv"], [1.0], ["g"])
