"""A training step never reads a value back from the device on the path CUDA takes.

On a GPU such a read (``.item()``, ``int(tensor)``, ``nonzero``, ``repeat_interleave`` without ``output_size``)
stalls the stream until every queued kernel has finished. No GPU is needed to find them: on the CPU, with the
store's and the likelihood's GPU branches switched on, every aten operation of whole epochs is recorded and
the reads counted. An epoch may read its totals once at its end; the count must not grow with its steps.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pybridge.data import stores
from pybridge.data.factory import make_store
from pybridge.models.scvi import SCVI
from pybridge.nn import distributions
from pybridge.train.trainer import Trainer

aten = torch.ops.aten
READS_BACK = {
    aten._local_scalar_dense.default,  # .item(), int(t), float(t), bool(t)
    aten.nonzero.default,
    aten.masked_select.default,
    aten.is_nonzero.default,
    aten.equal.default,
    aten._unique2.default,
    aten.unique_consecutive.default,
}


class RecordReads(TorchDispatchMode):
    """Names the operations that would wait for the device, in the order they ran."""

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        unsized = func.overloadpacket is aten.repeat_interleave and kwargs.get("output_size") is None
        if func in READS_BACK or unsized:
            self.reads.append(str(func))
        return func(*args, **kwargs)


def _reads_per_epoch(adata, monkeypatch, batch_size: int, **model_kwargs) -> tuple[int, list[str]]:
    monkeypatch.setattr(stores, "_default_dense_budget", lambda device: 0)  # CSR on the device, gathered there
    monkeypatch.setattr(distributions, "_host_sync_allowed", lambda x: False)  # the likelihood's GPU branch
    model = SCVI(adata, **model_kwargs)
    store = make_store(adata, model.registry, "cpu", likelihood=True)
    assert not store.dense
    store.sync_free = True  # CUDA's default
    trainer = Trainer(model.module, store, np.arange(adata.n_obs - 40), np.arange(adata.n_obs - 40, adata.n_obs),
                      batch_size=batch_size)
    trainer._train_epoch(0.5)  # allocations and lazy state outside the recording
    n_steps = len(trainer._minibatches())
    with RecordReads() as recorder:
        trainer._train_epoch(0.5)
    return n_steps, recorder.reads


def test_a_training_epoch_reads_back_only_its_totals(small_adata, monkeypatch):
    assert small_adata.X.max() >= 32  # counts beyond the likelihood's table take the branch-free series
    SCVI.setup_anndata(small_adata, batch_key="batch", categorical_covariate_keys=["donor"],
                       continuous_covariate_keys=["percent_mito"])
    few_steps, few = _reads_per_epoch(small_adata, monkeypatch, batch_size=128)
    many_steps, many = _reads_per_epoch(small_adata, monkeypatch, batch_size=16)
    assert many_steps >= 4 * few_steps
    assert many == few, many  # nothing per step
    assert len(many) <= 2, many  # isfinite(totals).all() and totals.tolist() at the epoch's end


def test_per_cell_dispersion_and_nb_read_back_nothing_per_step(small_adata, monkeypatch):
    SCVI.setup_anndata(small_adata, batch_key="batch")
    kwargs = {"dispersion": "gene-batch", "gene_likelihood": "nb"}
    _, few = _reads_per_epoch(small_adata, monkeypatch, batch_size=128, **kwargs)
    _, many = _reads_per_epoch(small_adata, monkeypatch, batch_size=16, **kwargs)
    assert many == few and len(many) <= 2, many
