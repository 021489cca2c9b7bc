"""Two-process data-parallel training on the CPU (torchrun, gloo) through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anndata
import numpy as np
import pytest
from conftest import simulate_counts

import pybridge
from pybridge.errors import PybridgeError
from pybridge.train.distributed import shard

ROOT = Path(__file__).resolve().parents[2]
TRAIN_ARGS = ["--n-hidden", "32", "--n-latent", "4", "--max-epochs", "15", "--batch-size", "64", "--seed", "0",
              "--accelerator", "cpu", "--no-progress", "--batch-key", "batch"]


def test_shards_are_disjoint_equal_and_contiguous():
    parts = [shard(np.arange(103), r, 4) for r in range(4)]
    assert [len(p) for p in parts] == [25] * 4
    assert np.array_equal(np.concatenate(parts), np.arange(100))


def _cli(prefix: list[str], data: Path, out: Path, extra: list[str] = ()) -> subprocess.CompletedProcess:
    env_cmd = [*prefix, "-m", "pybridge.cli", "train", str(data), "-o", str(out), *TRAIN_ARGS, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(env_cmd, check=False, capture_output=True, text=True, cwd=ROOT, timeout=240, env=env)


def test_two_process_training_matches_single_process(tmp_path):
    data = tmp_path / "counts.h5ad"
    adata = simulate_counts(n_cells=600, n_genes=50)
    adata.write_h5ad(data)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    ddp = _cli(torchrun, data, tmp_path / "ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = _cli([sys.executable], data, tmp_path / "single")
    assert single.returncode == 0, single.stderr[-3000:]

    meta_ddp = json.loads((tmp_path / "ddp" / "model.json").read_text())
    meta_single = json.loads((tmp_path / "single" / "model.json").read_text())
    assert len(meta_ddp["history"]["elbo_train"]) == 15
    assert meta_ddp["train_indices"] == meta_single["train_indices"]

    fresh = simulate_counts(n_cells=600, n_genes=50)
    scores = {}
    for name in ("ddp", "single"):
        model = pybridge.SCVI.load(tmp_path / name, adata=fresh.copy(), accelerator="cpu")
        val = np.asarray(model.validation_indices)
        scores[name] = model.get_elbo(indices=val)
    assert abs(scores["ddp"] - scores["single"]) < 0.03 * abs(scores["single"]), scores
    latent = anndata.read_h5ad(tmp_path / "ddp" / "latent.h5ad")
    assert latent.obsm["X_scVI"].shape == (600, 4)


def test_two_process_training_from_disk_through_the_cli(tmp_path):
    """``--backed``: each rank streams its own cells from the .h5ad; same quality as in-memory training."""
    data = tmp_path / "counts.h5ad"
    simulate_counts(n_cells=600, n_genes=50).write_h5ad(data)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    backed = _cli(torchrun, data, tmp_path / "backed", ["--backed", "--buffer-cells", "100"])
    assert backed.returncode == 0, backed.stderr[-3000:]
    single = _cli([sys.executable], data, tmp_path / "single")
    assert single.returncode == 0, single.stderr[-3000:]
    fresh = simulate_counts(n_cells=600, n_genes=50)
    scores = {}
    for name in ("backed", "single"):
        model = pybridge.SCVI.load(tmp_path / name, adata=fresh.copy(), accelerator="cpu")
        scores[name] = model.get_elbo(indices=np.asarray(model.validation_indices))
    assert abs(scores["backed"] - scores["single"]) < 0.03 * abs(scores["single"]), scores
    latent = anndata.read_h5ad(tmp_path / "backed" / "latent.h5ad")
    assert latent.X is None and latent.obsm["X_scVI"].shape == (600, 4)
    assert latent.obs_names.equals(fresh.obs_names)


BACKED_SCRIPT = """
import json, sys, torch
import pybridge
from pybridge.train import distributed
from pybridge.data.disk import open_backed
adata = open_backed(sys.argv[1], batch_key="batch", buffer_cells=120, chunk_cells=20)
model = pybridge.SCVI(adata, n_hidden=16, n_latent=3)
# the one training entry: model.train() detects torchrun; early stopping must stop every rank at the same epoch
model.train(max_epochs=6, batch_size=64, progress=False, accelerator="cpu", strategy="ddp",
            early_stopping=True, early_stopping_patience=1)
rank = torch.distributed.get_rank()
weights = sum(float(p.detach().double().sum()) for p in model.module.parameters())
report = {"rank": rank, "weights": weights, "elbo": float(model.history["elbo_validation"].iloc[-1, 0]),
          "epochs": len(model.history["elbo_train"]), "main": distributed.is_main_process()}
with open(f"{sys.argv[2]}/rank{rank}.json", "w") as fh:
    json.dump(report, fh)
distributed.cleanup()
"""


def test_two_ranks_train_from_disk_to_identical_weights(tmp_path):
    data = tmp_path / "counts.h5ad"
    simulate_counts(n_cells=400, n_genes=30).write_h5ad(data)
    script = tmp_path / "backed_ddp.py"
    script.write_text(BACKED_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(data), str(tmp_path)],
        check=False, capture_output=True, text=True, cwd=ROOT, timeout=240, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # one file per rank: the ranks' stdout lines interleave when torchrun merges them
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    assert reports[0]["weights"] == reports[1]["weights"] and reports[0]["elbo"] == reports[1]["elbo"]
    assert reports[0]["epochs"] == reports[1]["epochs"] and [r["main"] for r in reports] == [True, False]
    assert np.isfinite(reports[0]["elbo"])


def test_strategy_is_checked_without_torchrun(small_adata_for_ddp):
    model = pybridge.SCVI(small_adata_for_ddp, n_hidden=8, n_latent=2)
    with pytest.raises(PybridgeError, match="torchrun"):
        model.train(max_epochs=1, strategy="ddp", progress=False)
    with pytest.raises(PybridgeError, match="strategy must be one of"):
        model.train(max_epochs=1, strategy="fsdp", progress=False)
    model.train(max_epochs=1, strategy="single", progress=False)
    assert len(model.history["elbo_train"]) == 1


@pytest.fixture
def small_adata_for_ddp():
    adata = simulate_counts(n_cells=60, n_genes=20)
    pybridge.SCVI.setup_anndata(adata)
    return adata
