"""Benchmark inputs for bench_scvi.py: the shipped .h5ad files plus derived ones, built once and cached.

Derived datasets (written as .h5ad into a cache folder, reused on the next run):
  * ``pbmc3k_hvg2000``: pbmc3k_raw restricted to its 2,000 most variable genes, chosen as the R package's
    ``ntop`` does (R/scvi.R ``.topVariableGenes``): the largest sample variance of log-normalised counts,
    log1p(count / (cell total / mean cell total)); genes kept in their original order.
  * ``pbmc3k_hvg2000_2k``: 2,000 cells of ``pbmc3k_hvg2000`` (a fixed random subset, seed 0) — the issue's
    "2,000-gene dataset of about 2,000 cells" for the cold ``train()`` acceptance check.
  * ``sim100k``: 100,000 simulated cells x 2,000 genes, negative-binomial (gamma-Poisson) counts of 8 cell
    types from ``pybridge.data.synthetic.simulate_nb_blocks`` (each type expresses 600 genes; seed 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

N_TOP_GENES = 2_000
SUBSET_CELLS = 2_000
SIM_CELLS, SIM_GENES = 100_000, 2_000
DERIVED = ("pbmc3k_hvg2000", "pbmc3k_hvg2000_2k", "sim100k")


def top_variable_genes(counts: sp.csr_matrix, n_top: int) -> np.ndarray:
    """Column positions (sorted) of the ``n_top`` genes with the largest variance of log-normalised counts."""
    counts = sp.csr_matrix(counts, dtype=np.float64)
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scale = totals / totals.mean()
    scale[scale <= 0] = 1.0
    logged = counts.copy()
    logged.data = np.log1p(logged.data / np.repeat(scale, np.diff(logged.indptr)))
    n = counts.shape[0]
    mean = np.asarray(logged.mean(axis=0)).ravel()
    mean_sq = np.asarray(logged.multiply(logged).mean(axis=0)).ravel()
    variance = (mean_sq - mean * mean) * n / max(n - 1, 1)
    order = np.argsort(-variance, kind="stable")[:n_top]
    return np.sort(order)


def _pbmc_hvg(data_dir: Path):
    import anndata

    adata = anndata.read_h5ad(data_dir / "pbmc3k_raw.h5ad")
    genes = top_variable_genes(adata.X, N_TOP_GENES)
    return adata[:, genes].copy()


def _write(adata, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    adata.write_h5ad(tmp)
    tmp.replace(path)
    return path


def build(name: str, data_dir: Path, cache_dir: Path) -> Path:
    """Path of dataset ``name``: a shipped file in ``data_dir`` or a derived one built into ``cache_dir``."""
    if name not in DERIVED:
        path = data_dir / f"{name}.h5ad"
        if not path.exists():
            raise SystemExit(f"dataset {path} not found: pass --data-dir (expected {name}.h5ad there)")
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{name}.h5ad"
    if path.exists():
        return path
    if name == "pbmc3k_hvg2000":
        return _write(_pbmc_hvg(data_dir), path)
    if name == "pbmc3k_hvg2000_2k":
        import anndata

        adata = anndata.read_h5ad(build("pbmc3k_hvg2000", data_dir, cache_dir))
        keep = np.sort(np.random.default_rng(0).choice(adata.n_obs, SUBSET_CELLS, replace=False))
        return _write(adata[keep].copy(), path)
    return _write(_simulated(), path)


def _simulated():
    import anndata

    from pybridge.data.synthetic import simulate_nb_blocks

    blocks = simulate_nb_blocks(SIM_CELLS, SIM_GENES, seed=0, genes_per_type=600, n_types=8)
    counts = sp.vstack(list(blocks), format="csr").astype(np.float32)
    adata = anndata.AnnData(counts)
    adata.obs_names = [f"cell{i}" for i in range(SIM_CELLS)]
    adata.var_names = [f"gene{j}" for j in range(SIM_GENES)]
    return adata


def labels_of(path: Path) -> np.ndarray | None:
    """The ``cell_type`` labels of a dataset, or None when it has none (pbmc3k, simulated)."""
    import anndata

    obs = anndata.read_h5ad(path, backed="r").obs
    return obs["cell_type"].astype(str).to_numpy() if "cell_type" in obs else None


def n_cells_of(path: Path) -> int:
    import anndata

    return int(anndata.read_h5ad(path, backed="r").n_obs)
