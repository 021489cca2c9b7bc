"""Refit a model on a count split: the same architecture and registry setup, trained on fold A only."""

from __future__ import annotations

from collections.abc import Callable

from pybridge.diagnostics.countsplit import split_anndata
from pybridge.models.scvi import SCVI

__all__ = ["refit_on_fold"]


def refit_on_fold(
    model: SCVI,
    adata,
    fraction: float = 0.5,
    seed: int = 0,
    max_epochs: int | None = None,
    accelerator: str = "auto",
    log: Callable[[str], None] = print,
) -> tuple[SCVI, object]:
    """Split ``model``'s counts into layers fold_A / fold_B and train a fresh model like ``model`` (its init
    params; batch, labels and covariates of its registry) on fold_A. Returns ``(refitted model, split data)``.

    The split data is ``adata`` itself (layers added in place), or a copy restricted to the model's genes
    when ``adata`` has others. Trains for as many epochs as ``model`` was trained (its history) unless
    ``max_epochs`` is given. ``log`` receives one line per step.
    """
    reg = model.registry
    if list(map(str, adata.var_names)) != reg.var_names:
        adata = adata[:, reg.var_names].copy()
    epochs = max_epochs or len(model.history.get("elbo_train", [])) or None
    log(f"refit: splitting {reg.layer_name} into layers fold_A + fold_B (binomial thinning, fraction {fraction}, "
        f"seed {seed})")
    split_anndata(adata, fraction=fraction, seed=seed, layer=reg.layer)
    SCVI.setup_anndata(
        adata, layer="fold_A", batch_key=reg.batch_key, labels_key=reg.labels_key,
        categorical_covariate_keys=reg.categorical_covariate_keys,
        continuous_covariate_keys=reg.continuous_covariate_keys, allow_non_integer=reg.allow_non_integer,
    )
    params = dict(model._init_params)
    source = "--max-epochs" if max_epochs else ("the loaded model's" if epochs else "the default for this data size")
    log(f"refit: training SCVI({', '.join(f'{k}={v}' for k, v in params.items())}) on layer fold_A for "
        f"{epochs or 'the default number of'} epochs ({source}), seed {seed}")
    refitted = SCVI(adata, **params)
    refitted.train(max_epochs=epochs, seed=seed, accelerator=accelerator, progress=False)
    log(f"refit: trained {len(refitted.history.get('elbo_train', []))} epochs; scoring on held-out layer fold_B")
    return refitted, adata
