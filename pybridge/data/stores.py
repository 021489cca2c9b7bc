"""Minibatch sources ("stores") and the in-memory one.

A store holds some rows of a dataset (``positions``: their row numbers in the dataset, all rows when None) and
serves minibatches of them: ``gather(local)`` takes positions *within the store* (a long tensor on its device)
and returns a dict of tensors on the device with ``X`` (dense counts), the covariate codes, and ``indices``
(the cells' row numbers in the dataset, which per-cell parameters such as DestVI's are indexed by);
``gather_range(start, stop)``, where present, serves consecutive rows without an index tensor. A store
that reads in its own order (on-disk data) also has ``iter_minibatches``. :func:`pybridge.data.factory.make_store`
is the one place that chooses a store.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import gammaln


def log_factorial_per_cell(X) -> np.ndarray:
    """Sum over genes of lgamma(x + 1) per cell: the likelihood constant, computed once per store."""
    if sp.issparse(X):
        csr = sp.csr_matrix(X)
        vals = gammaln(np.asarray(csr.data, dtype=np.float64) + 1)
        return np.add.reduceat(np.append(vals, 0.0), csr.indptr[:-1])[: csr.shape[0]] * (np.diff(csr.indptr) > 0)
    return gammaln(np.asarray(X, dtype=np.float64) + 1).sum(axis=1)


class TensorStore:
    """Rows kept on the compute device and gathered there.

    Dense when the data are dense enough and fit ``dense_budget_bytes``; otherwise CSR arrays on the device,
    densified one minibatch at a time by vectorised gathers (no per-minibatch pandas or AnnData work).
    ``likelihood=True`` adds the per-cell log-factorial that only likelihood evaluations read.

    Gathering never waits for the device: the number of stored entries a minibatch reads is known on the host
    (``gather_range`` slices the host copy of ``indptr``; ``gather`` of any rows reserves room for the
    ``len(idx)`` longest rows when ``sync_free``, the default on CUDA, and reads the exact count elsewhere,
    where reading it costs nothing).
    """

    def __init__(
        self,
        X,
        covariates: dict[str, np.ndarray],
        device: torch.device,
        positions: np.ndarray | None = None,
        likelihood: bool = False,
        dense_budget_bytes: int | None = None,
    ):
        n, g = X.shape
        self.n_obs, self.n_vars, self.device = n, g, torch.device(device)
        self.sync_free = self.device.type == "cuda"
        self.positions = None if positions is None else torch.as_tensor(np.asarray(positions, np.int64), device=self.device)
        if dense_budget_bytes is None:
            dense_budget_bytes = _default_dense_budget(self.device)
        csr = _canonical_csr(X) if sp.issparse(X) else None
        density = csr.nnz / max(n * g, 1) if csr is not None else 1.0
        self.dense = csr is None or (density > 0.25 and n * g * 4 <= dense_budget_bytes)
        if self.dense:
            arr = csr.toarray() if csr is not None else np.asarray(X, dtype=np.float32)
            self.X = torch.as_tensor(arr, dtype=torch.float32).to(self.device)
        else:
            self.indptr_host = csr.indptr.astype(np.int64)
            self.longest_first = np.concatenate([[0], np.cumsum(np.sort(np.diff(self.indptr_host))[::-1])])
            self.indptr = torch.as_tensor(self.indptr_host).to(self.device)
            self.indices = torch.as_tensor(csr.indices).to(self.device)  # scipy's int32 kept: no copy on the CPU
            self.values = torch.as_tensor(csr.data).to(self.device)
        self.fields = {k: torch.as_tensor(v).to(self.device) for k, v in covariates.items()}
        if likelihood:
            self.fields["log_x_factorial"] = torch.as_tensor(
                log_factorial_per_cell(csr if csr is not None else X), dtype=torch.float32
            ).to(self.device)

    def __len__(self) -> int:
        return self.n_obs

    def _sparse_rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Dense counts of rows ``idx``: entry k of the minibatch's flat entry list belongs to row ``row[k]`` and
        is stored at ``k + shift[row[k]]``; a last, discarded row absorbs the room reserved beyond the real count."""
        n = idx.shape[0]
        starts = self.indptr.index_select(0, idx)
        lengths = self.indptr.index_select(0, idx + 1) - starts
        size = int(self.longest_first[min(n, self.n_obs)]) if self.sync_free else int(lengths.sum())
        counts = torch.cat([lengths, (size - lengths.sum()).reshape(1)])
        first = torch.cumsum(counts, 0) - counts
        shift = torch.cat([starts, starts.new_zeros(1)]) - first
        row = torch.repeat_interleave(torch.arange(n + 1, device=self.device), counts, output_size=size)
        entry = torch.arange(size, device=self.device) + shift.index_select(0, row)
        out = torch.zeros(n + 1, self.n_vars, device=self.device)
        out[row, self.indices.index_select(0, entry)] = self.values.index_select(0, entry)
        return out[:n]

    def _sparse_range(self, start: int, stop: int) -> torch.Tensor:
        first, last = int(self.indptr_host[start]), int(self.indptr_host[stop])
        lengths = self.indptr[start + 1 : stop + 1] - self.indptr[start:stop]
        row = torch.repeat_interleave(torch.arange(stop - start, device=self.device), lengths, output_size=last - first)
        out = torch.zeros(stop - start, self.n_vars, device=self.device)
        out[row, self.indices[first:last]] = self.values[first:last]
        return out

    def gather(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The minibatch of the store's rows ``idx`` (a long tensor on the store's device)."""
        batch = {k: v.index_select(0, idx) for k, v in self.fields.items()}
        batch["X"] = self.X.index_select(0, idx) if self.dense else self._sparse_rows(idx)
        batch["indices"] = idx if self.positions is None else self.positions.index_select(0, idx)
        return batch

    def gather_range(self, start: int, stop: int, sparse_counts: bool = False) -> dict[str, torch.Tensor]:
        """The minibatch of the store's rows ``start`` to ``stop - 1``: slices where ``gather`` copies.

        ``sparse_counts=True`` gives a CSR store's counts as a sparse CSR tensor (slices, no densifying), for
        callers whose only use of them is a product with a weight matrix."""
        batch = {k: v[start:stop] for k, v in self.fields.items()}
        if self.dense:
            batch["X"] = self.X[start:stop]
        elif sparse_counts:
            first, last = int(self.indptr_host[start]), int(self.indptr_host[stop])
            batch["X"] = sparse_csr(
                (self.indptr[start : stop + 1] - first).to(self.indices.dtype), self.indices[first:last],
                self.values[first:last],
                (stop - start, self.n_vars),
            )
        else:
            batch["X"] = self._sparse_range(start, stop)
        batch["indices"] = (
            torch.arange(start, stop, device=self.device) if self.positions is None else self.positions[start:stop]
        )
        return batch


def sparse_csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A torch sparse CSR tensor from parts that are valid by construction (no invariant checks, and without
    torch's once-per-process "beta" warning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=shape, check_invariants=False)


def _canonical_csr(X) -> sp.csr_matrix:
    """float32 CSR without duplicate entries (summed, as ``toarray`` does), sharing the caller's arrays when
    they already are; a matrix that needs summing is copied first, never changed in place."""
    csr = sp.csr_matrix(X, dtype=np.float32)
    if sp.issparse(X) and X.format == "csr":
        # scipy caches the (full-scan) check on the caller's matrix; the new object would scan again
        csr.has_canonical_format = X.has_canonical_format
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    return csr


def _default_dense_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.4)
    return 4 * 1024**3
