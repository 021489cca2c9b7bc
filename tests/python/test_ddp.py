"""Two-process data-parallel training on the CPU (torchrun, gloo) through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anndata
import numpy as np
from conftest import simulate_counts

import pybridge
from pybridge.distributed import shard

ROOT = Path(__file__).resolve().parents[2]
TRAIN_ARGS = ["--n-hidden", "32", "--n-latent", "4", "--max-epochs", "15", "--batch-size", "64", "--seed", "0",
              "--accelerator", "cpu", "--no-progress", "--batch-key", "batch"]


def test_shards_are_disjoint_equal_and_contiguous():
    parts = [shard(np.arange(103), r, 4) for r in range(4)]
    assert [len(p) for p in parts] == [25] * 4
    assert np.array_equal(np.concatenate(parts), np.arange(100))


def _cli(prefix: list[str], data: Path, out: Path) -> subprocess.CompletedProcess:
    env_cmd = [*prefix, "-m", "pybridge.cli", "train", str(data), "-o", str(out), *TRAIN_ARGS]
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
