"""Import of scvi-tools 1.4.2 model files (fixture made by bench/make_scvi_fixture.py) without unpickling code."""

from __future__ import annotations

import os
from pathlib import Path

import anndata
import numpy as np
import pytest
import torch

import pybridge
from pybridge.errors import PybridgeError
from pybridge.io.scvi_tools import read_model_pt, save_scvi_tools

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def counts() -> anndata.AnnData:
    data = np.load(FIXTURES / "scvi_tools_data.npz")
    adata = anndata.AnnData(X=data["X"].astype(np.float32))
    adata.obs_names = data["obs_names"]
    adata.var_names = data["var_names"]
    adata.obs["batch"] = data["batch"]
    return adata


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "scvi_tools_expected.npz"))


@pytest.fixture(scope="module")
def imported(counts):
    return pybridge.SCVI.load_scvi_tools(FIXTURES / "scvi_tools_model", adata=counts.copy(), accelerator="cpu")


def test_registry_and_params_are_mapped(imported):
    assert imported.registry.batch_key == "batch"
    assert imported.registry.batch_categories == ["a", "b"]
    assert imported._init_params["n_latent"] == 4 and imported._init_params["n_hidden"] == 16
    assert imported._init_params["gene_likelihood"] == "zinb"


def test_same_latent_as_scvi_tools(imported, expected):
    qzm, qzv = imported.get_latent_representation(return_dist=True)
    np.testing.assert_allclose(qzm, expected["qzm"], atol=1e-5)
    np.testing.assert_allclose(qzv, expected["qzv"], atol=1e-5, rtol=1e-5)


def test_same_normalized_expression_as_scvi_tools(imported, expected):
    values = imported.get_normalized_expression(return_numpy=True)
    np.testing.assert_allclose(values, expected["normalized"], atol=1e-5)


def test_gene_order_of_adata_does_not_matter(counts, expected):
    shuffled = counts[:, np.random.default_rng(1).permutation(counts.n_vars)].copy()
    model = pybridge.SCVI.load_scvi_tools(FIXTURES / "scvi_tools_model", adata=shuffled, accelerator="cpu")
    np.testing.assert_allclose(model.get_latent_representation(), expected["qzm"], atol=1e-5)


def test_scvi_tools_minified_adata_decodes(imported, expected):
    minified = anndata.read_h5ad(FIXTURES / "scvi_tools_minified.h5ad")
    genes = list(imported.registry.var_names[5:12])
    values = imported.decode(adata=minified, genes=genes)
    np.testing.assert_allclose(values, expected["normalized"][:, 5:12], atol=1e-5)
    # scvi-tools stores no log-normaliser; minify() adds it, and subset decoding then skips the other genes
    with_normalizer = imported.minify(minified)
    assert "pybridge_log_normalizer" in with_normalizer.obs and "pybridge_log_normalizer" not in minified.obs
    np.testing.assert_allclose(imported.decode(adata=with_normalizer, genes=genes), values, atol=1e-6)


class _Payload:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_pickled_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "code_ran"
    model_dir = tmp_path / "evil"
    model_dir.mkdir()
    torch.save({"model_state_dict": {}, "attr_dict": {"x": _Payload(str(marker))}}, model_dir / "model.pt")
    with pytest.raises(PybridgeError, match="allow-list"):
        pybridge.SCVI.load_scvi_tools(model_dir)
    assert not marker.exists()


def test_missing_file_and_wrong_model_are_clear(tmp_path):
    with pytest.raises(PybridgeError, match="model.pt"):
        read_model_pt(tmp_path / "model.pt")
    torch.save({"model_state_dict": {}, "attr_dict": {"registry_": {"model_name": "TOTALVI"}}}, tmp_path / "model.pt")
    with pytest.raises(PybridgeError, match="only scvi-tools SCVI"):
        pybridge.SCVI.load_scvi_tools(tmp_path)


def test_export_reads_back_with_the_same_weights(imported, counts, tmp_path):
    save_scvi_tools(imported, tmp_path / "exported")
    saved = read_model_pt(tmp_path / "exported" / "model.pt")
    assert "decoder.px_scale_decoder.0.weight" in saved["model_state_dict"]
    again = pybridge.SCVI.load_scvi_tools(tmp_path / "exported", adata=counts.copy(), accelerator="cpu")
    np.testing.assert_array_equal(again.get_latent_representation(), imported.get_latent_representation())
