"""One call from a labelled single-cell reference and spots to DestVI proportions (used by the CLI and R)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from pybridge.errors import PybridgeError
from pybridge.models.condscvi import CondSCVI
from pybridge.models.destvi import DestVI, resolve_augmentation, shared_genes
from pybridge.train.trainer import EpochCallback

# CondSCVI epochs on the reference: 300 (scvi-tools' CondSCVI default) gave worse proportions on the Spotless
# standards (bench/RESULTS.md, "Spatial deconvolution: run_destvi's CondSCVI epochs and DestVI steps").
SC_MAX_EPOCHS = 60


@dataclass
class DeconvolutionResult:
    """Proportions (spots x cell types), per-type states {cell type: spots x n_latent}, the CondSCVI model and
    the DestVI models (one per ``n_models``; the values are their mean)."""

    proportions: pd.DataFrame
    gamma: dict[str, pd.DataFrame]
    sc_model: CondSCVI
    st_models: list[DestVI]
    genes: list[str]

    @property
    def st_model(self) -> DestVI:
        """The DestVI model, when there is one (``n_models=1``)."""
        if len(self.st_models) != 1:
            raise PybridgeError(f"this result averages {len(self.st_models)} DestVI models; use st_models")
        return self.st_models[0]


def run_destvi(
    spots: AnnData,
    reference: AnnData,
    labels_key: str = "cell_type",
    spots_layer: str | None = None,
    reference_layer: str | None = None,
    sc_max_epochs: int = SC_MAX_EPOCHS,
    st_max_epochs: int | None = None,
    st_max_steps: int | None = None,
    batch_size: int | None = None,
    lr: float = 3e-3,
    vamp_prior_p: int | None = 15,
    amortization: str = "both",
    l1_reg: float = 0.0,
    augmentation_weight: float | None = None,
    cells_per_spot: float = 5.0,
    n_models: int = 1,
    weight_obs: bool = False,
    n_latent: int = 5,
    cell_fractions: bool = False,
    accelerator: str = "auto",
    seed: int = 0,
    progress: bool | EpochCallback | None = None,
) -> DeconvolutionResult:
    """Train CondSCVI on ``reference`` and DestVI on ``spots`` over their shared genes.

    Neither input is modified: both are subset (copied) to the shared genes, which are reported with a
    warning when the overlap is partial (an error under 50). ``cell_fractions=True`` reports shares of cells
    instead of shares of expression (see :meth:`DestVI.get_proportions`). CondSCVI trains ``sc_max_epochs``
    (default 60) epochs: longer training gave worse proportions (bench/RESULTS.md). ``augmentation_weight`` is the
    synthetic-spot supervision of :class:`DestVI` (None = its default; 0 = the paper's objective), whose
    synthetic spots hold 1 + Poisson(``cells_per_spot`` - 1) reference cells.
    ``st_max_epochs=None`` uses DestVI's schedule of ``st_max_steps`` optimizer steps (default 20,000; at most
    2,000 epochs). ``n_models`` > 1 trains that many DestVI models on the same CondSCVI (seeds ``seed``,
    ``seed + 1``, ...) and reports the mean of their proportions and states: an ensemble, ``n_models`` times the
    DestVI training time, with lower error than one model (bench/RESULTS.md).
    """
    if isinstance(n_models, bool) or not isinstance(n_models, (int, np.integer)) or n_models < 1:
        raise PybridgeError(f"n_models must be a whole number >= 1, got {n_models!r}")
    for name, value in (("spots", spots), ("reference", reference)):
        if not isinstance(value, AnnData):
            raise PybridgeError(f"{name} must be an AnnData, got {type(value).__name__}")
    if labels_key not in reference.obs.columns and labels_key in spots.obs.columns:
        raise PybridgeError(
            f"the reference has no {labels_key!r} column but the spots do: the spots and the reference "
            "look swapped (reference = labelled single cells, spots = spatial data)"
        )
    resolve_augmentation(augmentation_weight, None, amortization, "reference", cells_per_spot)  # before training
    genes = shared_genes([str(g) for g in reference.var_names], spots.var_names, what="run_destvi")
    reference = reference[:, genes].copy()
    spots = spots[:, genes].copy()
    CondSCVI.setup_anndata(reference, labels_key=labels_key, layer=reference_layer)
    sc_model = CondSCVI(reference, n_latent=n_latent, weight_obs=weight_obs)
    sc_model.train(max_epochs=sc_max_epochs, accelerator=accelerator, seed=seed, progress=progress)
    DestVI.setup_anndata(spots, layer=spots_layer)
    st_models = []
    for k in range(int(n_models)):
        st_model = DestVI.from_rna_model(spots, sc_model, vamp_prior_p=vamp_prior_p, amortization=amortization,
                                         l1_reg=l1_reg, augmentation_weight=augmentation_weight,
                                         cells_per_spot=cells_per_spot)
        st_model.train(max_epochs=st_max_epochs, max_steps=st_max_steps, lr=lr, batch_size=batch_size,
                       accelerator=accelerator, seed=seed + k, progress=progress)
        st_models.append(st_model)
    # every model decodes with the same frozen CondSCVI, so their states share one latent space and average
    proportions = sum(m.get_proportions(cell_fractions=cell_fractions) for m in st_models) / len(st_models)
    gammas = [m.get_gamma() for m in st_models]
    gamma = {ct: sum(g[ct] for g in gammas) / len(gammas) for ct in gammas[0]}
    if not np.isfinite(proportions.to_numpy()).all():
        raise PybridgeError("DestVI produced non-finite proportions; lower lr or check the spot counts")
    return DeconvolutionResult(proportions, gamma, sc_model, st_models, genes)
