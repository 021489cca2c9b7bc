"""AnnData <-> SingleCellExperiment / Seurat.

``handoff`` holds the plain-array helpers the R package calls through reticulate (no rpy2 there); ``rds``
reads and writes .rds files through rpy2 (Python hosting R), which it imports only when one is read or written.
"""

from pybridge.bridge.handoff import OBSM_TO_REDUCED_DIM, REDUCED_DIM_TO_OBSM
from pybridge.bridge.rds import from_sce, read_rds, to_sce, write_rds

__all__ = ["OBSM_TO_REDUCED_DIM", "REDUCED_DIM_TO_OBSM", "from_sce", "read_rds", "to_sce", "write_rds"]
