"""Minifying a trained scVI model's data (latent posterior only) and decoding gene subsets on demand.

The minified layout is described in :mod:`pybridge.data.minified`. With the stored log-normaliser, the
expected frequency of gene g at z = qz_m is ``exp(w_g . h(z) + b_g - log_normalizer)``: decoding k genes
costs the decoder's hidden layer plus k rows of its last layer, not all genes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from pybridge.data.disk import backed_library_sizes, is_backed
from pybridge.data.fields import aligned_counts, covariate_arrays
from pybridge.data.minified import (
    LIBRARY_KEY,
    LOG_NORMALIZER_KEY,
    MINIFIED_BY_KEY,
    MINIFY_TYPE,
    MINIFY_TYPE_KEY,
    QZM_KEY,
    QZV_KEY,
    LatentCells,
    MinifiedCells,
    is_minified,
    module_fingerprint,
)
from pybridge.data.registry import SETUP_KEY
from pybridge.errors import PybridgeError

DEFAULT_CHUNK = 8192


def latent_cells(
    model, adata: AnnData | None = None, indices=None, batch_size: int | None = None
) -> LatentCells | MinifiedCells:
    """The decoder inputs for the chosen cells of ``adata``: read chunk by chunk from minified data, computed by
    the encoder from counts."""
    adata = model._data(adata)
    rows = model._rows(adata, indices)
    if is_minified(adata):
        return MinifiedCells(adata, model.registry, rows, variance=False)
    if not model.module.use_observed_lib_size:
        raise PybridgeError(
            "minified data need use_observed_lib_size=True (the library size is read from the counts); this "
            "model encodes the library"
        )
    qzm, qzv = model.get_latent_representation(adata, indices=rows, return_dist=True, batch_size=batch_size)
    library = _library_sizes(model, adata, rows)
    covariates = covariate_arrays(adata, model.registry, rows)
    return LatentCells(qzm.astype(np.float32), qzv.astype(np.float32), library, covariates)


def _library_sizes(model, adata: AnnData, rows: np.ndarray | None) -> np.ndarray:
    if is_backed(adata):
        library = backed_library_sizes(adata)
        return library if rows is None else library[rows]
    return np.asarray(aligned_counts(adata, model.registry, rows).sum(axis=1), dtype=np.float32).reshape(-1)


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


def _torch_chunks(
    cells: LatentCells | MinifiedCells, chunk_size: int, device
) -> Iterator[tuple[slice, dict]]:
    for start in range(0, len(cells), chunk_size):
        rows = slice(start, min(start + chunk_size, len(cells)))
        yield rows, _chunk_tensors(cells.subset(rows), device)


def _chunk_tensors(part: LatentCells, device) -> dict:
    """The tensors of one chunk of cells read into memory."""
    out = {
        "qzm": torch.as_tensor(part.qzm, dtype=torch.float32, device=device),
        "library": torch.as_tensor(part.library, dtype=torch.float32, device=device),
        "covariates": {k: torch.as_tensor(v, device=device) for k, v in part.covariates.items()},
        "log_normalizer": None,
    }
    if part.log_normalizer is not None:
        out["log_normalizer"] = torch.as_tensor(part.log_normalizer, dtype=torch.float32, device=device)
    return out


def compute_log_normalizers(
    module, cells: LatentCells | MinifiedCells, chunk_size: int = DEFAULT_CHUNK
) -> np.ndarray:
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
            model.module, MinifiedCells(adata, model.registry, log_normalizer=False, variance=False)
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
    out.uns[MINIFIED_BY_KEY] = module_fingerprint(model.module)
    out.uns[SETUP_KEY] = registry.to_json()
    return out


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
        source = source.without_log_normalizer()  # stored for the full latent only
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


def _dask_decode(decoder: ChunkDecoder, source, library_size, chunk_size: int, n_genes: int):
    """A lazy array whose blocks each read and decode ``chunk_size`` cells where they run: the decoder and the
    cell source enter the graph once (a store on disk travels as its path)."""
    try:
        import dask
        import dask.array as da
    except ImportError:
        raise PybridgeError("as_dask=True needs dask: pip install 'dask[array]'") from None
    device = decoder.weight.device
    token = uuid.uuid4().hex
    shared_decoder = dask.delayed(decoder, name=f"pybridge-decoder-{token}", traverse=False)
    shared_source = dask.delayed(source, name=f"pybridge-cells-{token}", traverse=False)

    def block(dec: ChunkDecoder, cells, rows: slice) -> np.ndarray:
        return _decode_chunk(dec, _chunk_tensors(cells.subset(rows), device), library_size)

    blocks = []
    for start in range(0, len(source), chunk_size):
        rows = slice(start, min(start + chunk_size, len(source)))
        lazy = dask.delayed(block, pure=True)(shared_decoder, shared_source, rows)
        blocks.append(da.from_delayed(lazy, shape=(rows.stop - rows.start, n_genes), dtype=np.float32))
    if not blocks:
        return da.zeros((0, n_genes), dtype=np.float32)
    return da.concatenate(blocks, axis=0)
