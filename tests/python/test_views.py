"""AnnData views: setup_anndata refuses them (it would write into adata.uns and so silently turn the view into
a copy); a model reads a view of set-up data without writing into it or its parent."""

from __future__ import annotations

import numpy as np
import pytest

# anndata warns when a write turns a view into a copy: here that is a failure
pytestmark = pytest.mark.filterwarnings("error::anndata.ImplicitModificationWarning")

import pybridge
from pybridge.diagnostics.countsplit import split_anndata
from pybridge.errors import PybridgeError


def _state(adata) -> dict:
    return {
        "uns": sorted(adata.uns.keys()), "obsm": sorted(adata.obsm.keys()), "layers": sorted(adata.layers.keys()),
        "obs": list(adata.obs.columns), "is_view": adata.is_view,
    }


@pytest.mark.parametrize(
    "setup",
    [
        lambda v: pybridge.SCVI.setup_anndata(v, batch_key="batch"),
        lambda v: pybridge.CondSCVI.setup_anndata(v, labels_key="cell_type"),
        lambda v: pybridge.DestVI.setup_anndata(v),
    ],
    ids=["SCVI", "CondSCVI", "DestVI"],
)
def test_setup_refuses_a_view_and_leaves_it_and_its_parent_alone(small_adata, setup):
    parent = small_adata
    view = parent[parent.obs["cell_type"] == "type0"]
    before_parent, before_view = _state(parent), _state(view)
    with pytest.raises(PybridgeError, match=r"view.*records the set-up in adata.uns.*adata\[\.\.\.\]\.copy\(\)") as err:
        setup(view)
    assert "\n" not in str(err.value)
    assert _state(parent) == before_parent and _state(view) == before_view and view.is_view


def test_a_copy_of_the_view_sets_up_and_trains(small_adata):
    view = small_adata[small_adata.obs["cell_type"] != "type0"]
    adata = view.copy()
    pybridge.SCVI.setup_anndata(adata, batch_key="batch")
    model = pybridge.SCVI(adata, n_hidden=16, n_latent=3)
    model.train(max_epochs=2, batch_size=64, accelerator="cpu", progress=False)
    assert model.get_latent_representation().shape == (view.n_obs, 3)
    assert "_pybridge_setup" not in small_adata.uns and view.is_view


def test_a_model_reads_a_view_of_set_up_data_without_writing_into_it(small_adata):
    parent = small_adata
    pybridge.SCVI.setup_anndata(parent, batch_key="batch")
    view = parent[parent.obs["donor"] != "d1"]
    before_parent, before_view = _state(parent), _state(view)
    model = pybridge.SCVI(view, n_hidden=16, n_latent=3)
    model.train(max_epochs=2, batch_size=64, accelerator="cpu", progress=False)
    latent = model.get_latent_representation()
    expression = model.get_normalized_expression(n_samples=1)
    elbo = model.get_elbo()
    assert latent.shape == (view.n_obs, 3) and np.asarray(expression).shape == view.shape and np.isfinite(elbo)
    assert _state(parent) == before_parent and _state(view) == before_view and view.is_view


def test_load_and_split_refuse_a_view_and_leave_it_alone(small_adata, tmp_path):
    pybridge.SCVI.setup_anndata(small_adata)
    model = pybridge.SCVI(small_adata, n_hidden=16, n_latent=3)
    model.save(tmp_path / "m")
    fresh = small_adata.copy()
    del fresh.uns["_pybridge_setup"]
    view = fresh[fresh.obs["cell_type"] == "type0"]
    before_parent, before_view = _state(fresh), _state(view)
    with pytest.raises(PybridgeError, match=r"SCVI.load\(adata=...\) records the set-up in adata.uns"):
        pybridge.SCVI.load(tmp_path / "m", adata=view)
    with pytest.raises(PybridgeError, match=r"split_anndata adds the count-split folds to adata.layers"):
        split_anndata(view)
    assert _state(fresh) == before_parent and _state(view) == before_view and view.is_view
