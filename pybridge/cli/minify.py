"""``pybridge minify``: replace the counts of an .h5ad by each cell's latent posterior (scvi-tools layout)."""

from __future__ import annotations

import argparse
import sys

from pybridge.cli.io import read_input, refuse_existing, write_h5ad


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "minify",
        help="keep only each cell's latent posterior (decode genes on demand later)",
        description="Load the model in MODEL_DIR, encode INPUT's cells and write OUTPUT (.h5ad) in scvi-tools' "
        "minified layout: obsm['scvi_latent_qzm'] / ['scvi_latent_qzv'], obs['observed_lib_size'], "
        "obs['pybridge_log_normalizer'] (for fast gene-subset decoding), uns['_scvi_adata_minify_type'] and an "
        "all-zero sparse X. obs, var and obsm of INPUT are kept. Decode it with `pybridge decode MODEL_DIR OUTPUT "
        "--genes ...`.",
    )
    p.add_argument("model_dir", help="directory written by `pybridge train` or model.save()")
    p.add_argument("input", help="cells with counts: .h5ad or .rds with the model's genes (any order)")
    p.add_argument("--output", "-o", required=True, help="minified .h5ad to write")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    p.add_argument("--accelerator", choices=["auto", "cpu", "gpu", "cuda"], default="auto", help="default auto")
    return p


def run(args: argparse.Namespace) -> int:
    from pybridge.data.minified import payload_bytes_per_cell
    from pybridge.models.scvi import SCVI
    refuse_existing(args.overwrite, args.output)

    adata = read_input(args.input)
    model = SCVI.load(args.model_dir, adata=adata, accelerator=args.accelerator)
    minified = model.minify(adata)
    write_h5ad(minified, args.output)
    print(
        f"minified {minified.n_obs} cells ({payload_bytes_per_cell(minified):.0f} bytes per cell of latent payload) "
        f"into {args.output}",
        file=sys.stderr,
    )
    return 0
