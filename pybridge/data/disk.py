"""Out-of-core training: minibatches streamed from a CSR (or dense) matrix on disk, .h5ad or zarr.

:func:`open_backed` reads only obs and var and returns a small AnnData that stands for the on-disk data; an
AnnData read with ``anndata.read_h5ad(path, backed="r")`` has its X on disk too. ``SCVI.setup_anndata`` /
``SCVI(adata)`` / ``model.train()`` then work as usual, with minibatches drawn by a :class:`DiskStore`:
contiguous chunks of rows are read in a shuffled order by a background thread into a bounded buffer of
``buffer_cells`` cells, shuffled within the buffer and densified one minibatch at a time. Peak memory is about ``(prefetch + 2) * buffer_cells`` rows of CSR data plus one dense minibatch, whatever the
number of cells.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData

from pybridge.data.fields import BACKED_KEY, counts_file, covariate_arrays, gene_positions
from pybridge.data.ondisk import DiskMatrix, open_root
from pybridge.data.registry import SETUP_KEY, Registry, registry_of
from pybridge.data.setup import setup_anndata
from pybridge.data.stores import log_factorial_per_cell
from pybridge.errors import PybridgeError

DEFAULT_BUFFER = {"buffer_cells": 20_000, "chunk_cells": 1_000, "prefetch": 1}


def _read_element(root, key: str):
    from anndata.io import read_elem

    return read_elem(root[key])


def open_backed(
    path: str | os.PathLike,
    layer: str | None = None,
    batch_key: str | None = None,
    labels_key: str | None = None,
    categorical_covariate_keys: list[str] | None = None,
    continuous_covariate_keys: list[str] | None = None,
    buffer_cells: int = DEFAULT_BUFFER["buffer_cells"],
    chunk_cells: int = DEFAULT_BUFFER["chunk_cells"],
    prefetch: int = DEFAULT_BUFFER["prefetch"],
    validate_chunk_cells: int = 20_000,
) -> AnnData:
    """An AnnData of the on-disk data's obs and var (no X), registered like ``SCVI.setup_anndata``.

    The counts are validated in one streaming pass (``validate_chunk_cells`` rows at a time). Train with
    ``SCVI(adata).train(...)``: minibatches come from a :class:`DiskStore` with the given buffer settings.
    ``SCVI.setup_anndata(adata, ...)`` may register it again (other obs columns, or another layer of the file).
    """
    path = Path(path)
    if not path.exists():
        raise PybridgeError(f"{path} not found")
    root = open_root(path)
    try:
        obs, var = _read_element(root, "obs"), _read_element(root, "var")
    finally:
        if hasattr(root, "close"):
            root.close()
    adata = AnnData(obs=obs, var=var)
    adata.uns[BACKED_KEY] = {
        "path": str(path.resolve()), "buffer_cells": buffer_cells, "chunk_cells": chunk_cells,
        "prefetch": prefetch, "validate_chunk_cells": validate_chunk_cells,
    }
    setup_anndata(adata, layer, batch_key, labels_key, categorical_covariate_keys, continuous_covariate_keys)
    return adata


def backed_library_sizes(adata: AnnData, chunk_cells: int = 20_000) -> np.ndarray:
    """Total counts per cell of the on-disk counts behind ``adata`` (one streaming pass)."""
    layer = registry_of(adata).layer
    matrix = DiskMatrix(counts_file(adata, layer), layer)
    try:
        parts = [np.asarray(block.sum(axis=1)).ravel() for block in matrix.blocks(chunk_cells)]
    finally:
        matrix.close()
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def is_backed(adata: AnnData | None) -> bool:
    """Whether the registered counts of ``adata`` are on disk (:func:`open_backed`, or X of a backed AnnData)."""
    if adata is None:
        return False
    layer = registry_of(adata).layer if SETUP_KEY in adata.uns else None
    return counts_file(adata, layer) is not None


# ---- minibatch source ---------------------------------------------------------------------------------------
class DiskStore:
    """A store of rows read from disk (see :mod:`pybridge.data.stores`), plus a streaming
    ``iter_minibatches`` (chunked, shuffled, prefetched) that the Trainer uses when present.

    ``positions`` restricts it to those rows of the file (covariates are read for them alone);
    ``likelihood=True`` adds the per-cell log-factorial to each minibatch.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        covariates: dict[str, np.ndarray],
        device: torch.device | str = "cpu",
        layer: str | None = None,
        buffer_cells: int = 20_000,
        chunk_cells: int = 1_000,
        prefetch: int = 1,
        gene_order: np.ndarray | None = None,
        positions: np.ndarray | None = None,
        likelihood: bool = False,
    ):
        if chunk_cells < 1 or buffer_cells < chunk_cells:
            raise PybridgeError(f"need 1 <= chunk_cells <= buffer_cells, got {chunk_cells} and {buffer_cells}")
        self.path, self.layer = Path(path), layer
        self.matrix = DiskMatrix(path, layer)
        self.n_rows_on_disk, self.n_vars = self.matrix.shape
        self.positions = None if positions is None else np.asarray(positions, dtype=np.int64)
        self.n_obs = self.n_rows_on_disk if positions is None else len(self.positions)
        if self.positions is not None:
            self._sorter = np.argsort(self.positions, kind="stable")
            self._sorted = self.positions[self._sorter]
        self.likelihood = likelihood
        self.device = torch.device(device)
        self.buffer_cells, self.chunk_cells, self.prefetch = buffer_cells, chunk_cells, max(int(prefetch), 1)
        self.gene_order = gene_order
        self.covariates = covariates
        self._lock = threading.Lock()

    @classmethod
    def from_adata(
        cls, adata: AnnData, registry: Registry, device: torch.device | str, rows: np.ndarray | None = None,
        likelihood: bool = False,
    ) -> DiskStore:
        """The store of ``rows`` of an AnnData whose registered counts are on disk (:func:`open_backed`, or X of
        an AnnData read with ``backed=``), columns in the registry's order; buffer settings from open_backed."""
        info = {**DEFAULT_BUFFER, **adata.uns.get(BACKED_KEY, {})}
        return cls(
            counts_file(adata, registry.layer), covariate_arrays(adata, registry, rows), device, registry.layer,
            int(info["buffer_cells"]), int(info["chunk_cells"]), int(info["prefetch"]),
            gene_positions(adata.var_names, registry), rows, likelihood,
        )

    def __len__(self) -> int:
        return self.n_obs

    def _read(self, start: int, stop: int) -> sp.csr_matrix:
        with self._lock:  # h5py is not safe for concurrent reads of one file
            block = self.matrix.rows(start, stop)
        return block if self.gene_order is None else block[:, self.gene_order]

    def _local(self, positions: np.ndarray) -> np.ndarray:
        """The store's own positions of file rows ``positions``."""
        if self.positions is None:
            return positions
        return self._sorter[np.searchsorted(self._sorted, positions)]

    def _file_rows(self, local: torch.Tensor) -> np.ndarray:
        """File rows of the store's positions ``local``."""
        local = local.cpu().numpy()
        return local if self.positions is None else self.positions[local]

    def _batch(self, block: sp.csr_matrix, rows: np.ndarray, positions: np.ndarray) -> dict[str, torch.Tensor]:
        """Minibatch dict for ``rows`` of ``block`` (file rows ``positions``)."""
        sub = block[rows]
        local = self._local(positions)
        batch = {k: torch.as_tensor(v[local]).to(self.device) for k, v in self.covariates.items()}
        batch["X"] = torch.as_tensor(sub.toarray()).to(self.device)
        if self.likelihood:
            batch["log_x_factorial"] = torch.as_tensor(log_factorial_per_cell(sub), dtype=torch.float32).to(self.device)
        batch["indices"] = torch.as_tensor(positions, dtype=torch.long).to(self.device)
        return batch

    def gather(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The store's rows ``idx`` (any order), read as few contiguous spans of at most ``buffer_cells`` rows."""
        positions = self._file_rows(idx)
        order = np.argsort(positions, kind="stable")
        sorted_pos = positions[order]
        parts, start = [], 0
        while start < len(sorted_pos):
            stop = np.searchsorted(sorted_pos, sorted_pos[start] + self.buffer_cells, side="left")
            lo, hi = int(sorted_pos[start]), int(sorted_pos[stop - 1]) + 1
            parts.append(self._read(lo, hi)[sorted_pos[start:stop] - lo])
            start = stop
        block = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, self.n_vars), dtype=np.float32)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return self._batch(block, inverse, positions)

    def _buffers(self, keep: np.ndarray, rng: np.random.Generator, shuffle: bool) -> Iterator[tuple]:
        """(CSR block, dataset positions) buffers of about ``buffer_cells`` kept cells, chunks in random order."""
        starts = np.arange(0, self.n_rows_on_disk, self.chunk_cells)
        if shuffle:
            starts = rng.permutation(starts)
        per_buffer = max(self.buffer_cells // self.chunk_cells, 1)
        for i in range(0, len(starts), per_buffer):
            blocks, positions = [], []
            for s in starts[i : i + per_buffer]:
                stop = min(int(s) + self.chunk_cells, self.n_rows_on_disk)
                rows = np.flatnonzero(keep[s:stop])
                if rows.size:
                    blocks.append(self._read(int(s), stop)[rows])
                    positions.append(rows + s)
            if blocks:
                yield sp.vstack(blocks, format="csr"), np.concatenate(positions)

    def iter_minibatches(
        self, indices: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
        shuffle: bool = True, min_last: int = 1,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Minibatches over the store's rows ``indices`` in one pass over the file: chunks in random order, cells shuffled within
        each buffer, buffers read ahead by a background thread. Cells left over at the end of a buffer open the
        next one's first minibatch, so the count is ceil(len(indices) / batch_size) (a trailing minibatch
        smaller than ``min_last`` is dropped), the same on every rank of a distributed job."""
        keep = np.zeros(self.n_rows_on_disk, dtype=bool)
        keep[self._file_rows(indices)] = True
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item()) if generator is not None else 0
        rng = np.random.default_rng(seed)
        carry_block, carry_pos = None, np.zeros(0, dtype=np.int64)
        for block, positions in _prefetched(self._buffers(keep, rng, shuffle), self.prefetch):
            order = rng.permutation(len(positions)) if shuffle else np.arange(len(positions))
            block, positions = block[order], positions[order]
            if carry_block is not None:
                block, positions = sp.vstack([carry_block, block], format="csr"), np.concatenate([carry_pos, positions])
            n_full = len(positions) // batch_size * batch_size
            for start in range(0, n_full, batch_size):
                rows = np.arange(start, start + batch_size)
                yield self._batch(block, rows, positions[rows])
            carry_block, carry_pos = block[n_full:], positions[n_full:]
        if len(carry_pos) >= min_last:
            yield self._batch(carry_block, np.arange(len(carry_pos)), carry_pos)


def _prefetched(source: Iterator, depth: int) -> Iterator:
    """Iterate ``source`` in a background thread, at most ``depth`` items ahead."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def worker():
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as err:  # noqa: BLE001 - re-raised in the consuming thread
            items.put(err)

    thread = threading.Thread(target=worker, daemon=True, name="pybridge-prefetch")
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
