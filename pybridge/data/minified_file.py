"""Minified data left on disk: an .h5ad or zarr store opened without reading its per-cell arrays.

:class:`MinifiedFile` (opened by :func:`pybridge.data.minified.open_minified`) reads uns, var and the names
of obs columns; posteriors, library sizes, obs columns and cell names are read only for the rows a call asks
for, in spans of at most ``MAX_SPAN`` rows, so that memory follows the chunk size rather than the number of
cells. A :class:`MinifiedFile` stands in for the AnnData in ``SCVI.load(dir, adata=...)``, ``model.decode``,
the output methods and ``model.differential_expression``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from pybridge.data.ondisk import open_root
from pybridge.errors import PybridgeError

#: Rows read by one access to an on-disk array; rows further apart are read by separate accesses.
MAX_SPAN = 65_536


def read_rows(array, rows: slice | np.ndarray):
    """``array[rows]`` for a numpy, h5py or zarr array: slices at once, positions (any order, repeats allowed)
    as a few contiguous reads of at most ``MAX_SPAN`` rows, returned in the order asked."""
    if isinstance(array, np.ndarray) or isinstance(rows, slice):
        return array[rows]
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return array[0:0]
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    parts, start = [], 0
    while start < len(ordered):
        stop = int(np.searchsorted(ordered, ordered[start] + MAX_SPAN, side="left"))
        lo, hi = int(ordered[start]), int(ordered[stop - 1]) + 1
        parts.append(np.asarray(array[lo:hi])[ordered[start:stop] - lo])
        start = stop
    out = np.empty((len(rows), *parts[0].shape[1:]), dtype=parts[0].dtype)
    out[order] = np.concatenate(parts)
    return out


def _attr(node, name: str, default=None):
    value = node.attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else value


def _strings(values) -> np.ndarray:
    return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)


class _Column:
    """One obs column of the store, read for chosen rows (categorical codes map onto categories read once)."""

    def __init__(self, node, name: str):
        self.node, self.name = node, name
        self.encoding = _attr(node, "encoding-type", "array")
        if self.encoding == "categorical":
            stored = node["categories"][...]
            self.categories = pd.Index(stored if stored.dtype.kind in "iuf" else _strings(stored))
            self.ordered = bool(_attr(node, "ordered", False))

    def read(self, rows) -> pd.Series:
        if self.encoding == "categorical":
            codes = np.asarray(read_rows(self.node["codes"], rows)).astype(np.int64)
            values = pd.Categorical.from_codes(codes, categories=self.categories, ordered=self.ordered)
        elif self.encoding in ("nullable-integer", "nullable-boolean"):
            data = read_rows(self.node["values"], rows)
            mask = np.asarray(read_rows(self.node["mask"], rows), dtype=bool)
            values = pd.array(data, dtype="Int64" if self.encoding == "nullable-integer" else "boolean")
            values[mask] = pd.NA
        elif self.encoding == "string-array":
            values = _strings(read_rows(self.node, rows))
        elif self.encoding == "array":
            values = np.asarray(read_rows(self.node, rows))
        else:
            raise PybridgeError(f"obs[{self.name!r}] is stored as {self.encoding!r}, which pybridge cannot read by rows")
        return pd.Series(values, name=self.name)


class LazyObs:
    """The obs of a :class:`MinifiedFile`: columns read on access, for the rows of this view only.

    ``obs[key]`` reads one column (a pandas Series), ``obs.iloc[rows]`` narrows the rows without reading,
    ``obs.index`` reads the cell names of the view."""

    def __init__(self, file: MinifiedFile, rows: slice | np.ndarray | None = None):
        self._file, self._rows = file, slice(None) if rows is None else rows

    @property
    def columns(self) -> pd.Index:
        return pd.Index(self._file._obs_columns)

    def __contains__(self, key) -> bool:
        return key in self._file._obs_columns

    def __len__(self) -> int:
        return len(range(self._file.n_obs)[self._rows]) if isinstance(self._rows, slice) else len(self._rows)

    def __getitem__(self, key: str) -> pd.Series:
        return self._file._column(key).read(self._rows)

    @property
    def index(self) -> pd.Index:
        return pd.Index(_strings(read_rows(self._file._index_node, self._rows)))

    @property
    def iloc(self) -> _RowSelector:
        return _RowSelector(self)


class _RowSelector:
    def __init__(self, obs: LazyObs):
        self._obs = obs

    def __getitem__(self, rows) -> LazyObs:
        current = self._obs._rows
        if not isinstance(rows, slice):
            rows = np.asarray(rows)
        if isinstance(current, slice) and current == slice(None):
            return LazyObs(self._obs._file, rows)
        if isinstance(current, slice):
            current = np.arange(self._obs._file.n_obs)[current]
        return LazyObs(self._obs._file, current[rows])


class _Obsm(Mapping):
    """obsm of a :class:`MinifiedFile`: the on-disk arrays themselves (read with :func:`read_rows`)."""

    def __init__(self, root):
        self._group = root.get("obsm", {})

    def __getitem__(self, key):
        return self._group[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._group.keys())

    def __len__(self) -> int:
        return len(self._group)


class MinifiedFile:
    """A minified .h5ad or zarr store, open for reading rows on demand (see
    :func:`pybridge.data.minified.open_minified`).

    Mirrors the parts of AnnData that models read: ``n_obs``, ``var_names``, ``var``, ``uns``, ``obs`` (lazy),
    ``obsm`` (on-disk arrays) and ``obs_names`` (read in full on first use: avoid it on atlas-sized stores).
    Pickles as its path, so that Dask workers reopen it. Changes to ``uns`` stay in memory.
    """

    is_view = False
    isbacked = True

    def __init__(self, path: str | os.PathLike):
        self.filename = Path(path)
        if not self.filename.exists():
            raise PybridgeError(f"{self.filename} not found")
        self._open()
        from anndata.io import read_elem

        self.uns: dict = read_elem(self._root["uns"]) if "uns" in self._root else {}
        self.var: pd.DataFrame = read_elem(self._root["var"])

    def _open(self) -> None:
        self._root = open_root(self.filename)
        if "obs" not in self._root or "var" not in self._root:
            raise PybridgeError(f"{self.filename} is not an AnnData store (it lacks obs or var)")
        obs = self._root["obs"]
        self._index_node = obs[_attr(obs, "_index", "_index")]
        self.n_obs = int(self._index_node.shape[0])
        self._obs_columns = [str(c) for c in _attr(obs, "column-order", [])]
        self.obs = LazyObs(self)
        self.obsm = _Obsm(self._root)
        self._obs_names: pd.Index | None = None
        self._columns: dict[str, _Column] = {}

    def _column(self, key: str) -> _Column:
        """The obs column ``key``, its encoding and categories read once."""
        if key not in self._columns:
            if key not in self._obs_columns:
                raise KeyError(key)
            self._columns[key] = _Column(self._root["obs"][key], key)
        return self._columns[key]

    @property
    def var_names(self) -> pd.Index:
        return self.var.index

    @property
    def n_vars(self) -> int:
        return len(self.var)

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_obs, self.n_vars

    @property
    def obs_names(self) -> pd.Index:
        if self._obs_names is None:
            self._obs_names = self.obs.index
        return self._obs_names

    def close(self) -> None:
        if hasattr(self._root, "close"):
            self._root.close()

    def __getstate__(self) -> dict:
        return {"filename": self.filename, "uns": self.uns, "var": self.var}

    def __setstate__(self, state: dict) -> None:
        self.filename, self.uns, self.var = state["filename"], state["uns"], state["var"]
        self._open()

    def __repr__(self) -> str:
        return f"MinifiedFile({str(self.filename)!r}: {self.n_obs} cells x {self.n_vars} genes, read on demand)"
