"""``pybridge report``: reconstruction report of any model (metrics.json, PNG figures, report.html).

A model trained on a count-split fold is scored on the held-out fold; a model trained on all the counts gets
the in-sample report, or with ``--refit`` is retrained on a count split first and then scored held out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="reconstruction diagnostics of a model (held-out with a count split, else in sample)",
        description="Score the model in MODEL_DIR on DATA. If it was trained on a count-split fold of DATA (layer "
        "fold_A, made by `pybridge split`), score it on the held-out fold: per-cell and per-gene Spearman by "
        "library-size and gene-mean decile next to the noise ceiling and oracles, baselines (mean cell, fold-A "
        "counts, PCA), held-out log-likelihood, calibration. A model trained on all the counts gets the in-sample "
        "report (optimistic: rank agreement next to an oracle at the same depth, calibration next to the "
        "always-zero model); --refit instead splits the counts, retrains the same architecture on fold A and "
        "scores it held out.",
    )
    p.add_argument("model_dir", help="directory written by model.save() or `pybridge train`")
    p.add_argument("data", help=".h5ad the model was trained on (holding the count-split folds, if any)")
    p.add_argument("--output", "-o", required=True, help="directory to write report.html, metrics.json, figures")
    p.add_argument("--overwrite", action="store_true", help="write into an existing output directory")
    p.add_argument("--train-layer", default=None,
                   help="layer the model was trained on, a training fold (default: as recorded by `pybridge split`, "
                   "fold_A)")
    p.add_argument("--test-layer", default=None, help="held-out layer (default: as recorded, fold_B)")
    p.add_argument("--refit", action="store_true",
                   help="split the model's counts, train the same architecture on fold_A and report on fold_B")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="with --refit: epochs (default: as many as MODEL_DIR was trained for)")
    p.add_argument("--fraction", type=float, default=None, help="with --refit: share of counts in fold_A (default 0.5)")
    p.add_argument("--compare-likelihoods", action="store_true",
                   help="held-out report: also train ZINB, NB and Poisson versions of the model on the training "
                   "fold and compare them")
    p.add_argument("--compare-max-epochs", type=int, default=None,
                   help="epochs for the compared models (default: as many as MODEL_DIR was trained for)")
    p.add_argument("--ppc-cells", type=int, default=300, help="cells used for calibration (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--accelerator", choices=["auto", "cpu", "gpu", "cuda"], default="auto", help="default auto")
    return p


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from pybridge.cli.io import read_input, refuse_existing
    from pybridge.diagnostics.insample import HELDOUT_HOWTO, write_in_sample_report
    from pybridge.diagnostics.refit import refit_on_fold
    from pybridge.diagnostics.report import heldout_layers, write_heldout_report
    from pybridge.errors import PybridgeError
    from pybridge.models.scvi import SCVI

    refuse_existing(args.overwrite, args.output)
    if not Path(args.data).is_file():
        raise PybridgeError(f"data file {args.data} does not exist")
    if args.refit and (args.train_layer or args.test_layer):
        raise PybridgeError("--refit makes its own folds (fold_A, fold_B); drop --train-layer / --test-layer")
    for flag, value in (("--max-epochs", args.max_epochs), ("--fraction", args.fraction)):
        if value is not None and not args.refit:
            raise PybridgeError(f"{flag} applies to --refit only; add --refit or drop {flag}")
    adata = read_input(args.data)
    name = Path(args.data).stem
    model = SCVI.load(args.model_dir, adata=adata, accelerator=args.accelerator)
    common = {"seed": args.seed, "ppc_cells": args.ppc_cells}
    heldout = dict(compare_likelihoods=args.compare_likelihoods, compare_max_epochs=args.compare_max_epochs, **common)
    if args.refit:
        fraction = 0.5 if args.fraction is None else args.fraction
        model, adata = refit_on_fold(model, adata, fraction=fraction, seed=args.seed, max_epochs=args.max_epochs,
                                     accelerator=args.accelerator, log=_log)
        refit = {"refit": {"from_model": str(args.model_dir), "fraction": fraction, "seed": args.seed,
                           "epochs": len(model.history.get("elbo_train", []))}}
        metrics = write_heldout_report(model, adata, args.output, name, extra=refit, **heldout)
    else:
        layers = heldout_layers(model, adata, args.train_layer, args.test_layer)
        if layers is None:
            if args.compare_likelihoods:
                raise PybridgeError("--compare-likelihoods scores models on a held-out fold, and this model was "
                                    "trained on all the counts; add --refit")
            _log(f"{args.model_dir} was trained on all the counts ({model.registry.layer_name}): writing the "
                 f"IN-SAMPLE report (optimistic). {HELDOUT_HOWTO}")
            metrics = write_in_sample_report(model, adata, args.output, name, **common)
            row = metrics["spearman_per_cell_overall"]
            _log(f"in-sample report written to {args.output}: per-cell Spearman vs the training counts median "
                 f"{row['model_in_sample']['median']:.3f}; oracle at the same depth "
                 f"{row['oracle_model_noise']['median']:.3f} (model noise), {row['oracle_poisson']['median']:.3f} "
                 f"(Poisson noise) ({metrics['seconds']} s)")
            return 0
        metrics = write_heldout_report(model, adata, args.output, name, layers[0], layers[1], **heldout)
    overall = metrics["spearman_per_cell_overall"]
    _log(
        f"report written to {args.output}: per-cell Spearman vs held-out fold median "
        f"{overall['model_heldout']['median']:.3f}, noise ceiling {overall['ceiling_split_half']['median']:.3f} "
        f"({metrics['seconds']} s)"
    )
    return 0
