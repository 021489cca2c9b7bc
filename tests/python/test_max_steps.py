"""``max_steps`` (Lightning's trainer keyword): training stops after that many optimizer steps, mid-epoch if need be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import simulate_counts

import pybridge
from pybridge.data.disk import open_backed
from pybridge.errors import PybridgeError

ROOT = Path(__file__).resolve().parents[2]
N_CELLS, BATCH = 300, 64  # 270 training cells: 5 minibatches per epoch (the last one of 14 cells)


@pytest.fixture(scope="module")
def h5ad(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("max_steps") / "counts.h5ad"
    simulate_counts(n_cells=N_CELLS, n_genes=30).write_h5ad(path)
    return path


def _model(adata) -> pybridge.SCVI:
    return pybridge.SCVI(adata, n_hidden=16, n_latent=3)


def _in_memory():
    adata = simulate_counts(n_cells=N_CELLS, n_genes=30)
    pybridge.SCVI.setup_anndata(adata)
    return adata


@pytest.mark.parametrize("source", ["memory", "disk"])
def test_training_stops_after_max_steps_mid_epoch(optimizer_steps, h5ad, source):
    adata = _in_memory() if source == "memory" else open_backed(h5ad, buffer_cells=100, chunk_cells=20)
    model = _model(adata)
    model.train(max_epochs=10, max_steps=12, batch_size=BATCH, accelerator="cpu", progress=False)
    assert len(optimizer_steps) == 12
    assert len(model.history["elbo_train"]) == 3  # 5 + 5 + the 2 steps of the third epoch
    assert len(model.history["elbo_validation"]) == 3 and model.is_trained


def test_max_epochs_stops_first_when_it_comes_first(optimizer_steps):
    model = _model(_in_memory())
    model.train(max_epochs=2, max_steps=1000, batch_size=BATCH, accelerator="cpu", progress=False)
    assert len(optimizer_steps) == 10 and len(model.history["elbo_train"]) == 2


def test_max_steps_at_an_epoch_boundary_and_lightnings_no_limit(optimizer_steps):
    model = _model(_in_memory())
    model.train(max_epochs=4, max_steps=5, batch_size=BATCH, accelerator="cpu", progress=False)
    assert len(optimizer_steps) == 5 and len(model.history["elbo_train"]) == 1
    model.train(max_epochs=1, max_steps=-1, batch_size=BATCH, accelerator="cpu", progress=False)
    assert len(optimizer_steps) == 10 and len(model.history["elbo_train"]) == 2  # counted per train() call


@pytest.mark.parametrize("value", [0, 2.5, -3])
def test_invalid_max_steps_are_refused(value):
    model = _model(_in_memory())
    with pytest.raises(PybridgeError, match="max_steps must be a whole number"):
        model.train(max_epochs=1, max_steps=value, accelerator="cpu", progress=False)
    assert not model.is_trained


DDP_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[3])
import torch
from conftest import counting_adam
import pybridge
from pybridge.data.disk import open_backed
from pybridge.train import distributed, trainer
counted = []
trainer.make_adam = counting_adam(trainer.make_adam, counted)
adata = open_backed(sys.argv[1], buffer_cells=60, chunk_cells=20)
model = pybridge.SCVI(adata, n_hidden=16, n_latent=3)
model.train(max_epochs=10, max_steps=7, batch_size=64, accelerator="cpu", progress=False, strategy="ddp")
rank = torch.distributed.get_rank()
with open(f"{sys.argv[2]}/rank{rank}.json", "w") as fh:
    json.dump({"steps": len(counted), "epochs": len(model.history["elbo_train"])}, fh)
distributed.cleanup()
"""


def test_every_ddp_rank_takes_max_steps(tmp_path, h5ad):
    """Each rank (135 training cells, 32 per minibatch: 5 steps an epoch) stops after the same 7 steps."""
    script = tmp_path / "ddp_max_steps.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(h5ad),
         str(tmp_path), str(Path(__file__).parent)],
        check=False, capture_output=True, text=True, cwd=ROOT, timeout=240, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert reports == [{"steps": 7, "epochs": 2}] * 2
