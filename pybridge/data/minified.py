"""Minified data: the scvi-tools layout of a cell's latent posterior (no counts) and its minibatch source.

A minified AnnData keeps each cell's posterior mean and variance of z, its observed library size and its
softmax log-normaliser: ``obsm["scvi_latent_qzm"]``, ``obsm["scvi_latent_qzv"]``, ``obs["observed_lib_size"]``,
``uns["_scvi_adata_minify_type"]``, X all-zero sparse, plus ``obs["pybridge_log_normalizer"]`` and
``uns["pybridge_minified_by"]`` (a digest of the weights of the model that computed the posteriors).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from pybridge.data.fields import covariate_arrays
from pybridge.data.registry import Registry
from pybridge.errors import PybridgeError

MINIFY_TYPE_KEY = "_scvi_adata_minify_type"
MINIFY_TYPE = "latent_posterior_parameters"
QZM_KEY = "scvi_latent_qzm"
QZV_KEY = "scvi_latent_qzv"
LIBRARY_KEY = "observed_lib_size"
LOG_NORMALIZER_KEY = "pybridge_log_normalizer"
MINIFIED_BY_KEY = "pybridge_minified_by"


def is_minified(adata: AnnData | None) -> bool:
    """Whether ``adata`` holds latent posteriors instead of counts (scvi-tools' minified layout)."""
    return adata is not None and adata.uns.get(MINIFY_TYPE_KEY) is not None


def check_minified(adata: AnnData) -> None:
    """Refuse a minified AnnData that lacks one of the fields decoding reads."""
    kind = adata.uns.get(MINIFY_TYPE_KEY)
    if kind not in (MINIFY_TYPE, "latent_posterior_parameters_with_counts"):
        raise PybridgeError(f"uns[{MINIFY_TYPE_KEY!r}] is {kind!r}; only {MINIFY_TYPE!r} minified data is supported")
    for where, key in (("obsm", QZM_KEY), ("obsm", QZV_KEY), ("obs", LIBRARY_KEY)):
        if key not in getattr(adata, where):
            raise PybridgeError(f"minified adata lacks {where}[{key!r}]; re-create it with model.minify(adata)")


def require_counts(adata: AnnData | None, what: str, fix: str = "Pass the original counts with adata=...") -> None:
    """Refuse a minified ``adata`` where ``what`` needs the counts; ``fix``: a sentence saying what to do instead."""
    if is_minified(adata):
        raise PybridgeError(
            f"{what} needs the count matrix, but this AnnData is minified: it holds each cell's latent posterior "
            f"and library size, and its counts are all zero. {fix}"
        )


def module_fingerprint(module: torch.nn.Module) -> str:
    """A digest of a model's weights: minified data record which model computed their posteriors."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


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
    """Per-cell inputs of the decoder: posterior mean/variance, library size, covariates, log-normaliser."""

    qzm: np.ndarray
    qzv: np.ndarray
    library: np.ndarray
    covariates: dict[str, np.ndarray]
    log_normalizer: np.ndarray | None = None

    def subset(self, rows) -> LatentCells:
        return LatentCells(
            self.qzm[rows], self.qzv[rows], self.library[rows],
            {k: v[rows] for k, v in self.covariates.items()},
            None if self.log_normalizer is None else self.log_normalizer[rows],
        )

    def __len__(self) -> int:
        return len(self.qzm)


class MinifiedStore:
    """A minibatch source over a minified AnnData: batches carry ``qz_m``/``qz_v``/``library``, no ``X``."""

    def __init__(self, cells: LatentCells, device: torch.device, positions: np.ndarray | None = None):
        self.device = torch.device(device)
        self.n_obs = len(cells)
        self.positions = None if positions is None else torch.as_tensor(np.asarray(positions, np.int64), device=self.device)
        self.fields = {k: torch.as_tensor(v).to(self.device) for k, v in cells.covariates.items()}
        self.fields["qz_m"] = torch.as_tensor(cells.qzm, dtype=torch.float32).to(self.device)
        self.fields["qz_v"] = torch.as_tensor(cells.qzv, dtype=torch.float32).to(self.device)
        self.fields["library"] = torch.log(torch.as_tensor(cells.library, dtype=torch.float32)).reshape(-1, 1).to(
            self.device
        )

    def __len__(self) -> int:
        return self.n_obs

    def gather(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The minibatch of the store's rows ``idx``: posterior, library and covariates, no counts."""
        batch = {k: v.index_select(0, idx) for k, v in self.fields.items()}
        batch["indices"] = idx if self.positions is None else self.positions.index_select(0, idx)
        return batch


def latent_cells_from_minified(adata: AnnData, registry: Registry, rows: np.ndarray | None = None) -> LatentCells:
    """Read the latent posterior, library size and covariates of ``rows`` (all when None) of a minified AnnData."""
    check_minified(adata)
    take = slice(None) if rows is None else rows
    library = np.asarray(adata.obs[LIBRARY_KEY].to_numpy()[take], dtype=np.float32)
    if not np.all(np.isfinite(library)) or (library <= 0).any():
        bad = np.flatnonzero(~(np.isfinite(library) & (library > 0)))[:5]
        names = adata.obs_names[bad if rows is None else rows[bad]].tolist()
        raise PybridgeError(f"obs[{LIBRARY_KEY!r}] must be positive and finite; cells {names} are not")
    lognorm = adata.obs[LOG_NORMALIZER_KEY].to_numpy(np.float32)[take] if LOG_NORMALIZER_KEY in adata.obs else None
    return LatentCells(
        np.asarray(adata.obsm[QZM_KEY][take], dtype=np.float32),
        np.asarray(adata.obsm[QZV_KEY][take], dtype=np.float32),
        library,
        covariate_arrays(adata, registry, rows),
        lognorm,
    )


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
    check_minified(adata)
    arrays = [np.asarray(adata.obsm[QZM_KEY]), np.asarray(adata.obsm[QZV_KEY]), adata.obs[LIBRARY_KEY].to_numpy()]
    if LOG_NORMALIZER_KEY in adata.obs:
        arrays.append(adata.obs[LOG_NORMALIZER_KEY].to_numpy())
    return sum(a.nbytes for a in arrays) / max(adata.n_obs, 1)
