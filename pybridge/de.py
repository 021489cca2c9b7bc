"""Bayesian differential expression from a fitted scVI model (scvi-tools layout and semantics).

Posterior samples of the normalised expression ``scale`` (rows sum to 1) are drawn for the cells of
each group: cells are picked uniformly (with replacement when needed) and for each a latent z is drawn
from q(z | x). Samples of the two groups are paired and compared:

- ``mode="vanilla"`` (Lopez et al. 2018): P(s1 > s2) per gene, Bayes factor log p / (1 - p);
- ``mode="change"`` (Boyeau et al. 2019): r = log2(s1 + pc) - log2(s2 + pc); DE means |r| >= delta;
  proba_de = max(P(r >= delta), P(r < -delta)); genes are called DE by controlling the posterior
  expected false discovery proportion at ``fdr_target``.

With ``batch_correction=True`` every sample is decoded in each batch in turn (``transform_batch``) and
samples are paired within a batch; otherwise each cell is decoded in its observed batch.

Draws are kept as the decoder's hidden layer plus the log of their softmax normaliser, and the statistics are
computed for ``GENE_BLOCK`` genes at a time, so that memory is n_samples x GENE_BLOCK values whatever the
number of genes (62,710 genes x 5,000 samples would be 1.25 GB per group held whole).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from pybridge.data.fields import aligned_counts
from pybridge.data.minified import require_counts
from pybridge.errors import PybridgeError

__all__ = ["differential_expression", "estimate_pseudocounts", "fdr_de_calls"]

_EPS = 1e-8


def _raw_counts(model, adata):
    X = aligned_counts(adata, model.registry)
    return X.tocsr() if sp.issparse(X) else np.asarray(X)


def _raw_counts_if_needed(model, adata, all_stats: bool, estimate_pseudocounts: bool):
    """The counts, read only for the raw-count statistics or the pseudocount estimate; a minified ``adata``
    (latent posteriors, no counts) serves neither and is refused for them."""
    if all_stats:
        require_counts(
            adata, "differential_expression(all_stats=True) (its raw-count columns raw_mean1, ...)",
            "Pass all_stats=False for the posterior statistics alone, or the original counts with adata=...",
        )
    if estimate_pseudocounts:
        require_counts(
            adata, "differential_expression(mode='change', pseudocounts=None) (it estimates the pseudocount "
            "from the counts)",
            "Pass pseudocounts= a number (e.g. the 'pseudocounts' column of a result on the original counts), "
            "or the original counts with adata=...",
        )
    return _raw_counts(model, adata) if all_stats or estimate_pseudocounts else None


def _raw_stats(X, idx1: np.ndarray, idx2: np.ndarray) -> dict[str, np.ndarray]:
    """Raw-count summaries per group: mean, share of non-zero cells, mean of counts per 10k."""
    out = {}
    for k, idx in (("1", idx1), ("2", idx2)):
        sub = X[idx]
        lib = np.asarray(sub.sum(axis=1), dtype=np.float64).ravel()
        scale = 1e4 / np.maximum(lib, 1.0)
        if sp.issparse(sub):
            nonzero = np.asarray((sub != 0).mean(axis=0)).ravel()
            normalised = np.asarray(sp.diags(scale).dot(sub).mean(axis=0)).ravel()
        else:
            nonzero = (sub != 0).mean(axis=0)
            normalised = (sub * scale[:, None]).mean(axis=0)
        out[f"raw_mean{k}"] = np.asarray(sub.mean(axis=0), dtype=np.float64).ravel()
        out[f"non_zeroes_proportion{k}"] = np.asarray(nonzero, dtype=np.float64).ravel()
        out[f"raw_normalized_mean{k}"] = np.asarray(normalised, dtype=np.float64).ravel()
    return out


#: Genes whose sampled frequencies are held at once: DE holds n_samples x GENE_BLOCK values, not x all genes.
GENE_BLOCK = 2048
#: Cells decoded at once while drawing (their logits over all genes are held briefly to normalise them).
DRAW_CHUNK = 256


@dataclass
class _Draws:
    """Posterior draws of the normalised expression, kept as the decoder's hidden layer and the log of each
    draw's softmax normaliser: any block of genes then costs one small matrix product."""

    module: torch.nn.Module
    hidden: torch.Tensor  # [draws, n_hidden]
    log_norm: torch.Tensor  # [draws]

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def take(self, rows) -> _Draws:
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.hidden.device)
        return _Draws(self.module, self.hidden[rows], self.log_norm[rows])

    @staticmethod
    def concat(parts: list[_Draws]) -> _Draws:
        return _Draws(parts[0].module, torch.cat([p.hidden for p in parts]), torch.cat([p.log_norm for p in parts]))

    @torch.inference_mode()
    def scales(self, genes: slice) -> np.ndarray:
        """Sampled frequencies [draws, genes] of the genes ``genes``."""
        last = self.module.decoder.px_scale_decoder
        logits = torch.nn.functional.linear(self.hidden, last.weight[genes], last.bias[genes]).float()
        return torch.exp(logits - self.log_norm[:, None]).cpu().numpy()


def _scale_samples(
    model, adata, cells: np.ndarray, n_samples: int, transform_batch, batch_size, rng: np.random.Generator
) -> _Draws:
    """``n_samples`` posterior draws of the normalised expression, cells picked uniformly from ``cells``."""
    chosen = rng.choice(cells, size=n_samples, replace=len(cells) < n_samples)
    unique, inverse = np.unique(chosen, return_inverse=True)
    counts = np.bincount(inverse)
    n_per_cell = int(counts.max())
    [code] = model._batch_codes(transform_batch)
    module = model.module
    hiddens, norms = [], []
    with torch.inference_mode():
        for batch in model._minibatches(adata, unique, batch_size or DRAW_CHUNK, sparse_counts=True):
            z = module.inference(batch, n_samples=n_per_cell, sample=True)["z"]
            index = None if code is None else torch.full_like(batch["batch"], code)
            hidden, _, _ = module._decoder_hidden(z.reshape(-1, z.shape[-1]), batch, index)
            log_norm = torch.logsumexp(module.decoder.px_scale_decoder(hidden).float(), dim=-1)
            hiddens.append(hidden.reshape(n_per_cell, -1, hidden.shape[-1]))  # draw k of cell i: row k * n + i
            norms.append(log_norm.reshape(n_per_cell, -1))
    hidden, log_norm = torch.cat(hiddens, dim=1), torch.cat(norms, dim=1)
    # the k-th pick of a cell uses that cell's k-th posterior draw
    order = np.argsort(inverse, kind="stable")
    rank_within = np.empty(len(chosen), dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank_within[order] = np.arange(len(chosen)) - np.repeat(starts, counts)
    rank, cell = torch.as_tensor(rank_within), torch.as_tensor(inverse)
    return _Draws(module, hidden[rank, cell], log_norm[rank, cell])


def estimate_pseudocounts(
    scales1: np.ndarray, scales2: np.ndarray, not_expressed1: np.ndarray, not_expressed2: np.ndarray,
    quantile: float = 0.9,
) -> float:
    """Pseudocount that shrinks the LFC of genes not expressed in a group towards 0.

    The ``quantile`` of the largest sampled scale among genes with (almost) no counts in a group; at
    least 1e-5.
    """
    return _pseudocount_of_maxima(scales1.max(axis=0), scales2.max(axis=0), not_expressed1, not_expressed2, quantile)


def _pseudocount_of_maxima(max1, max2, not_expressed1, not_expressed2, quantile: float = 0.9) -> float:
    """:func:`estimate_pseudocounts` from each gene's largest sampled scale per group."""
    values = [float(np.quantile(m[mask], quantile)) for m, mask in ((max1, not_expressed1), (max2, not_expressed2))
              if mask.any()]
    return float(max([1e-5, *values]))


def fdr_de_calls(proba_de: np.ndarray, fdr_target: float) -> np.ndarray:
    """Call the largest set of top genes whose posterior expected FDR, mean(1 - proba_de), is <= target."""
    proba_de = np.asarray(proba_de, dtype=np.float64)
    order = np.argsort(-proba_de, kind="stable")
    expected_fdr = np.cumsum(1.0 - proba_de[order]) / np.arange(1, len(order) + 1)
    n_calls = int((expected_fdr <= fdr_target).sum())
    calls = np.zeros(len(proba_de), dtype=bool)
    calls[order[:n_calls]] = True
    return calls


def _lfc_summary(lfc: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "lfc_mean": lfc.mean(axis=0),
        "lfc_median": np.median(lfc, axis=0),
        "lfc_std": lfc.std(axis=0),
        "lfc_min": lfc.min(axis=0),
        "lfc_max": lfc.max(axis=0),
    }


def _compare(s1: np.ndarray, s2: np.ndarray, mode: str, delta: float, pc: float | None) -> dict[str, np.ndarray]:
    """Per-gene statistics of paired samples (rows) of two groups; ``pc``: the change-mode pseudocount."""
    scale1, scale2 = s1.mean(axis=0), s2.mean(axis=0)
    if mode == "vanilla":
        p1 = (s1 > s2).mean(axis=0)
        return {
            "proba_m1": p1,
            "proba_m2": 1.0 - p1,
            "bayes_factor": np.log(p1 + _EPS) - np.log(1.0 - p1 + _EPS),
            "scale1": scale1,
            "scale2": scale2,
        }
    lfc = np.log2(s1 + pc) - np.log2(s2 + pc)
    p_up = (lfc >= delta).mean(axis=0)
    p_down = (lfc < -delta).mean(axis=0)
    proba_de = np.maximum(p_up, p_down)
    sign = np.sign(p_up - p_down)
    # effect-size summaries with a much smaller pseudocount, so that they estimate the LFC itself
    summary = _lfc_summary(np.log2(s1 + 1e-3 * pc) - np.log2(s2 + 1e-3 * pc))
    return {
        "proba_de": proba_de,
        "proba_not_de": 1.0 - proba_de,
        "bayes_factor": sign * (np.log(proba_de + _EPS) - np.log(1.0 - proba_de + _EPS)),
        "scale1": scale1,
        "scale2": scale2,
        "pseudocounts": np.full(len(scale1), pc),
        "delta": np.full(len(scale1), float(delta)),
        **summary,
    }


def _compare_by_gene_block(
    d1: _Draws, d2: _Draws, n_genes: int, mode: str, delta: float, pseudocounts: float | None, not_expressed,
) -> dict[str, np.ndarray]:
    """:func:`_compare` over blocks of ``GENE_BLOCK`` genes (every statistic is per gene); the change-mode
    pseudocount, when estimated, takes a first pass for each gene's largest sample."""
    blocks = [slice(start, min(start + GENE_BLOCK, n_genes)) for start in range(0, n_genes, GENE_BLOCK)]
    pc = None
    if mode == "change":
        pc = pseudocounts
        if pc is None:
            maxima = [np.concatenate([d.scales(b).max(axis=0) for b in blocks]) for d in (d1, d2)]
            pc = _pseudocount_of_maxima(*maxima, *not_expressed)
        pc = float(pc)
    parts = [_compare(d1.scales(b), d2.scales(b), mode, delta, pc) for b in blocks]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _group_masks(adata, groupby, group1, group2, idx1, idx2) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    n = adata.n_obs
    if idx1 is not None:
        m1 = _as_mask(idx1, n, "idx1")
        m2 = ~m1 if idx2 is None else _as_mask(idx2, n, "idx2")
        return [("one", "two" if idx2 is not None else "Rest", m1, m2)]
    if groupby is None:
        raise PybridgeError("give groupby= (a column of adata.obs) or idx1= (cells of group 1).")
    if groupby not in adata.obs.columns:
        raise PybridgeError(
            f"groupby {groupby!r} is not a column of adata.obs; available: {', '.join(map(str, adata.obs.columns))}"
        )
    # one categorical column: groups compare by code, never as one string per cell (atlas-sized data)
    labels = adata.obs[groupby].astype("category")
    present = [str(c) for c in labels.cat.categories]
    codes = labels.cat.codes.to_numpy()
    if group1 is None:
        groups1 = present
        if len(groups1) < 2:
            raise PybridgeError(f"adata.obs[{groupby!r}] has a single group; DE needs at least two.")
    else:
        groups1 = [group1] if isinstance(group1, str) or not isinstance(group1, Sequence) else list(group1)
    out = []
    for g in groups1:
        g = str(g)
        if g not in present:
            raise PybridgeError(f"group1 {g!r} is not a value of adata.obs[{groupby!r}]; values: {present[:20]}")
        m1 = codes == present.index(g)
        if group2 is None:
            m2, g2 = ~m1, "Rest"
        else:
            g2 = str(group2)
            if g2 not in present:
                raise PybridgeError(
                    f"group2 {g2!r} is not a value of adata.obs[{groupby!r}]; values: {present[:20]}"
                )
            m2 = codes == present.index(g2)
        out.append((g, g2, m1, m2))
    return out


def _as_mask(idx, n: int, name: str) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise PybridgeError(f"{name} is a boolean mask of length {idx.size}; it must have one entry per cell ({n}).")
        return idx
    mask = np.zeros(n, dtype=bool)
    mask[idx.astype(np.int64)] = True
    return mask


def _batches_for(model, batch_correction: bool, batchids) -> list:
    if not batch_correction:
        return [None]
    categories = list(model.registry.batch_categories)
    if batchids is None:
        return categories
    unknown = [b for b in batchids if str(b) not in categories]
    if unknown:
        raise PybridgeError(f"batch ids {unknown} are not batches of the model; known: {categories}")
    return [str(b) for b in batchids]


def differential_expression(
    model,
    adata=None,
    groupby: str | None = None,
    group1=None,
    group2: str | None = None,
    idx1=None,
    idx2=None,
    mode: str = "vanilla",
    delta: float = 0.25,
    batch_size: int | None = None,
    all_stats: bool = True,
    batch_correction: bool = False,
    batchid1: list[str] | None = None,
    batchid2: list[str] | None = None,
    fdr_target: float = 0.05,
    n_samples_overall: int = 5000,
    pseudocounts: float | None = None,
    threshold_counts: float = 0.01,
    seed: int = 0,
    n_cells_per_group: int | None = 100_000,
) -> pd.DataFrame:
    """Differential expression between groups of cells, as ``scvi.model.SCVI.differential_expression``.

    ``group1=None`` tests every group of ``groupby`` against the rest. Returns one row per gene and
    comparison: vanilla mode ``proba_m1, proba_m2, bayes_factor, scale1, scale2``; change mode
    ``proba_de, proba_not_de, bayes_factor, scale1, scale2, pseudocounts, delta, lfc_mean, lfc_median,
    lfc_std, lfc_min, lfc_max`` and ``is_de_fdr_<fdr_target>``; with ``all_stats`` the raw-count
    columns ``raw_mean1/2, non_zeroes_proportion1/2, raw_normalized_mean1/2``; then ``comparison,
    group1, group2``. Sorted by ``bayes_factor`` (vanilla) or ``proba_de`` (change), descending.
    ``pseudocounts=None`` estimates the change-mode pseudocount from genes with raw mean below
    ``threshold_counts`` in a group.

    On minified data (latent posteriors, no counts) the samples come from the stored posteriors; the
    raw-count columns and the pseudocount estimate need counts, so pass ``all_stats=False`` (and in change
    mode ``pseudocounts=``).

    ``n_cells_per_group`` (default 100,000; None for all): a group with more cells is first reduced to that
    many, picked at random, and the posterior samples come from those. The cost then does not grow with the
    size of the groups (atlas-scale minified stores), and groups of up to 100,000 cells are used whole. The
    raw-count columns are computed on the same cells.
    """
    if mode not in ("vanilla", "change"):
        raise PybridgeError(f"mode must be 'vanilla' or 'change', got {mode!r}.")
    if not 0.0 < fdr_target < 1.0:
        raise PybridgeError(f"fdr_target must be in (0, 1), got {fdr_target}.")
    if mode == "change" and (delta is None or delta < 0):
        raise PybridgeError(f"delta must be a non-negative LFC threshold, got {delta}.")
    if n_cells_per_group is not None and int(n_cells_per_group) < 1:
        raise PybridgeError(f"n_cells_per_group must be a positive number of cells (or None), got {n_cells_per_group}.")
    adata = model._adata(adata) if hasattr(model, "_adata") else (adata if adata is not None else model.adata)
    X = _raw_counts_if_needed(model, adata, all_stats, mode == "change" and pseudocounts is None)
    rng = np.random.default_rng(seed)
    gene_names = list(model.registry.var_names) or list(adata.var_names)
    batches1 = _batches_for(model, batch_correction, batchid1)
    batches2 = _batches_for(model, batch_correction, batchid2)
    frames = []
    for g1, g2, m1, m2 in _group_masks(adata, groupby, group1, group2, idx1, idx2):
        cells1, cells2 = np.flatnonzero(m1), np.flatnonzero(m2)
        if cells1.size == 0 or cells2.size == 0:
            raise PybridgeError(f"comparison {g1} vs {g2} has an empty group ({cells1.size} vs {cells2.size} cells).")
        cells1, cells2 = (_at_most(c, n_cells_per_group, rng) for c in (cells1, cells2))
        stats = {} if X is None else _raw_stats(X, cells1, cells2)
        with _torch_seeded(model, seed):  # the posterior draws too, so that a seed gives one result
            s1, s2 = _paired_samples(
                model, adata, cells1, cells2, batches1, batches2, n_samples_overall, batch_size, rng
            )
        not_expressed = None if X is None else (
            stats["raw_mean1"] < threshold_counts, stats["raw_mean2"] < threshold_counts
        )
        res = _compare_by_gene_block(s1, s2, len(gene_names), mode, delta, pseudocounts, not_expressed)
        if all_stats:
            res.update(stats)
        df = pd.DataFrame(res, index=pd.Index(gene_names, name=None))
        df = df.sort_values("bayes_factor" if mode == "vanilla" else "proba_de", ascending=False)
        if mode == "change":
            df[f"is_de_fdr_{fdr_target}"] = fdr_de_calls(df["proba_de"].to_numpy(), fdr_target)
        if idx1 is None:
            df["comparison"] = f"{g1} vs {g2}"
            df["group1"] = g1
            df["group2"] = g2
        frames.append(df)
    return pd.concat(frames, axis=0)


@contextlib.contextmanager
def _torch_seeded(model, seed: int):
    """torch's random state seeded with ``seed`` inside, the caller's restored after."""
    device = getattr(model, "device", torch.device("cpu"))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _at_most(cells: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """``cells``, or ``n`` of them picked at random (in file order, so that they are read in few spans)."""
    if n is None or len(cells) <= n:
        return cells
    return np.sort(rng.choice(cells, size=int(n), replace=False))


def _paired_samples(model, adata, cells1, cells2, batches1, batches2, n_samples, batch_size, rng):
    """Draws of both groups, paired within the same batch when batches are corrected for."""
    if batches1 == batches2:
        per_batch = max(n_samples // len(batches1), 2)
        s1 = [_scale_samples(model, adata, cells1, per_batch, b, batch_size, rng) for b in batches1]
        s2 = [_scale_samples(model, adata, cells2, per_batch, b, batch_size, rng) for b in batches2]
        return _Draws.concat(s1), _Draws.concat(s2)
    s1 = _Draws.concat(
        [_scale_samples(model, adata, cells1, max(n_samples // len(batches1), 2), b, batch_size, rng) for b in batches1]
    )
    s2 = _Draws.concat(
        [_scale_samples(model, adata, cells2, max(n_samples // len(batches2), 2), b, batch_size, rng) for b in batches2]
    )
    n = min(len(s1), len(s2))
    return s1.take(rng.permutation(len(s1))[:n]), s2.take(rng.permutation(len(s2))[:n])
