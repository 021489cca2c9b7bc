"""``swa_epoch_start``: training ends with the mean of the weights at the end of the chosen epochs."""

from __future__ import annotations

import pytest
import torch
from conftest import simulate_counts

import pybridge
from pybridge.errors import PybridgeError
from pybridge.train.averaging import WeightAverage, first_averaged_epoch


def test_running_mean_of_snapshots():
    param = torch.nn.Parameter(torch.zeros(3))
    average = WeightAverage([param])
    average.apply()  # nothing recorded: the weights stay
    assert torch.equal(param.data, torch.zeros(3))
    snapshots = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 0.0, -1.0]), torch.tensor([2.0, 7.0, 1.0])]
    for snapshot in snapshots:
        param.data.copy_(snapshot)
        average.update()
    average.apply()
    torch.testing.assert_close(param.data, torch.stack(snapshots).mean(0))


@pytest.mark.parametrize(("start", "max_epochs", "first"), [(0.5, 300, 150), (0.99, 10, 9), (0.01, 10, 0), (4, 10, 3)])
def test_first_averaged_epoch(start, max_epochs, first):
    assert first_averaged_epoch(start, max_epochs) == first


@pytest.mark.parametrize("bad", [0, 0.0, 1.5, -2, True, "half"])
def test_bad_start_refused_before_training(bad):
    adata = simulate_counts(n_cells=60, n_genes=20)
    pybridge.SCVI.setup_anndata(adata)
    model = pybridge.SCVI(adata, n_hidden=8, n_latent=2)
    with pytest.raises(PybridgeError, match="swa_epoch_start must be a fraction in \\(0, 1\\), an epoch >= 1"):
        model.train(max_epochs=2, swa_epoch_start=bad, progress=False)
    assert not model.is_trained


def test_trained_weights_are_the_mean_of_the_late_epochs():
    adata = simulate_counts(n_cells=120, n_genes=20)
    pybridge.SCVI.setup_anndata(adata)
    model = pybridge.SCVI(adata, n_hidden=8, n_latent=2)
    snapshots = []

    def record(epoch, max_epochs, metrics):  # called at the end of every epoch, before any averaging is applied
        snapshots.append({k: v.detach().clone() for k, v in model.module.named_parameters()})

    model.train(max_epochs=6, batch_size=32, swa_epoch_start=0.5, progress=record)
    assert len(snapshots) == 6
    moved = 0
    for name, param in model.module.named_parameters():
        mean = torch.stack([s[name] for s in snapshots[3:]]).mean(0)
        torch.testing.assert_close(param.detach(), mean)
        moved += not torch.equal(param.detach(), snapshots[-1][name])
    assert moved >= 5  # the trained weights are not simply the last ones
