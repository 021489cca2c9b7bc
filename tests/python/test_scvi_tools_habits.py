"""scvi-tools habits: its train() keywords, history as DataFrames by epoch, view_anndata_setup, summary_stats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pybridge
from pybridge import PybridgeError


def _model(adata, **setup):
    pybridge.SCVI.setup_anndata(adata, **setup)
    return pybridge.SCVI(adata, n_hidden=16, n_latent=3)


def test_history_is_a_dataframe_per_metric_indexed_by_epoch(small_adata):
    model = _model(small_adata)
    model.train(max_epochs=4)
    history = model.history
    assert {"elbo_train", "elbo_validation", "reconstruction_loss_train", "kl_local_train", "kl_weight"} <= set(history)
    frame = history["elbo_train"]
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["elbo_train"]
    assert frame.index.name == "epoch" and frame.index.tolist() == [0, 1, 2, 3]
    assert np.isfinite(frame.to_numpy()).all() and (frame["elbo_train"] > 0).all()  # the loss, as in scvi-tools
    assert history["kl_weight"]["kl_weight"].tolist() == pytest.approx([0, 1 / 400, 2 / 400, 3 / 400])
    model.train(max_epochs=2)  # training on continues the epochs
    assert model.history["elbo_train"].index.tolist() == [0, 1, 2, 3, 4, 5]


def test_scvi_tools_train_keywords_are_mapped(small_adata):
    model = _model(small_adata)
    model.train(
        max_epochs=6, enable_progress_bar=False, check_val_every_n_epoch=3, devices="auto",
        plan_kwargs={"lr": 2e-3, "n_epochs_kl_warmup": 2, "max_kl_weight": 0.5, "optimizer": "Adam"},
    )
    history = model.history
    assert history["elbo_validation"].index.tolist() == [2, 5]  # validated every 3rd epoch, as Lightning counts
    assert history["elbo_train"].index.tolist() == list(range(6))
    assert history["kl_weight"]["kl_weight"].tolist() == pytest.approx([0, 0.25, 0.5, 0.5, 0.5, 0.5])
    assert model.get_elbo() < 0


def test_same_keywords_give_the_same_model(small_adata):
    first, second = _model(small_adata.copy()), _model(small_adata.copy())
    first.train(max_epochs=3, lr=2e-3, progress=False)
    second.train(max_epochs=3, plan_kwargs={"lr": 2e-3}, enable_progress_bar=False)
    np.testing.assert_allclose(first.get_latent_representation(), second.get_latent_representation())


@pytest.mark.parametrize(("keyword", "value", "named", "hint"), [
    ("plan_kwargs", {"reduce_lr_on_plateau": True}, "'reduce_lr_on_plateau'", "constant learning rate"),
    ("plan_kwargs", {"n_steps_kl_warmup": 100}, "'n_steps_kl_warmup'", "n_epochs_kl_warmup="),
    ("plan_kwargs", {"optimizer": "AdamW"}, "'AdamW'", "trains with Adam"),
    ("datasplitter_kwargs", {"drop_last": True}, "'datasplitter_kwargs'", "train_size="),
    ("load_sparse_tensor", True, "'load_sparse_tensor'", "drop it"),
    ("logger", None, "'logger'", "model.history"),
    ("devices", 2, "devices=2", "torchrun"),
    ("devices", [0, 1], "devices=[0, 1]", "torchrun"),
    ("early_stopping_mode", "max", "'early_stopping_mode'", "'min'"),
    ("not_a_keyword", 1, "unexpected keyword 'not_a_keyword'", "enable_progress_bar"),
])
def test_keywords_without_a_counterpart_are_refused_by_name(small_adata, keyword, value, named, hint):
    model = _model(small_adata)
    with pytest.raises(PybridgeError) as err:
        model.train(max_epochs=1, **{keyword: value})
    assert named in str(err.value) and hint in str(err.value)
    assert "\n" not in str(err.value) and not model.is_trained


def test_contradicting_values_are_refused(small_adata):
    model = _model(small_adata)
    with pytest.raises(PybridgeError, match="lr is given twice"):
        model.train(max_epochs=1, lr=1e-2, plan_kwargs={"lr": 1e-3})


def test_early_stopping_monitor_and_min_delta(small_adata):
    model = _model(small_adata)
    model.train(max_epochs=50, early_stopping=True, early_stopping_patience=2, early_stopping_min_delta=1e6,
                early_stopping_monitor="reconstruction_loss_validation")
    # no epoch improves by a million: the run stops after the first check plus `patience` checks
    assert len(model.history["elbo_train"]) == 3
    with pytest.raises(PybridgeError, match="early_stopping_monitor"):
        model.train(max_epochs=1, early_stopping=True, early_stopping_monitor="accuracy")


def test_view_anndata_setup_and_summary_stats(small_adata, capsys):
    model = _model(small_adata, batch_key="batch", labels_key="cell_type",
                   continuous_covariate_keys=["percent_mito"])
    model.view_anndata_setup()
    shown = capsys.readouterr().out
    assert "counts: adata.X" in shown and "batch: obs['batch'], 2 categories: b0, b1" in shown
    assert "labels: obs['cell_type'], 3 categories" in shown and "continuous covariate: obs['percent_mito']" in shown
    assert f"genes: {small_adata.n_vars}" in shown
    assert model.summary_stats == {
        "n_cells": small_adata.n_obs, "n_vars": small_adata.n_vars, "n_batch": 2, "n_labels": 3,
        "n_extra_categorical_covs": 0, "n_extra_continuous_covs": 1,
    }


def test_history_survives_save_and_load_with_sparse_validation(small_adata, tmp_path):
    model = _model(small_adata)
    model.train(max_epochs=4, check_val_every_n_epoch=2)
    model.save(tmp_path / "m")
    loaded = pybridge.SCVI.load(tmp_path / "m", adata=small_adata)
    for key, frame in model.history.items():
        pd.testing.assert_frame_equal(loaded.history[key], frame)
    assert loaded.history["elbo_validation"].index.tolist() == [1, 3]
