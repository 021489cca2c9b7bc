"""Out-of-core training from on-disk CSR data (.h5ad and zarr)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import simulate_counts

import pybridge
from pybridge.data.disk import DiskStore, open_backed
from pybridge.data.registry import registry_of
from pybridge.data.synthetic import simulate_nb_blocks, write_csr_h5ad
from pybridge.errors import PybridgeError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    adata = simulate_counts(n_cells=500, n_genes=40)
    folder = tmp_path_factory.mktemp("ooc")
    adata.write_h5ad(folder / "small.h5ad")
    adata.write_zarr(folder / "small.zarr")
    return adata, folder


@pytest.mark.parametrize("name", ["small.h5ad", "small.zarr"])
def test_gather_and_streaming_read_the_same_rows(small_files, name):
    adata, folder = small_files
    backed = open_backed(folder / name, batch_key="batch", buffer_cells=120, chunk_cells=30)
    store = DiskStore.from_adata(backed, registry_of(backed), "cpu")
    dense = adata.X.toarray()
    idx = torch.tensor([499, 3, 250, 4, 0])
    batch = store.gather(idx)
    np.testing.assert_array_equal(batch["X"].numpy(), dense[idx.numpy()])
    np.testing.assert_array_equal(batch["batch"].numpy(), adata.obs["batch"].cat.codes.to_numpy()[idx.numpy()])
    wanted = torch.arange(0, 500, 3)
    seen, sizes = [], []
    for mb in store.iter_minibatches(wanted, 32, torch.Generator().manual_seed(1)):
        positions = mb["indices"].numpy()
        np.testing.assert_array_equal(mb["X"].numpy(), dense[positions])
        seen.extend(positions.tolist())
        sizes.append(len(positions))
    assert sorted(seen) == wanted.tolist()  # every cell exactly once
    assert len(sizes) == -(-len(wanted) // 32) and set(sizes[:-1]) == {32}
    assert seen[:40] != sorted(seen[:40])  # shuffled


def test_backed_training_matches_in_memory_quality(small_files):
    adata, folder = small_files
    backed = open_backed(folder / "small.h5ad", batch_key="batch", buffer_cells=200, chunk_cells=25)
    model = pybridge.SCVI(backed, n_hidden=32, n_latent=4)
    model.train(max_epochs=8, batch_size=100, accelerator="cpu", progress=False)
    memory = adata.copy()
    pybridge.SCVI.setup_anndata(memory, batch_key="batch")
    reference = pybridge.SCVI(memory, n_hidden=32, n_latent=4)
    reference.train(max_epochs=8, batch_size=100, accelerator="cpu", progress=False)
    disk_elbo, mem_elbo = model.history["elbo_validation"].iloc[-1, 0], reference.history["elbo_validation"].iloc[-1, 0]
    assert np.isfinite(disk_elbo) and abs(disk_elbo - mem_elbo) < 0.05 * abs(mem_elbo)
    latent = model.get_latent_representation()  # gather path
    assert latent.shape == (500, 4) and np.isfinite(latent).all()


def test_bad_on_disk_input_is_clear(tmp_path):
    bad = sp.csr_matrix(np.array([[1.0, 2.0], [0.0, 0.0], [3.0, 5.0]], dtype=np.float32))
    write_csr_h5ad(tmp_path / "bad.h5ad", iter([bad]), 3, 2)
    with pytest.raises(PybridgeError, match="zero total counts"):
        open_backed(tmp_path / "bad.h5ad")
    with pytest.raises(PybridgeError, match="not found"):
        open_backed(tmp_path / "missing.h5ad")
    with pytest.raises(PybridgeError, match="layer"):
        open_backed(tmp_path / "bad.h5ad", layer="counts")


# One streaming pass over all 200k cells (every chunk of the file is read), training on a 25 % split so that the
# test stays short on 2 cores; a Poisson likelihood and a small network keep each step cheap.
PEAK_RSS_SCRIPT = textwrap.dedent(
    """
    import json, sys, time, torch
    torch.set_num_threads(2)
    import pybridge
    from pybridge.data.disk import open_backed
    path = sys.argv[1]
    start = time.perf_counter()
    adata = open_backed(path, buffer_cells=20000, chunk_cells=1000)
    model = pybridge.SCVI(adata, n_hidden=32, n_latent=8, gene_likelihood="poisson")
    model.train(max_epochs=1, batch_size=1024, train_size=0.25, validation_size=0.01, accelerator="cpu",
                progress=False)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so it would report pytest's own peak
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(json.dumps({"peak_rss_mb": peak_kb / 1024,
                      "seconds": time.perf_counter() - start, "elbo": float(model.history["elbo_train"].iloc[-1, 0]),
                      "n_train": len(model.train_indices)}))
    """
)


def test_200k_cells_train_within_1_5_gb(tmp_path):
    n_obs, n_vars = 200_000, 2_000
    path = tmp_path / "big.h5ad"
    write_csr_h5ad(path, simulate_nb_blocks(n_obs, n_vars, block_cells=20_000, genes_per_type=100), n_obs, n_vars)
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_SCRIPT, str(path)], check=False, capture_output=True, text=True, cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert np.isfinite(result["elbo"]) and result["n_train"] == 50_000
    assert result["peak_rss_mb"] < 1536, result


def test_model_trained_on_disk_minifies_and_decodes(small_files):
    adata, folder = small_files
    backed = open_backed(folder / "small.h5ad", batch_key="batch", buffer_cells=200, chunk_cells=25)
    model = pybridge.SCVI(backed, n_hidden=16, n_latent=3)
    model.train(max_epochs=2, batch_size=100, accelerator="cpu", progress=False)
    mini = model.minify()
    np.testing.assert_allclose(mini.obs["observed_lib_size"], np.asarray(adata.X.sum(1)).ravel())
    memory = adata.copy()
    memory.uns["_pybridge_setup"] = backed.uns["_pybridge_setup"]
    np.testing.assert_allclose(model.decode(mini, genes=["gene3"]), model.decode(memory, genes=["gene3"]), atol=1e-6)
