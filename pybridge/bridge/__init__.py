"""AnnData <-> SingleCellExperiment / Seurat.

``handoff`` holds the plain-array helpers the R package calls through reticulate (no rpy2 there);
``rds`` reads and writes .rds files through rpy2 (Python hosting R) and is imported only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pybridge.bridge.handoff import OBSM_TO_REDUCED_DIM, REDUCED_DIM_TO_OBSM

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["read_rds", "write_rds", "to_sce", "from_sce", "read_any", "REDUCED_DIM_TO_OBSM", "OBSM_TO_REDUCED_DIM"]


def read_rds(path, assay: str | None = None) -> "AnnData":
    """AnnData from an .rds holding a SingleCellExperiment or a Seurat (v4/v5) object (needs rpy2)."""
    from pybridge.bridge.rds import read_rds as _read

    return _read(path, assay=assay)


def write_rds(adata: "AnnData", path, kind: str = "sce") -> None:
    """Write ``adata`` as an .rds SingleCellExperiment (``kind="sce"``) or Seurat object (needs rpy2)."""
    from pybridge.bridge.rds import write_rds as _write

    _write(adata, path, kind=kind)


def to_sce(adata: "AnnData"):
    """rpy2 SingleCellExperiment from an AnnData (needs rpy2)."""
    from pybridge.bridge.rds import to_sce as _to

    return _to(adata)


def from_sce(sce) -> "AnnData":
    """AnnData from an rpy2 SingleCellExperiment or Seurat object (needs rpy2)."""
    from pybridge.bridge.rds import from_sce as _from

    return _from(sce)


def read_any(path) -> "AnnData":
    """Read .h5ad with anndata or .rds (SingleCellExperiment / Seurat) through rpy2, by file extension."""
    from pathlib import Path

    from pybridge.errors import PybridgeError

    suffix = Path(path).suffix.lower()
    if not Path(path).is_file():
        raise PybridgeError(f"no such file: {path}")
    if suffix == ".h5ad":
        import anndata

        return anndata.read_h5ad(path)
    if suffix == ".rds":
        return read_rds(path)
    raise PybridgeError(f"{path}: unknown file type {suffix!r}; expected .h5ad or .rds")
