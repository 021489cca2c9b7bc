"""``pybridge report``: count-split reconstruction report (metrics.json, PNG figures, report.html)."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="reconstruction diagnostics of a model trained on a count-split fold",
        description="Score the model in MODEL_DIR, trained on the training fold of DATA.h5ad, on the held-out "
        "fold: per-cell and per-gene Spearman by library-size and gene-mean decile next to the noise ceiling, "
        "baselines (mean cell, fold-A counts, PCA), held-out log-likelihood, calibration. Make the folds with "
        "pybridge.diagnostics.split_anndata(adata) and train on layer 'fold_A'.",
    )
    p.add_argument("model_dir", help="directory written by model.save() or `pybridge train`")
    p.add_argument("data", help=".h5ad holding the count-split folds as layers")
    p.add_argument("--output", "-o", required=True, help="directory to write report.html, metrics.json, figures")
    p.add_argument("--train-layer", default="fold_A", help="layer the model was trained on (default fold_A)")
    p.add_argument("--test-layer", default="fold_B", help="held-out layer (default fold_B)")
    p.add_argument("--compare-likelihoods", action="store_true",
                   help="also train ZINB, NB and Poisson versions of the model on the training fold and compare them")
    p.add_argument("--compare-max-epochs", type=int, default=None,
                   help="epochs for the compared models (default: as many as MODEL_DIR was trained for)")
    p.add_argument("--ppc-cells", type=int, default=300, help="cells used for calibration (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--accelerator", choices=["auto", "cpu", "gpu", "cuda"], default="auto", help="default auto")
    return p


def run(args: argparse.Namespace) -> int:
    from pybridge.diagnostics.report import build_report

    metrics = build_report(
        args.model_dir, args.data, args.output, train_layer=args.train_layer, test_layer=args.test_layer,
        compare_likelihoods=args.compare_likelihoods, compare_max_epochs=args.compare_max_epochs,
        accelerator=args.accelerator, seed=args.seed, ppc_cells=args.ppc_cells,
    )
    overall = metrics["spearman_per_cell_overall"]
    print(
        f"report written to {args.output}: per-cell Spearman vs held-out fold median "
        f"{overall['model_heldout']['median']:.3f}, noise ceiling {overall['ceiling_split_half']['median']:.3f} "
        f"({metrics['seconds']} s)",
        file=sys.stderr,
    )
    return 0
