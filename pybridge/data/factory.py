"""The one place that decides how cells reach the device."""

from __future__ import annotations

import numpy as np
import torch
from anndata import AnnData

from pybridge.data.disk import DiskStore
from pybridge.data.fields import aligned_counts, counts_file, covariate_arrays
from pybridge.data.minified import MinifiedCells, MinifiedStore, is_minified
from pybridge.data.registry import Registry
from pybridge.data.stores import TensorStore


def make_store(
    adata: AnnData, registry: Registry, device: torch.device | str, rows: np.ndarray | None = None,
    likelihood: bool = False,
):
    """A store of ``rows`` of ``adata`` (all cells when None), read afresh so that later edits are seen.

    Minified data give latent posteriors (:class:`~pybridge.data.minified.MinifiedStore`, read minibatch by
    minibatch, also from a store on disk); counts on disk (data
    opened with :func:`~pybridge.data.disk.open_backed`, or X of an AnnData read with ``backed="r"``) are
    streamed from there (:class:`~pybridge.data.disk.DiskStore`); anything else is held on the device
    (:class:`~pybridge.data.stores.TensorStore`). Only ``rows`` are read, converted and moved, and the
    log-factorial that likelihoods need is computed only with ``likelihood=True``.
    """
    device = torch.device(device)
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
    if is_minified(adata):
        return MinifiedStore(MinifiedCells(adata, registry, rows), device, rows)
    if counts_file(adata, registry.layer) is not None:
        return DiskStore.from_adata(adata, registry, device, rows, likelihood)
    return TensorStore(
        aligned_counts(adata, registry, rows), covariate_arrays(adata, registry, rows), device, rows, likelihood
    )
