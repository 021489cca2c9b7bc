"""Visium HD scale: deconvolution of 100,000 spots x 2,000 genes with a 10,000-cell reference, on this machine.

Simulated, so that the truth is known: 60,000 negative-binomial cells of 10 types (``simulate_nb_blocks``, 600
expressed genes per type, seed 0); ``pseudo_spots(mode="grid")`` sums 1-3 of them per spot (16 um bins hold
about that many cells) with each type's abundance a smooth bump over the grid, and keeps a sixth of every
type's cells (10,000) as the reference. Inputs are written once to bench/.visium-hd/.

Each method runs in its own process so that its peak RSS (VmHWM) is its own: pybridge CondSCVI + DestVI with
their default schedules and ``get_proportions``; NNLS; cell2location 0.1.5 (bench/.venv-c2l) for
``--c2l-epochs`` full-batch epochs, from which the time of its default 30,000 is extrapolated.

    .venv/bin/python bench/visium_hd.py                        # all methods, rewrites the RESULTS.md section
    .venv/bin/python bench/visium_hd.py --n-spots 3000 --n-cells 12000 --destvi-steps 200 --c2l-epochs 3 \
        --no-write                                             # quick check
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
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from minify_bench import write_section

from pybridge.data.synthetic import simulate_nb_blocks
from pybridge.deconvolution.simulate import pseudo_spots

BENCH = Path(__file__).resolve().parent
SECTION = "## Visium HD scale deconvolution"
C2L_PYTHON = BENCH / ".venv-c2l" / "bin" / "python"

WORKER = """
import json, sys, time, warnings
sys.path.insert(0, "bench")
import torch
torch.set_num_threads(int(sys.argv[3]))
from peak_rss import peak_rss_mib
import anndata as ad, numpy as np, pandas as pd
from pybridge.deconvolution.metrics import deconvolution_metrics, summarize_metrics
work, method = sys.argv[1], sys.argv[2]
warnings.simplefilter("ignore")
start = time.perf_counter()
spots = ad.read_h5ad(f"{work}/spots.h5ad")
reference = ad.read_h5ad(f"{work}/reference.h5ad")
times = {"read_s": time.perf_counter() - start}
if method == "pybridge":
    from pybridge.deconvolution.pipeline import SC_MAX_EPOCHS
    from pybridge.models.condscvi import CondSCVI
    from pybridge.models.destvi import DestVI
    CondSCVI.setup_anndata(reference, labels_key="cell_type")
    sc_model = CondSCVI(reference)
    start = time.perf_counter()
    sc_model.train(max_epochs=SC_MAX_EPOCHS, progress=False)  # run_destvi's
    times["condscvi_s"] = time.perf_counter() - start
    DestVI.setup_anndata(spots)
    # the spots' mean number of cells, as cell2location's N_cells_per_location below
    model = DestVI.from_rna_model(spots, sc_model, cells_per_spot=float(spots.obs["n_cells"].mean()))
    truth = pd.read_csv(f"{work}/truth.csv", index_col=0)
    probe = truth.index[::10]
    curve, paused = [], [0.0]

    def accuracy_so_far(epoch, max_epochs, record):
        # Pearson on every 10th spot after a few epochs; the time it takes is excluded from destvi_s
        if epoch in (1, 2, 4, 8, 16) or epoch == max_epochs:
            tick = time.perf_counter()
            pred = model.get_proportions(indices=np.flatnonzero(truth.index.isin(probe)), cell_fractions=True)
            score = summarize_metrics(deconvolution_metrics(truth.loc[probe], pred))
            curve.append([epoch, round(float(score["celltype_pearson"]), 4)])
            paused[0] += time.perf_counter() - tick

    start = time.perf_counter()
    model.train(progress=accuracy_so_far, max_steps=int(sys.argv[4]) if sys.argv[4] != "default" else None)
    times["destvi_s"] = time.perf_counter() - start - paused[0]
    times["pearson_by_epoch"] = curve
    times["destvi_epochs"] = len(model.history["elbo_train"])
    start = time.perf_counter()
    pred = model.get_proportions(cell_fractions=True)
    times["proportions_s"] = time.perf_counter() - start
else:
    from pybridge.deconvolution.baselines import nnls_proportions
    start = time.perf_counter()
    pred = nnls_proportions(spots, reference, "cell_type")
    times["nnls_s"] = time.perf_counter() - start
truth = pd.read_csv(f"{work}/truth.csv", index_col=0)
summary = summarize_metrics(deconvolution_metrics(truth, pred.loc[truth.index]))
print(json.dumps({**times, "pearson": summary["celltype_pearson"], "rmse": summary["celltype_rmse"],
                  "peak_rss_mb": peak_rss_mib()}))
"""


def make_inputs(work: Path, n_spots: int, n_genes: int, n_cells: int, seed: int) -> None:
    """Write reference.h5ad, spots.h5ad and truth.csv once per size."""
    if (work / "truth.csv").exists():
        return
    work.mkdir(parents=True, exist_ok=True)
    blocks = list(simulate_nb_blocks(n_cells, n_genes, seed=seed, genes_per_type=600, n_types=10,
                                     return_types=True))
    counts = sp.vstack([block for block, _ in blocks], format="csr")
    types = np.concatenate([kinds for _, kinds in blocks])
    cells = ad.AnnData(counts, obs=pd.DataFrame({"cell_type": [f"type{k}" for k in types]},
                                                index=[f"cell{i}" for i in range(n_cells)]))
    cells.var_names = [f"gene{j}" for j in range(n_genes)]
    spots, reference = pseudo_spots(cells, "cell_type", n_spots=n_spots, mode="grid", cells_per_spot=(1, 3),
                                    reference_fraction=1 / 6, seed=seed)
    spots.obsm["proportions"].to_csv(work / "truth.csv")
    for key in ("proportions", "umi_proportions", "cell_membership"):
        del spots.obsm[key]
    spots.uns = {}
    spots.write_h5ad(work / "spots.h5ad")
    reference.write_h5ad(work / "reference.h5ad")


def run_worker(work: Path, method: str, threads: int, destvi_steps: int | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    steps = "default" if destvi_steps is None else str(destvi_steps)
    done = subprocess.run([sys.executable, "-c", WORKER, str(work), method, str(threads), steps], env=env,
                          capture_output=True, text=True, check=False, cwd=BENCH.parent)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - start}


def run_c2l(work: Path, epochs: int, threads: int) -> dict:
    """cell2location for a few full-batch epochs; its default 30,000 extrapolated from the per-epoch time."""
    if not C2L_PYTHON.exists():
        return {"error": f"{C2L_PYTHON} missing (bench/setup_c2l_venv.sh)"}
    n_cells = float(ad.read_h5ad(work / "spots.h5ad", backed="r").obs["n_cells"].mean())
    tasks = {"labels_key": "cell_type", "seed": 0, "threads": threads, "ref_epochs": 250, "st_epochs": epochs,
             "runs": [{"key": "hd", "file": "spots.h5ad", "n_cells_per_location": n_cells}]}
    (work / "c2l_tasks.json").write_text(json.dumps(tasks))
    (work / "c2l_timings.json").unlink(missing_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    done = subprocess.run([str(C2L_PYTHON), str(BENCH / "deconvolution_c2l.py"), "--workdir", str(work)],
                          env=env, capture_output=True, text=True, check=False)
    timings = json.loads((work / "c2l_timings.json").read_text()) if (work / "c2l_timings.json").exists() else {}
    result = {"reference_s": timings.get("reference"), "peak_rss_mb": timings.get("peak_rss_mb"),
              "epochs_run": epochs, "spatial_s": timings.get("hd"), "train_s": timings.get("hd_train_only")}
    if done.returncode < 0:
        result["error"] = (f"killed by signal {-done.returncode} after {time.perf_counter() - start:.0f} s "
                           "(SIGKILL here is the kernel's out-of-memory killer)")
    elif done.returncode != 0:
        result["error"] = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
    return result


def markdown(results: dict, args: argparse.Namespace) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [(
        f"Run {now} on {platform.machine()} CPU ({os.cpu_count()} cores, {args.threads} torch threads, one method "
        f"at a time), `bench/visium_hd.py {' '.join(sys.argv[1:])}`: {args.n_spots:,} simulated spots x "
        f"{args.n_genes:,} genes (1-3 cells each, smooth abundance bumps over a grid), reference of "
        f"{args.n_cells // 6:,} cells of 10 types. Peak RSS is each worker's VmHWM."), "",
        "| method | time (s) | peak RSS (MB) | per-type Pearson | per-type RMSE | details |", "|---|---|---|---|---|---|"]
    for method, r in results.items():
        if "error" in r and not r.get("spatial_s"):
            known = [f"reference model {r['reference_s']:.0f} s"] if r.get("reference_s") else []
            if r.get("train_s"):
                known.append(f"spatial model {r['train_s'] / r['epochs_run']:.2f} s per full-batch epoch")
            if r.get("peak_rss_mb"):
                known.append(f"peak RSS {r['peak_rss_mb']:.0f} MB when training ended")
            lines.append(f"| {method} | | | | | failed: {r['error']}; {', '.join(known)} |")
            continue
        if method == "pybridge DestVI":
            total = r["read_s"] + r["condscvi_s"] + r["destvi_s"] + r["proportions_s"]
            curve = ", ".join(f"{e}: {p:.3f}" for e, p in r["pearson_by_epoch"])
            detail = (f"CondSCVI {r['condscvi_s']:.0f} s, DestVI {r['destvi_s']:.0f} s ({r['destvi_epochs']} epochs), "
                      f"proportions {r['proportions_s']:.1f} s, reading {r['read_s']:.1f} s; Pearson after "
                      f"epoch (every 10th spot) {curve}")
            lines.append(f"| {method} | {total:.0f} | {r['peak_rss_mb']:.0f} | {r['pearson']:.3f} | "
                         f"{r['rmse']:.4f} | {detail} |")
        elif method == "NNLS":
            lines.append(f"| {method} | {r['nnls_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['pearson']:.3f} | "
                         f"{r['rmse']:.4f} | reading {r['read_s']:.1f} s |")
        else:
            per_epoch = r["train_s"] / r["epochs_run"]
            rest = r["spatial_s"] - r["train_s"]
            total = r["reference_s"] + rest + per_epoch * 30000
            lines.append(f"| {method} | {total:.0f} (extrapolated) | {r['peak_rss_mb']:.0f} | | | reference model "
                         f"{r['reference_s']:.0f} s; spatial model {per_epoch:.2f} s per full-batch epoch (measured "
                         f"over {r['epochs_run']} epochs) x its default 30,000 epochs, plus {rest:.0f} s of setup and "
                         f"posterior export |")
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-spots", type=int, default=100_000)
    parser.add_argument("--n-genes", type=int, default=2_000)
    parser.add_argument("--n-cells", type=int, default=60_000, help="simulated cells; a sixth are the reference")
    parser.add_argument("--methods", nargs="+", default=["pybridge", "nnls", "c2l"])
    parser.add_argument("--c2l-epochs", type=int, default=20)
    parser.add_argument("--destvi-steps", type=int, default=None, help="DestVI max_steps (default: its own)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    work = BENCH / ".visium-hd" / f"{args.n_spots}x{args.n_genes}"
    make_inputs(work, args.n_spots, args.n_genes, args.n_cells, seed=0)
    results = {}
    if "pybridge" in args.methods:
        results["pybridge DestVI"] = run_worker(work, "pybridge", args.threads, args.destvi_steps)
    if "nnls" in args.methods:
        results["NNLS"] = run_worker(work, "nnls", args.threads)
    if "c2l" in args.methods:
        results["cell2location"] = run_c2l(work, args.c2l_epochs, args.threads)
    print(json.dumps(results, indent=1))
    text = markdown(results, args)
    if args.no_write:
        print(text)
    else:
        write_section(BENCH / "RESULTS.md", SECTION, text)


if __name__ == "__main__":
    main()
