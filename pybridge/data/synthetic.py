"""Synthetic count data written block by block: test and benchmark inputs larger than memory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pybridge.errors import PybridgeError


def write_csr_h5ad(
    path: str | os.PathLike, blocks: Iterator[sp.csr_matrix], n_obs: int, n_vars: int,
    obs: pd.DataFrame | None = None, var_names: list[str] | None = None,
) -> None:
    """Write an .h5ad with a CSR X from row blocks, without holding the matrix in memory (anndata layout)."""
    from anndata.io import write_elem

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        group = f.create_group("X")
        group.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n_obs, n_vars)})
        data = group.create_dataset("data", shape=(0,), maxshape=(None,), dtype="f4", chunks=(1 << 18,))
        indices = group.create_dataset("indices", shape=(0,), maxshape=(None,), dtype="i4", chunks=(1 << 18,))
        indptr = np.zeros(n_obs + 1, dtype=np.int64)
        row = 0
        for block in blocks:
            block = sp.csr_matrix(block)
            nnz, end = data.shape[0], data.shape[0] + block.nnz
            data.resize((end,))
            indices.resize((end,))
            data[nnz:end] = block.data.astype(np.float32)
            indices[nnz:end] = block.indices.astype(np.int32)
            indptr[row + 1 : row + block.shape[0] + 1] = block.indptr[1:] + nnz
            row += block.shape[0]
        if row != n_obs:
            raise PybridgeError(f"wrote {row} rows but n_obs is {n_obs}")
        group.create_dataset("indptr", data=indptr)
        obs = obs if obs is not None else pd.DataFrame(index=[f"cell{i}" for i in range(n_obs)])
        var = pd.DataFrame(index=var_names or [f"gene{j}" for j in range(n_vars)])
        write_elem(f, "obs", obs)
        write_elem(f, "var", var)
        f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
    os.replace(tmp, path)


def simulate_nb_blocks(
    n_obs: int, n_vars: int, block_cells: int = 10_000, seed: int = 0, mean_total: float = 1_000.0,
    theta: float = 2.0, genes_per_type: int = 300, n_types: int = 5, return_types: bool = False,
) -> Iterator[sp.csr_matrix] | Iterator[tuple[sp.csr_matrix, np.ndarray]]:
    """Negative-binomial (gamma-Poisson) counts of ``n_types`` cell types, each expressing its own random set of
    ``genes_per_type`` genes, generated block by block (vectorised over the expressed genes only).

    ``return_types=True`` yields ``(block, cell type codes of its rows)`` instead of the block alone."""
    rng = np.random.default_rng(seed)
    k = min(genes_per_type, n_vars)
    gene_sets = np.sort(np.stack([rng.choice(n_vars, k, replace=False) for _ in range(n_types)]), axis=1)
    profiles = rng.dirichlet(np.full(k, 0.5), size=n_types).astype(np.float32)
    for start in range(0, n_obs, block_cells):
        m = min(block_cells, n_obs - start)
        kinds = rng.integers(0, n_types, m)
        library = rng.lognormal(np.log(mean_total), 0.3, m).astype(np.float32)
        rate = rng.standard_gamma(theta, size=(m, k), dtype=np.float32) / theta * profiles[kinds] * library[:, None]
        counts = rng.poisson(rate).astype(np.float32)
        counts[:, 0] += counts.sum(axis=1) == 0  # no empty cells
        block = sp.csr_matrix((counts.ravel(), gene_sets[kinds].ravel(), np.arange(m + 1) * k), shape=(m, n_vars))
        block.eliminate_zeros()
        yield (block, kinds) if return_types else block
