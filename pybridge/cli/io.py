"""Reading and writing the data files the commands take (.h5ad; .rds through the R bridge)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import anndata
import pandas as pd
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
    with _writable_strings(adata):
        adata.write_h5ad(tmp)
    tmp.replace(target)


@contextlib.contextmanager
def _writable_strings(adata: AnnData) -> Iterator[None]:
    """Nullable string columns of obs and var (R's character vectors arrive as such) written as plain strings
    when they hold no NA, and in anndata's nullable-string encoding (read by anndata >= 0.11) when they do;
    anndata refuses that encoding unless asked. obs and var are put back afterwards."""
    saved = adata.obs, adata.var
    plain = _plain_strings(adata.obs), _plain_strings(adata.var)
    if plain[0] is not saved[0]:
        adata.obs = plain[0]
    if plain[1] is not saved[1]:
        adata.var = plain[1]
    try:
        with anndata.settings.override(allow_write_nullable_strings=True):
            yield
    finally:
        if plain[0] is not saved[0]:
            adata.obs = saved[0]
        if plain[1] is not saved[1]:
            adata.var = saved[1]


def _plain_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its NA-free nullable string columns as object columns (the same frame when it has none)."""
    columns = [c for c in frame.columns if isinstance(frame[c].dtype, pd.StringDtype) and not frame[c].isna().any()]
    if not columns:
        return frame
    out = frame.copy()
    for column in columns:
        out[column] = out[column].astype(object)
    return out
