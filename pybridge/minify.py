"""Minified scVI data (latent posterior only) and decoding on demand.

A minified AnnData keeps each cell's posterior mean and variance of z, its observed library size and its
softmax log-normaliser, in the scvi-tools layout (``obsm["scvi_latent_qzm"]``, ``obsm["scvi_latent_qzv"]``,
``obs["observed_lib_size"]``, ``uns["_scvi_adata_minify_type"]``, X all-zero sparse) plus
``obs["pybridge_log_normalizer"]``. With the log-normaliser, the expected frequency of gene g at z = qz_m is
``exp(w_g . h(z) + b_g - log_normalizer)``: decoding k genes costs the decoder's hidden layer plus k rows of
its last layer, not all genes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from pybridge.data import SETUP_KEY, aligned_counts, covariate_arrays
from pybridge.errors import PybridgeError

MINIFY_TYPE_KEY = "_scvi_adata_minify_type"
MINIFY_TYPE = "latent_posterior_parameters"
QZM_KEY = "scvi_latent_qzm"
QZV_KEY = "scvi_latent_qzv"
LIBRARY_KEY = "observed_lib_size"
LOG_NORMALIZER_KEY = "pybridge_log_normalizer"
DEFAULT_CHUNK = 8192


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


def require_counts(adata: AnnData | None, what: str) -> None:
    """Raise a clear error when ``what`` needs counts but ``adata`` is minified."""
    if is_minified(adata):
        raise PybridgeError(
            f"{what} needs the count matrix, but this AnnData is minified (it holds only latent posteriors); "
            f"pass the original counts with adata=..."
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

    def __init__(self, cells: LatentCells, device: torch.device):
        self.device = torch.device(device)
        self.n_obs = len(cells)
        self.fields = {k: torch.as_tensor(v).to(self.device) for k, v in cells.covariates.items()}
        self.fields["qz_m"] = torch.as_tensor(cells.qzm, dtype=torch.float32).to(self.device)
        self.fields["qz_v"] = torch.as_tensor(cells.qzv, dtype=torch.float32).to(self.device)
        self.fields["library"] = torch.log(torch.as_tensor(cells.library, dtype=torch.float32)).reshape(-1, 1).to(
            self.device
        )

    def __len__(self) -> int:
        return self.n_obs

    def gather(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = {k: v.index_select(0, idx) for k, v in self.fields.items()}
        batch["indices"] = idx
        return batch


def latent_cells_from_minified(adata: AnnData, registry) -> LatentCells:
    """Read the latent posterior, library size and covariates of a minified AnnData."""
    check_minified(adata)
    library = np.asarray(adata.obs[LIBRARY_KEY], dtype=np.float32)
    if not np.all(np.isfinite(library)) or (library <= 0).any():
        bad = np.flatnonzero(~(np.isfinite(library) & (library > 0)))[:5].tolist()
        raise PybridgeError(f"obs[{LIBRARY_KEY!r}] must be positive and finite; cells {bad} are not")
    lognorm = adata.obs[LOG_NORMALIZER_KEY].to_numpy(np.float32) if LOG_NORMALIZER_KEY in adata.obs else None
    return LatentCells(
        np.asarray(adata.obsm[QZM_KEY], dtype=np.float32),
        np.asarray(adata.obsm[QZV_KEY], dtype=np.float32),
        library,
        covariate_arrays(adata, registry),
        lognorm,
    )


def latent_cells(model, adata: AnnData | None = None, indices=None, batch_size: int | None = None) -> LatentCells:
    """The decoder inputs for the chosen cells of ``adata`` (minified or with counts)."""
    adata = model._adata(adata)
    if is_minified(adata):
        cells = latent_cells_from_minified(adata, model.registry)
        return cells if indices is None else cells.subset(_positions(indices, adata.n_obs))
    if not model.module.use_observed_lib_size:
        raise PybridgeError(
            "minified data need use_observed_lib_size=True (the library size is read from the counts); this "
            "model encodes the library"
        )
    rows = slice(None) if indices is None else _positions(indices, adata.n_obs)
    qzm, qzv = model.get_latent_representation(adata, indices=indices, return_dist=True, batch_size=batch_size)
    library = _library_sizes(model, adata)[rows]
    covariates = {k: v[rows] for k, v in covariate_arrays(adata, model.registry).items()}
    return LatentCells(qzm.astype(np.float32), qzv.astype(np.float32), library, covariates)


def _library_sizes(model, adata: AnnData) -> np.ndarray:
    from pybridge.ooc import backed_library_sizes, is_backed

    if is_backed(adata):
        return backed_library_sizes(adata)
    return np.asarray(aligned_counts(adata, model.registry).sum(axis=1), dtype=np.float32).reshape(-1)


def _positions(indices, n: int) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.dtype == bool:
        idx = np.flatnonzero(idx)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise PybridgeError(f"cells must lie in [0, {n}); got values from {idx.min()} to {idx.max()}")
    return idx.astype(np.int64)


class ChunkDecoder:
    """Decodes expected frequencies of a gene subset at z = posterior mean, one chunk of cells at a time."""

    def __init__(self, module, genes: np.ndarray | None, n_latent: int | None = None):
        self.module = module.eval()
        self.n_latent = module.n_latent if n_latent is None else n_latent
        last = module.decoder.px_scale_decoder
        self.all_genes = genes is None
        rows = slice(None) if genes is None else torch.as_tensor(genes, dtype=torch.long, device=last.weight.device)
        self.weight = last.weight.detach()[rows]
        self.bias = last.bias.detach()[rows]

    def _decoder_input(self, qzm: torch.Tensor, covariates: dict[str, torch.Tensor]):
        z = self.module.transform_latent(qzm)
        if self.n_latent < z.shape[-1]:
            z = torch.cat([z[:, : self.n_latent], torch.zeros_like(z[:, self.n_latent :])], dim=-1)
        if "cont_covs" in covariates:
            z = torch.cat([z, covariates["cont_covs"]], dim=-1)
        return z, self.module._cat_inputs(covariates, covariates["batch"])

    @torch.inference_mode()
    def log_normalizer(self, qzm: torch.Tensor, covariates: dict[str, torch.Tensor]) -> torch.Tensor:
        """logsumexp over all genes of the decoder logits (the softmax denominator), per cell."""
        z, cats = self._decoder_input(qzm, covariates)
        logits = self.module.decoder.px_scale_decoder(self.module.decoder.hidden(z, *cats))
        return torch.logsumexp(logits, dim=-1)

    @torch.inference_mode()
    def log_scale(
        self, qzm: torch.Tensor, covariates: dict[str, torch.Tensor], log_normalizer: torch.Tensor | None
    ) -> torch.Tensor:
        """log expected frequencies [cells, genes]; recomputes the normaliser over all genes when not given."""
        z, cats = self._decoder_input(qzm, covariates)
        decoder = self.module.decoder
        hidden = decoder.hidden(z, *cats)
        if log_normalizer is None or self.all_genes:
            full = decoder.px_scale_decoder(hidden)
            log_normalizer = torch.logsumexp(full, dim=-1)
            logits = full if self.all_genes else torch.nn.functional.linear(hidden, self.weight, self.bias)
        else:
            logits = torch.nn.functional.linear(hidden, self.weight, self.bias)
        return logits - log_normalizer.reshape(-1, 1)


def _torch_chunks(cells: LatentCells, chunk_size: int, device) -> Iterator[tuple[slice, dict]]:
    for start in range(0, len(cells), chunk_size):
        rows = slice(start, start + chunk_size)
        yield rows, _chunk_tensors(cells, rows, device)


def _chunk_tensors(cells: LatentCells, rows, device) -> dict:
    out = {
        "qzm": torch.as_tensor(cells.qzm[rows], dtype=torch.float32, device=device),
        "library": torch.as_tensor(cells.library[rows], dtype=torch.float32, device=device),
        "covariates": {k: torch.as_tensor(v[rows], device=device) for k, v in cells.covariates.items()},
        "log_normalizer": None,
    }
    if cells.log_normalizer is not None:
        out["log_normalizer"] = torch.as_tensor(cells.log_normalizer[rows], dtype=torch.float32, device=device)
    return out


def compute_log_normalizers(module, cells: LatentCells, chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
    """Each cell's softmax log-normaliser at z = posterior mean, with its own batch and covariates."""
    decoder = ChunkDecoder(module, None)
    device = next(module.parameters()).device
    parts = [
        decoder.log_normalizer(t["qzm"], t["covariates"]).cpu().numpy()
        for _, t in _torch_chunks(cells, chunk_size, device)
    ]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def minify(model, adata: AnnData | None = None, batch_size: int | None = None) -> AnnData:
    """A minified copy of ``adata`` (default: the model's data): latent posterior, library size and
    log-normaliser per cell, obs/var/obsm kept, counts replaced by all-zero sparse matrices.

    An ``adata`` already minified without the log-normaliser (e.g. by scvi-tools) comes back as a copy with
    ``obs["pybridge_log_normalizer"]`` added, so that decoding gene subsets no longer touches every gene."""
    adata = model._adata(adata)
    if is_minified(adata):
        if LOG_NORMALIZER_KEY in adata.obs:
            raise PybridgeError(f"adata is already minified (with obs[{LOG_NORMALIZER_KEY!r}])")
        out = adata.copy()
        out.obs[LOG_NORMALIZER_KEY] = compute_log_normalizers(
            model.module, latent_cells_from_minified(adata, model.registry)
        )
        return out
    cells = latent_cells(model, adata, batch_size=batch_size)
    lognorm = compute_log_normalizers(model.module, cells)
    registry = model.registry
    zeros = sp.csr_matrix((adata.n_obs, len(registry.var_names)), dtype=np.float32)
    var = adata.var.reindex(pd.Index(registry.var_names, name=adata.var.index.name))
    out = AnnData(X=zeros, obs=adata.obs.copy(), var=var, obsm=dict(adata.obsm), uns=dict(adata.uns))
    if registry.layer is not None:
        out.layers[registry.layer] = zeros.copy()
    out.obsm[QZM_KEY] = cells.qzm
    out.obsm[QZV_KEY] = cells.qzv
    out.obs[LIBRARY_KEY] = cells.library
    out.obs[LOG_NORMALIZER_KEY] = lognorm
    out.uns[MINIFY_TYPE_KEY] = MINIFY_TYPE
    out.uns[SETUP_KEY] = registry.to_json()
    return out


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


def _gene_positions(model, genes: Sequence[str] | None) -> np.ndarray | None:
    if genes is None:
        return None
    if isinstance(genes, str):
        genes = [genes]
    return np.asarray(model._gene_mask(list(genes)), dtype=np.int64)


def _scale_factor(library_size, library: torch.Tensor) -> torch.Tensor | float:
    if isinstance(library_size, str):
        if library_size != "latent":
            raise PybridgeError(f"library_size must be a number or 'latent', got {library_size!r}")
        return library.reshape(-1, 1)
    if not np.isfinite(library_size) or library_size <= 0:
        raise PybridgeError(f"library_size must be positive, got {library_size}")
    return float(library_size)


def decode(
    model,
    adata: AnnData | None = None,
    cells=None,
    genes: Sequence[str] | None = None,
    library_size: float | str = 1,
    n_latent: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    as_dask: bool = False,
):
    """Expected expression at z = posterior mean for ``genes`` (default all) of ``cells`` (default all).

    Scaled to ``library_size`` (or ``"latent"``: each cell's observed library). ``n_latent=k`` decodes with
    only the first k latent dimensions (the rest at the prior mean 0; for Matryoshka models). Streams over
    cells ``chunk_size`` at a time; with a stored log-normaliser (minified data, ``n_latent`` unset) a gene
    subset costs O(len(genes)) per cell. Returns a float32 ndarray [cells, genes], or with ``as_dask`` a lazy
    ``dask.array`` decoded chunk by chunk on the active Dask scheduler.
    """
    if chunk_size < 1:
        raise PybridgeError(f"chunk_size must be positive, got {chunk_size}")
    full_latent = model.module.n_latent
    if n_latent is not None and not 1 <= int(n_latent) <= full_latent:
        raise PybridgeError(f"n_latent must be between 1 and the model's {full_latent} latent dimensions")
    source = latent_cells(model, adata, cells)
    if n_latent is not None and int(n_latent) < full_latent:
        source.log_normalizer = None  # stored for the full latent only
    decoder = ChunkDecoder(model.module, _gene_positions(model, genes), n_latent)
    n_genes = decoder.weight.shape[0]
    if as_dask:
        return _dask_decode(decoder, source, library_size, chunk_size, n_genes)
    out = np.empty((len(source), n_genes), dtype=np.float32)
    for rows, t in _torch_chunks(source, chunk_size, model.device):
        out[rows] = _decode_chunk(decoder, t, library_size)
    return out


def _decode_chunk(decoder: ChunkDecoder, t: dict, library_size) -> np.ndarray:
    log_scale = decoder.log_scale(t["qzm"], t["covariates"], t["log_normalizer"])
    return (torch.exp(log_scale) * _scale_factor(library_size, t["library"])).cpu().numpy()


def _dask_decode(decoder: ChunkDecoder, source: LatentCells, library_size, chunk_size: int, n_genes: int):
    try:
        import dask
        import dask.array as da
    except ImportError:
        raise PybridgeError("as_dask=True needs dask: pip install 'dask[array]'") from None
    device = decoder.weight.device
    shared = dask.delayed(decoder, pure=True)

    def block(dec, part: LatentCells) -> np.ndarray:
        return _decode_chunk(dec, _chunk_tensors(part, slice(None), device), library_size)

    blocks = []
    for start in range(0, len(source), chunk_size):
        part = source.subset(slice(start, start + chunk_size))
        lazy = dask.delayed(block, pure=True)(shared, part)
        blocks.append(da.from_delayed(lazy, shape=(len(part), n_genes), dtype=np.float32))
    if not blocks:
        return da.zeros((0, n_genes), dtype=np.float32)
    return da.concatenate(blocks, axis=0)
