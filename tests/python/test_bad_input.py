"""Bad input gets one clear error naming the problem and the fix, never NaN or a deep traceback."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import simulate_counts

import pybridge
from pybridge import PybridgeError, errors


def _with_X(adata, fn):
    X = adata.X.toarray()
    fn(X)
    adata.X = sp.csr_matrix(X)
    return adata


def test_negative_counts_named_with_layer_and_count(small_adata):
    small_adata.layers["counts"] = small_adata.X.copy()
    small_adata.layers["counts"].data[:3] = -1
    with pytest.raises(PybridgeError, match=r'adata.layers\["counts"\] has 3 negative entries') as err:
        pybridge.SCVI.setup_anndata(small_adata, layer="counts")
    assert err.value.kind == errors.NEGATIVE and err.value.details["n"] == 3 and err.value.details["minimum"] == -1


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf(small_adata, bad):
    small_adata.X.data[[1, 5]] = bad
    with pytest.raises(PybridgeError, match="adata.X has 2 NaN or infinite entries") as err:
        pybridge.SCVI.setup_anndata(small_adata)
    assert err.value.kind == errors.NON_FINITE and err.value.details["n"] == 2


def test_non_integer_needs_opt_in(small_adata):
    small_adata.X.data[:4] += 0.5
    with pytest.raises(PybridgeError, match="4 non-integer entries.*allow_non_integer=True") as err:
        pybridge.SCVI.setup_anndata(small_adata)
    assert err.value.kind == errors.NON_INTEGER
    assert err.value.details["n"] == 4 and err.value.details["example"] % 1 == 0.5
    pybridge.SCVI.setup_anndata(small_adata, allow_non_integer=True)
    model = pybridge.SCVI(small_adata, n_hidden=16, n_latent=3)
    model.train(max_epochs=2, progress=False)
    assert np.isfinite(model.history["elbo_train"].to_numpy()).all()


def test_zero_count_cells(small_adata):
    _with_X(small_adata, lambda X: X.__setitem__(([3, 7, 8], slice(None)), 0))
    with pytest.raises(PybridgeError, match=r"3 cells have zero total counts in adata.X \(first positions \[3, 7, 8\]\).*filter") as err:
        pybridge.SCVI.setup_anndata(small_adata)
    assert err.value.kind == errors.EMPTY_CELLS
    assert err.value.details["positions"] == [3, 7, 8]


def test_missing_batch_values_carry_positions(small_adata):
    small_adata.obs["batch"] = small_adata.obs["batch"].astype(object)
    small_adata.obs.iloc[[2, 5], small_adata.obs.columns.get_loc("batch")] = None
    with pytest.raises(PybridgeError, match="batch_key 'batch' has 2 missing") as err:
        pybridge.SCVI.setup_anndata(small_adata, batch_key="batch")
    assert err.value.kind == errors.MISSING_VALUES
    assert err.value.details["positions"] == [2, 5] and err.value.details["role"] == "batch_key"


def test_missing_layer_lists_layers(small_adata):
    small_adata.layers["raw"] = small_adata.X.copy()
    with pytest.raises(PybridgeError, match="layer 'counts' not found.*available layers: raw"):
        pybridge.SCVI.setup_anndata(small_adata, layer="counts")


def test_missing_key_lists_columns(small_adata):
    with pytest.raises(PybridgeError, match="batch_key 'sample' is not a column of adata.obs; available columns: cell_type, batch"):
        pybridge.SCVI.setup_anndata(small_adata, batch_key="sample")


@pytest.mark.parametrize("key,role", [("batch", "batch_key"), ("cell_type", "labels_key")])
def test_na_in_batch_or_labels(small_adata, key, role):
    values = small_adata.obs[key].astype(object)
    values.iloc[[0, 4]] = None
    small_adata.obs[key] = values
    with pytest.raises(PybridgeError, match=f"{role} '{key}' has 2 missing \\(NA\\) values"):
        pybridge.SCVI.setup_anndata(small_adata, **{role: key})


def test_fewer_cells_than_a_minibatch():
    adata = simulate_counts(n_cells=40)
    pybridge.SCVI.setup_anndata(adata)
    model = pybridge.SCVI(adata, n_hidden=16, n_latent=3)
    with pytest.warns(UserWarning, match="batch_size=128 exceeds the 36 training cells"):
        model.train(max_epochs=2, progress=False)
    assert np.isfinite(model.history["elbo_validation"].to_numpy()).all()
    tiny = simulate_counts(n_cells=2)
    pybridge.SCVI.setup_anndata(tiny)
    with pytest.raises(PybridgeError, match="only 2 training cells"):
        pybridge.SCVI(tiny, n_hidden=8).train(max_epochs=1, progress=False)


def test_single_category_batch_warns_and_trains(small_adata):
    small_adata.obs["batch"] = "only"
    with pytest.warns(UserWarning, match="single category"):
        pybridge.SCVI.setup_anndata(small_adata, batch_key="batch")
    model = pybridge.SCVI(small_adata, n_hidden=16, n_latent=3)
    model.train(max_epochs=2, progress=False)
    assert np.isfinite(model.get_latent_representation()).all()


def test_unknown_category_at_inference(small_adata):
    pybridge.SCVI.setup_anndata(small_adata, batch_key="batch")
    model = pybridge.SCVI(small_adata, n_hidden=16, n_latent=3)
    other = small_adata.copy()
    other.obs["batch"] = "b7"
    with pytest.raises(PybridgeError, match=r"categories the model was not trained with: \['b7'\]"):
        model.get_latent_representation(other)


def test_bad_option_values(small_adata):
    pybridge.SCVI.setup_anndata(small_adata)
    with pytest.raises(PybridgeError, match="gene_likelihood must be one of"):
        pybridge.SCVI(small_adata, gene_likelihood="gaussian")
    with pytest.raises(PybridgeError, match="gene-label.*labels_key"):
        pybridge.SCVI(small_adata, dispersion="gene-label")


def test_not_set_up(small_adata):
    with pytest.raises(PybridgeError, match="setup_anndata"):
        pybridge.SCVI(small_adata)


def test_duplicate_gene_names_train_by_position(small_adata):
    small_adata.var_names = ["g"] * 2 + list(small_adata.var_names[2:])
    pybridge.SCVI.setup_anndata(small_adata)
    model = pybridge.SCVI(small_adata, n_hidden=16, n_latent=3)
    model.train(max_epochs=2, progress=False)
    assert model.get_latent_representation().shape == (small_adata.n_obs, 3)
    reordered = small_adata[:, ::-1].copy()
    with pytest.raises(PybridgeError, match="duplicated gene names.*var_names_make_unique") as err:
        model.get_latent_representation(reordered)
    assert err.value.kind == errors.DUPLICATE_GENES and err.value.details["names"] == ["g"]
    with pytest.raises(PybridgeError, match="the model's genes has duplicated gene names") as err:
        model.get_normalized_expression(gene_list=["gene5"])
    assert err.value.details["of"] == "the model's genes"


def test_setup_does_not_touch_data(small_adata):
    before = small_adata.X.copy()
    obs_before = small_adata.obs.copy()
    pybridge.SCVI.setup_anndata(small_adata, batch_key="batch")
    assert (small_adata.X != before).nnz == 0
    assert small_adata.obs.equals(obs_before)
    assert json.loads(small_adata.uns["_pybridge_setup"])["batch_key"] == "batch"


def test_warning_recorder_collects_without_printing(recwarn):
    recorder = errors.WarningRecorder()
    recorder.start()
    warnings.warn("first", UserWarning)
    warnings.warn("first", UserWarning)
    seen = recorder.stop()
    assert seen == [{"category": "UserWarning", "message": "first", "kind": None, "details": {}}] * 2
    assert len(recwarn) == 0


def test_single_batch_warning_is_structured(small_adata):
    small_adata.obs["one"] = "a"
    recorder = errors.WarningRecorder()
    recorder.start()
    pybridge.SCVI.setup_anndata(small_adata, batch_key="one")
    (seen,) = recorder.stop()
    assert seen["category"] == "PybridgeWarning" and "single category" in seen["message"]
    assert seen["kind"] == errors.SINGLE_CATEGORY
    assert seen["details"] == {"key": "one", "role": "batch_key", "category": "a"}
