"""The store factory: every kind of data gives the chosen rows, in the asked order, and reads nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import simulate_counts

import pybridge
from pybridge.data.disk import open_backed
from pybridge.data.factory import make_store
from pybridge.data.registry import registry_of
from pybridge.errors import PybridgeError

ROWS = np.array([250, 3, 499, 0, 17])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    adata = simulate_counts(n_cells=500, n_genes=40)
    path = tmp_path_factory.mktemp("stores") / "counts.h5ad"
    adata.write_h5ad(path)
    pybridge.SCVI.setup_anndata(adata, batch_key="batch")
    model = pybridge.SCVI(adata, n_hidden=16, n_latent=3)
    model.train(max_epochs=2, progress=False, accelerator="cpu")
    return model, adata, path


def _kinds(model, adata, path):
    backed = open_backed(path, batch_key="batch", buffer_cells=100, chunk_cells=20)
    return {"memory": adata, "disk": backed, "minified": model.minify(adata)}


def test_every_store_gives_the_chosen_rows_in_order(trained):
    model, adata, path = trained
    dense = adata.X.toarray()
    codes = adata.obs["batch"].cat.codes.to_numpy()
    for kind, data in _kinds(model, adata, path).items():
        store = make_store(data, registry_of(data), "cpu", ROWS)
        assert len(store) == len(ROWS), kind
        batch = store.gather(torch.tensor([1, 4, 0]))
        np.testing.assert_array_equal(batch["indices"].numpy(), ROWS[[1, 4, 0]], err_msg=kind)
        np.testing.assert_array_equal(batch["batch"].numpy(), codes[ROWS[[1, 4, 0]]], err_msg=kind)
        if kind != "minified":
            np.testing.assert_array_equal(batch["X"].numpy(), dense[ROWS[[1, 4, 0]]], err_msg=kind)


def test_log_factorial_only_for_likelihoods(trained):
    model, adata, path = trained
    for kind, data in _kinds(model, adata, path).items():
        if kind == "minified":
            continue
        plain = make_store(data, registry_of(data), "cpu", ROWS).gather(torch.arange(len(ROWS)))
        full = make_store(data, registry_of(data), "cpu", ROWS, likelihood=True).gather(torch.arange(len(ROWS)))
        assert "log_x_factorial" not in plain and "log_x_factorial" in full, kind
        expected = torch.lgamma(full["X"].double() + 1).sum(1)
        np.testing.assert_allclose(full["log_x_factorial"].numpy(), expected.numpy(), rtol=1e-6)


def test_outputs_on_chosen_cells_equal_the_full_call_rows(trained):
    model, adata, path = trained
    for kind, data in _kinds(model, adata, path).items():
        full = model.get_latent_representation(data)
        part = model.get_latent_representation(data, indices=ROWS)
        np.testing.assert_allclose(part, full[ROWS], rtol=1e-5, atol=1e-6, err_msg=kind)
        mask = np.zeros(adata.n_obs, dtype=bool)
        mask[ROWS] = True
        np.testing.assert_allclose(
            model.get_latent_representation(data, indices=mask), full[np.sort(ROWS)], rtol=1e-5, atol=1e-6,
            err_msg=kind,
        )
    frame = model.get_normalized_expression(adata, indices=ROWS)
    assert list(frame.index) == list(adata.obs_names[ROWS])


def test_output_calls_read_only_the_chosen_cells(trained):
    """A category the model never saw in *other* cells does not stop a call about these cells."""
    model, adata, _ = trained
    edited = adata.copy()
    edited.obs["batch"] = edited.obs["batch"].cat.add_categories(["unseen"])
    others = np.setdiff1d(np.arange(edited.n_obs), ROWS)
    edited.obs.iloc[others, edited.obs.columns.get_loc("batch")] = "unseen"
    np.testing.assert_allclose(
        model.get_latent_representation(edited, indices=ROWS), model.get_latent_representation(adata, indices=ROWS),
        rtol=1e-6,
    )
    with pytest.raises(PybridgeError, match="unseen"):
        model.get_latent_representation(edited)


def test_bad_indices_are_refused(trained):
    model, adata, _ = trained
    with pytest.raises(PybridgeError, match=r"indices must lie in \[0, 500\)"):
        model.get_latent_representation(adata, indices=[0, 500])
    with pytest.raises(PybridgeError, match="boolean mask of cells needs 500 entries"):
        model.get_latent_representation(adata, indices=np.ones(3, dtype=bool))
