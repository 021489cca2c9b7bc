"""``pybridge split``: count-split the counts into layers fold_A + fold_B that sum back to them exactly."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "split",
        help="count-split the counts into layers fold_A and fold_B (for held-out reports)",
        description="Split every count of INPUT (X, or --layer) by binomial thinning into layers fold_A and fold_B "
        "(fold_A + fold_B == the counts exactly) and write OUTPUT. Train on fold A (`pybridge train OUTPUT --layer "
        "fold_A -o MODEL`), then `pybridge report MODEL OUTPUT -o REPORT` scores the model on fold B.",
    )
    p.add_argument("input", help=".h5ad (or .rds with R and pybridge-sc[r]) holding raw counts")
    p.add_argument("output", help=".h5ad to write: the input plus layers fold_A and fold_B")
    p.add_argument("--fraction", type=float, default=0.5, help="expected share of each count in fold_A (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--layer", default=None, help="layer holding the raw counts (default: X)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    return p


def run(args: argparse.Namespace) -> int:
    from pybridge.cli.io import read_input, refuse_existing, write_h5ad
    from pybridge.diagnostics.countsplit import split_anndata
    from pybridge.errors import PybridgeError

    refuse_existing(args.overwrite, args.output)
    adata = read_input(args.input)
    if args.layer is not None and args.layer not in adata.layers:
        raise PybridgeError(f"{args.input} has no layer {args.layer!r} (layers: {list(adata.layers) or 'none'}); "
                            "drop --layer to split X")
    if args.layer in ("fold_A", "fold_B"):
        raise PybridgeError(f"--layer {args.layer} would be overwritten by the split; copy it to another layer first")
    split_anndata(adata, fraction=args.fraction, seed=args.seed, layer=args.layer)
    write_h5ad(adata, args.output)
    print(
        f"wrote {args.output}: layers fold_A + fold_B (sum == {'X' if args.layer is None else args.layer}, fraction "
        f"{args.fraction}, seed {args.seed}); next: pybridge train {args.output} --layer fold_A -o MODEL_DIR, then "
        f"pybridge report MODEL_DIR {args.output} -o REPORT_DIR",
        file=sys.stderr,
    )
    return 0
