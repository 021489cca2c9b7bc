"""``pybridge train``: fit scVI on a count matrix, save the model and an .h5ad with obsm["X_scVI"]."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pybridge.cli.io import read_input, refuse_existing, write_h5ad
from pybridge.errors import PybridgeError

DEFAULT_BUFFER_CELLS = 20_000


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train scVI and write the model and the latent representation",
        description="Train scVI on INPUT (.h5ad, or .rds with R and pybridge-sc[r]) and write the model directory "
        "(model.safetensors + model.json) to --output, plus OUTPUT/latent.h5ad (or --latent-output) holding the "
        "input with obsm['X_scVI'].",
    )
    p.add_argument("input", help="cells x genes counts: .h5ad or .rds (SingleCellExperiment/Seurat)")
    p.add_argument("--output", "-o", required=True, help="model directory to write")
    p.add_argument("--latent-output", default=None, help="where to write the .h5ad with obsm['X_scVI'] "
                   "(default: OUTPUT/latent.h5ad)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model directory and latent "
                   "file")
    p.add_argument("--layer", default=None, help="layer holding raw counts (default: X)")
    p.add_argument("--batch-key", default=None, help="obs column with the batch of each cell")
    p.add_argument("--labels-key", default=None, help="obs column with cell labels (for gene-label dispersion)")
    p.add_argument("--categorical-covariate", action="append", default=None, metavar="KEY",
                   help="obs column of an extra categorical covariate (repeatable)")
    p.add_argument("--continuous-covariate", action="append", default=None, metavar="KEY",
                   help="obs column of an extra continuous covariate (repeatable)")
    p.add_argument("--allow-non-integer", action="store_true", help="accept non-integer counts (e.g. expected counts)")
    p.add_argument("--backed", action="store_true",
                   help="train from disk without loading the counts (.h5ad or .zarr with CSR or dense X/layer); "
                   "under torchrun each rank reads only its own cells. The latent .h5ad then holds obs, var and "
                   "obsm['X_scVI'] but no counts")
    p.add_argument("--buffer-cells", type=int, default=None,
                   help="with --backed: cells held in memory per shuffle buffer (default 20000)")
    p.add_argument("--n-latent", type=int, default=10, help="latent dimensions (default 10)")
    p.add_argument("--n-hidden", type=int, default=128, help="hidden units per layer (default 128)")
    p.add_argument("--n-layers", type=int, default=1, help="hidden layers in encoder and decoder (default 1)")
    p.add_argument("--dropout-rate", type=float, default=0.1, help="dropout rate (default 0.1)")
    p.add_argument("--gene-likelihood", choices=["zinb", "nb", "poisson"], default="zinb", help="default zinb")
    p.add_argument("--dispersion", choices=["gene", "gene-batch", "gene-label", "gene-cell"], default="gene",
                   help="default gene")
    p.add_argument("--latent-distribution", choices=["normal", "ln"], default="normal", help="default normal")
    p.add_argument("--latent-library", action="store_true", help="model the library size as latent "
                   "(default: observed library size)")
    p.add_argument("--max-epochs", type=int, default=None, help="default: min(round(20000/n_cells*400), 400)")
    p.add_argument("--batch-size", type=int, default=128, help="minibatch size (default 128)")
    p.add_argument("--train-size", type=float, default=0.9, help="fraction of cells for training (default 0.9)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--early-stopping", action="store_true", help="stop when the validation ELBO stalls")
    p.add_argument("--accelerator", choices=["auto", "cpu", "gpu", "cuda"], default="auto", help="default auto")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress display (bar or log lines)")
    return p


def _open_data(args: argparse.Namespace):
    """The registered AnnData: read into memory, or (``--backed``) standing for the counts on disk."""
    from pybridge.models.scvi import SCVI

    covariates = {
        "layer": args.layer, "batch_key": args.batch_key, "labels_key": args.labels_key,
        "categorical_covariate_keys": args.categorical_covariate,
        "continuous_covariate_keys": args.continuous_covariate,
    }
    if not args.backed:
        if args.buffer_cells is not None:
            raise PybridgeError("--buffer-cells only applies with --backed")
        adata = read_input(args.input)
        SCVI.setup_anndata(adata, allow_non_integer=args.allow_non_integer, **covariates)
        return adata
    from pybridge.data.disk import open_backed

    if Path(args.input).suffix.lower() not in (".h5ad", ".zarr"):
        raise PybridgeError(f"--backed reads .h5ad or .zarr data, not {args.input}; convert it with pybridge convert")
    if not Path(args.input).exists():
        raise PybridgeError(f"no such file: {args.input}")
    if args.allow_non_integer:
        raise PybridgeError("--allow-non-integer is not available with --backed (counts are checked while streaming)")
    buffer_cells = DEFAULT_BUFFER_CELLS if args.buffer_cells is None else args.buffer_cells
    if buffer_cells < 1:
        raise PybridgeError(f"--buffer-cells must be >= 1, got {buffer_cells}")
    chunk_cells = max(1, min(1_000, buffer_cells // 10))
    return open_backed(args.input, buffer_cells=buffer_cells, chunk_cells=chunk_cells, **covariates)


def run(args: argparse.Namespace) -> int:
    from pybridge.models.scvi import SCVI
    from pybridge.train import distributed

    refuse_existing(args.overwrite, args.output, args.latent_output)
    adata = _open_data(args)
    model = SCVI(
        adata, n_hidden=args.n_hidden, n_latent=args.n_latent, n_layers=args.n_layers,
        dropout_rate=args.dropout_rate, dispersion=args.dispersion, gene_likelihood=args.gene_likelihood,
        latent_distribution=args.latent_distribution, use_observed_lib_size=not args.latent_library,
    )
    model.train(
        max_epochs=args.max_epochs, batch_size=args.batch_size, train_size=args.train_size, lr=args.lr,
        early_stopping=args.early_stopping, accelerator=args.accelerator, seed=args.seed,
        progress=False if args.no_progress else None,
    )  # data-parallel when launched by torchrun
    is_main = distributed.is_main_process()
    distributed.cleanup()
    if not is_main:
        return 0
    model.save(args.output, overwrite=args.overwrite)
    adata.obsm["X_scVI"] = model.get_latent_representation()
    latent_path = args.latent_output or str(Path(args.output) / "latent.h5ad")
    write_h5ad(adata, latent_path)
    history = model.history
    summary = f"trained {len(history['elbo_train'])} epochs on {adata.n_obs} cells x {adata.n_vars} genes"
    if "elbo_validation" in history:
        # history holds the loss (negative ELBO); print the ELBO with get_elbo()'s sign
        summary += f"; validation ELBO {-history['elbo_validation'].iloc[-1, 0]:.2f} per cell (higher is better)"
    print(f"{summary}; model in {args.output}, latent in {latent_path}", file=sys.stderr)
    return 0
