"""Reading and writing the data files the commands take (.h5ad; .rds through the R bridge)."""

from __future__ import annotations

from pathlib import Path

import anndata
from anndata import AnnData

from pybridge.errors import PybridgeError


def read_input(path: str) -> AnnData:
    """Read an .h5ad, or an .rds SingleCellExperiment/Seurat object (needs R and ``pybridge-sc[r]``)."""
    file = Path(path)
    if not file.is_file():
        raise PybridgeError(f"no such file: {path}")
    suffix = file.suffix.lower()
    if suffix == ".h5ad":
        try:
            return anndata.read_h5ad(file)
        except OSError as err:
            raise PybridgeError(f"{path} is not a readable .h5ad file ({err})") from None
    if suffix == ".rds":
        from pybridge.bridge import read_rds

        return read_rds(file)
    raise PybridgeError(f"{path}: expected an .h5ad or .rds file, not {suffix or '(no extension)'!r}")


def refuse_existing(overwrite: bool, *paths: str | None) -> None:
    """Refuse, before any work, an output that exists unless ``--overwrite`` was given."""
    for path in paths:
        if path and Path(path).exists() and not overwrite:
            raise PybridgeError(f"{path} exists; pass --overwrite to replace it")


def write_h5ad(adata: AnnData, path: str, overwrite: bool = True) -> None:
    """Write ``adata`` atomically (to a temporary name, then renamed)."""
    target = Path(path)
    if target.suffix.lower() != ".h5ad":
        raise PybridgeError(f"output {path!r} must end in .h5ad")
    if target.exists() and not overwrite:
        raise PybridgeError(f"{path} exists; pass --overwrite to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    adata.write_h5ad(tmp)
    tmp.replace(target)
