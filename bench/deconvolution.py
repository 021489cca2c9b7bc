"""Spatial deconvolution benchmark: pybridge DestVI vs cell2location 0.1.5 vs scvi-tools 1.4.2 DestVI vs NNLS.

Silver standards as in the Spotless benchmark (Sang-aram et al. 2024): `pseudo_spots(mode="spotless")` with its
eight abundance patterns (2-10 cells per spot, 5 regions, spots above 25,000 UMIs downsampled to
N(20000, 5000)), built from the labelled single-cell files in ../shared/data. The reference is the other half
of every cell type's cells and is the same for every pattern and spot count of a dataset. The pattern
"dirichlet" gives the older standard (`mode="random"`, Dirichlet(1) compositions).

Every method sees the same reference, spots and genes. cell2location runs in bench/.venv-c2l
(bench/setup_c2l_venv.sh) through bench/deconvolution_c2l.py and scvi-tools in bench/.venv-scvi through
bench/deconvolution_scvi.py, each in its own process with one thread, beside pybridge and NNLS in this one.

Results go to --workdir, one file per method and setting, and a rerun with the same --workdir skips what is
there: a long run can be stopped and resumed, and methods can be added later. --report reads the workdir and
writes the section of bench/RESULTS.md.

    .venv/bin/python bench/deconvolution.py --datasets zeisel_cortex --sizes 60 200   # runs, then reports
    .venv/bin/python bench/deconvolution.py --patterns diverse_overlap --sizes 60 --st-epochs 30 \\
        --c2l-epochs 200 --workdir /tmp/smoke --no-write                            # smoke run
    .venv/bin/python bench/deconvolution.py --report                                 # table from the workdir
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from minify_bench import write_section

from pybridge.deconvolution.baselines import nnls_proportions
from pybridge.deconvolution.metrics import deconvolution_metrics, summarize_metrics
from pybridge.deconvolution.pipeline import SC_MAX_EPOCHS
from pybridge.deconvolution.simulate import SPOTLESS_PATTERNS, pseudo_spots
from pybridge.models.condscvi import CondSCVI
from pybridge.models.destvi import DEFAULT_MAX_STEPS, DestVI, default_batch_size

BENCH = Path(__file__).resolve().parent
DATA = BENCH.parent.parent / "shared" / "data"
PEERS = {
    "scvi-tools DestVI": (BENCH / ".venv-scvi" / "bin" / "python", BENCH / "deconvolution_scvi.py", "scvi"),
    "cell2location": (BENCH / ".venv-c2l" / "bin" / "python", BENCH / "deconvolution_c2l.py", "c2l"),
}
METHODS = ("pybridge DestVI", "cell2location", "scvi-tools DestVI", "NNLS")
ENSEMBLE = "pybridge DestVI ensemble"
COLUMNS = ("pybridge DestVI", ENSEMBLE, "cell2location", "scvi-tools DestVI", "NNLS")
PATTERNS = (*SPOTLESS_PATTERNS, "dirichlet")
RESULTS = BENCH / "RESULTS.md"
SECTION = "## Spatial deconvolution: Spotless silver standards"
SHOWN = ["celltype_pearson", "celltype_rmse", "celltype_js_divergence", "celltype_aupr"]


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


def to_cell_fractions(shares: pd.DataFrame, reference: ad.AnnData) -> pd.DataFrame:
    """Expression shares -> cell shares: divide by each type's mean reference library, renormalise."""
    totals = pd.Series(np.asarray(reference.X.sum(1)).ravel(), index=reference.obs_names)
    libraries = totals.groupby(reference.obs["cell_type"].astype(str).to_numpy()).mean()
    cells = shares / libraries.loc[shares.columns].to_numpy()[None, :]
    return cells.div(cells.sum(1), axis=0)


def prepare(name: str, args: argparse.Namespace, work: Path) -> list[dict]:
    """Write the reference and every (pattern, size) spot set of one dataset; return the settings."""
    work.mkdir(parents=True, exist_ok=True)
    cells = ad.read_h5ad(DATA / f"{name}.h5ad")
    cells = cells[:, top_variable_genes(cells, args.n_genes)].copy()
    settings = []
    for n in args.sizes:
        for pattern in args.patterns:
            key = f"{pattern}_{n}"
            path = work / f"spots_{key}.h5ad"
            if not path.exists():
                mode = "random" if pattern == "dirichlet" else "spotless"
                kwargs = {} if pattern == "dirichlet" else {"pattern": pattern}
                spots, reference = pseudo_spots(cells, "cell_type", n_spots=n, mode=mode,
                                                target_umi=(20000, 5000), seed=args.seed, **kwargs)
                spots = spots[np.asarray(spots.X.sum(1)).ravel() > 0].copy()
                spots.obsm["proportions"].to_csv(work / f"truth_{key}.csv")
                del spots.obsm["cell_membership"], spots.obsm["proportions"], spots.obsm["umi_proportions"]
                spots.uns = {}
                spots.write_h5ad(path)
                if not (work / "reference.h5ad").exists():
                    reference.write_h5ad(work / "reference.h5ad")
            n_cells = float(ad.read_h5ad(path, backed="r").obs["n_cells"].mean())
            # scvi-tools DestVI's schedule (pybridge trains with its own defaults unless --st-epochs is given)
            settings.append({"key": key, "pattern": pattern, "n_spots": n, "file": path.name,
                             "n_cells_per_location": n_cells, "batch_size": default_batch_size(n),
                             "epochs": args.scvi_epochs if n < 1000 else args.scvi_large_epochs,
                             "kl_warmup": args.scvi_kl_warmup})
    return settings


def done(work: Path, tag: str, key: str) -> bool:
    return (work / f"{tag}_{key}.csv").exists()


def seeded_key(key: str, seed: int, first_seed: int) -> str:
    """The result name of a pybridge DestVI run: the setting's key for the first seed, ``key_seedN`` after."""
    return key if seed == first_seed else f"{key}_seed{seed}"


def read_timings(work: Path, tag: str) -> dict[str, float]:
    """One method's training times by setting key ({} before its first result)."""
    path = work / f"{tag}_timings.json"
    return json.loads(path.read_text()) if path.exists() else {}


def record_timing(work: Path, tag: str, key: str, seconds: float) -> None:
    timings = read_timings(work, tag)
    timings[key] = seconds
    (work / f"{tag}_timings.json").write_text(json.dumps(timings))


def start_peer(method: str, settings: list[dict], args: argparse.Namespace, work: Path):
    """Start a peer's worker process on the settings it has not finished; None when there is nothing to do."""
    python, script, tag = PEERS[method]
    runs = [s for s in settings if not done(work, tag, s["key"])]
    if not runs or not python.exists():
        if runs:
            print(f"{method}: {python} is missing, skipped (see {script.name})", file=sys.stderr)
        return None
    tasks = {"labels_key": "cell_type", "seed": args.seed, "threads": 1, "runs": runs,
             "sc_epochs": args.sc_epochs, "lr": args.lr, "vamp_prior_p": 15,
             "ref_epochs": args.c2l_ref_epochs, "st_epochs": args.c2l_epochs}
    (work / f"{tag}_tasks.json").write_text(json.dumps(tasks))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log = open(work / f"{tag}.log", "a")  # noqa: SIM115 - closed with the process by the caller
    return subprocess.Popen([str(python), str(script), "--workdir", str(work)], env=env, stdout=log, stderr=log)


def run_pybridge(settings: list[dict], args: argparse.Namespace, work: Path) -> None:
    """pybridge CondSCVI (once per dataset) and DestVI on every unfinished setting and training seed (the same
    spots and reference model), then NNLS."""
    seeds = range(args.seed, args.seed + args.destvi_seeds)
    todo = [(s, seed) for s in settings for seed in seeds
            if not done(work, "pybridge", seeded_key(s["key"], seed, args.seed))]
    reference = ad.read_h5ad(work / "reference.h5ad")
    if todo:
        ref = reference.copy()
        CondSCVI.setup_anndata(ref, labels_key="cell_type")
        sc_model = CondSCVI(ref)
        start = time.perf_counter()
        sc_model.train(max_epochs=args.sc_epochs, seed=args.seed, progress=False)
        record_timing(work, "pybridge", "reference", time.perf_counter() - start)
    for setting, seed in todo:
        name = seeded_key(setting["key"], seed, args.seed)
        spots = ad.read_h5ad(work / setting["file"])
        DestVI.setup_anndata(spots)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # run_destvi's model and training defaults, but for cells_per_spot and the bench's overrides
            model = DestVI.from_rna_model(spots, sc_model, cells_per_spot=setting["n_cells_per_location"])
            start = time.perf_counter()
            model.train(max_epochs=args.st_epochs, lr=args.lr, n_epochs_kl_warmup=args.kl_warmup, seed=seed,
                        progress=False)
        record_timing(work, "pybridge", name, time.perf_counter() - start)
        model.get_proportions(cell_fractions=True).to_csv(work / f"pybridge_{name}.csv")
        print(f"{work.name} {name}: pybridge DestVI done", flush=True)
    for setting in settings:
        if done(work, "nnls", setting["key"]):
            continue
        spots = ad.read_h5ad(work / setting["file"])
        start = time.perf_counter()
        pred = nnls_proportions(spots, reference, "cell_type")
        record_timing(work, "nnls", setting["key"], time.perf_counter() - start)
        pred.to_csv(work / f"nnls_{setting['key']}.csv")


def run_dataset(name: str, args: argparse.Namespace) -> None:
    work = Path(args.workdir) / name
    settings = prepare(name, args, work)
    peers = [start_peer("cell2location", settings, args, work)] if "cell2location" in args.methods else []
    if "pybridge DestVI" in args.methods:
        run_pybridge(settings, args, work)
    if "scvi-tools DestVI" in args.methods:
        peers.append(start_peer("scvi-tools DestVI", settings, args, work))
    for proc in filter(None, peers):
        if proc.wait() != 0:
            print(f"{proc.args[1]} exited with {proc.returncode}; see the .log files in {work}", file=sys.stderr)


def collect(workdir: Path) -> pd.DataFrame:
    """One row per dataset, setting and method with the summary metrics and the training time."""
    tags = {"pybridge DestVI": "pybridge", "cell2location": "c2l", "scvi-tools DestVI": "scvi", "NNLS": "nnls"}
    rows = []
    for work in sorted(p for p in workdir.iterdir() if (p / "reference.h5ad").exists()):
        reference = None
        timings_of = {tag: read_timings(work, tag) for tag in tags.values()}
        for truth_file in sorted(work.glob("truth_*.csv")):
            key = truth_file.stem.removeprefix("truth_")
            pattern, n_spots = key.rsplit("_", 1)
            truth = pd.read_csv(truth_file, index_col=0)
            for method, tag in tags.items():
                paths = [work / f"{tag}_{key}.csv", *sorted(work.glob(f"{tag}_{key}_seed*.csv"))]
                runs, preds = [], []
                for path in filter(Path.exists, paths):
                    pred = pd.read_csv(path, index_col=0)
                    if method == "scvi-tools DestVI":
                        reference = reference if reference is not None else ad.read_h5ad(work / "reference.h5ad")
                        pred = to_cell_fractions(pred, reference)
                    preds.append(pred)
                    summary = summarize_metrics(deconvolution_metrics(truth, pred.loc[truth.index]))
                    runs.append({**summary[SHOWN].to_dict(), "train_s": timings_of[tag].get(path.stem[len(tag) + 1:])})
                if runs:
                    setting = {"dataset": work.name, "pattern": pattern, "n_spots": int(n_spots)}
                    table = pd.DataFrame(runs).astype(float)
                    rows.append({**setting, "method": method, "n_runs": len(runs), **table.mean().to_dict(),
                                 **table[SHOWN].std(ddof=1).add_suffix("_sd").to_dict()})
                if method == "pybridge DestVI" and len(runs) > 1:
                    # what run_destvi(n_models=len(runs)) reports: the mean of the models' proportions
                    mean = sum(preds) / len(preds)
                    summary = summarize_metrics(deconvolution_metrics(truth, mean.loc[truth.index]))
                    rows.append({**setting, "method": ENSEMBLE, "n_runs": len(runs), **summary[SHOWN].to_dict(),
                                 "train_s": table["train_s"].sum(), "ensemble": True})
    return pd.DataFrame(rows)


def wins(table: pd.DataFrame, method: str = "pybridge DestVI") -> pd.DataFrame:
    """Per setting: does ``method`` (DestVI: its mean over training seeds) have Pearson >= and RMSE <=
    cell2location's?"""
    wide = table.pivot_table(index=["dataset", "pattern", "n_spots"], columns="method",
                             values=["celltype_pearson", "celltype_rmse"])
    pair = [("celltype_pearson", method), ("celltype_pearson", "cell2location")]
    if not all(column in wide.columns for column in pair):
        return pd.DataFrame(columns=["pearson_win", "rmse_win"])
    both = wide.dropna(subset=pair)
    return pd.DataFrame({
        "pearson_win": both[("celltype_pearson", method)] >= both[("celltype_pearson", "cell2location")],
        "rmse_win": both[("celltype_rmse", method)] <= both[("celltype_rmse", "cell2location")],
    })


def _cell(row: pd.Series) -> str:
    """"Pearson / RMSE / seconds" of one method and setting; over several training seeds, mean ± sd (n)."""
    if row.get("ensemble") is True:
        return "{:.3f} / {:.3f} / {:.0f} ({:.0f} models)".format(
            *row[["celltype_pearson", "celltype_rmse", "train_s", "n_runs"]])
    if row["n_runs"] < 2:
        return "{:.3f} / {:.3f} / {:.0f}".format(*row[["celltype_pearson", "celltype_rmse", "train_s"]])
    return "{:.3f}±{:.3f} / {:.3f}±{:.3f} / {:.0f} ({:.0f} seeds)".format(
        *row[["celltype_pearson", "celltype_pearson_sd", "celltype_rmse", "celltype_rmse_sd", "train_s", "n_runs"]])


def markdown(table: pd.DataFrame, args: argparse.Namespace) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [(
        f"Report written {now} from the workdir of `bench/deconvolution.py` on {platform.machine()} CPU "
        f"({os.cpu_count()} cores; each method one thread; pybridge/NNLS, scvi-tools and cell2location ran in "
        f"separate processes at the same time, so train_s is each method's own wall time on a shared machine). "
        f"Standards: `pseudo_spots(mode='spotless')` (5 regions, 2-10 cells per spot, spots above 25,000 UMIs "
        f"downsampled to N(20000, 5000)), seed {args.seed}, top {args.n_genes} variable genes; the reference is "
        f"the other half of every type's cells. pybridge DestVI: what `run_destvi` does by default "
        f"(CondSCVI {args.sc_epochs} epochs; DestVI "
        f"{f'its schedule of {DEFAULT_MAX_STEPS:,} optimizer steps' if args.st_epochs is None else f'{args.st_epochs} epochs'}, "
        f"batch min(128, max(4, n/10)), lr {args.lr}, KL warm-up "
        f"{'a tenth of the epochs' if args.kl_warmup is None else f'{args.kl_warmup} epochs'}, synthetic spots "
        f"summed from reference cells), with cells_per_spot = the spots' mean number of cells (as "
        f"cell2location's N_cells_per_location); scvi-tools DestVI: CondSCVI {args.sc_epochs} epochs, DestVI "
        f"{args.scvi_epochs} epochs below 1,000 spots and {args.scvi_large_epochs} from 1,000 (3,000-3,200 steps; "
        f"its default is 2,000 epochs of 128 spots), the same minibatch size, KL warm-up {args.scvi_kl_warmup}, its "
        f"own defaults otherwise (MoG prior on CondSCVI); several pybridge DestVI training seeds on "
        f"the same spots and reference model (--destvi-seeds) show as mean±sd and are compared by their mean; "
        f"'pybridge DestVI ensemble' scores the mean of those models' proportions, what "
        f"`run_destvi(n_models=N)` (R: `n_models`) "
        f"reports, with their summed train time; cell2location 0.1.5: reference regression "
        f"{args.c2l_ref_epochs} epochs, spatial model {args.c2l_epochs} full-batch epochs, N_cells_per_location "
        f"= the spots' mean number of cells, detection_alpha 20, proportions = posterior mean abundances "
        f"normalised per spot. Metrics: means over cell types of `pybridge.evaluate.deconvolution_metrics` on "
        f"cell fractions (DestVI expression shares divided by each type's mean reference library)."), ""]
    if table.empty:
        return "\n".join([*lines, "No results in the workdir yet.", ""])
    for method in ("pybridge DestVI", ENSEMBLE):
        verdict = wins(table, method)
        if len(verdict):
            n_both = int((verdict["pearson_win"] & verdict["rmse_win"]).sum())
            lines += [(f"{method} vs cell2location: Pearson >= and RMSE <= on {n_both} of {len(verdict)} "
                       f"settings (Pearson alone {int(verdict['pearson_win'].sum())}, RMSE alone "
                       f"{int(verdict['rmse_win'].sum())})."), ""]
    for (dataset, n_spots), group in table.groupby(["dataset", "n_spots"]):
        lines += [f"### {dataset}, {n_spots} spots", "",
                  "| pattern | " + " | ".join(f"{m} Pearson / RMSE / s" for m in COLUMNS) + " |",
                  "|---|" + "---|" * len(COLUMNS)]
        for pattern in [p for p in PATTERNS if p in set(group["pattern"])]:
            rows = group[group["pattern"] == pattern]
            cells = []
            for method in COLUMNS:
                row = rows[rows["method"] == method]
                cells.append("" if row.empty else _cell(row.iloc[0]))
            lines.append(f"| {pattern} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["zeisel_cortex", "cbmc_rna", "pbmc68k_small"])
    parser.add_argument("--patterns", nargs="+", default=list(SPOTLESS_PATTERNS), choices=PATTERNS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[60, 200, 2000])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--workdir", default=str(BENCH / ".deconvolution-runs"))
    parser.add_argument("--n-genes", type=int, default=500)
    parser.add_argument("--sc-epochs", type=int, default=SC_MAX_EPOCHS,
                        help=f"CondSCVI epochs (default {SC_MAX_EPOCHS}, run_destvi's)")
    parser.add_argument("--st-epochs", type=int, default=None,
                        help="DestVI epochs (default: DestVI's schedule of optimizer steps)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--kl-warmup", type=int, default=None,
                        help="DestVI KL warm-up epochs (default: DestVI's, a tenth of the epochs)")
    parser.add_argument("--scvi-epochs", type=int, default=300, help="scvi-tools DestVI epochs below 1000 spots")
    parser.add_argument("--scvi-large-epochs", type=int, default=200, help="scvi-tools DestVI epochs from 1000 spots")
    parser.add_argument("--scvi-kl-warmup", type=int, default=50, help="scvi-tools DestVI KL warm-up epochs")
    parser.add_argument("--c2l-ref-epochs", type=int, default=250, help="cell2location reference model epochs")
    parser.add_argument("--c2l-epochs", type=int, default=30000, help="cell2location spatial model epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--destvi-seeds", type=int, default=1,
                        help="pybridge DestVI training seeds per setting (seed, seed+1, ...; same spots and reference)")
    parser.add_argument("--report", action="store_true", help="only write the table from the workdir")
    parser.add_argument("--no-write", action="store_true", help="print the table instead of writing RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.report:
        for name in args.datasets:
            run_dataset(name, args)
    text = markdown(collect(Path(args.workdir)), args)
    print(text) if args.no_write else write_section(RESULTS, SECTION, text)


if __name__ == "__main__":
    main()
