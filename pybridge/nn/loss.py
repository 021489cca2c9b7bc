"""What every model's module returns from ``loss``: the contract between modules and the training loop."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossOutput:
    """``loss`` is what the optimiser minimises (KL weighted); the rest are per-cell terms with full KL.

    ``reconstruction`` is the per-cell negative log-likelihood, ``kl_local`` the per-cell KL divergence and
    ``kl_global`` a scalar penalty that does not scale with cells (0 for most models).
    """

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl_local: torch.Tensor
    kl_global: torch.Tensor | float = 0.0
