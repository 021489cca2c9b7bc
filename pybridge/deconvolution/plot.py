"""Maps of cell-type proportions at the spots' coordinates (one panel per cell type), with matplotlib."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from pybridge.errors import PybridgeError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def spot_coordinates(adata: AnnData, spatial_key: str = "spatial") -> np.ndarray:
    """The spots' x, y coordinates (spots x 2) from ``adata.obsm[spatial_key]``; a PybridgeError if absent."""
    if spatial_key not in adata.obsm:
        raise PybridgeError(
            f"the spots have no coordinates: obsm has no {spatial_key!r} (obsm keys: {sorted(adata.obsm.keys())}); "
            f"store them as adata.obsm[{spatial_key!r}] (spots x 2: x, y) or pass the key that holds them"
        )
    xy = np.asarray(adata.obsm[spatial_key], dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] < 2:
        raise PybridgeError(f"obsm[{spatial_key!r}] must be spots x 2 (x, y), got shape {xy.shape}")
    return xy[:, :2]


def spot_proportions(adata: AnnData, cell_types: Sequence[str] | None = None,
                     key: str = "destvi_proportions") -> pd.DataFrame:
    """The proportions (spots x cell types) in ``adata.obsm[key]``, restricted to ``cell_types`` (None = all)."""
    if key not in adata.obsm:
        raise PybridgeError(
            f"the spots have no proportions: obsm has no {key!r} (obsm keys: {sorted(adata.obsm.keys())}); "
            f"run `pybridge deconvolve`, or store run_destvi(...).proportions as adata.obsm[{key!r}]"
        )
    frame = adata.obsm[key]
    if not isinstance(frame, pd.DataFrame):
        raise PybridgeError(f"obsm[{key!r}] must be a DataFrame with the cell types as columns, "
                            f"got {type(frame).__name__}")
    if cell_types is None:
        return frame
    if isinstance(cell_types, str):
        cell_types = [cell_types]
    if not cell_types:
        raise PybridgeError("cell_types is empty; pass None for all cell types")
    available = [str(c) for c in frame.columns]
    unknown = [c for c in cell_types if c not in available]
    if unknown:
        raise PybridgeError(f"unknown cell type(s) {unknown}; obsm[{key!r}] has {available}")
    return frame[list(cell_types)]


def plot_spot_proportions(
    adata: AnnData,
    cell_types: Sequence[str] | None = None,
    key: str = "destvi_proportions",
    spatial_key: str = "spatial",
    ncols: int = 4,
    point_size: float = 20.0,
) -> Figure:
    """Plot each cell type's proportion at the spots' coordinates, one panel per cell type.

    Colours share one scale from 0 to 1 (one colour bar). Coordinates are drawn as given, with equal axis
    scales (image coordinates, whose y grows downwards, appear upside down). Returns the matplotlib Figure
    (save it with ``fig.savefig("proportions.png")``).
    """
    xy = spot_coordinates(adata, spatial_key)
    props = spot_proportions(adata, cell_types, key)
    Figure = _figure_class()
    ncols = max(1, min(ncols, props.shape[1]))
    nrows = math.ceil(props.shape[1] / ncols)
    fig = Figure(figsize=(3.2 * ncols + 0.8, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, cell_type in zip(axes, props.columns):
        points = ax.scatter(xy[:, 0], xy[:, 1], c=props[cell_type].to_numpy(), s=point_size, cmap="viridis",
                            vmin=0.0, vmax=1.0)
        ax.set_title(str(cell_type))
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[props.shape[1]:]:
        fig.delaxes(ax)
    fig.colorbar(points, ax=axes[:props.shape[1]].tolist(), label="proportion", shrink=0.8)
    return fig


def _figure_class() -> type[Figure]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PybridgeError("plotting needs matplotlib: pip install matplotlib") from None
    return Figure
