"""Output calls on k cells cost O(k), not O(dataset): the row-scoped stores of issue 9.

    .venv/bin/python bench/outputs_bench.py                 # ~2 min on 2 cores; rewrites "## Output calls"
    PYTHONPATH=OLD_TREE .venv/bin/python bench/outputs_bench.py --label before --no-write   # the same on other code

Simulated Poisson counts (2,000 genes, CSR, a batch column; the density is printed) of 400k cells; the 20k- and 100k-cell data
are copies of its first rows. A 1-epoch scVI (weights do not matter for speed) then gives:

* the latent of the same 500 cells from the 20k-cell and the 400k-cell AnnData (median of 5 calls);
* the latent of all 100k cells in one call, and in 100 calls of 1,000 cells each.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from minify_bench import machine, write_section

import pybridge

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Output calls on a few cells of a large AnnData"


def simulate(n_cells: int, n_genes: int = 2000, block: int = 20_000, seed: int = 0) -> anndata.AnnData:
    rng = np.random.default_rng(seed)
    profile = rng.gamma(0.3, 1.0, n_genes) * 0.5
    blocks = []
    for start in range(0, n_cells, block):
        counts = rng.poisson(profile[None, :] * rng.lognormal(0, 0.3, (min(block, n_cells - start), 1)))
        counts[:, 0] += counts.sum(1) == 0  # no empty cells
        blocks.append(sp.csr_matrix(counts.astype(np.float32)))
    X = sp.vstack(blocks, format="csr")
    obs = pd.DataFrame({"batch": pd.Categorical(np.where(np.arange(n_cells) % 2, "a", "b"))},
                       index=[f"cell{i}" for i in range(n_cells)])
    return anndata.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))


def timed(fn, repeat: int = 1) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="after")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    big = simulate(400_000)
    density = big.X.nnz / (big.n_obs * big.n_vars)
    small, mid = big[:20_000].copy(), big[:100_000].copy()
    for adata in (big, small, mid):
        pybridge.SCVI.setup_anndata(adata, batch_key="batch")
    model = pybridge.SCVI(small)
    model.train(max_epochs=1, progress=False, accelerator="cpu")
    rows = np.random.default_rng(1).choice(20_000, 500, replace=False)
    t_small = timed(lambda: model.get_latent_representation(small, indices=rows), 5)
    t_big = timed(lambda: model.get_latent_representation(big, indices=rows), 5)
    one = timed(lambda: model.get_latent_representation(mid), 3)
    chunked = timed(lambda: [model.get_latent_representation(mid, indices=np.arange(s, s + 1000))
                             for s in range(0, 100_000, 1000)], 3)
    print(f"{args.label} (density {density:.1%}): latent of 500 cells from 20k {t_small:.3f} s, from 400k {t_big:.3f} s "
          f"(ratio {t_big / t_small:.2f}); 100k cells in one call {one:.2f} s, in 100 chunks {chunked:.2f} s "
          f"(ratio {chunked / one:.2f})")
    if args.no_write:
        return
    body = f"""Measured {machine()} with `bench/outputs_bench.py` (counts {density:.1%} non-zero), this code:

| call | time | ratio |
|---|---|---|
| latent of 500 cells, from a 20k-cell AnnData | {t_small:.3f} s | 1 |
| latent of the same 500 cells, from a 400k-cell AnnData | {t_big:.3f} s | {t_big / t_small:.2f} |
| latent of 100k cells, one call | {one:.2f} s | 1 |
| latent of 100k cells, 100 calls of 1,000 cells | {chunked:.2f} s | {chunked / one:.2f} |
"""
    write_section(ROOT / "bench" / "RESULTS.md", HEADING, body)


if __name__ == "__main__":
    main()
