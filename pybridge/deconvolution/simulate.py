"""Semi-synthetic spatial spots built from labelled single-cell counts, with known cell-type proportions.

Every spot is the sum of the raw counts of a few real cells, so the truth (the fraction of the spot's cells
from each cell type) is exact. Cells are split once, per cell type, into a reference part and a spot part:
the returned reference and the spots never share a cell.

Modes
- ``"random"``: each spot draws 2-10 cells from a Dirichlet composition over the cell types.
- ``"grid"``: spots on a regular grid (``obsm["spatial"]``); each cell type's abundance is a smooth Gaussian
  bump over the grid, so neighbouring spots have similar compositions.
- ``"fish"``: cells carry coordinates (``obsm[spatial_key]``); each w x w window sums the spot-part cells
  whose centres fall into it (empty windows are dropped).
- ``"spotless"``: the silver standards of the Spotless benchmark (Sang-aram et al., eLife 2024, generated there
  by the synthspot R package). Cell types are assigned to ``n_regions`` regions by one of the abundance
  ``pattern``s below; every spot belongs to one region and draws 2-10 cells whose types follow that region's
  frequencies. The region sizes are drawn as in synthspot (uniform on 50-500 spots each) and scaled so that the
  regions add up to ``n_spots``.

Spotless abundance patterns (synthspot's ``artificial_*`` dataset types). Every region gets at least one cell
type, the remaining types go to random regions; "uniform" gives each present type weight 1, "diverse" distinct
random weights from 1-10:

- ``uniform_distinct`` / ``diverse_distinct``: each type lives in one region only.
- ``uniform_overlap`` / ``diverse_overlap``: as distinct, plus each region takes one type from a shared pool of
  up to 4 types, so some types appear in several regions.
- ``dominant_celltype_diverse``: one type is present in every region with weight 75-100 (5-15 times the others).
- ``partially_dominant_celltype_diverse``: as dominant, except that the dominant type has weight 1-10 in the
  next-to-last region and is absent from the last one.
- ``dominant_rare_celltype_diverse``: one type is present in every region at 1/5-1/15 of the mean weight of that
  region's other types.
- ``regional_rare_celltype_diverse``: as dominant-rare, but the rare type is present in one region only.

Downsampling (``target_umi=(mean, sd)``) follows the same procedure: a spot whose summed counts exceed mean + sd
keeps a random subset of exactly ``round(N(mean, sd))`` of its molecules (drawn again until positive); other
spots keep all their counts.

Outputs on the spot AnnData: ``X`` (CSR counts), ``obsm["proportions"]`` (DataFrame, columns = cell types,
rows sum to 1), ``obsm["umi_proportions"]`` (each type's share of the spot's counts before downsampling),
``obsm["cell_membership"]`` (CSR spots x input cells: 1 where a cell went into a spot), ``obs["n_cells"]``,
``uns["pseudo_spots"]`` (settings). "spotless" adds ``obs["region"]`` and ``uns["pseudo_spots"]["region_priors"]``
(regions x cell types, each row the region's cell-type frequencies, in the column order of the proportions).
"""

from __future__ import annotations

from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pybridge.errors import PybridgeError

Mode = Literal["random", "grid", "fish", "spotless"]
SPOTLESS_PATTERNS = (
    "uniform_distinct",
    "diverse_distinct",
    "uniform_overlap",
    "diverse_overlap",
    "dominant_celltype_diverse",
    "partially_dominant_celltype_diverse",
    "dominant_rare_celltype_diverse",
    "regional_rare_celltype_diverse",
)


def pseudo_spots(
    sc_adata: ad.AnnData,
    labels_key: str,
    n_spots: int = 1000,
    mode: Mode = "random",
    cells_per_spot: tuple[int, int] = (2, 10),
    alpha: float = 1.0,
    target_umi: tuple[float, float] | None = None,
    reference_fraction: float = 0.5,
    layer: str | None = None,
    grid_shape: tuple[int, int] | None = None,
    window_size: float | None = None,
    spatial_key: str = "spatial",
    pattern: str = "diverse_overlap",
    n_regions: int = 5,
    seed: int = 0,
) -> tuple[ad.AnnData, ad.AnnData]:
    """Build pseudo-spots and the disjoint single-cell reference.

    Args:
        sc_adata: labelled single-cell AnnData with raw counts in ``X`` or ``layers[layer]``.
        labels_key: column of ``sc_adata.obs`` with the cell types.
        n_spots: number of spots ("random", "spotless"; "grid" uses ``grid_shape`` when given, else a
            near-square grid with at least ``n_spots`` spots trimmed to ``n_spots``). Ignored in "fish" mode.
        cells_per_spot: inclusive range of the number of cells per spot.
        alpha: Dirichlet concentration of the random compositions (small = few types per spot).
        target_umi: ``(mean, sd)``, e.g. ``(20000, 5000)``: each spot whose total exceeds mean + sd keeps a
            random subset of N(mean, sd) of its molecules (see above). None keeps exact sums of cells.
        reference_fraction: share of each cell type's cells kept for the reference.
        grid_shape: ``(rows, cols)`` for "grid" mode.
        window_size: window side for "fish" mode, in the units of ``obsm[spatial_key]``.
        pattern: abundance pattern of "spotless" mode, one of ``SPOTLESS_PATTERNS``.
        n_regions: number of regions of "spotless" mode; fewer than the number of cell types.
        seed: random seed.

    Returns:
        ``(spots, reference)``; ``reference`` is a copy of the reference cells of ``sc_adata``.
    """
    if labels_key not in sc_adata.obs:
        raise PybridgeError(
            f"pseudo_spots: obs has no column {labels_key!r} (columns: {list(sc_adata.obs.columns)}); "
            "pass labels_key= naming the cell-type column."
        )
    if not 0.0 < reference_fraction < 1.0:
        raise PybridgeError(f"pseudo_spots: reference_fraction must be in (0, 1), got {reference_fraction}.")
    low, high = cells_per_spot
    if not 1 <= low <= high:
        raise PybridgeError(f"pseudo_spots: cells_per_spot must satisfy 1 <= low <= high, got {cells_per_spot}.")
    rng = np.random.default_rng(seed)
    labels = pd.Categorical(sc_adata.obs[labels_key].astype(str))
    cell_types = list(labels.categories)
    codes = np.asarray(labels.codes)
    reference_idx, spot_pools = _split_reference(codes, len(cell_types), reference_fraction, rng)

    spatial, regions, region_priors = None, None, None
    if mode == "random":
        compositions = rng.dirichlet(np.full(len(cell_types), alpha), size=n_spots)
        membership = _draw_members(compositions, spot_pools, (low, high), rng, sc_adata.n_obs)
    elif mode == "grid":
        spatial, compositions = _smooth_grid(n_spots, grid_shape, len(cell_types), rng)
        membership = _draw_members(compositions, spot_pools, (low, high), rng, sc_adata.n_obs)
    elif mode == "fish":
        spatial, membership = _fish_windows(sc_adata, spatial_key, window_size, spot_pools)
    elif mode == "spotless":
        region_priors = _spotless_region_priors(pattern, len(cell_types), n_regions, rng)
        regions = _spotless_region_of_spots(n_spots, n_regions, rng)
        membership = _draw_members(region_priors[regions], spot_pools, (low, high), rng, sc_adata.n_obs)
    else:
        raise PybridgeError(f"pseudo_spots: mode must be 'random', 'grid', 'fish' or 'spotless', got {mode!r}.")

    counts = sc_adata.layers[layer] if layer is not None else sc_adata.X
    counts = sp.csr_matrix(counts, dtype=np.float64)
    summed = (membership @ counts).tocsr()
    type_onehot = sp.csr_matrix(
        (np.ones(sc_adata.n_obs), (np.arange(sc_adata.n_obs), codes)), shape=(sc_adata.n_obs, len(cell_types))
    )
    cells_by_type = np.asarray((membership @ type_onehot).todense())
    umi_by_type = np.asarray((membership @ type_onehot.multiply(np.asarray(counts.sum(1)))).todense())
    if target_umi is not None:
        summed = _downsample(summed, target_umi, rng)

    obs_names = [f"spot_{i}" for i in range(membership.shape[0])]
    spots = ad.AnnData(
        X=summed.astype(np.float32),
        obs=pd.DataFrame({"n_cells": cells_by_type.sum(1).astype(int)}, index=obs_names),
        var=pd.DataFrame(index=sc_adata.var_names.copy()),
    )
    spots.obsm["proportions"] = pd.DataFrame(
        cells_by_type / cells_by_type.sum(1, keepdims=True), index=obs_names, columns=cell_types
    )
    umi_total = np.maximum(umi_by_type.sum(1, keepdims=True), 1e-12)
    spots.obsm["umi_proportions"] = pd.DataFrame(umi_by_type / umi_total, index=obs_names, columns=cell_types)
    spots.obsm["cell_membership"] = membership.astype(np.float32)
    if spatial is not None:
        spots.obsm["spatial"] = spatial
    if regions is not None:
        spots.obs["region"] = pd.Categorical([f"region_{r}" for r in regions],
                                             categories=[f"region_{r}" for r in range(n_regions)])
    spots.uns["pseudo_spots"] = {
        "mode": mode,
        "labels_key": labels_key,
        "cells_per_spot": list(cells_per_spot),
        "alpha": alpha,
        "target_umi": list(target_umi) if target_umi is not None else "none",
        "reference_fraction": reference_fraction,
        "seed": seed,
    }
    if region_priors is not None:
        spots.uns["pseudo_spots"].update(pattern=pattern, n_regions=n_regions, region_priors=region_priors)
    reference = sc_adata[np.sort(reference_idx)].copy()
    return spots, reference


def _split_reference(
    codes: np.ndarray, n_types: int, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per cell type, a random ``fraction`` of cells goes to the reference; the rest form spot pools."""
    reference, pools = [], []
    for k in range(n_types):
        members = rng.permutation(np.flatnonzero(codes == k))
        if len(members) < 2:
            raise PybridgeError(
                f"pseudo_spots: cell type #{k} has {len(members)} cell(s); each type needs at least 2 cells "
                "(one for the reference, one for the spots). Drop or merge that type first."
            )
        n_ref = min(max(1, round(fraction * len(members))), len(members) - 1)
        reference.append(members[:n_ref])
        pools.append(members[n_ref:])
    return np.concatenate(reference), pools


def _draw_members(
    compositions: np.ndarray,
    pools: list[np.ndarray],
    cells_per_spot: tuple[int, int],
    rng: np.random.Generator,
    n_cells_total: int,
) -> sp.csr_matrix:
    """Spots x cells 0/1 matrix: each spot takes a multinomial number of cells per type from its pool."""
    rows, cols = [], []
    for spot, weights in enumerate(compositions):
        n_cells = rng.integers(cells_per_spot[0], cells_per_spot[1] + 1)
        per_type = rng.multinomial(n_cells, weights / weights.sum())
        for k in np.flatnonzero(per_type):
            pool = pools[k]
            chosen = rng.choice(pool, size=per_type[k], replace=per_type[k] > len(pool))
            rows.extend([spot] * len(chosen))
            cols.extend(chosen.tolist())
    data = np.ones(len(rows))
    # a cell drawn twice into one spot (tiny pools only) counts twice: duplicates are summed
    return sp.csr_matrix((data, (rows, cols)), shape=(len(compositions), n_cells_total))


def _smooth_grid(
    n_spots: int, grid_shape: tuple[int, int] | None, n_types: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Grid coordinates and compositions from one Gaussian bump per cell type (smooth in space)."""
    if grid_shape is None:
        n_cols = int(np.ceil(np.sqrt(n_spots)))
        n_rows = int(np.ceil(n_spots / n_cols))
    else:
        n_rows, n_cols = grid_shape
        n_spots = n_rows * n_cols
    rr, cc = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    coords = np.column_stack([cc.ravel(), rr.ravel()]).astype(np.float64)[:n_spots]
    centres = rng.uniform([0, 0], [n_cols, n_rows], size=(n_types, 2))
    width = max(n_rows, n_cols) / 3.0
    sq_dist = ((coords[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    field = np.exp(-sq_dist / (2.0 * width**2)) + 0.02
    return coords, field / field.sum(1, keepdims=True)


def _fish_windows(
    sc_adata: ad.AnnData, spatial_key: str, window_size: float | None, pools: list[np.ndarray]
) -> tuple[np.ndarray, sp.csr_matrix]:
    """One spot per non-empty w x w window over the spot-part cells; returns window centres and membership."""
    if spatial_key not in sc_adata.obsm:
        raise PybridgeError(
            f"pseudo_spots(mode='fish'): obsm has no {spatial_key!r} cell coordinates "
            f"(obsm keys: {list(sc_adata.obsm.keys())}); pass spatial_key= or use mode='grid'."
        )
    if window_size is None or window_size <= 0:
        raise PybridgeError("pseudo_spots(mode='fish'): pass window_size > 0 (in coordinate units).")
    all_xy = np.asarray(sc_adata.obsm[spatial_key])[:, :2].astype(np.float64)
    origin = all_xy.min(0)  # windows tile the whole tissue, reference cells included
    cells = np.sort(np.concatenate(pools))
    xy = all_xy[cells]
    window = np.floor((xy - origin) / window_size).astype(np.int64)
    keys, spot_of_cell = np.unique(window, axis=0, return_inverse=True)
    spot_of_cell = spot_of_cell.ravel()
    membership = sp.csr_matrix(
        (np.ones(len(cells)), (spot_of_cell, cells)), shape=(len(keys), sc_adata.n_obs)
    )
    centres = origin + (keys + 0.5) * window_size
    return centres, membership


def _spotless_region_priors(pattern: str, n_types: int, n_regions: int, rng: np.random.Generator) -> np.ndarray:
    """Regions x cell types frequencies of one Spotless abundance pattern (rows sum to 1)."""
    if pattern not in SPOTLESS_PATTERNS:
        raise PybridgeError(
            f"pseudo_spots(mode='spotless'): unknown pattern {pattern!r}; use one of {list(SPOTLESS_PATTERNS)}."
        )
    if not 1 <= n_regions < n_types:
        raise PybridgeError(
            f"pseudo_spots(mode='spotless'): n_regions must be at least 1 and below the number of cell types "
            f"({n_types}), got {n_regions}; pass a smaller n_regions."
        )
    order = rng.permutation(n_types)
    region_of_type = np.empty(n_types, dtype=np.int64)
    region_of_type[order[:n_regions]] = np.arange(n_regions)
    region_of_type[order[n_regions:]] = rng.integers(n_regions, size=n_types - n_regions)
    present = region_of_type[None, :] == np.arange(n_regions)[:, None]
    if pattern.endswith("_overlap"):
        shared_pool = rng.choice(n_types, size=min(n_types, 4), replace=False)
        present[np.arange(n_regions), rng.choice(shared_pool, size=n_regions)] = True
    special = None
    if "dominant" in pattern or "rare" in pattern:
        # the dominant or rare type is taken out of the regions' own sets; never a region's only type
        sole_member = (present & (present.sum(1, keepdims=True) == 1)).any(0)
        candidates = np.flatnonzero(~sole_member)
        special = int(rng.choice(candidates if len(candidates) else np.arange(n_types)))
        present[:, special] = False
    weights = np.zeros((n_regions, n_types))
    for region in range(n_regions):
        members = np.flatnonzero(present[region])
        if pattern.startswith("uniform"):
            weights[region, members] = 1.0
        else:
            weights[region, members] = rng.choice(np.arange(1, 11), size=len(members), replace=len(members) > 10)
    if pattern in ("dominant_celltype_diverse", "partially_dominant_celltype_diverse"):
        weights[:, special] = rng.integers(75, 101, size=n_regions)
        if pattern == "partially_dominant_celltype_diverse" and n_regions >= 2:
            weights[-2, special] = rng.integers(1, 11)
            weights[-1, special] = 0.0
    elif special is not None:
        n_present = present.sum(1)
        others_mean = np.where(n_present > 0, weights.sum(1) / np.maximum(n_present, 1), 1.0)
        rare = others_mean / rng.uniform(5.0, 15.0, size=n_regions)
        if pattern == "regional_rare_celltype_diverse":
            rare *= np.arange(n_regions) == rng.integers(n_regions)
        weights[:, special] = rare
    return weights / weights.sum(1, keepdims=True)


def _spotless_region_of_spots(n_spots: int, n_regions: int, rng: np.random.Generator) -> np.ndarray:
    """Region of every spot: synthspot's 50-500 spots per region, scaled to ``n_spots`` in total (each >= 1)."""
    if n_spots < n_regions:
        raise PybridgeError(
            f"pseudo_spots(mode='spotless'): n_spots ({n_spots}) must be at least n_regions ({n_regions})."
        )
    drawn = rng.integers(50, 501, size=n_regions).astype(np.float64)
    share = drawn / drawn.sum() * (n_spots - n_regions)
    sizes = 1 + np.floor(share).astype(np.int64)
    remainder_order = np.argsort(-(share - np.floor(share)), kind="stable")
    sizes[remainder_order[: n_spots - sizes.sum()]] += 1
    return np.repeat(np.arange(n_regions), sizes)


def _downsample(counts: sp.csr_matrix, target_umi: tuple[float, float], rng: np.random.Generator) -> sp.csr_matrix:
    """Spots with more than mean + sd counts keep exactly round(N(mean, sd)) molecules (redrawn until >= 1),
    chosen without replacement; the others are unchanged."""
    mean, sd = target_umi
    counts = counts.copy()
    counts.data = np.rint(counts.data)
    totals = np.asarray(counts.sum(1)).ravel()
    for spot in np.flatnonzero(totals > mean + sd):
        target = 0
        while target < 1:
            target = int(np.rint(rng.normal(mean, sd)))
        if target >= totals[spot]:
            continue
        row = slice(counts.indptr[spot], counts.indptr[spot + 1])
        counts.data[row] = rng.multivariate_hypergeometric(counts.data[row].astype(np.int64), target)
    counts.eliminate_zeros()
    return counts
