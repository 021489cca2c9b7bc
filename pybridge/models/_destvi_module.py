"""The math of DestVI: spots as mixtures of cell types, each in its own CondSCVI state.

For spot s with library l_s, cell-type weights v_s (n_labels + 1, the last one a gene-wise noise term) and
per-type latent states gamma_sc:
    r_sg = sum_c v_sc * exp(beta_g) * rho_g(gamma_sc, c) + v_s,noise * softplus(eta_g) / n_genes
    x_sg ~ NB(total_count = l_s * r_sg, logits = o_g)
rho and o come from the trained CondSCVI and stay frozen; the noise profile is divided by n_genes (a fixed
reparametrisation) so that, like rho, it starts on the scale of one gene's share. gamma has the CondSCVI VampPrior (or N(0, I)),
beta a variance penalty (beta_reg), eta a N(0, 1) prior (eta_reg), v an optional L1 penalty (l1_reg).
With ``amortization`` "both" / "latent" / "proportion", gamma and/or v come from networks of log1p(x_s);
otherwise they are free per-spot parameters.

Synthetic-spot supervision (when v comes from a network and ``augmentation_weight`` > 0): every step also
builds as many synthetic spots as the minibatch holds, with known compositions, and adds
``augmentation_weight`` x the cross-entropy between each composition and the proportions the network reads
from its counts. The reconstruction alone leaves similar types interchangeable (gamma can move one type's
profile towards another's); the synthetic spots tie the proportion network to compositions it can verify.
Two sources (``augmentation_source``):
  * "reference" (default): sums of real reference cells, kept in the module (``mixture_counts``, at most
    ``MIXTURE_CELLS_PER_TYPE`` per type). A spot takes 1 + Poisson(``cells_per_spot`` - 1) cells, whose types
    are drawn from type probabilities ~ Dirichlet(``augmentation_concentration``); its composition is each
    type's share of the summed counts, and the sum is thinned to the minibatch spot's library when larger.
  * "model": drawn from the model itself: compositions w ~ Dirichlet(``augmentation_concentration``), states
    gamma from the prior, the minibatch's libraries and NB counts (the model's gene-wise bias beta included).
scvi-tools 1.4's DestVI also trains its proportion encoder on simulated spots; bench/RESULTS.md compares them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pybridge.models._condscvi_module import cell_type_decoder, nb_total_count_logits_nll
from pybridge.nn.distributions import sample_nb
from pybridge.nn.layers import FCLayers
from pybridge.nn.loss import LossOutput

Amortization = Literal["both", "latent", "proportion", "none"]
AMORTIZATIONS = ("both", "latent", "proportion", "none")
AugmentationSource = Literal["reference", "model"]
AUGMENTATION_SOURCES = ("reference", "model")
MIXTURE_CELLS_PER_TYPE = 500


def _amortization_net(n_in: int, n_out: int, n_hidden: int, dropout_rate: float) -> nn.Sequential:
    trunk = FCLayers(
        n_in, n_hidden, (), 2, n_hidden, dropout_rate, use_batch_norm=False, use_layer_norm=True
    )
    return nn.Sequential(trunk, nn.Linear(n_hidden, n_out))


class DestVIModule(nn.Module):
    """Spot deconvolution module; ``decoder``, ``px_decoder`` and ``px_o`` are frozen CondSCVI parts."""

    def __init__(
        self,
        n_spots: int,
        n_labels: int,
        n_genes: int,
        n_hidden: int,
        n_latent: int,
        n_layers: int,
        px_o: torch.Tensor,
        mean_vprior: torch.Tensor | None = None,
        var_vprior: torch.Tensor | None = None,
        mp_vprior: torch.Tensor | None = None,
        amortization: Amortization = "both",
        l1_reg: float = 0.0,
        beta_reg: float = 5.0,
        eta_reg: float = 1e-4,
        dropout_amortization: float = 0.05,
        augmentation_weight: float = 0.0,
        augmentation_concentration: float = 0.1,
        augmentation_source: AugmentationSource = "model",
        cells_per_spot: float = 5.0,
        n_mixture_cells: int = 0,
    ):
        super().__init__()
        self.n_spots, self.n_labels, self.n_genes = n_spots, n_labels, n_genes
        self.n_latent = n_latent
        self.amortization = amortization
        self.l1_reg, self.beta_reg, self.eta_reg = l1_reg, beta_reg, eta_reg
        self.augmentation_weight = augmentation_weight
        self.augmentation_concentration = augmentation_concentration
        self.augmentation_source, self.cells_per_spot = augmentation_source, cells_per_spot
        # reference cells for "reference" synthetic spots, sorted by type (set_mixture_cells); saved with the
        # model when there are any (model files without them, e.g. of the "model" source, still load)
        saved = n_mixture_cells > 0
        self.register_buffer("mixture_counts", torch.zeros(n_mixture_cells, n_genes), persistent=saved)
        self.register_buffer("mixture_labels", torch.zeros(n_mixture_cells, dtype=torch.long), persistent=saved)
        self.decoder = cell_type_decoder(n_latent, n_labels, n_layers, n_hidden)
        self.px_decoder = nn.Sequential(nn.Linear(n_hidden, n_genes), nn.Softplus())
        for param in [*self.decoder.parameters(), *self.px_decoder.parameters()]:
            param.requires_grad_(False)
        self.register_buffer("px_o", torch.as_tensor(px_o, dtype=torch.float32).clone())
        self.use_vamp_prior = mean_vprior is not None
        if self.use_vamp_prior:
            self.register_buffer("mean_vprior", torch.as_tensor(mean_vprior, dtype=torch.float32))
            self.register_buffer("var_vprior", torch.as_tensor(var_vprior, dtype=torch.float32))
            self.register_buffer("mp_vprior", torch.as_tensor(mp_vprior, dtype=torch.float32))
        self.eta = nn.Parameter(torch.randn(n_genes))
        self.beta = nn.Parameter(0.01 * torch.randn(n_genes))
        if amortization in ("both", "latent"):
            self.gamma_encoder = _amortization_net(n_genes, n_latent * n_labels, n_hidden, dropout_amortization)
        else:
            self.gamma = nn.Parameter(torch.randn(n_spots, n_labels, n_latent))
        if amortization in ("both", "proportion"):
            self.v_encoder = _amortization_net(n_genes, n_labels + 1, n_hidden, dropout_amortization)
        else:
            self.v = nn.Parameter(torch.randn(n_spots, n_labels + 1))

    def freeze_decoder(self) -> None:
        """Keep the CondSCVI parts in eval mode (no dropout / running statistics) while training the rest."""
        self.decoder.eval()
        self.px_decoder.eval()

    def train(self, mode: bool = True) -> DestVIModule:
        super().train(mode)
        self.freeze_decoder()
        return self

    def get_gamma(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Per-type latent states, [n, n_labels, n_latent]."""
        if self.amortization in ("both", "latent"):
            return self.gamma_encoder(torch.log1p(x)).reshape(-1, self.n_labels, self.n_latent)
        return self.gamma[indices]

    def get_weights(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Non-negative cell-type weights with the noise term last, [n, n_labels + 1]."""
        raw = self.v_encoder(torch.log1p(x)) if self.amortization in ("both", "proportion") else self.v[indices]
        return F.softplus(raw)

    def get_proportions(self, x: torch.Tensor, indices: torch.Tensor, keep_noise: bool = False) -> torch.Tensor:
        """Weights normalised to sum 1 over the cell types (and the noise term when ``keep_noise``)."""
        weights = self.get_weights(x, indices)
        if not keep_noise:
            weights = weights[:, :-1]
        return weights / weights.sum(1, keepdim=True).clamp_min(1e-12)

    def cell_type_rho(self, gamma: torch.Tensor) -> torch.Tensor:
        """rho(gamma_c, c) for every spot and type, [n, n_labels, genes] (without the exp(beta) factor)."""
        n = gamma.shape[0]
        labels = torch.arange(self.n_labels, device=gamma.device).repeat(n)
        rho = self.px_decoder(self.decoder(gamma.reshape(-1, self.n_latent), labels))
        return rho.reshape(n, self.n_labels, -1)

    def spot_scale(self, weights: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """r_s = exp(beta) * sum_c v_sc rho(gamma_sc, c) + v_s,noise * softplus(eta) / n_genes, [n, genes]."""
        # A broadcast sum, not torch.bmm: inside R linked to OpenBLAS >= 0.3.27 (Debian 13), OpenBLAS's
        # cblas_sgemm_batch interposes the MKL one in torch's CPU wheel (another signature) and bmm segfaults.
        mixed = (weights[:, :-1, None] * self.cell_type_rho(gamma)).sum(1)
        return torch.exp(self.beta) * mixed + weights[:, -1:] * F.softplus(self.eta) / self.n_genes

    def get_scale_for_ct(self, x: torch.Tensor, indices: torch.Tensor, label: int) -> torch.Tensor:
        """exp(beta) * rho(gamma_label, label) per spot, [n, genes]."""
        gamma = self.get_gamma(x, indices)[:, label]
        labels = torch.full((gamma.shape[0],), label, device=gamma.device, dtype=torch.long)
        return torch.exp(self.beta) * self.px_decoder(self.decoder(gamma, labels))

    def sample_gamma_prior(self, n: int) -> torch.Tensor:
        """States drawn from the gamma prior (VampPrior per type, or N(0, I)), [n, n_labels, n_latent]."""
        if not self.use_vamp_prior:
            return torch.randn(n, self.n_labels, self.n_latent, device=self.px_o.device)
        component = torch.multinomial(self.mp_vprior, n, replacement=True).T  # n, labels
        label = torch.arange(self.n_labels, device=component.device).expand(n, -1)
        mean, var = self.mean_vprior[label, component], self.var_vprior[label, component]
        return mean + var.sqrt() * torch.randn_like(mean)

    @torch.no_grad()
    def set_mixture_cells(self, counts: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep the reference cells that "reference" synthetic spots are summed from (any order)."""
        order = torch.argsort(labels, stable=True)
        self.mixture_counts.copy_(counts[order])
        self.mixture_labels.copy_(labels[order])

    @torch.no_grad()
    def synthetic_spots(self, library: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Counts of spots with known compositions, one per entry of ``library`` [n, 1].

        Returns (counts [n, genes], compositions [n, n_labels]); a composition is each type's share of the
        spot's counts (expected counts for the "model" source), i.e. the target of :meth:`get_proportions`.
        """
        if self.augmentation_source == "reference":
            return self._reference_spots(library)
        return self._model_spots(library)

    def _reference_spots(self, library: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, device = library.shape[0], library.device
        concentration = torch.full((self.n_labels,), self.augmentation_concentration, device=device)
        type_probability = torch.distributions.Dirichlet(concentration).sample((n,))
        # 1 + Poisson(cells_per_spot - 1) cells, capped on the host side so that no step reads a device value
        most = 1 + int(self.cells_per_spot + 4 * self.cells_per_spot**0.5)
        n_cells = 1 + torch.poisson(torch.full((n,), self.cells_per_spot - 1.0, device=device)).clamp(max=most - 1)
        cell_type = torch.multinomial(type_probability, most, replacement=True)  # n, most
        sizes = torch.bincount(self.mixture_labels, minlength=self.n_labels)
        starts = torch.cumsum(sizes, 0) - sizes
        cell = starts[cell_type] + (torch.rand(n, most, device=device) * sizes[cell_type]).long()
        kept = (torch.arange(most, device=device)[None, :] < n_cells[:, None]).float()
        cells = self.mixture_counts[cell] * kept[:, :, None]  # n, most, genes
        counts = cells.sum(1)
        composition = torch.zeros(n, self.n_labels, device=device).scatter_add_(1, cell_type, cells.sum(2))
        total = counts.sum(1, keepdim=True).clamp_min(1.0)
        composition = composition / total
        keep_share = (library / total).clamp(max=1.0).expand_as(counts)
        return torch.binomial(counts, keep_share), composition

    def _model_spots(self, library: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = library.shape[0]
        concentration = torch.full((self.n_labels,), self.augmentation_concentration, device=library.device)
        composition = torch.distributions.Dirichlet(concentration).sample((n,))
        rho = self.cell_type_rho(self.sample_gamma_prior(n)) * torch.exp(self.beta)
        total_count = (library * (composition[:, :, None] * rho).sum(1)).clamp_min(1e-8)
        return sample_nb(total_count * torch.exp(self.px_o), total_count), composition

    def augmentation_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy between synthetic spots' compositions and the proportions read from them."""
        counts, composition = self.synthetic_spots(x.sum(1, keepdim=True))
        weights = self.get_weights(counts, None)
        log_share = torch.log(weights[:, :-1] / weights.sum(1, keepdim=True) + 1e-8)
        return -(composition * log_share).sum(1).mean()

    def _gamma_neg_log_prior(self, gamma: torch.Tensor) -> torch.Tensor:
        """-log p(gamma) summed over types, [n]; VampPrior mixture per cell type or N(0, I)."""
        if not self.use_vamp_prior:
            return 0.5 * (gamma.pow(2) + torch.log(torch.tensor(2 * torch.pi))).sum((1, 2))
        prior = torch.distributions.Normal(self.mean_vprior, self.var_vprior.sqrt() + 1e-4)
        log_comp = prior.log_prob(gamma.unsqueeze(2)).sum(-1)  # n, labels, p
        log_comp = log_comp + torch.log(self.mp_vprior)
        return -torch.logsumexp(log_comp, dim=-1).sum(-1)

    def loss(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> LossOutput:
        x, indices = batch["X"], batch["indices"].reshape(-1)
        gamma = self.get_gamma(x, indices)
        weights = self.get_weights(x, indices)
        total_count = x.sum(1, keepdim=True) * self.spot_scale(weights, gamma)
        reconstruction = nb_total_count_logits_nll(x, total_count, self.px_o, batch.get("log_x_factorial"))
        kl_local = self._gamma_neg_log_prior(gamma) + self.l1_reg * weights.abs().mean(1)
        kl_global = -self.eta_reg * torch.distributions.Normal(0.0, 1.0).log_prob(self.eta).sum()
        kl_global = kl_global + self.beta_reg * torch.var(self.beta)
        loss = self.n_spots * torch.mean(reconstruction + kl_weight * kl_local) + kl_global
        if self.training and self.augmentation_weight > 0:
            loss = loss + self.n_spots * self.augmentation_weight * self.augmentation_loss(x)
        return LossOutput(loss=loss, reconstruction=reconstruction, kl_local=kl_local, kl_global=kl_global)
