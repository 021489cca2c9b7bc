"""Acceptance on real data (zeisel_cortex): training improves the held-out ELBO and separates cell types."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import zeisel_cortex
from sklearn.metrics import silhouette_score

import pybridge

EPOCHS = 40


@pytest.fixture(scope="module")
def cortex_model():
    adata = zeisel_cortex()
    pybridge.SCVI.setup_anndata(adata, labels_key="cell_type")
    model = pybridge.SCVI(adata)
    model.train(max_epochs=EPOCHS, seed=0, progress=False)
    return adata, model


@pytest.mark.slow
def test_held_out_elbo_beats_one_epoch(cortex_model):
    adata, model = cortex_model
    after_one_epoch = -model.history["elbo_validation"].iloc[0, 0]
    final = model.get_elbo(indices=model.validation_indices)
    assert final > after_one_epoch + 0.05 * abs(after_one_epoch), (final, after_one_epoch)
    # a held-out ELBO that beats the mean-cell baseline (every cell's counts ~ Poisson(library * mean profile))
    X = adata.X[model.validation_indices].toarray()
    profile = np.asarray(adata.X[model.train_indices].sum(0)).ravel()
    profile = profile / profile.sum()
    rate = X.sum(1, keepdims=True) * profile
    from scipy.stats import poisson

    baseline = poisson.logpmf(X, np.maximum(rate, 1e-12)).sum(1).mean()
    assert final > baseline, (final, baseline)


@pytest.mark.slow
def test_latent_separates_cell_types(cortex_model):
    adata, model = cortex_model
    latent = model.get_latent_representation()
    score = silhouette_score(latent, adata.obs["cell_type"])
    assert score >= 0.15, score
