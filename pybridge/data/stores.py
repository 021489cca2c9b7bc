"""Minibatch sources ("stores") and the in-memory one.

A store holds some rows of a dataset (``positions``: their row numbers in the dataset, all rows when None) and
serves minibatches of them: ``gather(local)`` takes positions *within the store* (a long tensor on its device)
and returns a dict of tensors on the device with ``X`` (dense counts), the covariate codes, and ``indices``
(the cells' row numbers in the dataset, which per-cell parameters such as DestVI's are indexed by). A store
that reads in its own order (on-disk data) also has ``iter_minibatches``. :func:`pybridge.data.factory.make_store`
is the one place that chooses a store.
"""

from __future__ import annotations

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
        self.positions = None if positions is None else torch.as_tensor(np.asarray(positions, np.int64), device=self.device)
        if dense_budget_bytes is None:
            dense_budget_bytes = _default_dense_budget(self.device)
        csr = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else None
        density = csr.nnz / max(n * g, 1) if csr is not None else 1.0
        self.dense = csr is None or (density > 0.25 and n * g * 4 <= dense_budget_bytes)
        if self.dense:
            arr = csr.toarray() if csr is not None else np.asarray(X, dtype=np.float32)
            self.X = torch.as_tensor(arr, dtype=torch.float32).to(self.device)
        else:
            self.indptr = torch.as_tensor(csr.indptr.astype(np.int64)).to(self.device)
            self.indices = torch.as_tensor(csr.indices.astype(np.int64)).to(self.device)
            self.values = torch.as_tensor(csr.data).to(self.device)
        self.fields = {k: torch.as_tensor(v).to(self.device) for k, v in covariates.items()}
        if likelihood:
            self.fields["log_x_factorial"] = torch.as_tensor(
                log_factorial_per_cell(csr if csr is not None else X), dtype=torch.float32
            ).to(self.device)

    def __len__(self) -> int:
        return self.n_obs

    def _dense_rows(self, idx: torch.Tensor) -> torch.Tensor:
        if self.dense:
            return self.X.index_select(0, idx)
        starts, ends = self.indptr[idx], self.indptr[idx + 1]
        lengths = ends - starts
        row_of_entry = torch.repeat_interleave(torch.arange(len(idx), device=self.device), lengths)
        offsets = torch.arange(int(lengths.sum()), device=self.device) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths
        )
        entry = starts[row_of_entry] + offsets
        out = torch.zeros(len(idx), self.n_vars, device=self.device)
        out[row_of_entry, self.indices[entry]] = self.values[entry]
        return out

    def gather(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The minibatch of the store's rows ``idx`` (a long tensor on the store's device)."""
        batch = {k: v.index_select(0, idx) for k, v in self.fields.items()}
        batch["X"] = self._dense_rows(idx)
        batch["indices"] = idx if self.positions is None else self.positions.index_select(0, idx)
        return batch


def _default_dense_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.4)
    return 4 * 1024**3
