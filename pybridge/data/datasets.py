"""Small real datasets shipped with pybridge (no download at run time)."""

from __future__ import annotations

from importlib import resources

import anndata
from anndata import AnnData


def cortex() -> AnnData:
    """Zeisel et al. 2015 mouse cortex: 3,005 cells × 1,000 genes, raw counts, ``obs["cell_type"]``.

    Provenance and licence: ``pybridge/data/_files/README.md``.
    """
    with resources.as_file(resources.files("pybridge.data") / "_files" / "cortex.h5ad") as path:
        return anndata.read_h5ad(path)
