"""Shared fixtures: small simulated count data and the real data beside the project."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

torch.set_num_threads(min(2, torch.get_num_threads()))


def simulate_counts(n_cells: int = 300, n_genes: int = 60, n_types: int = 3, n_batches: int = 2, seed: int = 0):
    """NB counts with cell-type programmes and a batch shift; obs has cell_type, batch and covariates."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, n_cells)
    batches = rng.integers(0, n_batches, n_cells)
    programmes = rng.gamma(0.6, 1.0, (n_types, n_genes))
    batch_shift = rng.lognormal(0, 0.3, (n_batches, n_genes))
    rate = programmes[types] * batch_shift[batches]
    rate = rate / rate.sum(1, keepdims=True) * rng.lognormal(np.log(800), 0.3, n_cells)[:, None]
    theta = 5.0
    counts = rng.poisson(rng.gamma(theta, rate / theta)).astype(np.float32)
    counts[:, 0] += 1  # no empty cells
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type{t}" for t in types]),
            "batch": pd.Categorical([f"b{b}" for b in batches]),
            "donor": pd.Categorical(rng.choice(["d1", "d2", "d3"], n_cells)),
            "percent_mito": rng.uniform(0, 0.1, n_cells),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)])
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)


@pytest.fixture
def small_adata():
    return simulate_counts()


def zeisel_cortex():
    """The full 3,005 x 4,000 zeisel_cortex file when ../shared is beside the project, else the vendored subset."""
    path = SHARED_DATA / "zeisel_cortex.h5ad"
    if path.is_file():
        return ad.read_h5ad(path)
    import pybridge

    return pybridge.datasets.cortex()


def counting_adam(make_adam, counted: list[int]):
    """``make_adam`` whose optimizers append 1 to ``counted`` at every step."""
    def make(*args, **kwargs):
        optimizer = make_adam(*args, **kwargs)
        step = optimizer.step

        def counted_step(*a, **k):
            counted.append(1)
            return step(*a, **k)

        optimizer.step = counted_step
        return optimizer
    return make


@pytest.fixture
def optimizer_steps(monkeypatch) -> list[int]:
    """One entry per optimizer step that training takes while the test runs."""
    from pybridge.train import trainer

    counted: list[int] = []
    monkeypatch.setattr(trainer, "make_adam", counting_adam(trainer.make_adam, counted))
    return counted
