"""AnnData read with ``anndata.read_h5ad(path, backed=...)``: set up, trained and read out of core through the
same streaming store as ``open_backed``, with counts validated chunk by chunk."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import pybridge
from pybridge.data import disk, setup
from pybridge.data.disk import DiskStore, open_backed
from pybridge.data.factory import make_store
from pybridge.data.ondisk import DiskMatrix
from pybridge.data.registry import registry_of
from pybridge.data.stores import TensorStore
from pybridge.errors import PybridgeError

N_CELLS = 1200  # a slice of cortex keeps each training to about a second
TRAIN = {"max_epochs": 3, "batch_size": 128, "accelerator": "cpu", "progress": False, "seed": 0}
SMALL_BUFFER = {"buffer_cells": 300, "chunk_cells": 50, "prefetch": 1}


def _last(history, key: str) -> float:
    return float(np.asarray(history[key], dtype=float).ravel()[-1])


@pytest.fixture(scope="module")
def cortex_files(tmp_path_factory):
    cortex = pybridge.datasets.cortex()
    adata = cortex[np.sort(np.random.default_rng(0).choice(cortex.n_obs, N_CELLS, replace=False))].copy()
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.layers["counts"] = adata.X.copy()
    folder = tmp_path_factory.mktemp("backed")
    adata.write_h5ad(folder / "csr.h5ad")
    dense = adata.copy()
    dense.X = adata.X.toarray()
    dense.write_h5ad(folder / "dense.h5ad")
    return adata, folder


@pytest.fixture
def small_buffers(monkeypatch):
    """Buffers and validation chunks far smaller than the data, and every read's row span recorded."""
    for key, value in SMALL_BUFFER.items():
        monkeypatch.setitem(disk.DEFAULT_BUFFER, key, value)
    monkeypatch.setattr(setup, "VALIDATE_CHUNK_CELLS", 100)
    spans: list[int] = []
    rows = DiskMatrix.rows

    def recording_rows(self, start, stop):
        spans.append(stop - start)
        return rows(self, start, stop)

    monkeypatch.setattr(DiskMatrix, "rows", recording_rows)
    return spans


def _refuse_whole_reads(monkeypatch):
    """Make anndata's own readers of a backed X fail, so that a test passes only if pybridge streams."""
    from anndata._core.sparse_dataset import BaseCompressedSparseDataset

    def fail(*args, **kwargs):
        raise AssertionError("the backed X was read through anndata")

    monkeypatch.setattr(BaseCompressedSparseDataset, "to_memory", fail)
    monkeypatch.setattr(BaseCompressedSparseDataset, "__getitem__", fail)


def _train(adata):
    model = pybridge.SCVI(adata, n_hidden=32, n_latent=5)
    model.train(**TRAIN)
    return model


def test_backed_csr_streams_and_matches_open_backed(cortex_files, small_buffers, monkeypatch):
    adata, folder = cortex_files
    backed = ad.read_h5ad(folder / "csr.h5ad", backed="r")
    _refuse_whole_reads(monkeypatch)
    pybridge.SCVI.setup_anndata(backed, labels_key="cell_type")
    assert isinstance(make_store(backed, registry_of(backed), "cpu"), DiskStore)
    model = _train(backed)
    latent = model.get_latent_representation()
    assert max(small_buffers) <= SMALL_BUFFER["buffer_cells"]  # never more than a buffer of rows at once
    assert backed.isbacked and latent.shape == (N_CELLS, 5) and np.isfinite(latent).all()
    assert all(np.isfinite(np.asarray(v, dtype=float)).all() for v in model.history.values())

    reference = _train(open_backed(folder / "csr.h5ad", labels_key="cell_type", **SMALL_BUFFER))
    np.testing.assert_allclose(latent, reference.get_latent_representation(), rtol=0, atol=1e-6)
    assert _last(model.history, "elbo_validation") == pytest.approx(_last(reference.history, "elbo_validation"))

    memory = adata.copy()
    pybridge.SCVI.setup_anndata(memory, labels_key="cell_type")
    in_memory = _train(memory)
    disk_elbo, mem_elbo = _last(model.history, "elbo_validation"), _last(in_memory.history, "elbo_validation")
    assert abs(disk_elbo - mem_elbo) < 0.05 * abs(mem_elbo)


def test_backed_dense_and_read_write_mode_give_the_same_model(cortex_files, small_buffers):
    _, folder = cortex_files
    latents = []
    for name, mode in [("csr.h5ad", "r"), ("dense.h5ad", "r"), ("csr.h5ad", "r+")]:
        backed = ad.read_h5ad(folder / name, backed=mode)
        pybridge.SCVI.setup_anndata(backed)
        assert isinstance(make_store(backed, registry_of(backed), "cpu"), DiskStore)
        latents.append(_train(backed).get_latent_representation())
        backed.file.close()
    np.testing.assert_allclose(latents[1], latents[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(latents[2], latents[0], rtol=0, atol=1e-6)


def test_backed_layer_is_read_from_memory_where_anndata_put_it(cortex_files):
    _, folder = cortex_files
    backed = ad.read_h5ad(folder / "csr.h5ad", backed="r")
    assert not isinstance(backed.layers["counts"], ad.abc.CSRDataset)  # anndata loads layers into memory
    pybridge.SCVI.setup_anndata(backed, layer="counts")
    assert isinstance(make_store(backed, registry_of(backed), "cpu"), TensorStore)
    model = pybridge.SCVI(backed, n_hidden=16, n_latent=3)
    model.train(**{**TRAIN, "max_epochs": 1})
    assert np.isfinite(_last(model.history, "elbo_train")) and model.get_latent_representation().shape == (N_CELLS, 3)


def test_setup_anndata_on_open_backed_data_registers_again(cortex_files):
    adata, folder = cortex_files
    opened = open_backed(folder / "csr.h5ad", **SMALL_BUFFER)
    pybridge.SCVI.setup_anndata(opened, layer="counts", labels_key="cell_type")
    registry = registry_of(opened)
    assert registry.layer == "counts" and registry.n_labels == adata.obs["cell_type"].nunique() > 1
    store = make_store(opened, registry, "cpu")
    assert isinstance(store, DiskStore) and store.layer == "counts"
    with pytest.raises(PybridgeError, match=r"no 'layers/raw' element") as err:
        pybridge.SCVI.setup_anndata(opened, layer="raw")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "edit, kind",
    [
        (lambda X: X.data.__setitem__(slice(7, 10), -2.0), "negative"),
        (lambda X: X.data.__setitem__(slice(400, 403), 0.5), "non_integer"),
        (lambda X: X.data.__setitem__(np.array([5, 900]), np.nan), "non_finite"),
        (None, "empty_cells"),
    ],
)
def test_counts_on_disk_are_validated_chunk_by_chunk_like_in_memory(cortex_files, small_buffers, tmp_path, edit, kind):
    adata, _ = cortex_files
    bad = adata.copy()
    del bad.layers["counts"]
    if edit is None:
        dense = bad.X.toarray()
        dense[[3, 250, 999]] = 0
        bad.X = sp.csr_matrix(dense)
    else:
        edit(bad.X)
    bad.write_h5ad(tmp_path / "bad.h5ad")
    with pytest.raises(PybridgeError) as in_memory:
        pybridge.SCVI.setup_anndata(bad)
    backed = ad.read_h5ad(tmp_path / "bad.h5ad", backed="r")
    with pytest.raises(PybridgeError) as on_disk:
        pybridge.SCVI.setup_anndata(backed)
    assert max(small_buffers) <= 100  # validated 100 rows at a time
    assert on_disk.value.kind == in_memory.value.kind == kind
    assert on_disk.value.details == {**in_memory.value.details, "layer": on_disk.value.details["layer"]}
    assert str(on_disk.value).replace(f" (on disk in {tmp_path / 'bad.h5ad'})", "") == str(in_memory.value)
    assert "_pybridge_setup" not in backed.uns


def test_unusable_backed_cases_are_refused_in_one_line(cortex_files, tmp_path):
    adata, folder = cortex_files
    csc = adata.copy()
    csc.X = sp.csc_matrix(csc.X)
    csc.write_h5ad(tmp_path / "csc.h5ad")
    backed_csc = ad.read_h5ad(tmp_path / "csc.h5ad", backed="r")
    with pytest.raises(PybridgeError, match=r"is CSC.*rewrite it as CSR.*anndata.read_h5ad\(path\)") as err:
        pybridge.SCVI.setup_anndata(backed_csc)
    assert "\n" not in str(err.value)

    backed = ad.read_h5ad(folder / "csr.h5ad", backed="r")
    with pytest.raises(PybridgeError, match=r"a view.*adata = adata\[\.\.\.\]\.to_memory\(\)") as err:
        pybridge.SCVI.setup_anndata(backed[:100])
    assert "\n" not in str(err.value)

    pybridge.SCVI.setup_anndata(backed)  # reading all counts at once (here the library prior) is refused
    with pytest.raises(PybridgeError, match=r"adata.X stays on disk in .*csr.h5ad.*anndata.read_h5ad") as err:
        pybridge.SCVI(backed, use_observed_lib_size=False)
    assert "\n" not in str(err.value)
