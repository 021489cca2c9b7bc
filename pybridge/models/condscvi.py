"""CondSCVI: the cell-type-conditional single-cell model that DestVI deconvolves spots with (Lopez et al. 2022)."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from anndata import AnnData

from pybridge.data.fields import covariate_arrays
from pybridge.data.minified import require_counts
from pybridge.data.registry import Registry
from pybridge.data.setup import setup_anndata as register_anndata
from pybridge.errors import RARE_LABELS, PybridgeError, PybridgeWarning
from pybridge.models._condscvi_module import CondSCVIModule
from pybridge.models.base import BaseModel
from pybridge.train.trainer import EpochCallback

MIN_CELLS_PER_TYPE_WARN = 10
MIN_CELLS_PER_TYPE = 2
RARE_TYPE_FLOOR = 0.05  # weight_obs: cell-type shares below 5% are weighted as if they were 5%
# Minified data hold an SCVI model's latent posteriors, which CondSCVI cannot use.
_REFERENCE_COUNTS = "CondSCVI reads the counts of the labelled reference: pass the reference before minifying."


def check_reference_labels(adata: AnnData, labels_key: str | None) -> None:
    """Refuse a missing label column (naming spot-like data) and cell types with < 2 cells; warn under 10."""
    if labels_key is None:
        raise PybridgeError(
            "CondSCVI.setup_anndata needs labels_key=, the obs column with the reference cell types"
        )
    if labels_key not in adata.obs.columns:
        spot_like = [k for k in ("spatial", "proportions") if k in adata.obsm]
        hint = (
            f" This AnnData looks like spot data (obsm has {spot_like}): pass the single-cell reference here "
            "and the spots to DestVI."
            if spot_like
            else ""
        )
        columns = ", ".join(map(str, adata.obs.columns)) or "(none)"
        raise PybridgeError(
            f"the reference has no cell-type column {labels_key!r} in obs (columns: {columns}).{hint}"
        )
    counts = adata.obs[labels_key].astype(str).value_counts()
    too_few = counts[counts < MIN_CELLS_PER_TYPE]
    if len(too_few):
        raise PybridgeError(
            f"cell types with fewer than {MIN_CELLS_PER_TYPE} cells in {labels_key!r}: {too_few.to_dict()}; "
            "drop them or merge them into a broader type before training CondSCVI"
        )
    rare = counts[counts < MIN_CELLS_PER_TYPE_WARN]
    if len(rare):
        warnings.warn(PybridgeWarning(
            f"cell types with fewer than {MIN_CELLS_PER_TYPE_WARN} cells in {labels_key!r}: {rare.to_dict()}; "
            "their expression states are poorly estimated (consider weight_obs=True or merging them)",
            kind=RARE_LABELS, key=str(labels_key), counts={str(k): int(v) for k, v in rare.items()},
            threshold=MIN_CELLS_PER_TYPE_WARN,
        ), stacklevel=3)


class CondSCVI(BaseModel):
    """Conditional VAE of single-cell counts given cell type; defaults of the DestVI paper version.

    n_latent 5, two layers of 128 with layer norm, dropout 0.05, cell type injected into every layer, NB in
    total-count/logits form with gene-wise logits. ``weight_obs=True`` weights each cell by the inverse of its
    type's share (shares floored at 5%), up-weighting rare types.
    """

    def __init__(
        self,
        adata: AnnData,
        n_hidden: int = 128,
        n_latent: int = 5,
        n_layers: int = 2,
        weight_obs: bool = False,
        dropout_rate: float = 0.05,
    ):
        require_counts(adata, "CondSCVI(adata)", _REFERENCE_COUNTS)
        super().__init__(adata)
        if self.registry.labels_key is None:
            raise PybridgeError("CondSCVI needs cell types: call CondSCVI.setup_anndata(adata, labels_key=...)")
        ct_weight = None
        if weight_obs:
            codes = covariate_arrays(adata, self.registry)["labels"]
            share = np.bincount(codes, minlength=self.registry.n_labels) / len(codes)
            share = np.maximum(share, RARE_TYPE_FLOOR)
            ct_weight = (1.0 / (share / share.sum())).tolist()
        self._init_params = {
            "n_hidden": n_hidden, "n_latent": n_latent, "n_layers": n_layers, "dropout_rate": dropout_rate, "ct_weight": ct_weight
        }
        self._init_module(self.registry, **self._init_params)

    @classmethod
    def setup_anndata(cls, adata: AnnData, labels_key: str | None = None, layer: str | None = None) -> None:
        """Validate the reference counts and its cell-type column (scvi-tools API)."""
        if not isinstance(adata, AnnData):
            raise PybridgeError(f"CondSCVI.setup_anndata expects an AnnData, got {type(adata).__name__}")
        require_counts(adata, "CondSCVI.setup_anndata", _REFERENCE_COUNTS)
        check_reference_labels(adata, labels_key)
        register_anndata(adata, layer=layer, labels_key=labels_key)

    @staticmethod
    def _build_module(registry: Registry, ct_weight=None, **params) -> CondSCVIModule:
        weight = None if ct_weight is None else torch.tensor(ct_weight, dtype=torch.float32)
        return CondSCVIModule(len(registry.var_names), registry.n_labels, ct_weight=weight, **params)

    @property
    def cell_types(self) -> list[str]:
        """Cell-type names in the model's code order."""
        return list(self.registry.label_categories)

    def train(
        self,
        max_epochs: int = 300,
        lr: float = 1e-3,
        batch_size: int = 128,
        train_size: float = 1.0,
        validation_size: float | None = None,
        n_epochs_kl_warmup: int | None = 400,
        accelerator: str = "auto",
        seed: int = 0,
        progress: bool | EpochCallback | None = None,
        **kwargs,
    ) -> None:
        """Train with the scvi-tools CondSCVI defaults (300 epochs, lr 1e-3, all cells, KL warm-up 400)."""
        super().train(
            max_epochs=max_epochs, lr=lr, batch_size=batch_size, train_size=train_size,
            validation_size=validation_size, n_epochs_kl_warmup=n_epochs_kl_warmup, accelerator=accelerator,
            seed=seed, progress=progress, **kwargs,
        )

    @torch.inference_mode()
    def _posterior(self, adata: AnnData | None, indices, batch_size: int | None) -> tuple[np.ndarray, np.ndarray]:
        require_counts(self._adata(adata), "CondSCVI's posterior (get_latent_representation, get_vamp_prior)",
                       _REFERENCE_COUNTS)
        means, variances = [], []
        for batch in self._minibatches(adata, indices, batch_size):
            qz_m, qz_v = self.module.inference(batch["X"], batch["labels"])
            means.append(qz_m.cpu().numpy())
            variances.append(qz_v.cpu().numpy())
        return np.concatenate(means), np.concatenate(variances)

    def get_latent_representation(
        self, adata: AnnData | None = None, indices=None, give_mean: bool = True, batch_size: int | None = None
    ) -> np.ndarray:
        """Posterior means of z (or one sample when ``give_mean=False``), cells x n_latent."""
        mean, var = self._posterior(adata, indices, batch_size)
        if give_mean:
            return mean
        return mean + np.sqrt(var) * np.random.default_rng(0).standard_normal(mean.shape)

    def cell_type_codes(self, adata: AnnData | None = None) -> np.ndarray:
        """Each cell's type code (position in :attr:`cell_types`); refuses data lacking one of the types."""
        adata = self._adata(adata)
        codes = covariate_arrays(adata, self.registry)["labels"]
        counts = np.bincount(codes, minlength=self.registry.n_labels)
        if (counts == 0).any():
            raise PybridgeError(
                f"cell type {self.cell_types[int(np.argmin(counts))]!r} has no cells in this AnnData; pass the "
                "reference the model was trained on"
            )
        return codes

    def get_vamp_prior(
        self, adata: AnnData | None = None, p: int = 15, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Empirical VampPrior: per cell type, k-means (p clusters) of the posterior means.

        Returns ``(mean, var, weight)`` of shapes (n_labels, p, n_latent), (n_labels, p, n_latent), (n_labels, p):
        cluster means of the posterior means; mean posterior variance plus the variance of the posterior means
        within the cluster; cluster size shares. Types with at most p cells use one component per cell
        (unused components get weight 0).
        """
        from sklearn.cluster import KMeans

        adata = self._adata(adata)
        if p < 1:
            raise PybridgeError(f"vamp_prior_p must be >= 1, got {p}")
        codes = self.cell_type_codes(adata)
        mean, var = self._posterior(adata, None, None)
        n_labels, n_latent = self.registry.n_labels, mean.shape[1]
        prior_mean = np.zeros((n_labels, p, n_latent), np.float32)
        prior_var = np.ones((n_labels, p, n_latent), np.float32)
        prior_weight = np.zeros((n_labels, p), np.float32)
        for label in range(n_labels):
            members = np.flatnonzero(codes == label)
            if len(members) > p:
                cluster = KMeans(n_clusters=p, n_init=30, random_state=seed).fit_predict(mean[members])
            else:
                cluster = np.arange(len(members))
            for k in np.unique(cluster):
                inside = members[cluster == k]
                prior_mean[label, k] = mean[inside].mean(0)
                prior_var[label, k] = var[inside].mean(0) + mean[inside].var(0)
                prior_weight[label, k] = len(inside) / len(members)
        return prior_mean, prior_var, prior_weight
