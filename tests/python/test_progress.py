"""Training progress as a callback per epoch (what the R package turns into message()s)."""

from __future__ import annotations

import pybridge


def test_progress_callback_gets_every_epoch_and_its_loss(small_adata):
    pybridge.SCVI.setup_anndata(small_adata)
    model = pybridge.SCVI(small_adata, n_hidden=16, n_latent=3)
    calls = []
    model.train(max_epochs=3, progress=lambda epoch, n, record: calls.append((epoch, n, record["elbo_train"])))
    assert [(e, n) for e, n, _ in calls] == [(1, 3), (2, 3), (3, 3)]
    assert [loss for *_, loss in calls] == model.history["elbo_train"]["elbo_train"].tolist()


def test_progress_callback_replaces_the_bar(small_adata, capsys):
    pybridge.SCVI.setup_anndata(small_adata)
    model = pybridge.SCVI(small_adata, n_hidden=16, n_latent=3)
    epochs = []
    model.train(max_epochs=2, progress=lambda epoch, n, record: epochs.append(epoch))
    assert epochs == [1, 2]
    assert "Training" not in capsys.readouterr().err  # a callback replaces the tqdm bar
