"""Count-split reconstruction report: rank agreement vs the noise ceiling, baselines, calibration.

The model was trained on fold A (a layer of the AnnData, see :func:`pybridge.diagnostics.split_anndata`);
everything here is scored on the held-out fold B, scaled to fold B's depth, and for reference on the
training counts. :func:`evaluate_split` computes the numbers, :func:`build_report` writes
``metrics.json``, PNG figures and ``report.html`` into a directory.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import logsumexp

from pybridge.data.fields import aligned_counts
from pybridge.data.minified import require_counts
from pybridge.data.registry import SETUP_KEY, Registry
from pybridge.diagnostics.calibration import CURVE_LEVELS, CalibrationAccumulator
from pybridge.diagnostics.ceiling import (
    count_loglik,
    library_size,
    mean_cell_profile,
    moment_theta,
    pca_profiles,
    simulate_counts,
    smoothed_count_profiles,
)
from pybridge.diagnostics.ranks import decile_of, spearman_rows, spearman_rows_many
from pybridge.errors import PybridgeError
from pybridge.models.scvi import SCVI

__all__ = [
    "baseline_logliks", "build_report", "compare_likelihood_models", "evaluate_split", "heldout_layers",
    "heldout_loglik_of_model", "write_heldout_report", "write_metrics",
]

FOLD_A_PSEUDOCOUNTS = (1.0, 10.0, 100.0, 1000.0)
PCA_FLOOR_WEIGHTS = (0.01, 0.03, 0.1, 0.3)


def _fold(adata, registry, layer: str):
    reg = dataclasses.replace(registry, layer=layer)
    X = aligned_counts(adata, reg)
    return sp.csr_matrix(X, dtype=np.float64) if sp.issparse(X) else sp.csr_matrix(np.asarray(X, dtype=np.float64))


def _t(m: sp.csr_matrix) -> sp.csr_matrix:
    return m.tocsc().T.tocsr()


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield np.arange(start, min(start + size, n))


def _model_params_at_depth(model, adata, cells: np.ndarray, depth: np.ndarray, n_samples: int) -> dict:
    """Likelihood parameters of ``n_samples`` posterior draws, means rescaled to ``depth`` per cell.

    Returns arrays [n_samples, cells, genes]: ``mean``, and ``theta`` / ``zi_prob`` (zero-inflation
    probability) when the likelihood has them.
    """
    params = model.get_likelihood_parameters(adata, indices=cells, n_samples=n_samples)
    mean = np.asarray(params["mean"], dtype=np.float64)
    if n_samples == 1:
        mean = mean[None]
    mean = mean / mean.sum(axis=-1, keepdims=True) * depth[None, :, None]
    out = {"mean": mean, "theta": None, "zi_prob": None}
    if "dispersions" in params:
        theta = np.asarray(params["dispersions"], dtype=np.float64)
        out["theta"] = theta[None] if n_samples == 1 else theta
    if "dropout" in params:
        drop = np.asarray(params["dropout"], dtype=np.float64)
        out["zi_prob"] = drop[None] if n_samples == 1 else drop
    return out


def heldout_loglik_of_model(
    model, adata, cells: np.ndarray, X_test: sp.csr_matrix, n_samples: int = 10, chunk_size: int = 256
) -> np.ndarray:
    """Per-cell predictive log-likelihood of the test counts: log mean_s p(x_test | z_s, depth), z_s ~ q(z | x_train)."""
    depth = library_size(X_test)
    out = np.empty(len(cells))
    for pos in _chunks(len(cells), chunk_size):
        p = _model_params_at_depth(model, adata, cells[pos], depth[pos], n_samples)
        per_sample = np.stack(
            [
                count_loglik(
                    X_test[pos],
                    p["mean"][s],
                    None if p["theta"] is None else p["theta"][s],
                    None if p["zi_prob"] is None else p["zi_prob"][s],
                )
                for s in range(p["mean"].shape[0])
            ]
        )
        out[pos] = logsumexp(per_sample, axis=0) - np.log(per_sample.shape[0])
    return out


def _best_loglik(profiles: np.ndarray, A: sp.csr_matrix, B: sp.csr_matrix) -> tuple[float, str]:
    """Best of Poisson and NB (per-gene theta by moments on fold A) for a profile predictor."""
    mean_b = profiles * library_size(B)[:, None]
    ll_pois = float(count_loglik(B, mean_b).mean())
    theta = moment_theta(A, profiles * library_size(A)[:, None])
    ll_nb = float(count_loglik(B, mean_b, theta).mean())
    return (ll_nb, "nb") if ll_nb >= ll_pois else (ll_pois, "poisson")


def baseline_logliks(
    A: sp.csr_matrix, B: sp.csr_matrix, pca_components: int = 10, seed: int = 0, pca: np.ndarray | None = None
) -> dict:
    """Held-out fold-B log-likelihood (per-cell mean) of each baseline, its tuning chosen on fold B.

    Choosing the pseudocount / floor on fold B itself favours the baselines: the model gets no such help.
    """
    pooled = mean_cell_profile(A)
    results = {}
    ll, dist = _best_loglik(np.broadcast_to(pooled, A.shape), A, B)
    results["mean_cell"] = {"loglik": ll, "likelihood": dist}
    best = None
    for alpha in FOLD_A_PSEUDOCOUNTS:
        ll, dist = _best_loglik(smoothed_count_profiles(A, alpha, pooled), A, B)
        if best is None or ll > best["loglik"]:
            best = {"loglik": ll, "likelihood": dist, "pseudocount": alpha}
    results["fold_A"] = best
    best = None
    raw_pca = pca_profiles(A, pca_components, seed) if pca is None else pca
    for w in PCA_FLOOR_WEIGHTS:
        ll, dist = _best_loglik((1 - w) * raw_pca + w * pooled[None, :], A, B)
        if best is None or ll > best["loglik"]:
            best = {"loglik": ll, "likelihood": dist, "floor_weight": w, "n_components": pca_components}
    results["pca"] = best
    return results


HELDOUT_QUARTILES = ("model_heldout", "ceiling_split_half")
HELDOUT_GAPS = {"gap_to_ceiling": ("ceiling_split_half", "model_heldout"),
                "gap_to_oracle_poisson": ("oracle_poisson", "model_heldout")}


def _decile_table(values: dict[str, np.ndarray], stratifier: np.ndarray, n_bins: int, name: str,
                  quartiles=HELDOUT_QUARTILES, gaps: dict | None = None) -> pd.DataFrame:
    """Median (and for ``quartiles`` the quartiles) of each array per decile of ``stratifier``; NaNs counted.

    ``gaps`` maps a column name to (reference, model): the reference's median minus the model's.
    """
    gaps = HELDOUT_GAPS if gaps is None else gaps
    bins = decile_of(stratifier, n_bins)
    rows = []
    for b in range(n_bins):
        sel = bins == b
        row = {
            "decile": b + 1,
            f"{name}_min": float(stratifier[sel].min()),
            f"{name}_max": float(stratifier[sel].max()),
            "n": int(sel.sum()),
        }
        for key, vals in values.items():
            v = vals[sel]
            finite = v[np.isfinite(v)]
            row[f"{key}_median"] = float(np.median(finite)) if finite.size else None
            row[f"{key}_n_undefined"] = int((~np.isfinite(v)).sum())
            if key in quartiles:
                row[f"{key}_q25"] = float(np.quantile(finite, 0.25)) if finite.size else None
                row[f"{key}_q75"] = float(np.quantile(finite, 0.75)) if finite.size else None
        for gap, (reference, model) in gaps.items():
            if row.get(f"{model}_median") is not None and row.get(f"{reference}_median") is not None:
                row[gap] = row[f"{reference}_median"] - row[f"{model}_median"]
        rows.append(row)
    return pd.DataFrame(rows)


def _overall(values: dict[str, np.ndarray]) -> dict:
    return {
        key: {
            "median": float(np.nanmedian(v)) if np.isfinite(v).any() else None,
            "mean": float(np.nanmean(v)) if np.isfinite(v).any() else None,
            "n_undefined": int((~np.isfinite(v)).sum()),
        }
        for key, v in values.items()
    }


def _oracle_counts(model, adata, cells: np.ndarray, depth: np.ndarray, rng: np.random.Generator):
    """The model's rates (one posterior draw, at ``depth``, zero-inflation applied) taken as the truth, and counts
    drawn from them with Poisson noise only (``oracle_poisson``) and with the model's own noise
    (``oracle_model_noise``: NB / ZINB). Returns ``(rate, {name: counts})``."""
    rates, draws = [], {"oracle_poisson": [], "oracle_model_noise": []}
    for pos in _chunks(len(cells), 512):
        p = _model_params_at_depth(model, adata, cells[pos], depth[pos], 1)
        theta = None if p["theta"] is None else p["theta"][0]
        zi = None if p["zi_prob"] is None else p["zi_prob"][0]
        rate = p["mean"][0] if zi is None else p["mean"][0] * (1.0 - zi)
        rates.append(rate)
        draws["oracle_poisson"].append(sp.csr_matrix(simulate_counts(rate, seed=int(rng.integers(2**31)))))
        draws["oracle_model_noise"].append(
            sp.csr_matrix(simulate_counts(p["mean"][0], theta, zi, seed=int(rng.integers(2**31))))
        )
    return np.vstack(rates), {key: sp.vstack(parts).tocsr() for key, parts in draws.items()}


def _simulated_oracles(model, adata, cells: np.ndarray, depth: np.ndarray, rng: np.random.Generator) -> dict:
    """Spearman of the oracles of :func:`_oracle_counts` with their rates: {name: (per_cell, per_gene)}."""
    rate, draws = _oracle_counts(model, adata, cells, depth, rng)
    return {key: (spearman_rows(rate, counts), spearman_rows(rate.T, _t(counts))) for key, counts in draws.items()}


def evaluate_split(
    model,
    adata,
    train_layer: str = "fold_A",
    test_layer: str = "fold_B",
    n_bins: int = 10,
    n_expected_samples: int = 5,
    loglik_samples: int = 5,
    ppc_cells: int = 300,
    ppc_samples: int = 20,
    marginal_cells: int = 200,
    marginal_mc_samples: int = 50,
    pca_components: int | None = None,
    seed: int = 0,
) -> tuple[dict, dict]:
    """Score ``model`` (trained on ``train_layer``) on the held-out ``test_layer``.

    Returns ``(metrics, arrays)``: JSON-ready metrics, and the per-cell / per-gene arrays (``arrays["cells"]``:
    positions in ``adata`` of the evaluated cells, those with counts in both folds; genes in the model's order).
    """
    t0 = time.perf_counter()
    require_counts(adata, "evaluate_split", "Pass the count-split data (with its folds) before minifying.")
    for layer in (train_layer, test_layer):
        if layer not in adata.layers:
            raise PybridgeError(
                f"the data has no layer {layer!r} (layers: {list(adata.layers.keys()) or 'none'}); pass the data "
                "that holds both folds (`pybridge split IN.h5ad OUT.h5ad` or pybridge.diagnostics.split_anndata(adata) "
                "makes them), or `pybridge report --refit` to split and retrain"
            )
    if model.registry.layer != train_layer:
        raise PybridgeError(
            f"the model was trained on {model.registry.layer_name}, not on layer {train_layer!r}, so nothing is held "
            "out; score it in sample (`pybridge report` without --train-layer, or "
            "pybridge.diagnostics.insample.evaluate_in_sample) or retrain it on fold A (`pybridge report --refit`)"
        )
    rng = np.random.default_rng(seed)
    A_all, B_all = _fold(adata, model.registry, train_layer), _fold(adata, model.registry, test_layer)
    lib_a_all, lib_b_all = library_size(A_all), library_size(B_all)
    cells = np.flatnonzero((lib_a_all > 0) & (lib_b_all > 0))
    A, B = A_all[cells], B_all[cells]
    lib_a, lib_b = lib_a_all[cells], lib_b_all[cells]
    lib_total = lib_a + lib_b
    gene_mean = np.asarray((A + B).mean(axis=0)).ravel()
    n_latent = int(model._init_params.get("n_latent", 10)) if hasattr(model, "_init_params") else 10
    pca_components = pca_components or n_latent

    # expected expression: posterior mean of the normalised expression, scaled to each fold's depth
    rho = np.asarray(
        model.get_normalized_expression(adata, indices=cells, n_samples=n_expected_samples, return_numpy=True),
        dtype=np.float64,
    )
    pooled = mean_cell_profile(A)
    pca = pca_profiles(A, pca_components, seed)
    predictors_b = {
        "model_heldout": rho * lib_b[:, None],
        "mean_cell": np.outer(lib_b, pooled),
        "fold_A": A,
        "pca": pca * lib_b[:, None],
    }
    per_cell = spearman_rows_many(predictors_b, B)
    per_gene = spearman_rows_many({k: _t(v) if sp.issparse(v) else v.T for k, v in predictors_b.items()}, _t(B))
    per_cell["model_training"] = spearman_rows(rho, A)
    per_gene["model_training"] = spearman_rows((rho * lib_a[:, None]).T, _t(A))
    # split-half noise ceiling sqrt(Spearman(fold A, fold B)): the fold-A baseline's correlations, square-rooted
    per_cell["ceiling_split_half"] = np.sqrt(np.clip(per_cell["fold_A"], 0.0, None))
    per_gene["ceiling_split_half"] = np.sqrt(np.clip(per_gene["fold_A"], 0.0, None))

    oracles = _simulated_oracles(model, adata, cells, lib_b, rng)
    for key, (cell_values, gene_values) in oracles.items():
        per_cell[key], per_gene[key] = cell_values, gene_values

    cell_table = _decile_table(per_cell, lib_total, n_bins, "library_size")
    gene_table = _decile_table(per_gene, gene_mean, n_bins, "gene_mean")

    # held-out log-likelihood of fold B given fold A: model vs baselines
    ll_model = heldout_loglik_of_model(model, adata, cells, B, n_samples=loglik_samples)
    loglik = {"scvi": {"loglik": float(ll_model.mean()), "likelihood": model._init_params.get("gene_likelihood")}}
    loglik.update(baseline_logliks(A, B, pca_components, seed, pca=pca))
    beaten = {k: loglik["scvi"]["loglik"] > v["loglik"] for k, v in loglik.items() if k != "scvi"}

    # importance-sampled marginal log-likelihood log p(x) of the held-out and the training fold
    sub = np.sort(rng.choice(cells, size=min(marginal_cells, len(cells)), replace=False))
    held = _with_layer(adata, train_layer, B_all, sub)
    marginal = {
        "n_cells": len(sub),
        "n_mc_samples": marginal_mc_samples,
        "heldout_fold": float(model.get_marginal_ll(held, n_mc_samples=marginal_mc_samples)),
        "training_fold": float(model.get_marginal_ll(adata, indices=sub, n_mc_samples=marginal_mc_samples)),
    }

    # posterior predictive calibration on a subset of cells
    ppc_pos = np.sort(rng.choice(len(cells), size=min(ppc_cells, len(cells)), replace=False))
    acc_held = CalibrationAccumulator(A.shape[1], CURVE_LEVELS, seed)
    acc_train = CalibrationAccumulator(A.shape[1], CURVE_LEVELS, seed + 1)
    for part in _chunks(len(ppc_pos), 64):
        pos = ppc_pos[part]
        p = _model_params_at_depth(model, adata, cells[pos], lib_b[pos], ppc_samples)
        draws = np.stack(
            [
                simulate_counts(
                    p["mean"][s],
                    None if p["theta"] is None else p["theta"][s],
                    None if p["zi_prob"] is None else p["zi_prob"][s],
                    seed=int(rng.integers(2**31)),
                )
                for s in range(ppc_samples)
            ],
            axis=-1,
        )
        acc_held.update(draws, B[pos])
        acc_train.update(model.posterior_predictive_sample(adata, indices=cells[pos], n_samples=ppc_samples), A[pos])

    metrics = {
        "mode": "heldout",
        "data": {
            "n_cells": int(adata.n_obs),
            "n_cells_evaluated": len(cells),
            "n_cells_excluded_empty_fold": int(adata.n_obs - len(cells)),
            "n_genes": int(A.shape[1]),
            "median_library_fold_A": float(np.median(lib_a)),
            "median_library_fold_B": float(np.median(lib_b)),
            "train_layer": train_layer,
            "test_layer": test_layer,
            "count_split": _jsonable(adata.uns.get("pybridge_count_split", {})),
        },
        "model": _jsonable(getattr(model, "_init_params", {})),
        "spearman_per_cell_by_library_decile": _records(cell_table),
        "spearman_per_gene_by_mean_decile": _records(gene_table),
        "spearman_per_cell_overall": _overall(per_cell),
        "spearman_per_gene_overall": _overall(per_gene),
        "heldout_loglik_per_cell": loglik,
        "scvi_beats_baselines_on_heldout_loglik": beaten,
        "marginal_loglik_per_cell": marginal,
        "calibration": {"heldout": acc_held.result(), "training": acc_train.result()},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    arrays = {
        "cells": cells,
        "per_cell": per_cell,
        "per_gene": per_gene,
        "library_size": lib_total,
        "gene_mean": gene_mean,
        "cell_table": cell_table,
        "gene_table": gene_table,
    }
    return metrics, arrays


def _with_layer(adata, layer: str, X: sp.csr_matrix, cells: np.ndarray):
    """A small AnnData of ``cells`` whose ``layer`` holds ``X`` (model gene order), obs kept for covariates."""
    import anndata


    sub = anndata.AnnData(
        X=sp.csr_matrix(X[cells].shape, dtype=np.float32),
        obs=adata.obs.iloc[cells].copy(),
        var=pd.DataFrame(index=pd.Index(_model_genes_of(adata, X.shape[1]))),
        layers={layer: X[cells].astype(np.float32)},
    )
    if SETUP_KEY in adata.uns:
        sub.uns[SETUP_KEY] = adata.uns[SETUP_KEY]
    return sub


def _model_genes_of(adata, n_genes: int) -> list[str]:
    reg = Registry.from_dict(json.loads(adata.uns[SETUP_KEY])) if SETUP_KEY in adata.uns else None
    names = reg.var_names if reg is not None and reg.var_names else list(adata.var_names)
    if len(names) != n_genes:
        raise PybridgeError("internal: gene count mismatch building the held-out AnnData")
    return list(names)


def _records(df: pd.DataFrame) -> list[dict]:
    return [{k: _jsonable(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


# ---- likelihood comparison ------------------------------------------------------------------------------
def compare_likelihood_models(model, adata, metrics_by_likelihood: dict | None = None, max_epochs: int | None = None,
                        train_layer: str = "fold_A", test_layer: str = "fold_B", seed: int = 0, **eval_kwargs) -> dict:
    """Train the other likelihoods (ZINB, NB, Poisson) like ``model`` and evaluate each on the split.

    ``max_epochs`` defaults to the number of epochs ``model`` was trained for.
    """

    out = dict(metrics_by_likelihood or {})
    params = dict(model._init_params)
    epochs = max_epochs or len(model.history.get("elbo_train", [])) or None
    for lik in ("zinb", "nb", "poisson"):
        if lik in out:
            continue
        if lik == params.get("gene_likelihood"):
            other = model
        else:
            other = SCVI(adata, **{**params, "gene_likelihood": lik})
            other.train(max_epochs=epochs, seed=seed, progress=False)
        out[lik] = evaluate_split(other, adata, train_layer, test_layer, seed=seed, **eval_kwargs)[0]
    return out


def _likelihood_summary(by_lik: dict) -> dict:
    summary = {}
    for lik, m in by_lik.items():
        summary[lik] = {
            "heldout_loglik_per_cell": m["heldout_loglik_per_cell"]["scvi"]["loglik"],
            "marginal_loglik_heldout": m["marginal_loglik_per_cell"]["heldout_fold"],
            "spearman_per_cell_median": m["spearman_per_cell_overall"]["model_heldout"]["median"],
            "spearman_per_gene_median": m["spearman_per_gene_overall"]["model_heldout"]["median"],
            "spearman_by_library_decile": [r["model_heldout_median"] for r in m["spearman_per_cell_by_library_decile"]],
            "pit_coverage_heldout": dict(
                zip(map(str, m["calibration"]["heldout"]["levels"]), m["calibration"]["heldout"]["pit_all"])
            ),
        }
    return summary


# ---- figures and HTML -----------------------------------------------------------------------------------
LABELS = {
    "model_heldout": "scVI vs held-out fold B",
    "model_training": "scVI vs training fold A",
    "ceiling_split_half": "noise ceiling (split-half bound)",
    "oracle_poisson": "oracle: model rates + Poisson noise",
    "oracle_model_noise": "oracle: model rates + model noise",
    "mean_cell": "baseline: mean cell",
    "fold_A": "baseline: fold-A counts",
    "pca": "baseline: PCA",
}


def write_figures(metrics: dict, arrays: dict, out_dir: Path, likelihoods: dict | None = None,
                  title: str = "") -> list[str]:
    """Write the report's PNG figures into ``out_dir``; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    table = arrays["cell_table"]
    x = table["decile"].to_numpy()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.fill_between(x, table["ceiling_split_half_q25"], table["ceiling_split_half_q75"], color="0.85",
                    label="noise ceiling, cells' IQR")
    styles = {"ceiling_split_half": ("k", "-"), "oracle_poisson": ("k", "--"), "oracle_model_noise": ("k", ":"),
              "model_heldout": ("C0", "-"),
              "model_training": ("C0", "--"), "pca": ("C2", "-"), "fold_A": ("C3", "-"), "mean_cell": ("C1", "-")}
    for key, (color, ls) in styles.items():
        ax.plot(x, table[f"{key}_median"], color=color, ls=ls, marker="o", ms=3, label=LABELS[key])
    ax.set_xticks(x)
    ax.set_xticklabels([f"{k}\n{int(lo)}-{int(hi)}" for k, lo, hi in
                        zip(x, table["library_size_min"], table["library_size_max"])], fontsize=7)
    ax.set_xlabel("library-size decile (total UMIs)")
    ax.set_ylabel("per-cell Spearman (median)")
    ax.set_title(f"{title} rank agreement by library size".strip())
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out_dir / "spearman_by_library_decile.png", dpi=110)
    plt.close(fig)
    names.append("spearman_by_library_decile.png")

    fig, ax = plt.subplots(figsize=(10, 4.5))
    gm = arrays["gene_mean"]
    ax.scatter(gm, arrays["per_gene"]["model_heldout"], s=2, alpha=0.3, color="C0", label="scVI, per gene")
    ax.scatter(gm, arrays["per_gene"]["ceiling_split_half"], s=2, alpha=0.3, color="0.5", label="noise ceiling, per gene")
    gt = arrays["gene_table"]
    centre = np.sqrt(gt["gene_mean_min"].clip(lower=1e-4) * gt["gene_mean_max"].clip(lower=1e-4))
    for key, color, ls in (("model_heldout", "C0", "-"), ("ceiling_split_half", "k", "-"), ("oracle_poisson", "k", "--"),
                           ("pca", "C2", "-"), ("fold_A", "C3", "-")):
        ax.plot(centre, gt[f"{key}_median"], color=color, ls=ls, marker="o", ms=3, label=f"{LABELS[key]} (decile median)")
    ax.set_xscale("log")
    ax.set_xlabel("gene mean count per cell (both folds)")
    ax.set_ylabel("per-gene Spearman across cells")
    ax.set_title(f"{title} per-gene rank agreement vs expression".strip())
    ax.legend(fontsize=7, markerscale=3, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out_dir / "per_gene_spearman_vs_mean.png", dpi=110)
    plt.close(fig)
    names.append("per_gene_spearman_vs_mean.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.3), sharey=True)
    for ax, which in zip(axes, ("heldout", "training")):
        cal = metrics["calibration"][which]
        lv = np.asarray(cal["levels"])
        ax.plot([0, 1], [0, 1], color="0.7", lw=1)
        ax.plot(lv, cal["interval_all"], "C0-", label="interval, all entries")
        ax.plot(lv, cal["interval_nonzero"], "C0--", label="interval, non-zero entries")
        ax.plot(lv, cal["pit_all"], "C2-", label="randomised PIT, all")
        ax.plot(lv, cal["pit_nonzero"], "C2--", label="randomised PIT, non-zero")
        ax.plot(lv, cal["naive_zero"]["interval_all"], "C3:", label="always-zero model, interval")
        ax.set_xlabel("nominal coverage")
        ax.set_title(f"{'held-out fold B' if which == 'heldout' else 'training fold A'}")
    axes[0].set_ylabel("observed coverage")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title} posterior predictive calibration".strip())
    fig.tight_layout()
    fig.savefig(out_dir / "calibration.png", dpi=110)
    plt.close(fig)
    names.append("calibration.png")

    ll = metrics["heldout_loglik_per_cell"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    keys = list(ll.keys())
    vals = [ll[k]["loglik"] for k in keys]
    ax.barh(keys, vals, color=["C0" if k == "scvi" else "0.6" for k in keys])
    lo = min(vals)
    ax.set_xlim(lo - 0.05 * abs(lo), max(vals) + 0.02 * abs(lo))
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.1f}", va="center", fontsize=8)
    ax.set_xlabel("held-out fold-B log-likelihood per cell (nats, higher is better)")
    fig.tight_layout()
    fig.savefig(out_dir / "heldout_loglik.png", dpi=110)
    plt.close(fig)
    names.append("heldout_loglik.png")

    if likelihoods:
        summary = _likelihood_summary(likelihoods)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for i, (lik, s) in enumerate(summary.items()):
            axes[0].plot(x, s["spearman_by_library_decile"], marker="o", ms=3, color=f"C{i}", label=lik)
        axes[0].plot(x, table["ceiling_split_half_median"], "k-", label=LABELS["ceiling_split_half"])
        axes[0].plot(x, table["oracle_poisson_median"], "k--", label=LABELS["oracle_poisson"])
        axes[0].set_xlabel("library-size decile")
        axes[0].set_ylabel("per-cell Spearman vs fold B (median)")
        axes[0].legend(fontsize=8)
        liks = list(summary)
        axes[1].bar(liks, [summary[k]["heldout_loglik_per_cell"] for k in liks], color=[f"C{i}" for i in range(len(liks))])
        vals = [summary[k]["heldout_loglik_per_cell"] for k in liks]
        axes[1].set_ylim(min(vals) - 0.02 * abs(min(vals)), max(vals) + 0.01 * abs(min(vals)))
        axes[1].set_ylabel("held-out log-likelihood per cell (higher is better)")
        for i, v in enumerate(vals):
            axes[1].text(i, v, f"{v:.1f}", ha="center", va="top", fontsize=8)
        fig.suptitle(f"{title} likelihood choice".strip())
        fig.tight_layout()
        fig.savefig(out_dir / "likelihood_comparison.png", dpi=110)
        plt.close(fig)
        names.append("likelihood_comparison.png")
    return names


def _table_html(df: pd.DataFrame, columns: list[str]) -> str:
    cols = [c for c in columns if c in df.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(row[c])}</td>" for c in cols) + "</tr>" for _, row in df.iterrows()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "NA"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    return html.escape(str(v))


def write_html(metrics: dict, figures: list[str], out_dir: Path, title: str) -> None:
    cells = pd.DataFrame(metrics["spearman_per_cell_by_library_decile"])
    genes = pd.DataFrame(metrics["spearman_per_gene_by_mean_decile"])
    ll = pd.DataFrame([{"method": k, **v} for k, v in metrics["heldout_loglik_per_cell"].items()])
    cal = metrics["calibration"]["heldout"]
    idx = [cal["levels"].index(c) for c in (0.5, 0.8, 0.95) if c in cal["levels"]]
    cal_rows = []
    for name, src in (("scVI (held-out fold B)", cal), ("scVI (training fold A)", metrics["calibration"]["training"]),
                      ("always zero", cal["naive_zero"])):
        for kind in ("interval_all", "interval_nonzero", "pit_all", "pit_nonzero"):
            cal_rows.append({"model": name, "measure": kind, **{f"{cal['levels'][i]:.2f}": src[kind][i] for i in idx}})
    cols = ["decile", "library_size_min", "library_size_max", "n", "model_heldout_median", "ceiling_split_half_median",
            "oracle_poisson_median", "oracle_model_noise_median", "gap_to_ceiling", "gap_to_oracle_poisson", "model_training_median", "pca_median", "fold_A_median",
            "mean_cell_median", "model_heldout_n_undefined"]
    gcols = [c.replace("library_size", "gene_mean") for c in cols]
    imgs = "".join(f'<figure><img src="{f}" alt="{f}"><figcaption>{f}</figcaption></figure>' for f in figures)
    data = metrics["data"]
    refit = metrics.get("refit")
    refit_note = "" if not refit else (
        f"<p><b>Refitted:</b> <code>pybridge report --refit</code> split the counts (fraction {refit['fraction']}, "
        f"seed {refit['seed']}) and trained the architecture of <code>{html.escape(refit['from_model'])}</code> on "
        f"fold A for {refit['epochs']} epochs. These numbers describe that refitted model, not the saved "
        "weights, which saw all the counts.</p>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{data['n_cells_evaluated']} cells ({data['n_cells_excluded_empty_fold']} excluded: a fold with no counts),
{data['n_genes']} genes. Model trained on layer <code>{html.escape(data['train_layer'])}</code>, scored on held-out
layer <code>{html.escape(data['test_layer'])}</code> (median depth {data['median_library_fold_B']:.0f} UMIs). The noise
ceiling sqrt(Spearman(fold A, fold B)) bounds the rank correlation with fold B that any predictor not fitted to
fold B can reach (exact for Pearson correlation; where most counts are zero it lies above what ranking genes by their
true rates reaches). The two oracles take the model's own rates as the truth and draw counts from them, with Poisson
noise only or with the model's noise (NB/ZINB).</p>{refit_note}
<h2>Per-cell Spearman by library-size decile</h2>{_table_html(cells, cols)}
<h2>Per-gene Spearman by mean-expression decile</h2>{_table_html(genes, gcols)}
<h2>Held-out log-likelihood per cell (fold B given fold A)</h2>{_table_html(ll, list(ll.columns))}
<p>Importance-sampled log p(x) per cell on {metrics['marginal_loglik_per_cell']['n_cells']} cells: held-out fold
{metrics['marginal_loglik_per_cell']['heldout_fold']:.1f}, training fold {metrics['marginal_loglik_per_cell']['training_fold']:.1f}.</p>
<h2>Calibration (coverage of central predictive intervals)</h2>{_table_html(pd.DataFrame(cal_rows), list(cal_rows[0].keys()))}
<p>Interval coverage of counts exceeds nominal even for a perfect model and the always-zero model covers every zero;
the randomised PIT coverage equals the nominal level for a calibrated model.</p>
<h2>Figures</h2>{imgs}
<p>Computed in {metrics['seconds']} s.</p></body></html>"""
    (out_dir / "report.html").write_text(page)


def write_metrics(metrics: dict, out: Path) -> None:
    """Write ``metrics.json`` into ``out`` atomically (NaN and infinities as null)."""
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(_jsonable(metrics), indent=1))
    os.replace(tmp, out / "metrics.json")


def heldout_layers(model, adata, train_layer: str | None = None, test_layer: str | None = None):
    """``(train_layer, test_layer)`` when ``model`` was trained on a count-split fold of ``adata``, else None.

    Unless given, the layers are those :func:`split_anndata` recorded in ``adata.uns`` (default fold_A / fold_B).
    A ``train_layer`` given explicitly must be the model's layer.
    """
    recorded = adata.uns.get("pybridge_count_split", {})
    train = train_layer or recorded.get("train_layer", "fold_A")
    test = test_layer or recorded.get("test_layer", "fold_B")
    if model.registry.layer == train:
        return train, test
    if train_layer is not None:
        raise PybridgeError(
            f"the model was trained on {model.registry.layer_name}, not on layer {train_layer!r}; drop --train-layer "
            "for the in-sample report of this model, or pass --refit to retrain it on a count split and score it "
            "held out"
        )
    return None


def write_heldout_report(
    model,
    adata,
    out_dir: str | os.PathLike,
    name: str,
    train_layer: str = "fold_A",
    test_layer: str = "fold_B",
    compare_likelihoods: bool = False,
    compare_max_epochs: int | None = None,
    seed: int = 0,
    title: str | None = None,
    figure_title: str | None = None,
    extra: dict | None = None,
    **eval_kwargs,
) -> dict:
    """Evaluate ``model`` on the held-out fold of ``adata``; write metrics.json, figures and report.html.

    ``extra`` is merged into the metrics (e.g. how the model was refitted).
    """
    metrics, arrays = evaluate_split(model, adata, train_layer, test_layer, seed=seed, **eval_kwargs)
    metrics.update(extra or {})
    likelihoods = None
    if compare_likelihoods:
        lik = model._init_params.get("gene_likelihood")
        likelihoods = compare_likelihood_models(model, adata, {lik: metrics}, compare_max_epochs, train_layer, test_layer,
                                              seed, **eval_kwargs)
        metrics["likelihood_comparison"] = _likelihood_summary(likelihoods)
    out = Path(out_dir)  # created only once the numbers are in: a failed report leaves no directory behind
    out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(metrics, arrays, out, likelihoods, title=figure_title or name)
    metrics["figures"] = figures
    write_metrics(metrics, out)
    write_html(metrics, figures, out, title or f"pybridge report: {name}")
    return metrics


def build_report(
    model_dir: str | os.PathLike,
    data_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    train_layer: str = "fold_A",
    test_layer: str = "fold_B",
    compare_likelihoods: bool = False,
    compare_max_epochs: int | None = None,
    accelerator: str = "auto",
    seed: int = 0,
    title: str | None = None,
    figure_title: str | None = None,
    **eval_kwargs,
) -> dict:
    """Load a model and data, evaluate on the held-out fold, write metrics.json, figures and report.html."""
    import anndata

    data_path = Path(data_path)
    if not data_path.is_file():
        raise PybridgeError(f"data file {data_path} does not exist")
    adata = anndata.read_h5ad(data_path)
    model = SCVI.load(model_dir, adata=adata, accelerator=accelerator)
    return write_heldout_report(
        model, adata, out_dir, data_path.stem, train_layer, test_layer, compare_likelihoods, compare_max_epochs,
        seed, title, figure_title, **eval_kwargs,
    )
