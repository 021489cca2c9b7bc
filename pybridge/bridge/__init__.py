"""AnnData <-> SingleCellExperiment / Seurat.

``handoff`` holds the plain-array helpers the R package calls through reticulate (no rpy2 there);
``rds`` reads and writes .rds files through rpy2 (Python hosting R) and is imported only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pybridge.bridge.handoff import OBSM_TO_REDUCED_DIM, REDUCED_DIM_TO_OBSM

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["OBSM_TO_REDUCED_DIM", "REDUCED_DIM_TO_OBSM", "from_sce", "read_rds", "to_sce", "write_rds"]


def read_rds(path, assay: str | None = None) -> AnnData:
    """AnnData from an .rds holding a SingleCellExperiment or a Seurat (v4/v5) object (needs rpy2)."""
    from pybridge.bridge.rds import read_rds as _read

    return _read(path, assay=assay)


def write_rds(adata: AnnData, path, kind: str = "sce") -> None:
    """Write ``adata`` as an .rds SingleCellExperiment (``kind="sce"``) or Seurat object (needs rpy2)."""
    from pybridge.bridge.rds import write_rds as _write

    _write(adata, path, kind=kind)


def to_sce(adata: AnnData):
    """rpy2 SingleCellExperiment from an AnnData (needs rpy2)."""
    from pybridge.bridge.rds import to_sce as _to

    return _to(adata)


def from_sce(sce) -> AnnData:
    """AnnData from an rpy2 SingleCellExperiment or Seurat object (needs rpy2)."""
    from pybridge.bridge.rds import from_sce as _from

    return _from(sce)
