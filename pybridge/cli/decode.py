"""``pybridge decode``: normalised expression of chosen genes from a saved model, into an .h5ad."""

from __future__ import annotations

import argparse
import sys

from pybridge.cli.io import read_input, refuse_existing, write_h5ad


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "decode",
        help="decode normalised expression of chosen genes with a saved model",
        description="Load the model in MODEL_DIR, decode INPUT's cells and write OUTPUT (.h5ad): X holds the "
        "expected expression of --genes (all genes if omitted) scaled to --library-size, obs as in INPUT.",
    )
    p.add_argument("model_dir", help="directory written by `pybridge train` or model.save()")
    p.add_argument("input", help="cells to decode: .h5ad or .rds with the model's genes (any order)")
    p.add_argument("--output", "-o", required=True, help=".h5ad file to write")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    p.add_argument("--genes", nargs="+", default=None, metavar="GENE", help="gene names to decode (default: all)")
    p.add_argument("--library-size", default="1", help="scale of the expression: a number (default 1: "
                   "frequencies) or 'latent' for each cell's own library size")
    p.add_argument("--n-samples", type=int, default=1, help="posterior samples to average (default 1: the mean)")
    p.add_argument("--transform-batch", default=None, help="decode every cell as if from this batch")
    p.add_argument("--accelerator", choices=["auto", "cpu", "gpu", "cuda"], default="auto", help="default auto")
    return p


def _library_size(value: str) -> float | str:
    return value if value == "latent" else float(value)


def run(args: argparse.Namespace) -> int:
    refuse_existing(args.overwrite, args.output)
    import anndata

    from pybridge.models.scvi import SCVI

    adata = read_input(args.input)
    model = SCVI.load(args.model_dir, adata=adata, accelerator=args.accelerator)
    from pybridge.data.minified import is_minified

    if is_minified(adata) and args.n_samples == 1 and args.transform_batch is None:
        import pandas as pd  # minified input: gene-subset decoding with the stored log-normalisers

        values = model.decode(adata, genes=args.genes, library_size=_library_size(args.library_size))
        frame = pd.DataFrame(values, index=adata.obs_names, columns=args.genes or model.registry.var_names)
    else:
        frame = model.get_normalized_expression(
            adata, gene_list=args.genes, library_size=_library_size(args.library_size), n_samples=args.n_samples,
            transform_batch=args.transform_batch,
        )
    out = anndata.AnnData(X=frame.to_numpy(dtype="float32"), obs=adata.obs.copy())
    out.var_names = frame.columns.astype(str)
    out.uns["pybridge_decode"] = {"model_dir": str(args.model_dir), "library_size": str(args.library_size)}
    write_h5ad(out, args.output)
    print(f"decoded {out.n_vars} genes for {out.n_obs} cells into {args.output}", file=sys.stderr)
    return 0
