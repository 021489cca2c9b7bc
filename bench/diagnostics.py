"""Reconstruction diagnostics on zeisel_cortex and pbmc3k_raw: the numbers and figures of docs/diagnostics.md.

Stages (each cached under --out; re-running skips trained models):
  report       count-split the data (fraction 0.5, seed 0), train scVI (ZINB) on fold A, time `build_report`
  fullview     Spearman against all of a cell's counts (what users compute) next to an oracle at that depth
  likelihoods  train NB and Poisson versions the same way and compare them on the held-out fold
  imputation   hide 10% of the non-zero counts, train on the rest, median absolute error on the hidden ones
  de           simulate counts from a fitted model with planted DE genes, retrain, score power and FDR

    OMP_NUM_THREADS=1 .venv/bin/python bench/diagnostics.py --stages report likelihoods imputation de

Writes --out/<dataset>/{model_*,report,...}, docs/figures/*.png and --out/summary.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

import pybridge
from pybridge.de import differential_expression, fdr_de_calls
from pybridge.diagnostics.ceiling import mean_cell_profile, pca_profiles, simulate_counts
from pybridge.diagnostics.countsplit import split_anndata
from pybridge.diagnostics.imputation import hide_nonzero_entries, median_absolute_error
from pybridge.diagnostics.ranks import spearman_rows
from pybridge.diagnostics.report import (
    _decile_table,
    _likelihood_summary,
    _model_params_at_depth,
    build_report,
    evaluate_split,
    write_figures,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FIGURES = ROOT / "docs" / "figures"
N_TOP_GENES = 4000


def load_dataset(name: str) -> anndata.AnnData:
    """zeisel_cortex as shipped (4,000 genes); pbmc3k_raw restricted to the 4,000 most frequently detected genes."""
    adata = anndata.read_h5ad(DATA / f"{name}.h5ad")
    adata.X = sp.csr_matrix(adata.X)
    if adata.n_vars > N_TOP_GENES:
        detected = np.asarray((adata.X > 0).sum(axis=0)).ravel()
        keep = np.sort(np.argsort(-detected, kind="stable")[:N_TOP_GENES])
        adata = adata[:, keep].copy()
    adata.var_names_make_unique()
    return adata


def split_data(adata: anndata.AnnData) -> tuple[anndata.AnnData, int]:
    """Count-split; cells with an empty fold cannot be trained on or scored and are dropped (counted)."""
    split_anndata(adata, fraction=0.5, seed=0)
    lib_a = np.asarray(adata.layers["fold_A"].sum(axis=1)).ravel()
    lib_b = np.asarray(adata.layers["fold_B"].sum(axis=1)).ravel()
    keep = (lib_a > 0) & (lib_b > 0)
    return adata[keep].copy(), int((~keep).sum())


def train(adata, layer, likelihood: str, epochs: int, out: Path, seed: int = 0, **setup) -> tuple:
    """Train (or load the cached) scVI; returns (model, seconds or None when cached)."""
    pybridge.SCVI.setup_anndata(adata, layer=layer, **setup)
    if (out / "model.json").is_file():
        return pybridge.SCVI.load(out, adata=adata, accelerator="cpu"), None
    model = pybridge.SCVI(adata, gene_likelihood=likelihood)
    t0 = time.perf_counter()
    model.train(max_epochs=epochs, batch_size=128, n_epochs_kl_warmup=epochs, seed=seed, progress=False,
                accelerator="cpu")
    seconds = time.perf_counter() - t0
    model.save(out, overwrite=True)
    (out / "train_seconds.txt").write_text(f"{seconds:.1f}\n")
    return model, seconds


def stage_report(name: str, out: Path, epochs: int) -> dict:
    adata, dropped = split_data(load_dataset(name))
    data_path = out / "data_split.h5ad"
    if not data_path.is_file():
        adata.write_h5ad(data_path)
    _, secs = train(adata, "fold_A", "zinb", epochs, out / "model_zinb")
    t0 = time.perf_counter()
    metrics = build_report(out / "model_zinb", data_path, out / "report", accelerator="cpu", title=f"pybridge report: {name}",
                           figure_title=name)
    report_seconds = time.perf_counter() - t0
    for fig in metrics["figures"]:
        shutil.copy(out / "report" / fig, FIGURES / f"{name}_{fig}")
    return {"cells_dropped_empty_fold": dropped, "report_seconds": round(report_seconds, 1),
            "train_seconds": secs, "epochs": epochs, "metrics_file": str(out / "report" / "metrics.json")}


def stage_fullview(name: str, out: Path, epochs: int) -> list[dict]:
    adata = anndata.read_h5ad(out / "data_split.h5ad")
    pybridge.SCVI.setup_anndata(adata, layer="fold_A")
    return full_depth_view(adata, out / "model_zinb")


def full_depth_view(adata, model_dir: Path) -> list[dict]:
    """What users compute: Spearman of the expected expression with all the cell's counts (both folds), next to
    an oracle at that depth (counts simulated from the model's own rates), per library-size decile."""
    model = pybridge.SCVI.load(model_dir, adata=adata, accelerator="cpu")
    full = sp.csr_matrix(adata.layers["fold_A"] + adata.layers["fold_B"], dtype=np.float64)
    lib = np.asarray(full.sum(axis=1)).ravel()
    cells = np.arange(adata.n_obs)
    rho = model.get_normalized_expression(adata, n_samples=10, return_numpy=True)
    user = spearman_rows(rho, full)
    p = _model_params_at_depth(model, adata, cells, lib, 1)
    zi = None if p["zi_prob"] is None else p["zi_prob"][0]
    rate = p["mean"][0] if zi is None else p["mean"][0] * (1.0 - zi)
    draws = simulate_counts(p["mean"][0], None if p["theta"] is None else p["theta"][0], zi, seed=1)
    oracle = spearman_rows(rate, sp.csr_matrix(draws))
    table = _decile_table({"model_vs_all_counts": user, "oracle_at_full_depth": oracle}, lib, 10, "library_size")
    return table.to_dict(orient="records")


def stage_likelihoods(name: str, out: Path, epochs: int) -> dict:
    adata = anndata.read_h5ad(out / "data_split.h5ad")
    by_lik, arrays = {}, None
    for lik in ("zinb", "nb", "poisson"):
        model, _ = train(adata, "fold_A", lik, epochs, out / f"model_{lik}")
        by_lik[lik], arr = evaluate_split(model, adata)
        arrays = arrays or arr
    summary = _likelihood_summary(by_lik)
    tmp = out / "likelihood_figs"
    tmp.mkdir(exist_ok=True)
    write_figures(by_lik["zinb"], arrays, tmp, by_lik, title=name)
    shutil.copy(tmp / "likelihood_comparison.png", FIGURES / f"{name}_likelihood_comparison.png")
    (out / "likelihoods.json").write_text(json.dumps(summary, indent=1))
    return summary


def stage_imputation(name: str, out: Path, epochs: int) -> dict:
    adata = load_dataset(name)
    corrupted, hidden = hide_nonzero_entries(adata.X, rate=0.1, seed=0)
    keep = np.asarray(corrupted.sum(axis=1)).ravel() > 0
    if not keep.all():
        raise SystemExit(f"{(~keep).sum()} cells lost every count; choose another seed")
    adata.layers["corrupted"] = corrupted
    model, _ = train(adata, "corrupted", "zinb", epochs, out / "model_imputation")
    rho = model.get_normalized_expression(adata, n_samples=10, return_numpy=True)
    lib = np.asarray(corrupted.sum(axis=1)).ravel()
    scvi_imputed = hidden.take(rho * lib[:, None])
    pooled = mean_cell_profile(corrupted)
    pca = pca_profiles(corrupted, 10, 0)
    return {
        "n_hidden": len(hidden.values),
        "median_true_value": float(np.median(hidden.values)),
        "scvi": median_absolute_error(scvi_imputed, hidden),
        "pca_log_normalised": median_absolute_error(hidden.take(pca * lib[:, None]), hidden),
        "mean_cell": median_absolute_error(hidden.take(np.outer(lib, pooled)), hidden),
        "zero": median_absolute_error(np.zeros(len(hidden.values)), hidden),
    }


def stage_de(name: str, out: Path, epochs: int, n_de: int = 200, fold: float = 2.0 ** 1.5, seed: int = 0) -> dict:
    """Planted DE: one cell type's fitted rates, split into two groups; n_de genes changed in group 2."""
    rng = np.random.default_rng(seed)
    adata, _ = split_data(load_dataset(name))
    model, _ = train(adata, "fold_A", "zinb", epochs, out / "model_zinb")
    if "cell_type" in adata.obs:
        labels = adata.obs["cell_type"].astype(str).to_numpy()
    else:
        labels = np.full(adata.n_obs, "all cells")
    biggest = pd.Series(labels).value_counts().index[0]
    cells = np.flatnonzero(labels == biggest)
    rho = model.get_normalized_expression(adata, indices=cells, n_samples=1, return_numpy=True).astype(np.float64)
    theta = model.get_likelihood_parameters(adata, indices=cells)["dispersions"][0]
    lib = np.asarray(adata.X[cells].sum(axis=1)).ravel()  # full depth, both folds
    group2 = rng.permutation(len(cells)) < len(cells) // 2
    expressed = np.flatnonzero(rho.mean(axis=0) > np.quantile(rho.mean(axis=0), 0.5))
    planted = rng.choice(expressed, size=n_de, replace=False)
    up, down = planted[: n_de // 2], planted[n_de // 2 :]
    factor = np.ones(rho.shape[1])
    factor[up], factor[down] = fold, 1.0 / fold
    rho2 = rho * np.where(group2[:, None], factor[None, :], 1.0)
    shift = np.log2(rho2[group2].sum(axis=1)).mean()  # composition shift of the other genes after renormalising
    rho2 /= rho2.sum(axis=1, keepdims=True)
    mu = rho2 * lib[:, None]
    counts = rng.poisson(rng.gamma(theta[None, :], mu / theta[None, :])).astype(np.float32)
    sim = anndata.AnnData(sp.csr_matrix(counts), obs=pd.DataFrame({"group": np.where(group2, "g2", "g1")},
                          index=adata.obs_names[cells]), var=pd.DataFrame(index=adata.var_names))
    sim = sim[np.asarray(sim.X.sum(axis=1)).ravel() > 0].copy()
    de_model, _ = train(sim, None, "zinb", epochs, out / "model_de_sim")
    truth = set(sim.var_names[planted])
    res = {"cell_type": biggest, "n_cells": int(sim.n_obs), "n_planted": n_de, "planted_lfc": float(np.log2(fold)),
           "composition_shift_log2": float(-shift)}
    for mode_delta in (0.25, 0.5):
        table = differential_expression(de_model, groupby="group", group1="g2", group2="g1", mode="change",
                                        delta=mode_delta, fdr_target=0.05)
        for target in (0.05, 0.1):
            table[f"call_{target}"] = fdr_de_calls(table["proba_de"].to_numpy(), target)
            called = set(table.index[table[f"call_{target}"]])
            tp = len(called & truth)
            res[f"delta{mode_delta}_fdr{target}"] = {
                "n_called": len(called), "power": tp / n_de, "observed_fdr": 1 - tp / max(len(called), 1)}
    vanilla = differential_expression(de_model, groupby="group", group1="g2", group2="g1", mode="vanilla")
    from sklearn.metrics import roc_auc_score

    res["vanilla_auc_abs_bayes_factor"] = float(
        roc_auc_score(vanilla.index.isin(truth), vanilla["bayes_factor"].abs()))
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["zeisel_cortex", "pbmc3k_raw"])
    parser.add_argument("--stages", nargs="+", default=["report", "fullview", "likelihoods", "imputation", "de"])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--out", default="/tmp/pybridge_diagnostics")
    args = parser.parse_args()
    torch.set_num_threads(1)
    FIGURES.mkdir(parents=True, exist_ok=True)
    root = Path(args.out)
    summary_path = root / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    stages = {"report": stage_report, "fullview": stage_fullview, "likelihoods": stage_likelihoods,
              "imputation": stage_imputation, "de": stage_de}
    for stage in args.stages:
        for name in args.datasets:
            out = root / name
            out.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            result = stages[stage](name, out, args.epochs)
            summary.setdefault(name, {})[stage] = result
            summary[name][stage + "_stage_seconds"] = round(time.perf_counter() - t0, 1)
            summary_path.write_text(json.dumps(summary, indent=1, default=float))
            print(f"[{time.strftime('%H:%M:%S')}] {name} {stage}: {json.dumps(result, default=float)[:600]}", flush=True)


if __name__ == "__main__":
    main()
