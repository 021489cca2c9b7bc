"""`pybridge convert IN OUT`: .rds (SingleCellExperiment / Seurat) <-> .h5ad, chosen by file extension."""

from __future__ import annotations

import argparse
from pathlib import Path

from pybridge.bridge import read_rds, write_rds
from pybridge.cli.io import read_input, write_h5ad
from pybridge.errors import PybridgeError

SUFFIXES = (".rds", ".h5ad")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert",
        help="convert between .rds (SingleCellExperiment/Seurat) and .h5ad",
        description="Convert IN to OUT by their extensions: .rds (SingleCellExperiment or Seurat v4/v5, read; "
        "written as --kind) and .h5ad. Reading or writing .rds needs R and rpy2 (pip install 'pybridge-sc[r]').",
    )
    p.add_argument("input", help="input file (.rds or .h5ad)")
    p.add_argument("output", help="output file (.rds or .h5ad)")
    p.add_argument("--kind", choices=["sce", "seurat"], default="sce", help="object written to an .rds (default: sce)")
    p.add_argument("--assay", default=None,
                   help="reading .rds: the SCE assay that becomes X (default counts) or the Seurat assay")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    return p


def _suffix(path: str, role: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise PybridgeError(f"{role} {path!r} must end in .rds or .h5ad, not {suffix or '(no extension)'!r}")
    return suffix


def run(args: argparse.Namespace) -> int:
    in_suffix, out_suffix = _suffix(args.input, "input"), _suffix(args.output, "output")
    if not Path(args.input).is_file():
        raise PybridgeError(f"no such file: {args.input}")
    if Path(args.output).exists() and not args.overwrite:
        raise PybridgeError(f"{args.output} exists; pass --overwrite to replace it")
    adata = read_input(args.input) if in_suffix == ".h5ad" else read_rds(args.input, assay=args.assay)
    if out_suffix == ".rds":
        write_rds(adata, args.output, kind=args.kind)
    else:
        write_h5ad(adata, args.output, overwrite=True)
    print(f"wrote {args.output}: {adata.n_obs} cells x {adata.n_vars} genes")
    return 0
