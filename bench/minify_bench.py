"""Minified decoding: decode 20 genes for 100k cells from a minified 4,000-gene scVI model vs a full decode.

    .venv/bin/python bench/minify_bench.py            # ~2-4 min on 2 cores; rewrites "## Minified decoding"

A 4,000-gene scVI (128 hidden, 10 latent) is trained briefly on simulated NB counts (decoding speed does not
depend on how well the model fits), 100k simulated cells are minified (latent posterior, library size and
softmax log-normaliser per cell), and then timed, each on the same minified AnnData:

* ``model.decode(genes=20 genes)``: hidden layer + 20 rows of the last layer, normalised by the stored
  log-normaliser (O(20) per cell);
* ``model.decode(genes=None)``: the full decode of all 4,000 genes (what the subset replaces);
* ``model.get_normalized_expression(gene_list=20 genes)``: the general path, which decodes all genes and
  then selects the 20 columns.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Minified decoding"


def write_section(results_md: Path, heading: str, body: str) -> None:
    """Replace the section that starts with ``heading`` in RESULTS.md (or append it), keeping the others."""
    text = results_md.read_text() if results_md.exists() else "# Benchmark results\n"
    section = f"{heading}\n\n{body.strip()}\n"
    start = text.find(heading + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + ("" if end < 0 else text[end:])
    tmp = results_md.with_name(f".{results_md.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, results_md)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def simulated_adata(n_cells: int, n_genes: int, seed: int):
    import anndata

    from pybridge.data.synthetic import simulate_nb_blocks

    X = sp.vstack(list(simulate_nb_blocks(n_cells, n_genes, seed=seed, genes_per_type=400, n_types=8)), format="csr")
    adata = anndata.AnnData(X=X)
    adata.var_names = [f"g{i}" for i in range(n_genes)]
    adata.obs_names = [f"c{i}" for i in range(n_cells)]
    return adata


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--genes", type=int, default=4_000)
    parser.add_argument("--subset", type=int, default=20)
    parser.add_argument("--train-cells", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    import pybridge
    from pybridge.data.minified import payload_bytes_per_cell

    train = simulated_adata(args.train_cells, args.genes, seed=1)
    pybridge.SCVI.setup_anndata(train)
    model = pybridge.SCVI(train, n_hidden=128, n_latent=10)
    model.train(max_epochs=2, batch_size=256, accelerator="cpu", progress=False)

    cells = simulated_adata(args.cells, args.genes, seed=2)
    t_minify, minified = timed(lambda: model.minify(cells), 1)
    payload = payload_bytes_per_cell(minified)
    d = model.module.n_latent
    genes = [f"g{i}" for i in np.random.default_rng(0).choice(args.genes, args.subset, replace=False)]

    t_subset, sub = timed(lambda: model.decode(minified, genes=genes), args.repeats)
    t_full, full = timed(lambda: model.decode(minified), max(args.repeats - 1, 1))
    positions = [int(g[1:]) for g in genes]
    max_diff = float(np.abs(full[:, positions] - sub).max())
    del full
    t_general, _ = timed(
        lambda: model.get_normalized_expression(minified, gene_list=genes, return_numpy=True), 1
    )

    rows = [
        (f"decode {args.subset} genes (stored log-normaliser)", t_subset),
        (f"full decode, all {args.genes} genes", t_full),
        (f"get_normalized_expression(gene_list={args.subset} genes) (decodes all, selects)", t_general),
    ]
    lines = [
        (f"{datetime.date.today()}, {machine()}. `bench/minify_bench.py`: {args.cells:,} simulated cells, "
        f"{args.genes:,}-gene scVI (128 hidden, {d} latent), minified in {t_minify:.1f} s; best of "
        f"{args.repeats} runs, chunks of 8,192 cells."),
        "",
        "| decode | seconds | cells/s | speed-up vs full decode |",
        "|---|---:|---:|---:|",
    ]
    for name, seconds in rows:
        lines.append(f"| {name} | {seconds:.3f} | {args.cells / seconds:,.0f} | {t_full / seconds:.1f}x |")
    lines += [
        "",
        (f"- Acceptance (>= 20x faster than a full decode): **{t_full / t_subset:.0f}x** "
        f"({'met' if t_full / t_subset >= 20 else 'NOT met'})."),
        f"- Subset vs the same columns of the full decode: max |difference| {max_diff:.1e}.",
        (f"- Minified payload: {payload:.0f} bytes per cell (float32 mean and variance of z, library size, "
        f"log-normaliser) = 2*d*4 + 8 with d = {d}; the limit is 2*d*4 + 12 = {2 * d * 4 + 12}."),
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section(ROOT / "bench" / "RESULTS.md", HEADING, body)


if __name__ == "__main__":
    main()
