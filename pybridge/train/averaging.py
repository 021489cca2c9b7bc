"""Stochastic weight averaging: the running mean of the trained weights over the end of each of the last epochs.

At a constant learning rate the weights keep moving around a minimum; their mean over the last epochs sits closer
to it than any one of them (Izmailov et al. 2018), at the cost of one copy of the weights. Written here rather
than taken from ``torch.optim.swa_utils``, whose import pulls in the compiler (about a second of a fresh
process, :mod:`pybridge.train.adam`).
"""

from __future__ import annotations

import math

import torch

from pybridge.errors import PybridgeError


def first_averaged_epoch(swa_epoch_start: float, max_epochs: int) -> int:
    """The 0-based epoch whose end is the first snapshot: ``swa_epoch_start`` is a fraction of ``max_epochs`` in
    (0, 1) or a 1-based epoch number (Lightning's ``StochasticWeightAveraging`` convention)."""
    if isinstance(swa_epoch_start, (int, float)) and not isinstance(swa_epoch_start, bool):
        if isinstance(swa_epoch_start, float) and 0 < swa_epoch_start < 1:
            return min(max_epochs - 1, math.floor(swa_epoch_start * max_epochs))
        if swa_epoch_start >= 1 and int(swa_epoch_start) == swa_epoch_start:
            return int(swa_epoch_start) - 1
    raise PybridgeError(f"swa_epoch_start must be a fraction in (0, 1), an epoch >= 1 or None, got {swa_epoch_start!r}")


class WeightAverage:
    """Running mean of ``params`` over the snapshots passed to :meth:`update`; :meth:`apply` writes it back."""

    def __init__(self, params: list[torch.nn.Parameter]):
        self.params = list(params)
        self.mean: list[torch.Tensor] | None = None
        self.count = 0

    @torch.no_grad()
    def update(self) -> None:
        self.count += 1
        if self.mean is None:
            self.mean = [p.detach().clone() for p in self.params]
            return
        for mean, param in zip(self.mean, self.params):
            mean.lerp_(param, 1.0 / self.count)

    @torch.no_grad()
    def apply(self) -> None:
        if self.mean is not None:
            for mean, param in zip(self.mean, self.params):
                param.copy_(mean)
