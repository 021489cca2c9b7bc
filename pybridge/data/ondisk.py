"""Row ranges of a count matrix in an .h5ad or zarr file, read without loading the file whole.

Used by ``setup`` (validating counts on disk chunk by chunk) and ``disk`` (streaming minibatches).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

from pybridge.errors import PybridgeError


def open_root(path: Path):
    if path.suffix == ".zarr" or path.is_dir():
        try:
            import zarr
        except ImportError:
            raise PybridgeError("reading .zarr stores needs zarr: pip install 'zarr<3'") from None
        return zarr.open_group(str(path), mode="r")
    if not h5py.is_hdf5(path):
        raise PybridgeError(f"{path} is neither an .h5ad (HDF5) file nor a .zarr directory")
    return h5py.File(path, "r")


class DiskMatrix:
    """Row ranges of an AnnData matrix element (CSR group or dense 2-D array) read straight from disk."""

    def __init__(self, path: str | os.PathLike, layer: str | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise PybridgeError(f"{self.path} not found")
        self.layer = layer
        self._root = open_root(self.path)
        key = "X" if layer is None else f"layers/{layer}"
        if key not in self._root:
            self.close()
            raise PybridgeError(f"{self.path} has no {key!r} element (layer={layer!r})")
        elem = self._root[key]
        encoding = elem.attrs.get("encoding-type", "array")
        if isinstance(encoding, bytes):
            encoding = encoding.decode()
        if encoding == "csc_matrix":
            self.close()
            raise PybridgeError(
                f"{key} in {self.path} is CSC, and out-of-core training reads rows: rewrite it as CSR "
                f"(adata.X = scipy.sparse.csr_matrix(adata.X) before writing) or load it whole with "
                f"anndata.read_h5ad(path)"
            )
        self.sparse = encoding == "csr_matrix"
        if self.sparse:
            self.shape = tuple(int(s) for s in elem.attrs["shape"])
            self._data, self._indices, self._indptr = elem["data"], elem["indices"], elem["indptr"]
        else:
            self.shape = tuple(elem.shape)
            self._dense = elem

    def rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` as float32 CSR (one contiguous read per array)."""
        if not self.sparse:
            return sp.csr_matrix(np.asarray(self._dense[start:stop], dtype=np.float32))
        ptr = np.asarray(self._indptr[start : stop + 1], dtype=np.int64)
        lo, hi = int(ptr[0]), int(ptr[-1])
        data = np.asarray(self._data[lo:hi], dtype=np.float32)
        indices = np.asarray(self._indices[lo:hi], dtype=np.int32)
        return sp.csr_matrix((data, indices, ptr - lo), shape=(stop - start, self.shape[1]))

    def blocks(self, chunk_cells: int) -> Iterator[sp.csr_matrix]:
        """All rows, ``chunk_cells`` at a time, in file order."""
        n = self.shape[0]
        for start in range(0, n, chunk_cells):
            yield self.rows(start, min(start + chunk_cells, n))

    def close(self) -> None:
        if isinstance(self._root, h5py.File):
            self._root.close()
