"""Read and write .rds SingleCellExperiment / Seurat objects from Python, through rpy2 (Python hosts R).

The R package ``pybridge`` (the R half of this project) takes the objects apart and puts them together:
its internal functions ``.toPlainParts()`` and ``.fromPlainParts()`` (R/parts.R) are the ones its own
reticulate path uses, so it must be installed in the R library rpy2 uses (``R CMD INSTALL .`` or
``make r-install`` plus ``R_LIBS``). Objects cross the boundary in the plain form of
:func:`pybridge.bridge.handoff.anndata_parts`: counts as dgCMatrix slots, tables column by column with
explicit NA masks, reducedDims under an explicit name map. rpy2's own pandas conversion is not used: it
turns NA in logical columns into -2147483648.

Never call these functions from Python that R started through reticulate: rpy2 would start a second R
inside the R process and crash it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pybridge.bridge import handoff
from pybridge.errors import PybridgeError

# The R package whose internal functions take objects apart and put them together (R/parts.R);
# the same code serves the R package's own reticulate path, so both directions stay identical.
R_PACKAGE = "pybridge"
_LOADED: set[str] = set()


def _install_hint() -> str:
    return (
        "install it from the pybridge source tree with `R CMD INSTALL .` (into R's default library) or "
        "`make r-install` (into ./.Rlib), and start Python with R_LIBS pointing at that library "
        "(e.g. R_LIBS=$PWD/.Rlib python ...); R reads R_LIBS only when rpy2 starts it"
    )


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _r():
    """rpy2's robjects with the R package loaded in the embedded R session (rpy2 imported here, lazily)."""
    library_path = os.environ.get("LD_LIBRARY_PATH")
    try:
        import rpy2.robjects as ro
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise PybridgeError(
            "reading/writing .rds needs rpy2 and R: pip install 'pybridge-sc[r]' (rpy2 3.5.x) with R >= 4.1 installed"
        ) from err
    finally:
        # rpy2 puts R's library folders (with the system's libpython) on LD_LIBRARY_PATH for the rest of the
        # process; R is loaded by now, and Python subprocesses started later (Dask workers, torchrun) would
        # load the wrong libpython
        _restore_env("LD_LIBRARY_PATH", library_path)
    if R_PACKAGE in _LOADED:
        return ro
    pkg = R_PACKAGE
    if not str(ro.r("system.file")(package=pkg)[0]):
        libs = ", ".join(str(v) for v in ro.r(".libPaths()"))
        raise PybridgeError(
            f"the R package {pkg} is not installed in the R libraries rpy2 uses ({libs}): {_install_hint()}"
        )
    error = str(ro.r("function(p) tryCatch({ loadNamespace(p); '' }, error = conditionMessage)")(pkg)[0])
    if error:
        raise PybridgeError(
            f"the R package {pkg} is installed but does not load: {error} (often a missing R dependency, "
            "e.g. SingleCellExperiment: on Debian apt-get install r-bioc-singlecellexperiment)"
        )
    if not bool(ro.r("function(p) exists('.toPlainParts', envir = asNamespace(p), inherits = FALSE)")(pkg)[0]):
        version = str(ro.r("function(p) as.character(utils::packageVersion(p))")(pkg)[0])
        raise PybridgeError(
            f"the installed R package {pkg} ({version}) is older than this Python package and lacks the "
            f"conversion functions; reinstall it: {_install_hint()}"
        )
    _LOADED.add(pkg)
    return ro


def _fn(name: str):
    """An internal function of the R package, e.g. ``.toPlainParts``."""
    return _r().r(f"{R_PACKAGE}:::{name}")


def _np(vec) -> np.ndarray:
    """NumPy view of an R numeric/integer/logical vector (no copy; logical arrives as int32)."""
    return np.asarray(vec.memoryview())


def _names(vec) -> list[str]:
    return [str(v) for v in vec]


def _get(rlist, name: str):
    return rlist[list(rlist.names).index(name)]


def _frame(specs, index: list[str]):
    columns = []
    for spec in specs:
        kind = str(_get(spec, "kind")[0])
        col = {
            "name": str(_get(spec, "name")[0]),
            "kind": kind,
            "na": _np(_get(spec, "na")).astype(bool),
        }
        values = _get(spec, "values")
        if kind == "character":
            col["values"] = np.asarray(list(values), dtype=object)
        else:
            col["values"] = _np(values)
        if kind == "factor":
            col["levels"] = _names(_get(spec, "levels"))
            col["ordered"] = bool(_get(spec, "ordered")[0])
        columns.append(col)
    return handoff.frame_from_columns(columns, index, len(index))


def _csr(slots):
    dim = _np(_get(slots, "Dim"))
    return handoff.csr_from_dgc_slots(
        _np(_get(slots, "x")).astype(np.float64, copy=False), _np(_get(slots, "i")), _np(_get(slots, "p")),
        int(dim[0]), int(dim[1]),
    )


def from_sce(obj, assay: str | None = None):
    """AnnData from an rpy2 SingleCellExperiment, SummarizedExperiment or Seurat object.

    ``assay`` is the SCE assay that becomes ``X`` (default "counts") or the Seurat assay to read
    (default: the active one).
    """
    ro = _r()
    # `assay` names the SCE assay that becomes X, or the Seurat assay whose counts do
    if bool(ro.r("methods::is")(obj, "Seurat")[0]):
        args = {"X.name": "counts", "assay": ro.NULL if assay is None else assay}
    else:
        args = {"X.name": "counts" if assay is None else assay}
    parts = _fn(".toPlainParts")(obj, **args)
    obs_names, var_names = _names(_get(parts, "obs_names")), _names(_get(parts, "var_names"))
    layers_r = _get(parts, "layers")
    layers = {str(n): _csr(layers_r[k]) for k, n in enumerate(layers_r.names or [])} if len(layers_r) else {}
    rd_r = _get(parts, "reduced_dims")
    reduced = {}
    for k, name in enumerate(rd_r.names or [] if len(rd_r) else []):
        m = rd_r[k]
        shape = tuple(int(d) for d in ro.r("dim")(m))
        reduced[str(name)] = _np(m).reshape(shape, order="F").copy()
    # X keeps pointing into R memory only until the R object is collected: copy the slots once
    X = _csr(_get(parts, "X")).copy()
    layers = {k: v.copy() for k, v in layers.items()}
    return handoff.build_anndata(
        X, _frame(_get(parts, "obs"), obs_names), _frame(_get(parts, "var"), var_names), obsm=reduced, layers=layers
    )


def read_rds(path: str | os.PathLike, assay: str | None = None):
    """AnnData from an .rds file holding a SingleCellExperiment or a Seurat (v4/v5) object."""
    path = Path(path)
    if not path.is_file():
        raise PybridgeError(f"no such file: {path}")
    obj = _r().r("readRDS")(str(path))
    return from_sce(obj, assay=assay)


def _r_vector(a: np.ndarray):
    import rpy2.rinterface as ri

    a = np.ascontiguousarray(a)
    if a.dtype == np.bool_:
        return ri.BoolSexpVector(a.tolist())
    if a.dtype == np.int32:
        return ri.IntSexpVector.from_memoryview(memoryview(a))
    if a.dtype == np.float64:
        return ri.FloatSexpVector.from_memoryview(memoryview(a))
    if a.dtype.kind in "US":
        return ri.StrSexpVector([str(v) for v in a])
    raise PybridgeError(f"internal: cannot hand a {a.dtype} array to R")


def _r_list(items: dict[str, Any]):
    import rpy2.robjects as ro

    return ro.r("list")(**items)


def _r_parts(parts: dict[str, Any]):
    import rpy2.rinterface as ri
    import rpy2.robjects as ro

    def dgc(s):
        return _r_list({"x": _r_vector(s["x"]), "i": _r_vector(s["i"]), "p": _r_vector(s["p"]),
                        "Dim": _r_vector(np.asarray(s["Dim"], dtype=np.int32))})

    def spec(c):
        out = {"name": ri.StrSexpVector([c["name"]]), "kind": ri.StrSexpVector([c["kind"]]),
               "values": _r_vector(np.asarray(c["values"])), "na": _r_vector(np.asarray(c["na"], dtype=bool))}
        if c["kind"] == "factor":
            out["levels"] = ri.StrSexpVector([str(v) for v in c["levels"]])
            out["ordered"] = ri.BoolSexpVector([bool(c["ordered"])])
        return _r_list(out)

    def unnamed(items):
        return ro.r("list")(*items) if items else ro.r("list()")

    def matrix(m):
        m = np.asarray(m, dtype=np.float64)
        return ro.r("matrix")(_r_vector(m.ravel(order="F")), nrow=m.shape[0], ncol=m.shape[1])

    layers = ro.r("list()") if not parts["layers"] else ro.r("list")(**{k: dgc(v) for k, v in parts["layers"].items()})
    reduced = (
        ro.r("list()") if not parts["reduced_dims"]
        else ro.r("list")(**{k: matrix(v) for k, v in parts["reduced_dims"].items()})
    )
    return ro.r("list")(
        X=dgc(parts["X"]), layers=layers, obs=unnamed([spec(c) for c in parts["obs"]]),
        var=unnamed([spec(c) for c in parts["var"]]), obs_names=_r_vector(parts["obs_names"]),
        var_names=_r_vector(parts["var_names"]), reduced_dims=reduced,
    )


def to_sce(adata, kind: str = "sce", layer: str | None = None):
    """rpy2 SingleCellExperiment (``kind="sce"``) or Seurat object (``kind="seurat"``) from an AnnData.

    ``X`` (or ``layer``) becomes the "counts" assay; other layers become assays, obs/var become
    colData/rowData, 2-d obsm entries become reducedDims (X_scVI -> scVI, X_pca -> PCA, ...).
    """
    if kind not in ("sce", "seurat"):
        raise PybridgeError(f"kind must be 'sce' or 'seurat', got {kind!r}")
    ro = _r()
    if kind == "seurat" and not bool(ro.r("isTRUE(requireNamespace('SeuratObject', quietly = TRUE))")[0]):
        raise PybridgeError("writing a Seurat object needs the R package SeuratObject (apt-get install r-cran-seuratobject)")
    return _fn(".fromPlainParts")(_r_parts(handoff.anndata_parts(adata, layer=layer)), kind=kind)


def write_rds(adata, path: str | os.PathLike, kind: str = "sce", layer: str | None = None) -> None:
    """Write ``adata`` as an .rds SingleCellExperiment or Seurat object (atomically)."""
    ro = _r()
    obj = to_sce(adata, kind=kind, layer=layer)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    ro.r("saveRDS")(obj, str(tmp))
    os.replace(tmp, path)
