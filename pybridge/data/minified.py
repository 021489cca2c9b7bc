"""Minified data: the scvi-tools layout of a cell's latent posterior (no counts) and its minibatch source.

A minified AnnData keeps each cell's posterior mean and variance of z, its observed library size and its
softmax log-normaliser: ``obsm["scvi_latent_qzm"]``, ``obsm["scvi_latent_qzv"]``, ``obs["observed_lib_size"]``,
``uns["_scvi_adata_minify_type"]``, X all-zero sparse, plus ``obs["pybridge_log_normalizer"]`` and
``uns["pybridge_minified_by"]`` (a digest of the weights of the model that computed the posteriors).
scvi-tools has also written the posterior under ``obsm["_scvi_latent_qzm"]`` / ``["_scvi_latent_qzv"]`` and
the library under ``obs["_scvi_observed_lib_size"]``; either spelling is read.

The data may be an AnnData in memory, one opened with ``anndata.read_h5ad(path, backed="r")``, or a store left
on disk (:func:`open_minified`); :class:`MinifiedCells` reads the chosen cells of any of them chunk by chunk.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from pybridge.data.fields import covariate_arrays, obs_rows
from pybridge.data.minified_file import MinifiedFile, read_rows
from pybridge.data.registry import Registry
from pybridge.errors import PybridgeError

MINIFY_TYPE_KEY = "_scvi_adata_minify_type"
MINIFY_TYPE = "latent_posterior_parameters"
QZM_KEY = "scvi_latent_qzm"
QZV_KEY = "scvi_latent_qzv"
LIBRARY_KEY = "observed_lib_size"
LOG_NORMALIZER_KEY = "pybridge_log_normalizer"
MINIFIED_BY_KEY = "pybridge_minified_by"
#: Where each field may be found: pybridge's and scvi-tools' current spelling first, then scvi-tools' other one.
KEY_SPELLINGS = {
    "qzm": ("obsm", (QZM_KEY, "_scvi_latent_qzm")),
    "qzv": ("obsm", (QZV_KEY, "_scvi_latent_qzv")),
    "library": ("obs", (LIBRARY_KEY, "_scvi_observed_lib_size")),
}


def is_minified(adata: AnnData | None) -> bool:
    """Whether ``adata`` holds latent posteriors instead of counts (scvi-tools' minified layout)."""
    return adata is not None and adata.uns.get(MINIFY_TYPE_KEY) is not None


def minified_keys(adata: AnnData) -> dict[str, str]:
    """The keys under which ``adata`` stores ``qzm``, ``qzv`` and ``library`` (either scvi-tools spelling)."""
    keys = {}
    for field, (where, spellings) in KEY_SPELLINGS.items():
        found = [k for k in spellings if k in getattr(adata, where)]
        if not found:
            names = " or ".join(f"{where}[{k!r}]" for k in spellings)
            raise PybridgeError(f"minified adata lacks {names}; re-create it with model.minify(adata)")
        keys[field] = found[0]
    return keys


def check_minified(adata: AnnData) -> dict[str, str]:
    """Refuse a minified AnnData that lacks one of the fields decoding reads; return their keys."""
    kind = adata.uns.get(MINIFY_TYPE_KEY)
    if kind not in (MINIFY_TYPE, "latent_posterior_parameters_with_counts"):
        raise PybridgeError(f"uns[{MINIFY_TYPE_KEY!r}] is {kind!r}; only {MINIFY_TYPE!r} minified data is supported")
    return minified_keys(adata)


def open_minified(path: str | os.PathLike) -> MinifiedFile:
    """Open a minified .h5ad or .zarr store without reading its per-cell arrays (atlas-sized stores).

    Pass the result where an AnnData goes: ``SCVI.load(model_dir, adata=store)``, ``model.decode(store,
    genes=...)``, ``model.get_latent_representation(store)``, ``model.differential_expression(store, ...)``.
    Calls read the posteriors, library sizes and covariates of the cells they need, chunk by chunk. Select
    cells by an obs column without reading the rest, e.g. ``cells=np.flatnonzero(store.obs["group"] == "A")``.
    """
    store = MinifiedFile(path)
    if not is_minified(store):
        raise PybridgeError(
            f"{path} is not minified (uns[{MINIFY_TYPE_KEY!r}] is missing): open data with counts with "
            "anndata.read_h5ad(path) or pybridge.data.disk.open_backed(path)"
        )
    check_minified(store)
    return store


def require_counts(adata: AnnData | None, what: str, fix: str = "Pass the original counts with adata=...") -> None:
    """Refuse a minified ``adata`` where ``what`` needs the counts; ``fix``: a sentence saying what to do instead."""
    if is_minified(adata):
        raise PybridgeError(
            f"{what} needs the count matrix, but this AnnData is minified: it holds each cell's latent posterior "
            f"and library size, and its counts are all zero. {fix}"
        )


def module_fingerprint(module: torch.nn.Module) -> str:
    """A digest of a model's weights: minified data record which model computed their posteriors.

    Kept on the module until a weight changes (torch counts in-place writes per tensor), so that calls on
    minified data do not hash a large model each time."""
    state = module.state_dict()
    key = tuple((name, t.data_ptr(), t._version, tuple(t.shape), str(t.dtype)) for name, t in state.items())
    cached = getattr(module, "_pybridge_fingerprint", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    module._pybridge_fingerprint = (key, digest.hexdigest())
    return module._pybridge_fingerprint[1]


def check_minified_by(adata: AnnData, module: torch.nn.Module) -> None:
    """Refuse minified data whose posteriors another model computed (data without the record pass)."""
    recorded = adata.uns.get(MINIFIED_BY_KEY) if is_minified(adata) else None
    if recorded is not None and recorded != module_fingerprint(module):
        raise PybridgeError(
            "this AnnData was minified by another model (or by this one before further training): its stored "
            "latent posteriors are not this model's. Use the model that minified it, or minify the counts "
            "again with this model: model.minify(adata_with_counts)"
        )


@dataclass
class LatentCells:
    """Per-cell inputs of the decoder, in memory: posterior mean/variance, library size, covariates,
    log-normaliser (None: not stored, or not valid for the decoding asked for)."""

    qzm: np.ndarray
    qzv: np.ndarray | None
    library: np.ndarray
    covariates: dict[str, np.ndarray]
    log_normalizer: np.ndarray | None = None

    def subset(self, rows) -> LatentCells:
        return LatentCells(
            self.qzm[rows], None if self.qzv is None else self.qzv[rows], self.library[rows],
            {k: v[rows] for k, v in self.covariates.items()},
            None if self.log_normalizer is None else self.log_normalizer[rows],
        )

    def without_log_normalizer(self) -> LatentCells:
        return replace(self, log_normalizer=None)

    def __len__(self) -> int:
        return len(self.qzm)


class MinifiedCells:
    """The chosen cells of minified data (in memory, backed or on disk), read only when a chunk is asked for.

    ``subset(rows)`` (positions among the chosen cells) reads those cells' posteriors, library sizes,
    log-normalisers and covariate codes and returns them as :class:`LatentCells`; ``variance=False`` leaves
    the posterior variances unread (decoding at the posterior mean does not use them).
    """

    def __init__(
        self, adata, registry: Registry, rows: np.ndarray | None = None, log_normalizer: bool = True,
        variance: bool = True,
    ):
        self.keys = check_minified(adata)
        self.adata, self.registry, self.rows, self.variance = adata, registry, rows, variance
        self.use_log_normalizer = log_normalizer and LOG_NORMALIZER_KEY in adata.obs

    def __len__(self) -> int:
        return self.adata.n_obs if self.rows is None else len(self.rows)

    def without_log_normalizer(self) -> MinifiedCells:
        return MinifiedCells(self.adata, self.registry, self.rows, log_normalizer=False, variance=self.variance)

    def subset(self, rows: slice | np.ndarray) -> LatentCells:
        if self.rows is not None:
            rows = self.rows[rows]
        elif isinstance(rows, slice):
            rows = slice(*rows.indices(self.adata.n_obs))
        obs = obs_rows(self.adata, rows, [self.keys["library"], LOG_NORMALIZER_KEY])
        library = np.asarray(obs[self.keys["library"]].to_numpy(), dtype=np.float32)
        bad = np.flatnonzero(~(np.isfinite(library) & (library > 0)))
        if bad.size:
            names = obs.index[bad[:5]].tolist()
            raise PybridgeError(f"obs[{self.keys['library']!r}] must be positive and finite; cells {names} are not")
        positions = np.arange(rows.start, rows.stop, rows.step) if isinstance(rows, slice) else rows
        return LatentCells(
            np.asarray(read_rows(self.adata.obsm[self.keys["qzm"]], rows), dtype=np.float32),
            np.asarray(read_rows(self.adata.obsm[self.keys["qzv"]], rows), dtype=np.float32) if self.variance else None,
            library,
            covariate_arrays(self.adata, self.registry, positions),
            obs[LOG_NORMALIZER_KEY].to_numpy(np.float32) if self.use_log_normalizer else None,
        )


class MinifiedStore:
    """A minibatch source over minified data: batches carry ``qz_m``/``qz_v``/``library``, no ``X``, and are
    read from the data one minibatch at a time."""

    def __init__(self, cells: MinifiedCells, device: torch.device, positions: np.ndarray | None = None):
        self.cells = cells
        self.device = torch.device(device)
        self.positions = None if positions is None else np.asarray(positions, np.int64)

    def __len__(self) -> int:
        return len(self.cells)

    def _batch(self, part: LatentCells, local: np.ndarray) -> dict[str, torch.Tensor]:
        batch = {k: torch.as_tensor(v).to(self.device) for k, v in part.covariates.items()}
        batch["qz_m"] = torch.as_tensor(part.qzm).to(self.device)
        batch["qz_v"] = torch.as_tensor(part.qzv).to(self.device)
        batch["library"] = torch.log(torch.as_tensor(part.library)).reshape(-1, 1).to(self.device)
        indices = local if self.positions is None else self.positions[local]
        batch["indices"] = torch.as_tensor(indices, dtype=torch.long).to(self.device)
        return batch

    def gather_range(self, start: int, stop: int, sparse_counts: bool = False) -> dict[str, torch.Tensor]:
        """The minibatch of the store's rows ``start:stop`` (one contiguous read where the data are on disk)."""
        return self._batch(self.cells.subset(slice(start, stop)), np.arange(start, stop))

    def gather(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The minibatch of the store's rows ``idx``: posterior, library and covariates, no counts."""
        local = idx.cpu().numpy()
        return self._batch(self.cells.subset(local), local)


def minified_from_arrays(
    qzm, qzv, observed_lib_size, var_names: Sequence[str], obs: pd.DataFrame | None = None,
    log_normalizer=None,
) -> AnnData:
    """A minified AnnData assembled from its parts (e.g. a minified SingleCellExperiment handed over from R)."""
    qzm, qzv = np.asarray(qzm, dtype=np.float32), np.asarray(qzv, dtype=np.float32)
    library = np.asarray(observed_lib_size, dtype=np.float32).reshape(-1)
    n = qzm.shape[0]
    if qzv.shape != qzm.shape or library.shape != (n,):
        raise PybridgeError(
            f"qzm {qzm.shape}, qzv {qzv.shape} and observed_lib_size {library.shape} must describe the same cells"
        )
    if obs is not None and len(obs) != n:
        raise PybridgeError(f"obs has {len(obs)} rows but qzm has {n} cells")
    obs = pd.DataFrame(index=[str(i) for i in range(n)]) if obs is None else obs.copy()
    out = AnnData(X=sp.csr_matrix((n, len(var_names)), dtype=np.float32), obs=obs,
                  var=pd.DataFrame(index=[str(g) for g in var_names]))
    out.obsm[QZM_KEY], out.obsm[QZV_KEY] = qzm, qzv
    out.obs[LIBRARY_KEY] = library
    if log_normalizer is not None:
        out.obs[LOG_NORMALIZER_KEY] = np.asarray(log_normalizer, dtype=np.float32).reshape(-1)
    out.uns[MINIFY_TYPE_KEY] = MINIFY_TYPE
    return out


def payload_bytes_per_cell(adata: AnnData) -> float:
    """Bytes per cell of the minified payload: posterior mean and variance, library size, log-normaliser."""
    keys = minified_keys(adata)
    arrays = [np.asarray(adata.obsm[keys["qzm"]]), np.asarray(adata.obsm[keys["qzv"]]), adata.obs[keys["library"]].to_numpy()]
    if LOG_NORMALIZER_KEY in adata.obs:
        arrays.append(adata.obs[LOG_NORMALIZER_KEY].to_numpy())
    return sum(a.nbytes for a in arrays) / max(adata.n_obs, 1)
