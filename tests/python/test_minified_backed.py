"""Minified data left on disk: open_minified (.h5ad, zarr), anndata's backed mode, both scvi-tools key
spellings, memory that follows the chunk size, DE on large groups, and decoding on a dask.distributed cluster."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
from conftest import simulate_counts

import pybridge
from pybridge.data.minified import MINIFIED_BY_KEY, minified_from_arrays, module_fingerprint
from pybridge.data.registry import SETUP_KEY
from pybridge.decoding import compute_log_normalizers
from pybridge.errors import PybridgeError

FIXTURES = Path(__file__).parent / "fixtures"
N_CELLS = 200_000
N_LATENT = 8


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    adata = simulate_counts(n_cells=240, n_genes=50)
    pybridge.SCVI.setup_anndata(adata, batch_key="batch", continuous_covariate_keys=["percent_mito"])
    model = pybridge.SCVI(adata, n_hidden=32, n_latent=N_LATENT)
    model.train(max_epochs=3, batch_size=64, accelerator="cpu", progress=False)
    path = tmp_path_factory.mktemp("model") / "scvi"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def store(model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A 200k-cell minified store of the model (simulated posteriors, exact log-normalisers), .h5ad and zarr."""
    from pybridge.data.minified import LatentCells

    model = pybridge.SCVI.load(model_dir, accelerator="cpu")
    rng = np.random.default_rng(0)
    qzm = rng.normal(size=(N_CELLS, N_LATENT)).astype(np.float32)
    qzv = rng.uniform(0.01, 0.3, size=(N_CELLS, N_LATENT)).astype(np.float32)
    library = rng.lognormal(7.5, 0.5, size=N_CELLS).astype(np.float32)
    batch = rng.choice(model.registry.batch_categories, size=N_CELLS)
    mito = rng.uniform(0, 0.2, size=N_CELLS).astype(np.float32)
    codes = np.searchsorted(np.asarray(model.registry.batch_categories), batch)
    cells = LatentCells(qzm, qzv, library, {"batch": codes, "labels": np.zeros(N_CELLS, np.int64),
                                             "cont_covs": mito[:, None]})
    lognorm = compute_log_normalizers(model.module, cells)

    obs = pd.DataFrame({"batch": pd.Categorical(batch), "percent_mito": mito,
                        "group": pd.Categorical(rng.choice(["A", "B", "C"], size=N_CELLS, p=[0.6, 0.3, 0.1]))},
                       index=[f"c{i}" for i in range(N_CELLS)])
    mini = minified_from_arrays(qzm, qzv, library, model.registry.var_names, obs=obs, log_normalizer=lognorm)
    mini.uns[MINIFIED_BY_KEY] = module_fingerprint(model.module)
    mini.uns[SETUP_KEY] = model.registry.to_json()
    folder = tmp_path_factory.mktemp("store")
    mini.write_h5ad(folder / "mini.h5ad")
    mini.write_zarr(folder / "mini.zarr")
    _rechunk_along_cells(folder / "mini.zarr", mini, rows=8192)
    return folder / "mini.h5ad", folder / "mini.zarr"


def _rechunk_along_cells(path: Path, mini: anndata.AnnData, rows: int) -> None:
    """Rewrite the per-cell arrays of a zarr store in chunks of ``rows`` cells x all columns (anndata's default
    splits (n, d) arrays by columns too, so that any read of a few cells decompresses far more of them)."""
    import zarr
    from anndata.io import write_elem

    group = zarr.open_group(str(path), mode="r+")
    for key, value in mini.obsm.items():
        write_elem(group["obsm"], key, value, dataset_kwargs={"chunks": (rows, value.shape[1])})
    for key in ("observed_lib_size", "pybridge_log_normalizer", "percent_mito"):
        write_elem(group["obs"], key, mini.obs[key].to_numpy(), dataset_kwargs={"chunks": (rows,)})


@pytest.fixture(scope="module")
def in_memory(store, model_dir):
    adata = anndata.read_h5ad(store[0])
    return pybridge.SCVI.load(model_dir, adata=adata, accelerator="cpu"), adata


@pytest.mark.parametrize("kind", ["h5ad", "zarr"])
def test_store_on_disk_decodes_like_memory_with_memory_set_by_the_chunk(kind, store, model_dir, in_memory):
    path = store[0] if kind == "h5ad" else store[1]
    reference_model, adata = in_memory
    expected = reference_model.decode(adata, genes=["gene7", "gene2"], library_size=1e4)
    tracemalloc.start()
    opened = pybridge.open_minified(path)
    model = pybridge.SCVI.load(model_dir, adata=opened, accelerator="cpu")
    tracemalloc.reset_peak()
    values = model.decode(opened, genes=["gene7", "gene2"], library_size=1e4, chunk_size=4096)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_array_equal(values, expected)
    posterior_bytes = 2 * N_CELLS * N_LATENT * 4
    # the output (1.6 MB) plus a few chunks; reading the posteriors whole would take 12.8 MB
    assert peak < values.nbytes + posterior_bytes / 4, f"peak {peak / 1e6:.1f} MB"
    assert opened.n_obs == N_CELLS and opened._obs_names is None  # cell names were never read


def test_outputs_and_cell_subsets_read_from_the_store(store, model_dir, in_memory):
    reference_model, adata = in_memory
    opened = pybridge.open_minified(store[0])
    model = pybridge.SCVI.load(model_dir, adata=opened, accelerator="cpu")
    cells = np.flatnonzero(opened.obs["group"] == "C")[::7]
    np.testing.assert_array_equal(model.decode(opened, cells=cells, genes=["gene1"]),
                                  reference_model.decode(adata, cells=cells, genes=["gene1"]))
    np.testing.assert_array_equal(model.get_latent_representation(indices=cells),
                                  adata.obsm["scvi_latent_qzm"][cells])
    frame = model.get_normalized_expression(indices=cells[:50], gene_list=["gene0", "gene3"])
    assert list(frame.index) == [f"c{i}" for i in cells[:50]] and opened._obs_names is None  # 50 names read
    np.testing.assert_allclose(frame.to_numpy(), reference_model.get_normalized_expression(
        indices=cells[:50], gene_list=["gene0", "gene3"], return_numpy=True), rtol=1e-6)
    assert model.posterior_predictive_sample(indices=cells[:20]).shape == (20, 50)


def test_anndata_backed_mode_is_served(store, model_dir, in_memory):
    reference_model, adata = in_memory
    backed = anndata.read_h5ad(store[0], backed="r")
    model = pybridge.SCVI.load(model_dir, adata=backed, accelerator="cpu")
    np.testing.assert_array_equal(model.decode(backed, genes=["gene4"], cells=np.arange(1000)),
                                  reference_model.decode(adata, genes=["gene4"], cells=np.arange(1000)))


def test_de_on_large_groups_uses_n_cells_per_group(store, model_dir, in_memory):
    reference_model, _ = in_memory
    opened = pybridge.open_minified(store[0])
    model = pybridge.SCVI.load(model_dir, adata=opened, accelerator="cpu")
    kwargs = {"groupby": "group", "group1": "A", "group2": "B", "all_stats": False, "n_cells_per_group": 2000,
              "n_samples_overall": 500}
    on_disk = model.differential_expression(**kwargs)
    in_mem = reference_model.differential_expression(**kwargs)
    assert on_disk.shape == (50, 8) and set(on_disk["comparison"]) == {"A vs B"}
    np.testing.assert_array_equal(on_disk.to_numpy(), in_mem.to_numpy())  # same seed, same cells, same draws
    with pytest.raises(PybridgeError, match="n_cells_per_group"):
        model.differential_expression(groupby="group", all_stats=False, n_cells_per_group=0)


def test_both_scvi_tools_key_spellings_load(tmp_path):
    counts = np.load(FIXTURES / "scvi_tools_data.npz")
    expected = dict(np.load(FIXTURES / "scvi_tools_expected.npz"))
    minified = anndata.read_h5ad(FIXTURES / "scvi_tools_minified.h5ad")  # written by scvi-tools 1.4.2
    renamed = minified.copy()
    for old, new in (("scvi_latent_qzm", "_scvi_latent_qzm"), ("scvi_latent_qzv", "_scvi_latent_qzv")):
        renamed.obsm[new] = renamed.obsm.pop(old)
    renamed.obs["_scvi_observed_lib_size"] = renamed.obs.pop("observed_lib_size")
    renamed.write_h5ad(tmp_path / "renamed.h5ad")
    genes = list(counts["var_names"][5:12])
    for data in (minified, renamed, pybridge.open_minified(tmp_path / "renamed.h5ad")):
        model = pybridge.SCVI.load_scvi_tools(FIXTURES / "scvi_tools_model", adata=data, accelerator="cpu")
        np.testing.assert_allclose(model.decode(data, genes=genes), expected["normalized"][:, 5:12], atol=1e-5)
        np.testing.assert_allclose(model.get_latent_representation(), expected["qzm"], atol=1e-5)


def test_open_minified_refuses_what_it_cannot_serve(tmp_path):
    with pytest.raises(PybridgeError, match="not found"):
        pybridge.open_minified(tmp_path / "absent.h5ad")
    simulate_counts(n_cells=20, n_genes=5).write_h5ad(tmp_path / "counts.h5ad")
    with pytest.raises(PybridgeError, match="not minified"):
        pybridge.open_minified(tmp_path / "counts.h5ad")


def test_decoding_on_a_local_dask_cluster_matches_local_decoding(store, model_dir):
    distributed = pytest.importorskip("distributed")
    opened = pybridge.open_minified(store[1])
    model = pybridge.SCVI.load(model_dir, adata=opened, accelerator="cpu")
    cells = np.arange(0, N_CELLS, 3)
    local = model.decode(opened, cells=cells, genes=["gene5", "gene9"], chunk_size=8192)
    lazy = model.decode(opened, cells=cells, genes=["gene5", "gene9"], chunk_size=8192, as_dask=True)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) \
            as cluster, distributed.Client(cluster) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        with distributed.get_task_stream(client) as stream:
            on_cluster = client.compute(lazy).result()
    ran = [str(task["key"]) for task in stream.data]
    assert sum("block" in key for key in ran) == -(-len(cells) // 8192)  # every block decoded on a worker
    np.testing.assert_array_equal(on_cluster, local)


def test_de_gene_blocks_do_not_change_the_result(in_memory, monkeypatch):
    import pybridge.de

    model, _ = in_memory
    kwargs = {"groupby": "group", "group1": "A", "group2": "C", "all_stats": False, "n_samples_overall": 300,
              "mode": "change", "pseudocounts": 1e-4}
    whole = model.differential_expression(**kwargs)
    monkeypatch.setattr(pybridge.de, "GENE_BLOCK", 7)
    blocked = model.differential_expression(**kwargs)
    pd.testing.assert_frame_equal(blocked, whole, rtol=1e-4, atol=1e-6)  # only the products' block shapes differ


def test_fingerprint_is_cached_until_a_weight_changes(model_dir):
    import torch

    model = pybridge.SCVI.load(model_dir, accelerator="cpu")
    first = module_fingerprint(model.module)
    assert module_fingerprint(model.module) == first
    with torch.no_grad():
        next(model.module.parameters()).add_(1e-3)  # as an optimizer step would
    assert module_fingerprint(model.module) != first
