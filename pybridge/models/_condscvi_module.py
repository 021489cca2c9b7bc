"""The math of CondSCVI: a VAE conditioned on cell type whose decoder DestVI reuses on spots.

Generative model per cell n of type y_n with library l_n (its total count):
    z_n ~ N(0, I),  rho_n = softplus(W h(z_n, y_n) + b)  (per-gene, not normalised),
    x_ng ~ NB(total_count = l_n * rho_ng, logits = o_g).
The NB is in total-count/logits form: NB(r1, o) + NB(r2, o) = NB(r1 + r2, o), so the expected counts of the
cells of a spot add up when DestVI mixes cell types with the same gene-wise logits ``o``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pybridge.nn.distributions import lgamma_shift
from pybridge.nn.layers import Encoder, FCLayers
from pybridge.nn.loss import LossOutput


def nb_total_count_logits_nll(
    x: torch.Tensor, total_count: torch.Tensor, logits: torch.Tensor, log_x_factorial: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-row negative log NB(x; total_count, logits) summed over genes (mean total_count * exp(logits)).

    ``log_x_factorial`` (sum over genes of lgamma(x + 1) per row, precomputed by the TensorStore) saves one
    lgamma per entry; without it the constant is computed here.
    """
    total_count = total_count.clamp_min(1e-8)
    log_prob = (
        lgamma_shift(x, total_count)
        + total_count * F.logsigmoid(-logits)
        + x * F.logsigmoid(logits)
    ).sum(-1)
    constant = torch.lgamma(x + 1.0).sum(-1) if log_x_factorial is None else log_x_factorial
    return constant - log_prob


def inverse_softplus(value: float) -> float:
    """y such that softplus(y) = value."""
    return float(np.log(np.expm1(value)))


def cell_type_decoder(n_latent: int, n_labels: int, n_layers: int, n_hidden: int) -> FCLayers:
    """The conditional decoder trunk (no dropout, layer norm, cell type injected in every layer)."""
    return FCLayers(
        n_latent, n_hidden, [n_labels], n_layers, n_hidden, 0.0,
        use_batch_norm=False, use_layer_norm=True, inject_covariates=True,
    )


class CondSCVIModule(nn.Module):
    """Encoder q(z | x, y), decoder rho(z, y), gene-wise NB logits ``px_r``; optional per-type loss weights."""

    def __init__(
        self,
        n_genes: int,
        n_labels: int,
        n_hidden: int = 128,
        n_latent: int = 5,
        n_layers: int = 2,
        dropout_rate: float = 0.05,
        ct_weight: torch.Tensor | None = None,
    ):
        super().__init__()
        self.n_genes, self.n_labels = n_genes, n_labels
        self.n_hidden, self.n_latent, self.n_layers = n_hidden, n_latent, n_layers
        self.encoder = Encoder(
            n_genes, n_latent, [n_labels], n_layers, n_hidden, dropout_rate,
            use_batch_norm=False, use_layer_norm=True, inject_covariates=True,
        )
        self.decoder = cell_type_decoder(n_latent, n_labels, n_layers, n_hidden)
        self.px_decoder = nn.Sequential(nn.Linear(n_hidden, n_genes), nn.Softplus())
        self.px_r = nn.Parameter(torch.randn(n_genes))
        with torch.no_grad():  # start at rho = 1 / n_genes, the right scale for library * rho
            self.px_decoder[0].bias.fill_(inverse_softplus(1.0 / n_genes))
        weight = torch.ones(n_labels) if ct_weight is None else torch.as_tensor(ct_weight, dtype=torch.float32)
        self.register_buffer("ct_weight", weight)

    def inference(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance of z."""
        return self.encoder(torch.log1p(x), y)

    def expected_scale(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """rho(z, y): per-unit-library NB total counts, [n, genes]."""
        return self.px_decoder(self.decoder(z, y))

    def loss(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> LossOutput:
        x, y = batch["X"], batch["labels"].reshape(-1)
        qz_m, qz_v = self.inference(x, y)
        z = qz_m + qz_v.sqrt() * torch.randn_like(qz_m)
        total_count = x.sum(1, keepdim=True) * self.expected_scale(z, y)
        reconstruction = nb_total_count_logits_nll(x, total_count, self.px_r, batch.get("log_x_factorial"))
        kl_local = 0.5 * (qz_v + qz_m.pow(2) - 1.0 - qz_v.log()).sum(-1)
        weight = self.ct_weight[y]
        loss = torch.mean(weight * (reconstruction + kl_weight * kl_local))
        return LossOutput(loss=loss, reconstruction=reconstruction, kl_local=kl_local, kl_global=loss.new_zeros(()))
