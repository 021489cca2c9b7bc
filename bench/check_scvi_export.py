"""Load pybridge models exported with ``save_scvi_tools`` in scvi-tools and write what it computes from them.

Runs in the reference venv (``bash bench/setup_scvi_venv.sh`` builds it); never imports pybridge::

    bench/.venv-scvi/bin/python bench/check_scvi_export.py CASE_DIR [CASE_DIR ...]

Each CASE_DIR holds ``model/`` (the export) and ``adata.h5ad`` (the cells, with the obs columns the model
was set up with). For each, ``scvi.model.SCVI.load(CASE_DIR/model, adata)`` is called and ``scvi_tools.npz``
is written: the latent posterior mean and variance (``get_latent_representation``) and the normalised
expression at z = posterior mean. A model that scvi-tools refuses gets ``scvi_tools_error.txt`` instead.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import anndata
import numpy as np
import scvi
import torch


@torch.inference_mode()
def normalized_at_posterior_mean(model: scvi.model.SCVI, adata: anndata.AnnData) -> np.ndarray:
    """Expected frequencies at z = posterior mean, with each cell's own batch and covariates (deterministic)."""
    module = model.module.eval()
    loader = model._make_data_loader(adata=adata, batch_size=adata.n_obs, shuffle=False)
    tensors = next(iter(loader))
    inference = module.inference(**module._get_inference_input(tensors))
    generative_input = module._get_generative_input(tensors, inference)
    generative_input["z"] = inference["qz"].loc
    return module.generative(**generative_input)["px"].scale.numpy()


def check(case: Path) -> None:
    adata = anndata.read_h5ad(case / "adata.h5ad")
    model = scvi.model.SCVI.load(str(case / "model"), adata=adata)
    qzm, qzv = model.get_latent_representation(return_dist=True)
    np.savez(case / "scvi_tools.npz", qzm=qzm, qzv=qzv, normalized=normalized_at_posterior_mean(model, adata))


def main() -> None:
    torch.set_num_threads(1)
    for case in map(Path, sys.argv[1:]):
        try:
            check(case)
            print(f"{case.name}: loaded by scvi-tools {scvi.__version__}")
        except Exception:  # noqa: BLE001 - every failure is reported to the caller, case by case
            (case / "scvi_tools_error.txt").write_text(traceback.format_exc())
            print(f"{case.name}: scvi-tools refused it")


if __name__ == "__main__":
    main()
