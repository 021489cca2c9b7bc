"""Output calls: O(k) on k cells (issue 9), and at compute speed on 100k cells next to scvi-tools (issue 12).

    .venv/bin/python bench/outputs_bench.py                 # ~8 min on 2 cores; rewrites both sections of RESULTS.md
    .venv/bin/python bench/outputs_bench.py --part speed --no-write            # the 100k comparison only, printed
    PYTHONPATH=OLD_TREE .venv/bin/python bench/outputs_bench.py --part speed --no-scvi-tools --label before --no-write

Simulated Poisson counts (2,000 genes, CSR, a batch column; the density is printed); a 1-epoch scVI on 5,000
of the cells (weights do not matter for speed).

``--part rows``: 400k cells; the latent of the same 500 cells from the 20k-cell and the 400k-cell AnnData (median of
5 calls); the latent of all 100k cells in one call, and in 100 calls of 1,000 cells each.

``--part speed``: 100k cells; the latent, the normalized expression, the likelihood parameters and one posterior
predictive sample of every cell, from pybridge and (the same weights, exported with ``save_scvi_tools``) from
scvi-tools 1.4.2 in its own process (bench/.venv-scvi), each tool at its default batch size; and the floor: the
matrix products of each call (encoder's first layer and heads, decoder's layer and the gene heads the call
reads), timed bare on random inputs in minibatches of 1,024 cells.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]
ROWS_HEADING = "## Output calls on a few cells of a large AnnData"
SPEED_HEADING = "## Output calls on 100k cells: pybridge, scvi-tools and the matrix-product floor"
CALLS = ("latent", "normalized expression", "likelihood parameters", "posterior predictive sample")
REPEATS = {"latent": 3, "normalized expression": 2, "likelihood parameters": 2, "posterior predictive sample": 2}


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


def output_calls(model, adata) -> dict:
    """The four calls, by name, with the same arguments in both tools (defaults otherwise)."""
    return {
        "latent": lambda: model.get_latent_representation(adata),
        "normalized expression": lambda: model.get_normalized_expression(adata, return_numpy=True),
        "likelihood parameters": lambda: model.get_likelihood_parameters(adata),
        "posterior predictive sample": lambda: model.posterior_predictive_sample(adata),
    }


def time_calls(model, adata, repeats: dict[str, int]) -> dict[str, float]:
    calls = output_calls(model, adata)
    return {name: timed(calls[name], repeats[name]) for name in CALLS}


def scvi_tools_worker(workdir: Path, threads: int, repeats: dict[str, int]) -> None:
    """Runs under bench/.venv-scvi: load the exported model and time the same calls."""
    import scvi

    torch.set_num_threads(threads)
    adata = anndata.read_h5ad(workdir / "cells.h5ad")
    model = scvi.model.SCVI.load(str(workdir / "model"), adata=adata, accelerator="cpu")
    (workdir / "scvi_tools.json").write_text(json.dumps(time_calls(model, adata, repeats)))


def floor_times(model, n_cells: int, chunk: int = 1024) -> dict[str, float]:
    """The matrix products of each call, bare: same shapes, random inputs, fresh outputs as in the real call."""
    import torch.nn.functional as F

    module = model.module
    encoder, decoder = module.z_encoder, module.decoder
    first = encoder.encoder.layers[0][0]
    dec_first = decoder.px_decoder.layers[0][0]
    gene_head = torch.randn(module.n_input, first.out_features)
    x = torch.rand(chunk, first.in_features)
    z = torch.randn(chunk, dec_first.in_features)

    def products(n_gene_heads: int) -> None:
        for start in range(0, n_cells, chunk):
            rows = min(chunk, n_cells - start)
            hidden = F.linear(x[:rows], first.weight, first.bias)
            encoder.mean_encoder(hidden), encoder.var_encoder(hidden)
            if n_gene_heads:
                h = F.linear(z[:rows], dec_first.weight, dec_first.bias)
                for _ in range(n_gene_heads):
                    F.linear(h, gene_head)

    with torch.inference_mode():
        heads = {"latent": 0, "normalized expression": 1, "likelihood parameters": 2, "posterior predictive sample": 2}
        return {name: timed(lambda n=n: products(n), 3) for name, n in heads.items()}


def speed_part(args) -> tuple[str, dict]:
    import pybridge

    adata = simulate(100_000)
    density = adata.X.nnz / (adata.n_obs * adata.n_vars)
    pybridge.SCVI.setup_anndata(adata, batch_key="batch")
    model = pybridge.SCVI(adata[:5000].copy())
    model.train(max_epochs=1, progress=False, accelerator="cpu")
    results = {"density": density, "floor": floor_times(model, adata.n_obs)}
    output_calls(model, adata)["latent"]()  # warm: first-touch allocations
    results["pybridge"] = time_calls(model, adata, REPEATS)
    if not args.no_scvi_tools:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            model.save_scvi_tools(workdir / "model")
            plain = anndata.AnnData(X=adata.X, obs=adata.obs[["batch"]].copy(), var=adata.var.copy())
            plain.write_h5ad(workdir / "cells.h5ad")
            command = [args.scvi_python, __file__, "--scvi-tools-worker", tmp, "--threads", str(args.threads)]
            subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": ""})
            results["scvi-tools"] = json.loads((workdir / "scvi_tools.json").read_text())
    return speed_table(results), results


def speed_table(results: dict) -> str:
    scvi_tools = results.get("scvi-tools", {})
    lines = ["| call | pybridge | scvi-tools 1.4.2 | speed-up | floor | pybridge / floor |", "|---|---|---|---|---|---|"]
    for name in CALLS:
        ours, floor = results["pybridge"][name], results["floor"][name]
        theirs = scvi_tools.get(name)
        other = "–" if theirs is None else f"{theirs:.2f} s"
        ratio = "–" if theirs is None else f"{theirs / ours:.1f}×"
        lines.append(f"| {name} | {ours:.2f} s | {other} | {ratio} | {floor:.2f} s | {ours / floor:.1f} |")
    return "\n".join(lines)


def rows_part(args) -> tuple[str, str]:
    import pybridge

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
    line = (f"{args.label} (density {density:.1%}): latent of 500 cells from 20k {t_small:.3f} s, from 400k "
            f"{t_big:.3f} s (ratio {t_big / t_small:.2f}); 100k cells in one call {one:.2f} s, in 100 chunks "
            f"{chunked:.2f} s (ratio {chunked / one:.2f})")
    table = f"""| call | time | ratio |
|---|---|---|
| latent of 500 cells, from a 20k-cell AnnData | {t_small:.3f} s | 1 |
| latent of the same 500 cells, from a 400k-cell AnnData | {t_big:.3f} s | {t_big / t_small:.2f} |
| latent of 100k cells, one call | {one:.2f} s | 1 |
| latent of 100k cells, 100 calls of 1,000 cells | {chunked:.2f} s | {chunked / one:.2f} |"""
    return line, f"(counts {density:.1%} non-zero), this code:\n\n{table}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("rows", "speed", "all"), default="all")
    parser.add_argument("--label", default="after")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--no-scvi-tools", action="store_true")
    parser.add_argument("--scvi-python", default=str(ROOT / "bench" / ".venv-scvi" / "bin" / "python"))
    parser.add_argument("--scvi-tools-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scvi_tools_worker:
        scvi_tools_worker(Path(args.scvi_tools_worker), args.threads, REPEATS)
        return
    sys.path.insert(0, str(ROOT / "bench"))
    from minify_bench import machine, write_section

    torch.set_num_threads(args.threads)
    load = f"load average {os.getloadavg()[0]:.2f} at the start"
    if args.part in ("speed", "all"):
        table, results = speed_part(args)
        print(f"{args.label} ({load}, counts {results['density']:.1%} non-zero):\n{table}")
        if not args.no_write:
            write_section(ROOT / "bench" / "RESULTS.md", SPEED_HEADING, f"""Measured {machine()} with
`bench/outputs_bench.py --part speed` ({load}): 100k simulated cells × 2,000 genes ({results['density']:.1%}
non-zero), a zinb scVI (128 hidden units, 10 latent dimensions), each call on every cell at each tool's default
batch size (pybridge 4,096 for the latent, which reads sparse counts straight into one sparse product, and 1,024
for the others; scvi-tools 128); median of 3 calls for the latent, 2 for the others. The floor is
the call's matrix products alone, timed bare.

{table}
""")
    if args.part in ("rows", "all"):
        line, body = rows_part(args)
        print(line)
        if not args.no_write:
            write_section(ROOT / "bench" / "RESULTS.md", ROWS_HEADING,
                          f"Measured {machine()} with `bench/outputs_bench.py --part rows` {body}")


if __name__ == "__main__":
    main()
