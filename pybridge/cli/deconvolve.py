"""``pybridge deconvolve``: CondSCVI on a labelled reference, DestVI on spots, proportions into the spots file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anndata import AnnData

from pybridge.cli.io import read_input, refuse_existing, write_h5ad
from pybridge.errors import PybridgeError

PLOT_FORMATS = (".png", ".pdf", ".svg")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "deconvolve",
        help="estimate cell-type proportions of spatial spots with CondSCVI + DestVI",
        description="Train CondSCVI on the labelled single-cell --reference and DestVI on --spots (shared genes "
        "only), then write the spots to --output with obsm['destvi_proportions'] (spots x cell types) and "
        "obsm['destvi_gamma_<cell type>'] (per-type latent states); --plot also maps the proportions at the "
        "spots' coordinates (obsm['spatial']).",
    )
    p.add_argument("--reference", required=True, help="single cells x genes raw counts with cell types (.h5ad/.rds)")
    p.add_argument("--spots", required=True, help="spots x genes raw counts (.h5ad/.rds)")
    p.add_argument("--output", "-o", required=True, help=".h5ad to write (the spots plus the results)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    p.add_argument("--labels-key", default="cell_type", help="reference obs column with cell types (default cell_type)")
    p.add_argument("--reference-layer", default=None, help="reference layer with raw counts (default: X)")
    p.add_argument("--spots-layer", default=None, help="spots layer with raw counts (default: X)")
    p.add_argument("--sc-max-epochs", type=int, default=None, help="CondSCVI epochs (default: run_destvi's, 60)")
    p.add_argument("--st-max-epochs", type=int, default=None,
                   help="DestVI epochs (default: --st-max-steps optimizer steps, at most 2,000 epochs)")
    p.add_argument("--st-max-steps", type=int, default=None,
                   help="DestVI optimizer steps when --st-max-epochs is not given (default 20,000)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="DestVI minibatch size (default min(128, max(4, n_spots // 10)))")
    p.add_argument("--lr", type=float, default=3e-3, help="DestVI learning rate (default 3e-3)")
    p.add_argument("--vamp-prior-p", type=int, default=15, help="VampPrior components per cell type (default 15)")
    p.add_argument("--amortization", choices=["both", "latent", "proportion", "none"], default="both",
                   help="which DestVI parameters come from encoder networks (default both)")
    p.add_argument("--l1-reg", type=float, default=0.0, help="L1 penalty on the proportions (default 0)")
    p.add_argument("--augmentation-weight", type=float, default=None,
                   help="weight of the synthetic-spot supervision of the proportion network (default 1000 with "
                   "amortized proportions; 0 = the DestVI paper's objective)")
    p.add_argument("--cells-per-spot", type=float, default=5.0,
                   help="expected number of cells in a spot; the synthetic spots of the supervision hold "
                   "1 + Poisson(N - 1) reference cells (default 5)")
    p.add_argument("--n-models", type=int, default=1,
                   help="train this many DestVI models (seeds SEED, SEED+1, ...) and report the mean of their "
                   "proportions: lower error, N times the DestVI time (default 1)")
    p.add_argument("--cell-fractions", action="store_true",
                   help="report shares of cells (weights divided by each type's mean reference library) instead "
                   "of shares of expression")
    p.add_argument("--weight-obs", action="store_true", help="up-weight rare cell types in CondSCVI")
    p.add_argument("--model-dir", default=None, help="also save the DestVI model here (and CondSCVI in DIR_sc)")
    p.add_argument("--accelerator", choices=["auto", "cpu", "gpu", "cuda"], default="auto", help="default auto")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="also write a map of the proportions at the spots' obsm['spatial'] coordinates, one panel "
                   "per cell type (.png, .pdf or .svg)")
    p.add_argument("--plot-cell-types", nargs="+", default=None, metavar="TYPE",
                   help="cell types to plot (default: all)")
    return p


def _check_plot(args: argparse.Namespace, spots: AnnData, reference: AnnData) -> None:
    """Refuse, before training, a --plot that could not be drawn: bad format, no coordinates, unknown types."""
    if args.plot is None:
        if args.plot_cell_types:
            raise PybridgeError("--plot-cell-types needs --plot FILE")
        return
    if Path(args.plot).suffix.lower() not in PLOT_FORMATS:
        raise PybridgeError(f"--plot {args.plot!r} must end in one of {', '.join(PLOT_FORMATS)}")
    if "spatial" not in spots.obsm:
        raise PybridgeError(
            f"--plot needs the spots' coordinates in obsm['spatial'], which {args.spots} lacks (obsm keys: "
            f"{sorted(spots.obsm.keys())}); add them (spots x 2: x, y) or drop --plot"
        )
    if args.plot_cell_types and args.labels_key in reference.obs.columns:
        known = set(reference.obs[args.labels_key].astype(str))
        unknown = [t for t in args.plot_cell_types if t not in known]
        if unknown:
            raise PybridgeError(f"--plot-cell-types: unknown cell type(s) {unknown}; the reference's "
                                f"{args.labels_key!r} has {sorted(known)}")


def _write_plot(spots: AnnData, args: argparse.Namespace) -> None:
    """Write the proportions map to ``args.plot`` atomically (a temporary name, then renamed)."""
    from pybridge.deconvolution.plot import plot_spot_proportions

    fig = plot_spot_proportions(spots, args.plot_cell_types)
    target = Path(args.plot)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    fig.savefig(tmp, format=target.suffix[1:].lower(), dpi=150)
    tmp.replace(target)


def run(args: argparse.Namespace) -> int:
    from pybridge.deconvolution.pipeline import SC_MAX_EPOCHS, run_destvi
    if args.n_models < 1:
        raise PybridgeError(f"--n-models must be 1 or more, got {args.n_models}")
    if args.model_dir and args.n_models != 1:
        raise PybridgeError(
            f"--model-dir saves one DestVI model, but --n-models {args.n_models} trains several; drop one of them"
        )
    refuse_existing(args.overwrite, args.output, args.plot, args.model_dir,
                    args.model_dir and str(Path(args.model_dir)) + "_sc")

    spots = read_input(args.spots)
    reference = read_input(args.reference)
    _check_plot(args, spots, reference)
    result = run_destvi(
        spots, reference, labels_key=args.labels_key, spots_layer=args.spots_layer,
        reference_layer=args.reference_layer,
        sc_max_epochs=SC_MAX_EPOCHS if args.sc_max_epochs is None else args.sc_max_epochs,
        st_max_epochs=args.st_max_epochs, st_max_steps=args.st_max_steps, batch_size=args.batch_size, lr=args.lr,
        vamp_prior_p=args.vamp_prior_p, amortization=args.amortization,
        l1_reg=args.l1_reg, augmentation_weight=args.augmentation_weight,
        cells_per_spot=args.cells_per_spot, n_models=args.n_models, weight_obs=args.weight_obs,
        cell_fractions=args.cell_fractions, accelerator=args.accelerator, seed=args.seed,
        progress=False if args.no_progress else None,
    )
    spots.obsm["destvi_proportions"] = result.proportions.loc[spots.obs_names]
    for cell_type, states in result.gamma.items():
        spots.obsm[f"destvi_gamma_{cell_type}"] = states.loc[spots.obs_names].to_numpy()
    spots.uns["destvi"] = {"cell_types": list(result.proportions.columns), "n_genes": len(result.genes),
                           "cell_fractions": bool(args.cell_fractions)}
    if args.model_dir:
        result.st_model.save(args.model_dir, overwrite=True)
        result.sc_model.save(str(Path(args.model_dir)) + "_sc", overwrite=True)
    write_h5ad(spots, args.output)
    if args.plot:
        _write_plot(spots, args)
    print(
        f"deconvolved {spots.n_obs} spots into {result.proportions.shape[1]} cell types over "
        f"{len(result.genes)} shared genes; proportions in {args.output} obsm['destvi_proportions']"
        + (f", map in {args.plot}" if args.plot else ""),
        file=sys.stderr,
    )
    return 0
