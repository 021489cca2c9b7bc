"""Matryoshka latents: nested prefixes of z form usable models on their own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import simulate_counts

import pybridge
from pybridge.errors import PybridgeError
from pybridge.nn.distributions import log_nb_positive


def _trained(adata, **kwargs):
    pybridge.SCVI.setup_anndata(adata)
    model = pybridge.SCVI(adata, n_hidden=32, n_latent=6, gene_likelihood="nb", **kwargs)
    model.train(max_epochs=30, batch_size=100, n_epochs_kl_warmup=10, accelerator="cpu", progress=False)
    return model


def _prefix_log_lik(model, adata, k: int) -> float:
    x = torch.as_tensor(adata.X.toarray())
    mu = torch.as_tensor(model.decode(n_latent=k)) * x.sum(1, keepdim=True)
    return float(log_nb_positive(x, mu, torch.exp(model.module.px_r.detach()), include_constant=True).sum(1).mean())


@pytest.fixture(scope="module")
def models():
    adata = simulate_counts(n_cells=300, n_genes=60, n_types=4)
    nested = _trained(adata.copy(), matryoshka_dims=[1, 2])
    plain = _trained(adata.copy())
    return adata, nested, plain


def test_prefixes_are_usable_models(models):
    adata, nested, plain = models
    assert nested._init_params["matryoshka_dims"] == [1, 2, 6]
    # the nested model's first two dimensions explain the counts far better than a plain model's
    assert _prefix_log_lik(nested, adata, 2) > _prefix_log_lik(plain, adata, 2) + 1.0
    # and the full latent stays about as good as the plain model's
    full_nested, full_plain = _prefix_log_lik(nested, adata, 6), _prefix_log_lik(plain, adata, 6)
    assert full_nested > full_plain - 0.05 * abs(full_plain)


def test_truncated_latent_and_decode(models, tmp_path):
    adata, nested, _ = models
    full = nested.get_latent_representation()
    np.testing.assert_array_equal(nested.get_latent_representation(n_latent=2), full[:, :2])
    qzm, qzv = nested.get_latent_representation(n_latent=2, return_dist=True)
    assert qzm.shape == qzv.shape == (adata.n_obs, 2)
    mini = nested.minify()
    decoded = nested.decode(adata=mini, n_latent=2, genes=["gene4", "gene9"])
    np.testing.assert_allclose(decoded, nested.decode(n_latent=2)[:, [4, 9]], atol=1e-6)
    nested.save(tmp_path / "m")
    loaded = pybridge.SCVI.load(tmp_path / "m", adata=adata.copy(), accelerator="cpu")
    np.testing.assert_allclose(loaded.decode(n_latent=1), nested.decode(n_latent=1), atol=1e-6)


def test_bad_dims_are_refused():
    adata = simulate_counts(n_cells=50, n_genes=20)
    pybridge.SCVI.setup_anndata(adata)
    with pytest.raises(PybridgeError, match="matryoshka_dims"):
        pybridge.SCVI(adata, n_latent=5, matryoshka_dims=[2, 8])
    model = pybridge.SCVI(adata, n_latent=5)
    with pytest.raises(PybridgeError, match="n_latent"):
        model.get_latent_representation(n_latent=0)
