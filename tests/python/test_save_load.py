"""Save/load: safetensors + JSON, atomic, refuses tampering and gene mismatches, never unpickles."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import pybridge
from pybridge import PybridgeError


@pytest.fixture
def trained(small_adata):
    pybridge.SCVI.setup_anndata(small_adata, batch_key="batch")
    model = pybridge.SCVI(small_adata, n_hidden=16, n_latent=3, use_observed_lib_size=False)
    model.train(max_epochs=2, progress=False)
    return model


def test_round_trip(trained, small_adata, tmp_path):
    trained.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["registry"]["var_names"] == list(small_adata.var_names)
    assert meta["registry"]["batch_categories"] == ["b0", "b1"]
    assert meta["pybridge_version"] == pybridge.__version__ and len(meta["history"]["elbo_train"]) == 2
    loaded = pybridge.SCVI.load(tmp_path / "m", adata=small_adata)
    np.testing.assert_allclose(loaded.get_latent_representation(), trained.get_latent_representation(), rtol=1e-6)
    np.testing.assert_array_equal(loaded.validation_indices, trained.validation_indices)
    assert loaded.history.keys() == trained.history.keys()
    for key, frame in trained.history.items():
        pd.testing.assert_frame_equal(loaded.history[key], frame)


def test_load_with_reordered_genes_and_saved_anndata(trained, small_adata, tmp_path):
    trained.save(tmp_path / "m", save_anndata=True)
    alone = pybridge.SCVI.load(tmp_path / "m")
    np.testing.assert_allclose(alone.get_latent_representation(), trained.get_latent_representation(), rtol=1e-6)
    reordered = small_adata[:, ::-1].copy()
    loaded = pybridge.SCVI.load(tmp_path / "m", adata=reordered)
    np.testing.assert_allclose(loaded.get_latent_representation(), trained.get_latent_representation(), rtol=1e-5,
                               atol=1e-6)


def test_overwrite_is_explicit(trained, tmp_path):
    trained.save(tmp_path / "m")
    with pytest.raises(PybridgeError, match="already exists; pass overwrite=True"):
        trained.save(tmp_path / "m")
    trained.save(tmp_path / "m", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging or retired directories left


def test_gene_mismatch_refused(trained, small_adata, tmp_path):
    trained.save(tmp_path / "m")
    with pytest.raises(PybridgeError, match="lacks 5 of the 60 genes"):
        pybridge.SCVI.load(tmp_path / "m", adata=small_adata[:, 5:].copy())


def test_truncated_weights_refused(trained, tmp_path):
    trained.save(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(PybridgeError, match="truncated or was modified"):
        pybridge.SCVI.load(tmp_path / "m")


def test_tampered_weights_refused(trained, tmp_path):
    trained.save(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(PybridgeError, match="truncated or was modified"):
        pybridge.SCVI.load(tmp_path / "m")


def test_truncated_json_refused(trained, tmp_path):
    trained.save(tmp_path / "m")
    meta = tmp_path / "m" / "model.json"
    meta.write_text(meta.read_text()[:50])
    with pytest.raises(PybridgeError, match="not valid JSON"):
        pybridge.SCVI.load(tmp_path / "m")


def test_not_a_model_dir(tmp_path):
    with pytest.raises(PybridgeError, match="not a pybridge model directory"):
        pybridge.SCVI.load(tmp_path)


def test_load_never_unpickles(trained, small_adata, tmp_path, monkeypatch):
    import pickle

    import torch

    trained.save(tmp_path / "m")

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling during load")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = pybridge.SCVI.load(tmp_path / "m", adata=small_adata)
    assert loaded.is_trained
