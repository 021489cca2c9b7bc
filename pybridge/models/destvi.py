"""DestVI: multi-resolution deconvolution of spots with a trained CondSCVI (Lopez et al. 2022)."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from pybridge.data.fields import aligned_counts
from pybridge.data.minified import require_counts
from pybridge.data.registry import SETUP_KEY, Registry, registry_of
from pybridge.data.setup import setup_anndata as register_anndata
from pybridge.errors import PybridgeError
from pybridge.models._destvi_module import (
    AMORTIZATIONS,
    AUGMENTATION_SOURCES,
    MIXTURE_CELLS_PER_TYPE,
    Amortization,
    AugmentationSource,
    DestVIModule,
)
from pybridge.models.base import BaseModel
from pybridge.models.condscvi import CondSCVI
from pybridge.train.trainer import EpochCallback

MIN_SHARED_GENES = 50
MIN_RELIABLE_SPOTS = 50
MAX_BATCH_SIZE = 128
MIN_BATCH_SIZE = 4
DEFAULT_AUGMENTATION_WEIGHT = 1000.0
DEFAULT_CONCENTRATION = {"reference": 0.05, "model": 0.1}
DEFAULT_MAX_STEPS = 20_000
MAX_DEFAULT_EPOCHS = 2000
KL_WARMUP_SHARE = 0.1
_SPOT_COUNTS = "DestVI deconvolves counts: pass the spots and the reference before minifying."


def default_batch_size(n_spots: int) -> int:
    """min(128, max(4, n_spots // 10)): small data need small minibatches (scvi-tools blog, 2022)."""
    return min(MAX_BATCH_SIZE, max(MIN_BATCH_SIZE, n_spots // 10))


def default_max_epochs(n_spots: int, batch_size: int, max_steps: int = DEFAULT_MAX_STEPS) -> int:
    """Epochs that give ``max_steps`` optimizer steps, at most the reference's 2,000.

    With the batch-size rule, spots up to 1,280 take 10 minibatches per epoch, so 2,000 epochs are 20,000 steps
    there; larger data reach the same number of steps in fewer epochs (100,000 spots: 26 epochs of 782 steps).
    """
    steps_per_epoch = -(-n_spots // batch_size)
    return max(1, min(MAX_DEFAULT_EPOCHS, -(-max_steps // steps_per_epoch)))


def shared_genes(reference_genes: list[str], spot_genes, what: str = "DestVI") -> list[str]:
    """Reference genes also measured in the spots (reference order); warns when the overlap is partial."""
    spot_set = set(map(str, spot_genes))
    genes = [g for g in reference_genes if g in spot_set]
    if len(genes) < MIN_SHARED_GENES:
        raise PybridgeError(
            f"{what}: the spots and the reference share {len(genes)} genes (reference {len(reference_genes)}, "
            f"spots {len(spot_set)}); at least {MIN_SHARED_GENES} are needed. Check that both use the same gene "
            "identifiers (symbols vs Ensembl ids) and species."
        )
    if len(genes) < len(reference_genes) or len(genes) < len(spot_set):
        warnings.warn(
            f"{what}: using the {len(genes)} genes shared by the reference ({len(reference_genes)} genes) and the "
            f"spots ({len(spot_set)} genes)",
            stacklevel=3,
        )
    return genes


class DestVI(BaseModel):
    """Spot deconvolution into cell-type proportions and per-type continuous states.

    Build with :meth:`from_rna_model` from a trained :class:`~pybridge.CondSCVI`. The CondSCVI decoder and its
    NB logits are frozen; DestVI learns per-spot cell-type weights (plus a noise term), per-spot per-type latent
    states gamma, a gene-wise bias beta and the noise profile eta.

    ``augmentation_weight`` (default 1000 when the proportions come from a network, amortization "both" or
    "proportion"; it must be 0 otherwise) adds the synthetic-spot supervision of
    :mod:`pybridge.models._destvi_module`. 0 gives the objective of the DestVI paper, which fits similar types
    interchangeably (it trails NNLS on pseudo-spots of similar types; bench/RESULTS.md has the numbers).
    ``augmentation_source="reference"`` (default) sums real reference cells: each synthetic spot holds
    1 + Poisson(``cells_per_spot`` - 1) cells (default 5; like cell2location's ``N_cells_per_location``, the
    expected number of cells per spot), of types drawn from probabilities ~ Dirichlet(``augmentation_concentration``,
    default 0.05). The model keeps at most 500 random reference cells per type for it (saved with the model:
    500 x types x genes x 4 bytes at most, 40 MB for 10 types and 2,000 genes).
    ``"model"`` draws the synthetic spots from the model itself, with compositions ~ Dirichlet(
    ``augmentation_concentration``, default 0.1), as earlier pybridge versions did.
    """

    _data_parallel = False  # per-spot parameters

    def __init__(
        self,
        st_adata: AnnData,
        sc_model: CondSCVI,
        vamp_prior_p: int | None = 15,
        amortization: Amortization = "both",
        l1_reg: float = 0.0,
        beta_reg: float = 5.0,
        eta_reg: float = 1e-4,
        dropout_amortization: float = 0.05,
        augmentation_weight: float | None = None,
        augmentation_concentration: float | None = None,
        augmentation_source: AugmentationSource = "reference",
        cells_per_spot: float = 5.0,
    ):
        if not isinstance(sc_model, CondSCVI):
            raise PybridgeError(
                f"sc_model must be a trained pybridge.CondSCVI, got {type(sc_model).__name__}; train one on the "
                "single-cell reference first"
            )
        if not sc_model.is_trained:
            raise PybridgeError("the CondSCVI model is not trained; call sc_model.train() before DestVI")
        if sc_model.adata is None:
            raise PybridgeError(
                "the CondSCVI model has no reference AnnData (needed for the VampPrior and library sizes); "
                "load it with CondSCVI.load(path, adata=reference)"
            )
        if not isinstance(st_adata, AnnData):
            raise PybridgeError(f"DestVI expects the spots as an AnnData, got {type(st_adata).__name__}")
        require_counts(st_adata, "DestVI (the spots)", _SPOT_COUNTS)
        require_counts(sc_model.adata, "DestVI (the CondSCVI reference)", _SPOT_COUNTS)
        if st_adata is sc_model.adata:
            raise PybridgeError(
                "DestVI got the CondSCVI reference AnnData as spots; pass the spatial (spot) AnnData instead"
            )
        if amortization not in AMORTIZATIONS:
            raise PybridgeError(f"amortization must be one of {AMORTIZATIONS}, got {amortization!r}")
        augmentation_weight, augmentation_concentration = resolve_augmentation(
            augmentation_weight, augmentation_concentration, amortization, augmentation_source, cells_per_spot
        )
        if SETUP_KEY not in st_adata.uns:
            register_anndata(st_adata)
        st_registry = registry_of(st_adata)
        genes = shared_genes(sc_model.registry.var_names, st_adata.var_names)
        registry = replace(st_registry, labels_key=None, label_categories=["0"], var_names=genes)
        _check_spot_totals(st_adata, registry)
        super().__init__(st_adata, registry)

        reference = sc_model.module
        codes = sc_model.cell_type_codes()  # refuses a reference that lacks one of the model's cell types
        if vamp_prior_p is not None:
            prior_mean, prior_var, prior_weight = sc_model.get_vamp_prior(sc_model.adata, p=vamp_prior_p)
        self._init_params = {
            "reference_library": _mean_library_per_type(sc_model, genes, codes), "n_spots": st_adata.n_obs,
            "cell_types": sc_model.cell_types, "n_hidden": reference.n_hidden,
            "n_latent": reference.n_latent, "n_layers": reference.n_layers, "vamp_prior_p": vamp_prior_p,
            "amortization": amortization, "l1_reg": l1_reg, "beta_reg": beta_reg, "eta_reg": eta_reg,
            "dropout_amortization": dropout_amortization, "augmentation_weight": augmentation_weight,
            "augmentation_concentration": augmentation_concentration,
            "augmentation_source": augmentation_source, "cells_per_spot": float(cells_per_spot),
        }
        mixture = None
        if augmentation_weight > 0 and augmentation_source == "reference":
            mixture = _mixture_cells(sc_model, genes, codes)
            self._init_params["n_mixture_cells"] = len(mixture[1])
        self._init_module(registry, **self._init_params)
        position = torch.as_tensor(pd.Index(sc_model.registry.var_names).get_indexer(genes))
        with torch.no_grad():
            self.module.decoder.load_state_dict(reference.decoder.state_dict())
            linear = self.module.px_decoder[0]
            linear.weight.copy_(reference.px_decoder[0].weight[position])
            linear.bias.copy_(reference.px_decoder[0].bias[position])
            self.module.px_o.copy_(reference.px_r.detach()[position])
            if vamp_prior_p is not None:
                self.module.mean_vprior.copy_(torch.as_tensor(prior_mean))
                self.module.var_vprior.copy_(torch.as_tensor(prior_var))
                self.module.mp_vprior.copy_(torch.as_tensor(prior_weight))
            if mixture is not None:
                self.module.set_mixture_cells(*mixture)
        self.module.to(self.device)

    @classmethod
    def from_rna_model(
        cls,
        st_adata: AnnData,
        sc_model: CondSCVI,
        vamp_prior_p: int | None = 15,
        amortization: Amortization = "both",
        l1_reg: float = 0.0,
        beta_reg: float = 5.0,
        eta_reg: float = 1e-4,
        **module_kwargs,
    ) -> DestVI:
        """DestVI for ``st_adata`` on top of a trained CondSCVI (scvi-tools API); uses the shared genes.

        Other keywords (``dropout_amortization``, ``augmentation_weight``, ``augmentation_concentration``,
        ``augmentation_source``, ``cells_per_spot``) go to :class:`DestVI`.
        """
        return cls(
            st_adata, sc_model, vamp_prior_p=vamp_prior_p, amortization=amortization, l1_reg=l1_reg,
            beta_reg=beta_reg, eta_reg=eta_reg, **module_kwargs,
        )

    @classmethod
    def setup_anndata(cls, adata: AnnData, layer: str | None = None) -> None:
        """Validate the spot counts (no zero-count spots) and record the layer (scvi-tools API)."""
        if not isinstance(adata, AnnData):
            raise PybridgeError(f"DestVI.setup_anndata expects an AnnData, got {type(adata).__name__}")
        require_counts(adata, "DestVI.setup_anndata", _SPOT_COUNTS)
        register_anndata(adata, layer=layer)

    @staticmethod
    def _build_module(
        registry: Registry, n_spots: int, cell_types: list[str], vamp_prior_p: int | None,
        reference_library: list[float] | None = None, **params,
    ) -> DestVIModule:
        n_labels, n_latent = len(cell_types), params["n_latent"]
        params.setdefault("augmentation_source", "model")  # model files written before the "reference" source
        prior = {}
        if vamp_prior_p is not None:
            prior = {
                "mean_vprior": torch.zeros(n_labels, vamp_prior_p, n_latent),
                "var_vprior": torch.ones(n_labels, vamp_prior_p, n_latent),
                "mp_vprior": torch.full((n_labels, vamp_prior_p), 1.0 / vamp_prior_p),
            }
        return DestVIModule(
            n_spots, n_labels, len(registry.var_names), px_o=torch.zeros(len(registry.var_names)), **prior, **params
        )

    @property
    def cell_types(self) -> list[str]:
        """Cell-type names, in the column order of :meth:`get_proportions`."""
        return list(self._init_params["cell_types"])

    def train(
        self,
        max_epochs: int | None = None,
        lr: float = 3e-3,
        batch_size: int | None = None,
        n_epochs_kl_warmup: int | None = None,
        weight_decay: float = 1e-6,
        eps: float = 0.01,
        accelerator: str = "auto",
        seed: int = 0,
        progress: bool | EpochCallback | None = None,
        max_steps: int | None = None,
        swa_epoch_start: float | None = None,
        **kwargs,
    ) -> None:
        """MAP training on all spots (further keywords as for :meth:`pybridge.SCVI.train`).

        ``batch_size=None`` uses min(128, max(4, n_spots // 10)): with minibatches close to the number of spots
        DestVI takes too few gradient steps and under-fits (scvi-tools blog, 2022; the batch-size comparison is in
        bench/RESULTS.md). The schedule is set in optimizer steps: ``max_epochs=None`` trains for
        exactly ``max_steps`` optimizer steps (default 20,000, what the reference's 2,000 epochs give up to 1,280
        spots), in at most 2,000 epochs, so a Visium HD slide of 100,000 spots takes 26 epochs rather than 2,000.
        ``n_epochs_kl_warmup=None`` warms the prior up over the first 10 % of the epochs (the reference's 200 of
        2,000); 0 switches the warm-up off. lr is the reference's 3e-3. ``swa_epoch_start=0.5`` ends training with
        the mean of the weights at the end of each epoch of the second half (stochastic weight averaging): on the
        Spotless standards it lowered one model's RMSE, but averaging the proportions of five such models did
        worse than five models with their last weights (bench/RESULTS.md), so it is off by default.
        """
        n_spots = self.adata.n_obs
        if n_spots < MIN_RELIABLE_SPOTS:
            warnings.warn(
                f"DestVI on {n_spots} spots: with fewer than {MIN_RELIABLE_SPOTS} spots the proportions are "
                "unreliable",
                stacklevel=2,
            )
        if batch_size is None:
            batch_size = default_batch_size(n_spots)
        if max_steps is not None and (int(max_steps) != max_steps or max_steps < 1):
            raise PybridgeError(f"DestVI.train: max_steps must be a whole number >= 1, got {max_steps!r}")
        if max_epochs is None:
            steps = int(max_steps or DEFAULT_MAX_STEPS)
            max_epochs = default_max_epochs(n_spots, batch_size, steps)
            kwargs["max_steps"] = steps  # the trainer stops at that step, within the last epoch
        elif max_steps is not None:
            raise PybridgeError(
                f"DestVI.train: pass max_epochs ({max_epochs}) or max_steps ({max_steps}), not both"
            )
        if n_epochs_kl_warmup is None:
            n_epochs_kl_warmup = max(1, round(KL_WARMUP_SHARE * max_epochs))
        super().train(
            max_epochs=max_epochs, batch_size=batch_size, train_size=1.0, lr=lr, weight_decay=weight_decay,
            eps=eps, n_epochs_kl_warmup=n_epochs_kl_warmup, accelerator=accelerator, seed=seed, progress=progress,
            swa_epoch_start=swa_epoch_start, **kwargs,
        )

    @torch.inference_mode()
    def _per_spot(self, fn, indices, batch_size: int | None) -> np.ndarray:
        """``fn(counts, spot indices)`` over the chosen spots, concatenated."""
        return np.concatenate([
            fn(batch["X"], batch["indices"]).cpu().numpy() for batch in self._minibatches(None, indices, batch_size)
        ])

    def _spot_names(self, indices) -> pd.Index:
        names = self.adata.obs_names
        return names if indices is None else names[np.asarray(indices)]

    def get_proportions(
        self, keep_noise: bool = False, indices=None, batch_size: int | None = None, cell_fractions: bool = False
    ) -> pd.DataFrame:
        """Cell-type proportions per spot (rows sum to 1); ``keep_noise`` adds the ``noise_term`` column.

        By default (as in scvi-tools) a type's proportion is its share of the spot's expression, i.e. of its
        counts. ``cell_fractions=True`` divides each type's weight by that type's mean library size in the
        CondSCVI reference (over the shared genes) before normalising, estimating shares of cells instead:
        a spot of n_c cells with mean library L_c has expected counts sum_c n_c L_c rho_c, so v_c is
        proportional to n_c L_c.
        """
        if cell_fractions and keep_noise:
            raise PybridgeError("cell_fractions=True has no cell count for the noise term; use keep_noise=False")
        values = self._per_spot(
            lambda x, idx: self.module.get_proportions(x, idx, keep_noise=keep_noise), indices, batch_size
        )
        if cell_fractions:
            values = values / np.asarray(self._init_params["reference_library"])[None, :]
            values = values / values.sum(1, keepdims=True)
        columns = self.cell_types + (["noise_term"] if keep_noise else [])
        return pd.DataFrame(values, index=self._spot_names(indices), columns=columns)

    def get_gamma(
        self, indices=None, batch_size: int | None = None, return_numpy: bool = False
    ) -> dict[str, pd.DataFrame] | np.ndarray:
        """Per-type latent states: {cell type: spots x n_latent DataFrame}, or (spots, n_latent, types) array."""
        values = self._per_spot(self.module.get_gamma, indices, batch_size)  # spots, types, latent
        values = np.transpose(values, (0, 2, 1))
        if return_numpy:
            return values
        names = self._spot_names(indices)
        return {ct: pd.DataFrame(values[:, :, i], index=names) for i, ct in enumerate(self.cell_types)}

    def get_scale_for_ct(
        self, cell_type: str, indices=None, batch_size: int | None = None
    ) -> pd.DataFrame:
        """Expression scale of ``cell_type`` in its state at each spot (exp(beta) * rho), spots x genes."""
        if cell_type not in self.cell_types:
            raise PybridgeError(f"unknown cell type {cell_type!r}; known: {self.cell_types}")
        label = self.cell_types.index(cell_type)
        values = self._per_spot(lambda x, idx: self.module.get_scale_for_ct(x, idx, label), indices, batch_size)
        return pd.DataFrame(values, index=self._spot_names(indices), columns=self.registry.var_names)


def resolve_augmentation(
    weight: float | None, concentration: float | None, amortization: str, source: str, cells_per_spot: float
) -> tuple[float, float]:
    """The synthetic-spot weight (the default for amortized proportions, 0 for free ones) and concentration
    (the source's default); checks the values."""
    if source not in AUGMENTATION_SOURCES:
        raise PybridgeError(f"augmentation_source must be one of {AUGMENTATION_SOURCES}, got {source!r}")
    if concentration is None:
        concentration = DEFAULT_CONCENTRATION[source]
    if not np.isfinite(concentration) or concentration <= 0:
        raise PybridgeError(f"augmentation_concentration must be > 0, got {concentration!r}")
    number = isinstance(cells_per_spot, (int, float, np.number)) and not isinstance(cells_per_spot, bool)
    if not number or not np.isfinite(cells_per_spot) or cells_per_spot < 1:
        raise PybridgeError(
            f"cells_per_spot must be a number >= 1 (the expected number of cells in a spot), got {cells_per_spot!r}"
        )
    amortized = amortization in ("both", "proportion")
    if weight is None:
        return (DEFAULT_AUGMENTATION_WEIGHT if amortized else 0.0), float(concentration)
    if not np.isfinite(weight) or weight < 0:
        raise PybridgeError(f"augmentation_weight must be a finite number >= 0, got {weight!r}")
    if weight > 0 and not amortized:
        raise PybridgeError(
            f"augmentation_weight={weight} needs proportions from a network (amortization 'both' or "
            f"'proportion'); with amortization={amortization!r} pass augmentation_weight=0"
        )
    return float(weight), float(concentration)


def _mixture_cells(sc_model: CondSCVI, genes: list[str], codes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts over ``genes`` and type codes of at most ``MIXTURE_CELLS_PER_TYPE`` random reference cells per
    type (a fixed draw), for the "reference" synthetic spots; ``codes``: the reference cells' type codes."""
    rng = np.random.default_rng(0)
    rows = np.sort(np.concatenate([
        rng.permutation(np.flatnonzero(codes == k))[:MIXTURE_CELLS_PER_TYPE] for k in range(sc_model.registry.n_labels)
    ]))
    position = pd.Index(sc_model.registry.var_names).get_indexer(genes)
    counts = aligned_counts(sc_model.adata, sc_model.registry, rows)[:, position]
    dense = counts.toarray() if hasattr(counts, "toarray") else np.asarray(counts)
    return torch.as_tensor(dense, dtype=torch.float32), torch.as_tensor(codes[rows], dtype=torch.long)


def _mean_library_per_type(sc_model: CondSCVI, genes: list[str], codes: np.ndarray) -> list[float]:
    """Mean total count over ``genes`` of each cell type's reference cells (``codes``: their type codes)."""
    counts = aligned_counts(sc_model.adata, sc_model.registry)
    position = pd.Index(sc_model.registry.var_names).get_indexer(genes)
    totals = np.asarray(counts[:, position].sum(1)).ravel()
    return [float(totals[codes == k].mean()) for k in range(sc_model.registry.n_labels)]


def _check_spot_totals(st_adata: AnnData, registry: Registry) -> None:
    totals = np.asarray(aligned_counts(st_adata, registry).sum(1)).ravel()
    empty = np.flatnonzero(totals <= 0)
    if len(empty):
        names = st_adata.obs_names[empty[:5]].tolist()
        raise PybridgeError(
            f"{len(empty)} spots have zero counts over the {len(registry.var_names)} genes shared with the "
            f"reference (e.g. {names}); remove them before DestVI"
        )
