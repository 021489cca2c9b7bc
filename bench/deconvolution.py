"""Spatial deconvolution benchmark: pybridge DestVI (batch-size rule and 128) vs NNLS vs scvi-tools 1.4.2.

Pseudo-spots (2-10 cells, Dirichlet(1) compositions, UMIs thinned towards N(20000, 5000)) from the labelled
single-cell files in ../shared/data; the reference is the other half of each cell type's cells. The same
reference and spots go to every method; scvi-tools runs in bench/.venv-scvi through
bench/deconvolution_scvi.py with the same epochs, learning rate, KL warm-up, batch sizes and VampPrior size.

    .venv/bin/python bench/deconvolution.py               # full run, rewrites the section in bench/RESULTS.md
    .venv/bin/python bench/deconvolution.py --no-scvi --sizes 60 --st-epochs 50 --no-write   # smoke run
    # one dataset per process (2 cores), then one table:
    .venv/bin/python bench/deconvolution.py --datasets cbmc_rna --no-write --json-out /tmp/cbmc.json
    .venv/bin/python bench/deconvolution.py --combine /tmp/zeisel.json /tmp/cbmc.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from pybridge.deconvolution.baselines import nnls_proportions
from pybridge.deconvolution.metrics import accuracy_score, deconvolution_metrics, summarize_metrics
from pybridge.deconvolution.simulate import pseudo_spots
from pybridge.models.condscvi import CondSCVI
from pybridge.models.destvi import DestVI, default_batch_size

BENCH = Path(__file__).resolve().parent
DATA = BENCH.parent.parent / "shared" / "data"
SCVI_PYTHON = BENCH / ".venv-scvi" / "bin" / "python"
RESULTS = BENCH / "RESULTS.md"
SECTION = "## Spatial deconvolution"
COLUMNS = ["celltype_pearson", "celltype_rmse", "celltype_ssim", "celltype_js_divergence", "celltype_aupr",
           "spot_pearson", "spot_rmse"]


def top_variable_genes(adata: ad.AnnData, n_genes: int) -> list[str]:
    """Genes with the highest variance of log1p(counts per 10k); all genes when there are fewer."""
    if adata.n_vars <= n_genes:
        return list(adata.var_names)
    X = sp.csr_matrix(adata.X, dtype=np.float64)
    norm = sp.diags(1e4 / np.asarray(X.sum(1)).ravel()) @ X
    norm.data = np.log1p(norm.data)
    mean = np.asarray(norm.mean(0)).ravel()
    var = np.asarray(norm.multiply(norm).mean(0)).ravel() - mean**2
    return list(adata.var_names[np.sort(np.argsort(-var)[:n_genes])])


def reference_libraries(reference: ad.AnnData) -> pd.Series:
    """Mean total count of each cell type's reference cells."""
    totals = pd.Series(np.asarray(reference.X.sum(1)).ravel(), index=reference.obs_names)
    return totals.groupby(reference.obs["cell_type"].astype(str).to_numpy()).mean()


def to_cell_fractions(shares: pd.DataFrame, libraries: pd.Series) -> pd.DataFrame:
    """Expression shares -> cell shares: divide by each type's mean reference library, renormalise."""
    cells = shares / libraries.loc[shares.columns].to_numpy()[None, :]
    return cells.div(cells.sum(1), axis=0)


def scvi_available() -> bool:
    if not SCVI_PYTHON.exists():
        return False
    return subprocess.run([str(SCVI_PYTHON), "-c", "import scvi"], capture_output=True, check=False).returncode == 0


def run_dataset(name: str, args: argparse.Namespace, use_scvi: bool) -> list[dict]:
    cells = ad.read_h5ad(DATA / f"{name}.h5ad")
    genes = top_variable_genes(cells, args.n_genes)
    cells = cells[:, genes].copy()
    spot_sets = {}
    for n in args.sizes:
        spots, reference = pseudo_spots(cells, "cell_type", n_spots=n, target_umi=(20000, 5000), seed=args.seed)
        spots = spots[np.asarray(spots.X.sum(1)).ravel() > 0].copy()
        del spots.obsm["cell_membership"]
        spot_sets[n] = spots
    rows: list[dict] = []
    truths = {n: s.obsm["proportions"] for n, s in spot_sets.items()}

    def record(n, method, batch, seconds, pred):
        summary = summarize_metrics(deconvolution_metrics(truths[n], pred))
        rows.append({"dataset": name, "n_spots": n, "method": method, "batch_size": batch, "train_s": seconds,
                     **summary[COLUMNS].to_dict()})
        print(f"{name} n={n} {method} batch={batch}: pearson {summary['celltype_pearson']:.3f} rmse "
              f"{summary['celltype_rmse']:.4f} ({seconds:.0f}s)", flush=True)

    runs = []
    for n in args.sizes:
        epochs = args.st_epochs if n < 1000 else args.large_epochs
        for batch in dict.fromkeys([default_batch_size(n), 128]):
            runs.append({"n_spots": n, "batch_size": batch, "epochs": epochs})
    paper_runs = [{"n_spots": n, "batch_size": default_batch_size(n), "epochs": args.st_epochs}
                  for n in args.sizes if n < 1000]
    libraries = reference_libraries(reference)

    with tempfile.TemporaryDirectory(prefix="deconv_bench_") as tmp:
        work = Path(tmp)
        scvi_proc = None
        if use_scvi:
            reference.write_h5ad(work / "reference.h5ad")
            for n, spots in spot_sets.items():
                spots.write_h5ad(work / f"spots_{n}.h5ad")
            tasks = {"labels_key": "cell_type", "sc_epochs": args.sc_epochs,
                     "lr": args.lr, "n_epochs_kl_warmup": args.kl_warmup, "vamp_prior_p": 15, "seed": args.seed,
                     "threads": args.threads, "runs": runs}
            (work / "scvi_tasks.json").write_text(json.dumps(tasks))

        ref = reference.copy()
        CondSCVI.setup_anndata(ref, labels_key="cell_type")
        sc_model = CondSCVI(ref)
        start = time.perf_counter()
        sc_model.train(max_epochs=args.sc_epochs, seed=args.seed, progress=False)
        rows.append({"dataset": name, "n_spots": None, "method": "pybridge CondSCVI", "batch_size": 128,
                     "train_s": time.perf_counter() - start})
        variants = [("pybridge DestVI", None, run) for run in runs]
        variants += [("pybridge DestVI (paper objective)", 0.0, run) for run in paper_runs]
        for method, augmentation_weight, run in variants:
            n, batch = run["n_spots"], run["batch_size"]
            spots = spot_sets[n].copy()
            DestVI.setup_anndata(spots)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = DestVI.from_rna_model(spots, sc_model, vamp_prior_p=15,
                                              augmentation_weight=augmentation_weight)
                start = time.perf_counter()
                model.train(max_epochs=run["epochs"], lr=args.lr, batch_size=batch,
                            n_epochs_kl_warmup=args.kl_warmup, seed=args.seed, progress=False)
            record(n, method, batch, time.perf_counter() - start, model.get_proportions(cell_fractions=True))
        for n in args.sizes:
            start = time.perf_counter()
            pred = nnls_proportions(spot_sets[n], reference, "cell_type")
            record(n, "NNLS", None, time.perf_counter() - start, pred)

        if use_scvi:
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
            scvi_proc = subprocess.run([str(SCVI_PYTHON), str(BENCH / "deconvolution_scvi.py"), "--workdir", tmp],
                                       env=env, capture_output=True, text=True, check=False)
            if scvi_proc.returncode != 0:
                print(scvi_proc.stderr[-3000:], file=sys.stderr)
            timings_file = work / "scvi_timings.json"
            timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
            if "condscvi" in timings:
                rows.append({"dataset": name, "n_spots": None, "method": "scvi-tools CondSCVI", "batch_size": 128,
                             "train_s": timings["condscvi"]})
            for run in runs:
                key = f"{run['n_spots']}_{run['batch_size']}"
                csv = work / f"scvi_{key}.csv"
                if csv.exists():
                    shares = pd.read_csv(csv, index_col=0)
                    record(run["n_spots"], "scvi-tools DestVI", run["batch_size"], timings[key],
                           to_cell_fractions(shares, libraries))
    return rows


def add_accuracy_scores(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table["accuracy_score"] = np.nan
    scored = table["n_spots"].notna()
    for _, group in table[scored].groupby(["dataset", "n_spots"]):
        labels = group["method"] + " " + group["batch_size"].astype(str)
        summaries = group[COLUMNS].set_axis(labels.to_numpy())
        table.loc[group.index, "accuracy_score"] = accuracy_score(summaries).to_numpy()
    return table


def markdown(table: pd.DataFrame, args: argparse.Namespace, use_scvi: bool) -> str:
    shown = table.copy()
    shown["n_spots"] = shown["n_spots"].map(lambda v: "reference" if pd.isna(v) else str(int(v)))
    shown["batch_size"] = shown["batch_size"].map(lambda v: "-" if pd.isna(v) else str(int(v)))
    for column in [*COLUMNS, "accuracy_score"]:
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    shown["train_s"] = shown["train_s"].map(lambda v: f"{v:.1f}")
    header = "| " + " | ".join(shown.columns) + " |"
    lines = [header, "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in shown.itertuples(index=False)]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    settings = (
        f"Run {now} on {platform.machine()} CPU ({os.cpu_count()} cores, torch threads {args.threads}, shared "
        f"with other jobs), `bench/deconvolution.py {' '.join(sys.argv[1:])}`. Pseudo-spots: 2-10 cells, "
        f"Dirichlet(1) compositions, UMIs thinned towards N(20000, 5000), seed {args.seed}; reference = the other "
        f"half of every cell type's cells; top {args.n_genes} variable genes. Both tools: CondSCVI "
        f"{args.sc_epochs} epochs (lr 1e-3, batch 128), DestVI {args.st_epochs} epochs below 1000 spots and "
        f"{args.large_epochs} at 2000 spots (the reference's 2000-2500 epochs do not fit the shared 2-core machine), lr {args.lr}, KL warm-up "
        f"{args.kl_warmup} epochs, VampPrior p = 15, amortization 'both'. pybridge DestVI uses its default "
        f"synthetic-spot supervision (weight 1000, compositions ~ Dirichlet(0.1)); 'paper objective' rows set "
        f"augmentation_weight=0; scvi-tools runs with its own defaults (augmentation on). Batch size: the rule "
        f"min(128, max(4, n_spots // 10)) and 128 (at 2000 spots both are 128). DestVI weights (shares of expression) are turned into shares of cells for both tools by "
        f"dividing by each type's mean reference library and renormalising (`get_proportions(cell_fractions=True)`). "
        f"Metrics: means over cell types "
        f"(celltype_*) or spots (spot_*) of `pybridge.deconvolution.deconvolution_metrics`; accuracy_score ranks the "
        f"methods within each dataset and spot count (1 = best on every metric). train_s = training wall time."
    )
    if not use_scvi:
        settings += " scvi-tools was not available in this run."
    return "\n".join([SECTION, "", settings, "", *lines, ""])


def write_section(text: str) -> None:
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + (old[end + 1 :] if end >= 0 else "")
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(new)
    os.replace(tmp, RESULTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["zeisel_cortex", "cbmc_rna"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[60, 200, 2000])
    parser.add_argument("--n-genes", type=int, default=500)
    parser.add_argument("--sc-epochs", type=int, default=60)
    parser.add_argument("--st-epochs", type=int, default=300, help="DestVI epochs below 1000 spots")
    parser.add_argument("--large-epochs", type=int, default=200, help="DestVI epochs from 1000 spots")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--kl-warmup", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-scvi", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                        help="write one table from the --json-out files of earlier runs (same settings)")
    args = parser.parse_args()
    if args.combine:
        rows = [row for path in args.combine for row in json.loads(Path(path).read_text())]
        table = add_accuracy_scores(pd.DataFrame(rows).drop(columns="accuracy_score"))
        write_section(markdown(table, args, use_scvi="scvi-tools DestVI" in set(table["method"])))
        return
    torch.set_num_threads(args.threads)
    use_scvi = not args.no_scvi and scvi_available()
    rows = []
    for name in args.datasets:
        rows += run_dataset(name, args, use_scvi)
    table = add_accuracy_scores(pd.DataFrame(rows))
    print(table.to_string())
    if args.json_out:
        table.to_json(args.json_out, orient="records", indent=1)
    if not args.no_write:
        write_section(markdown(table, args, use_scvi))


if __name__ == "__main__":
    main()
