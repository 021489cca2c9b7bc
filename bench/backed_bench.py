"""scVI on an AnnData read with ``anndata.read_h5ad(path, backed="r")``: pybridge and scvi-tools 1.4.2 side by side.

Run once per tool, each in its own venv, on the same file and settings:

    .venv/bin/python bench/backed_bench.py --tool pybridge DATA.h5ad --epochs 10
    bench/.venv-scvi/bin/python bench/backed_bench.py --tool scvi-tools DATA.h5ad --epochs 10

``--in-memory`` reads the file whole instead (the reference point). Prints one JSON line: training seconds,
seconds per epoch, peak RSS of the process (MiB) and the held-out ELBO per cell (``get_elbo`` on the validation
cells, higher is better).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import anndata
import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--tool", choices=["pybridge", "scvi-tools"], required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--in-memory", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    adata = anndata.read_h5ad(args.data) if args.in_memory else anndata.read_h5ad(args.data, backed="r")
    if args.tool == "pybridge":
        import pybridge

        model_class, options = pybridge.SCVI, {"progress": False}
    else:
        import scvi

        scvi.settings.seed = 0
        model_class, options = scvi.model.SCVI, {"enable_progress_bar": False}
    model_class.setup_anndata(adata)
    model = model_class(adata)
    start = time.perf_counter()
    model.train(max_epochs=args.epochs, batch_size=128, train_size=0.9, accelerator="cpu", **options)
    seconds = time.perf_counter() - start
    elbo = float(model.get_elbo(indices=np.sort(model.validation_indices)))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "tool": args.tool, "data": args.data, "backed": not args.in_memory, "cells": adata.n_obs,
        "genes": adata.n_vars, "epochs": args.epochs, "train_s": round(seconds, 2),
        "s_per_epoch": round(seconds / args.epochs, 3), "peak_rss_mib": round(peak_mib), "heldout_elbo": round(elbo, 2),
        "torch_threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
