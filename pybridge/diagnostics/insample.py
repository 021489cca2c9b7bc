"""In-sample report for a model trained on all the counts: what can be measured without a held-out fold.

The model is scored against the very counts it was trained on, so every number here is optimistic. Next to
it stand references that need no held-out data: the always-zero model (calibration), the mean cell, and an
oracle at the same depth, which takes the model's rates as the truth, draws counts from them at each cell's
library size (:func:`pybridge.diagnostics.report._oracle_counts`) and ranks genes by the true rates. For
held-out numbers, split the counts (``pybridge split``), train on fold A and run ``pybridge report``, or
``pybridge report --refit``.
"""

from __future__ import annotations

import html
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pybridge.data.minified import require_counts
from pybridge.diagnostics.calibration import CURVE_LEVELS, CalibrationAccumulator
from pybridge.diagnostics.ceiling import library_size, mean_cell_profile
from pybridge.diagnostics.ranks import decile_of, spearman_rows, spearman_rows_many
from pybridge.diagnostics.report import (
    _chunks,
    _decile_table,
    _fold,
    _jsonable,
    _oracle_counts,
    _overall,
    _records,
    _t,
    _table_html,
    write_metrics,
)

__all__ = ["HELDOUT_HOWTO", "evaluate_in_sample", "write_in_sample_report"]

MODEL = "model_in_sample"
ORACLE = "oracle_model_noise"
GAPS = {"gap_to_oracle_model_noise": (ORACLE, MODEL), "gap_to_oracle_poisson": ("oracle_poisson", MODEL)}
QUARTILES = (MODEL, ORACLE)
HELDOUT_HOWTO = (
    "For held-out numbers: `pybridge split DATA.h5ad SPLIT.h5ad`, then `pybridge train SPLIT.h5ad --layer fold_A "
    "-o MODEL_A` (same options as this model) and `pybridge report MODEL_A SPLIT.h5ad -o REPORT`; or "
    "`pybridge report MODEL_DIR DATA.h5ad -o REPORT --refit`, which does both."
)
CAVEAT = ("In-sample numbers: the model was trained on these counts, so they are optimistic; they are not "
          "evidence of how well the model predicts new counts.")


def _per_gene_by_library_decile(pairs: dict, lib: np.ndarray, n_bins: int) -> list[dict]:
    """Per-gene Spearman across the cells of each library-size decile, median over genes.

    ``pairs`` maps a name to (expected, counts), both cells x genes.
    """
    bins = decile_of(lib, n_bins)
    rows = []
    for b in range(n_bins):
        sel = np.flatnonzero(bins == b)
        row = {"decile": b + 1, "library_size_min": float(lib[sel].min()), "library_size_max": float(lib[sel].max()),
               "n_cells": len(sel)}
        for key, (expected, counts) in pairs.items():
            vals = spearman_rows(np.ascontiguousarray(expected[sel].T), _t(counts[sel]))
            finite = vals[np.isfinite(vals)]
            row[f"{key}_median"] = float(np.median(finite)) if finite.size else None
            row[f"{key}_n_undefined"] = int((~np.isfinite(vals)).sum())
        for gap, (reference, model) in GAPS.items():
            if row.get(f"{model}_median") is not None and row.get(f"{reference}_median") is not None:
                row[gap] = row[f"{reference}_median"] - row[f"{model}_median"]
        rows.append(row)
    return rows


def evaluate_in_sample(
    model,
    adata,
    n_bins: int = 10,
    n_expected_samples: int = 5,
    ppc_cells: int = 300,
    ppc_samples: int = 20,
    seed: int = 0,
) -> tuple[dict, dict]:
    """Score ``model`` against the counts it was trained on (its registry's layer of ``adata``).

    Per-cell and per-gene Spearman of the expected expression with the counts, next to the oracle at the same
    depth (``oracle_model_noise``: the model's rates with its NB/ZINB noise; ``oracle_poisson``: Poisson noise
    only) and the mean cell, by library-size decile; per-gene also by mean-expression decile; posterior
    predictive calibration next to the always-zero model. Returns ``(metrics, arrays)`` like
    :func:`pybridge.diagnostics.report.evaluate_split`.
    """
    t0 = time.perf_counter()
    require_counts(adata, "evaluate_in_sample", "Pass the data with its counts, not the minified data.")
    rng = np.random.default_rng(seed)
    X_all = _fold(adata, model.registry, model.registry.layer)
    lib_all = library_size(X_all)
    cells = np.flatnonzero(lib_all > 0)
    X, lib = X_all[cells], lib_all[cells]
    gene_mean = np.asarray(X.mean(axis=0)).ravel()
    rho = np.asarray(
        model.get_normalized_expression(adata, indices=cells, n_samples=n_expected_samples, return_numpy=True),
        dtype=np.float64,
    )
    rate, draws = _oracle_counts(model, adata, cells, lib, rng)
    expected = {MODEL: rho * lib[:, None], "mean_cell": np.outer(lib, mean_cell_profile(X))}
    per_cell = spearman_rows_many(expected, X)
    per_gene = spearman_rows_many({k: v.T for k, v in expected.items()}, _t(X))
    for key, counts in draws.items():
        per_cell[key] = spearman_rows(rate, counts)
        per_gene[key] = spearman_rows(rate.T, _t(counts))
    cell_table = _decile_table(per_cell, lib, n_bins, "library_size", QUARTILES, GAPS)
    gene_table = _decile_table(per_gene, gene_mean, n_bins, "gene_mean", QUARTILES, GAPS)
    # per gene within each library-size decile; each oracle is scored against its own counts
    pairs = {key: (value, X) for key, value in expected.items()}
    pairs.update({key: (rate, counts) for key, counts in draws.items()})
    gene_by_lib = _per_gene_by_library_decile(pairs, lib, n_bins)

    ppc_pos = np.sort(rng.choice(len(cells), size=min(ppc_cells, len(cells)), replace=False))
    acc = CalibrationAccumulator(X.shape[1], CURVE_LEVELS, seed)
    for part in _chunks(len(ppc_pos), 64):
        pos = ppc_pos[part]
        acc.update(model.posterior_predictive_sample(adata, indices=cells[pos], n_samples=ppc_samples), X[pos])

    metrics = {
        "mode": "in_sample",
        "in_sample_caveat": CAVEAT,
        "heldout_howto": HELDOUT_HOWTO,
        "data": {
            "n_cells": int(adata.n_obs),
            "n_cells_evaluated": len(cells),
            "n_cells_excluded_empty": int(adata.n_obs - len(cells)),
            "n_genes": int(X.shape[1]),
            "median_library": float(np.median(lib)),
            "layer": model.registry.layer_name,
        },
        "model": _jsonable(getattr(model, "_init_params", {})),
        "epochs_trained": len(model.history.get("elbo_train", [])),
        "spearman_per_cell_by_library_decile": _records(cell_table),
        "spearman_per_gene_by_library_decile": [_jsonable(r) for r in gene_by_lib],
        "spearman_per_gene_by_mean_decile": _records(gene_table),
        "spearman_per_cell_overall": _overall(per_cell),
        "spearman_per_gene_overall": _overall(per_gene),
        "calibration": {"in_sample": acc.result()},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    arrays = {"cells": cells, "per_cell": per_cell, "per_gene": per_gene, "library_size": lib, "gene_mean": gene_mean,
              "cell_table": cell_table, "gene_table": gene_table, "gene_by_library": pd.DataFrame(gene_by_lib)}
    return metrics, arrays


LABELS = {
    MODEL: "scVI vs its own training counts (in sample)",
    ORACLE: "oracle at the same depth: model rates + model noise",
    "oracle_poisson": "oracle at the same depth: model rates + Poisson noise",
    "mean_cell": "baseline: mean cell",
}
STYLES = {MODEL: ("C0", "-"), ORACLE: ("k", "-"), "oracle_poisson": ("k", "--"), "mean_cell": ("C1", "-")}


def write_in_sample_figures(metrics: dict, arrays: dict, out_dir: Path, title: str = "") -> list[str]:
    """Rank agreement by library-size decile (per cell, per gene), per gene by expression, calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, table, what in ((axes[0], arrays["cell_table"], "per-cell Spearman across genes"),
                            (axes[1], arrays["gene_by_library"], "per-gene Spearman across the decile's cells")):
        x = table["decile"].to_numpy()
        for key, (color, ls) in STYLES.items():
            ax.plot(x, table[f"{key}_median"], color=color, ls=ls, marker="o", ms=3, label=LABELS[key])
        ax.set_xticks(x)
        ax.set_xticklabels([f"{k}\n{int(lo)}-{int(hi)}" for k, lo, hi in
                            zip(x, table["library_size_min"], table["library_size_max"])], fontsize=7)
        ax.set_xlabel("library-size decile (total UMIs)")
        ax.set_title(f"{what} (median)", fontsize=9)
    axes[0].set_ylabel("Spearman, in sample")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"{title} IN-SAMPLE rank agreement by library size (optimistic)".strip())
    fig.tight_layout()
    fig.savefig(out_dir / "spearman_by_library_decile.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.scatter(arrays["gene_mean"], arrays["per_gene"][MODEL], s=2, alpha=0.3, color="C0", label="scVI, per gene")
    gt = arrays["gene_table"]
    centre = np.sqrt(gt["gene_mean_min"].clip(lower=1e-4) * gt["gene_mean_max"].clip(lower=1e-4))
    for key, (color, ls) in STYLES.items():
        ax.plot(centre, gt[f"{key}_median"], color=color, ls=ls, marker="o", ms=3, label=f"{LABELS[key]} (decile median)")
    ax.set_xscale("log")
    ax.set_xlabel("gene mean count per cell")
    ax.set_ylabel("per-gene Spearman across cells, in sample")
    ax.set_title(f"{title} IN-SAMPLE per-gene rank agreement vs expression".strip())
    ax.legend(fontsize=7, markerscale=3, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out_dir / "per_gene_spearman_vs_mean.png", dpi=110)
    plt.close(fig)

    cal = metrics["calibration"]["in_sample"]
    lv = np.asarray(cal["levels"])
    fig, ax = plt.subplots(figsize=(5.5, 4.3))
    ax.plot([0, 1], [0, 1], color="0.7", lw=1)
    ax.plot(lv, cal["interval_all"], "C0-", label="interval, all entries")
    ax.plot(lv, cal["interval_nonzero"], "C0--", label="interval, non-zero entries")
    ax.plot(lv, cal["pit_all"], "C2-", label="randomised PIT, all")
    ax.plot(lv, cal["pit_nonzero"], "C2--", label="randomised PIT, non-zero")
    ax.plot(lv, cal["naive_zero"]["interval_all"], "C3:", label="always-zero model, interval")
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("observed coverage")
    ax.legend(fontsize=7)
    ax.set_title(f"{title} IN-SAMPLE calibration".strip(), fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / "calibration.png", dpi=110)
    plt.close(fig)
    return ["spearman_by_library_decile.png", "per_gene_spearman_vs_mean.png", "calibration.png"]


def write_in_sample_html(metrics: dict, figures: list[str], out_dir: Path, title: str) -> None:
    keys = [f"{k}_median" for k in (MODEL, ORACLE, "oracle_poisson", "mean_cell")] + list(GAPS)
    cols = ["decile", "library_size_min", "library_size_max", "n", *keys, f"{MODEL}_n_undefined"]
    gene_lib_cols = ["decile", "library_size_min", "library_size_max", "n_cells", *keys]
    gene_cols = [c.replace("library_size", "gene_mean") for c in cols]
    cal = metrics["calibration"]["in_sample"]
    idx = [cal["levels"].index(c) for c in (0.5, 0.8, 0.95) if c in cal["levels"]]
    cal_rows = [
        {"model": name, "measure": kind, **{f"{cal['levels'][i]:.2f}": src[kind][i] for i in idx}}
        for name, src in (("scVI (in sample)", cal), ("always zero", cal["naive_zero"]))
        for kind in ("interval_all", "interval_nonzero", "pit_all", "pit_nonzero")
    ]
    imgs = "".join(f'<figure><img src="{f}" alt="{f}"><figcaption>{f}</figcaption></figure>' for f in figures)
    data = metrics["data"]
    banner = "background:#fff3cd;border:1px solid #d39e00;padding:8px"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p style="{banner}"><b>{html.escape(CAVEAT)}</b><br>{html.escape(HELDOUT_HOWTO)}</p>
<p>{data['n_cells_evaluated']} cells ({data['n_cells_excluded_empty']} excluded: no counts), {data['n_genes']} genes,
median depth {data['median_library']:.0f} UMIs. Model trained on <code>{html.escape(data['layer'])}</code> (all the
counts) and scored against the same counts. The oracles take the model's own rates as the truth and draw counts
from them at each cell's depth, with the model's noise (NB/ZINB) or Poisson noise only; their Spearman with those
counts is what ranking genes by the true rates reaches at this depth.</p>
<h2>Per-cell Spearman by library-size decile (in sample)</h2>{_table_html(pd.DataFrame(metrics['spearman_per_cell_by_library_decile']), cols)}
<h2>Per-gene Spearman within each library-size decile (in sample)</h2>{_table_html(pd.DataFrame(metrics['spearman_per_gene_by_library_decile']), gene_lib_cols)}
<h2>Per-gene Spearman by mean-expression decile (in sample)</h2>{_table_html(pd.DataFrame(metrics['spearman_per_gene_by_mean_decile']), gene_cols)}
<h2>Calibration (coverage of central predictive intervals, in sample)</h2>{_table_html(pd.DataFrame(cal_rows), list(cal_rows[0]))}
<p>Interval coverage of counts exceeds nominal even for a perfect model and the always-zero model covers every zero;
the randomised PIT coverage equals the nominal level for a calibrated model.</p>
<h2>Figures</h2>{imgs}
<p>Computed in {metrics['seconds']} s.</p></body></html>"""
    (out_dir / "report.html").write_text(page)


def write_in_sample_report(model, adata, out_dir: str | os.PathLike, name: str, seed: int = 0,
                           title: str | None = None, **eval_kwargs) -> dict:
    """Evaluate ``model`` in sample and write metrics.json, figures and report.html into ``out_dir``."""
    metrics, arrays = evaluate_in_sample(model, adata, seed=seed, **eval_kwargs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = write_in_sample_figures(metrics, arrays, out, title=name)
    metrics["figures"] = figures
    write_metrics(metrics, out)
    write_in_sample_html(metrics, figures, out, title or f"pybridge report (in sample): {name}")
    return metrics
