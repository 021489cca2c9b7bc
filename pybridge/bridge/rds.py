"""Read and write .rds SingleCellExperiment / Seurat objects from Python, through rpy2 (Python hosts R).

Objects cross the boundary in the same plain form the R package uses (see :mod:`pybridge.bridge.handoff`):
counts as dgCMatrix slots, tables column by column with explicit NA masks, reducedDims under an explicit
name map. rpy2's own pandas conversion is not used: it turns NA in logical columns into -2147483648.

Never import this module from Python that R started through reticulate: rpy2 would start a second R
inside the R process and crash it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pybridge.bridge import handoff
from pybridge.errors import PybridgeError

# R helpers, defined once in the embedded R session. They only decompose or assemble objects; the
# column logic matches R/convert.R of the R package.
_R_HELPERS = r"""
.pybridge_env <- new.env()
local(envir = .pybridge_env, {
    column <- function(name, v) {
        na <- is.na(v)
        if (is.factor(v)) {
            codes <- as.integer(v) - 1L; codes[na] <- -1L
            return(list(name = name, kind = "factor", values = codes, na = na,
                        levels = enc2utf8(levels(v)), ordered = is.ordered(v)))
        }
        if (is.logical(v)) { v[na] <- FALSE; return(list(name = name, kind = "logical", values = v, na = na)) }
        if (is.integer(v) && is.null(attr(v, "class"))) {
            v[na] <- 0L; return(list(name = name, kind = "integer", values = v, na = na))
        }
        if (is.double(v) && is.null(attr(v, "class"))) {
            v[na] <- 0; return(list(name = name, kind = "double", values = v, na = na))
        }
        if (is.character(v)) {
            v[na] <- ""; return(list(name = name, kind = "character", values = enc2utf8(v), na = na))
        }
        stop("column '", name, "' has class '", paste(class(v), collapse = "/"),
             "', which has no AnnData equivalent; convert it to character, numeric, logical or factor")
    }
    frame <- function(df) lapply(seq_len(ncol(df)), function(j) column(enc2utf8(colnames(df)[j]), df[[j]]))
    dgc <- function(m, what) {
        if (methods::is(m, "DelayedMatrix") || is.matrix(m)) m <- methods::as(m, "dgCMatrix")
        if (!methods::is(m, "dgCMatrix")) {
            m <- methods::as(methods::as(methods::as(m, "CsparseMatrix"), "generalMatrix"), "dMatrix")
        }
        list(x = m@x, i = m@i, p = m@p, Dim = dim(m))
    }
    orDefault <- function(n, k) if (is.null(n)) as.character(seq_len(k)) else enc2utf8(n)
    sce_parts <- function(x, X.name) {
        an <- SummarizedExperiment::assayNames(x)
        if (!X.name %in% an) stop("assay '", X.name, "' not found; available: ", paste(an, collapse = ", "))
        assays <- SummarizedExperiment::assays(x, withDimnames = FALSE)
        rd <- if (methods::is(x, "SingleCellExperiment")) as.list(SingleCellExperiment::reducedDims(x)) else list()
        list(X = dgc(assays[[X.name]]), layers = lapply(assays[setdiff(an, X.name)], dgc),
             obs = frame(SummarizedExperiment::colData(x)), var = frame(SummarizedExperiment::rowData(x)),
             obs_names = orDefault(colnames(x), ncol(x)), var_names = orDefault(rownames(x), nrow(x)),
             reduced_dims = lapply(rd, function(m) { m <- as.matrix(m); storage.mode(m) <- "double"; unname(m) }))
    }
    seurat_layer <- function(x, assay, layer) {
        a <- x[[assay]]
        if (utils::packageVersion("SeuratObject") >= "5.0.0" && methods::is(a, "Assay5")) {
            if (length(getExportedValue("SeuratObject", "Layers")(a, search = layer)) > 1L) {
                a <- getExportedValue("SeuratObject", "JoinLayers")(a, layers = layer)
            }
            return(getExportedValue("SeuratObject", "LayerData")(a, layer = layer))
        }
        SeuratObject::GetAssayData(a, slot = layer)
    }
    seurat_parts <- function(x, assay) {
        if (is.null(assay)) assay <- SeuratObject::DefaultAssay(x)
        counts <- seurat_layer(x, assay, "counts")
        cells <- colnames(counts); genes <- rownames(counts)
        layers <- list()
        a <- x[[assay]]
        if (utils::packageVersion("SeuratObject") >= "5.0.0" && methods::is(a, "Assay5")) {
            names <- unique(sub("\\..*$", "", getExportedValue("SeuratObject", "Layers")(a)))
        } else {
            # Seurat 4 assays hold only counts/data/scale.data: extra layers live in same-shaped assays
            extra <- Filter(function(n) n != assay && identical(dim(x[[n]]), dim(a)) &&
                                identical(rownames(x[[n]]), genes), SeuratObject::Assays(x))
            for (n in extra) layers[[n]] <- dgc(SeuratObject::GetAssayData(x[[n]], slot = "counts"))
            names <- "data"
        }
        for (n in setdiff(names, c("counts", "scale.data"))) {
            m <- tryCatch(seurat_layer(x, assay, n), error = function(e) NULL)
            if (!is.null(m) && length(m) && !identical(unname(m), unname(counts))) layers[[n]] <- dgc(m)
        }
        to_sce <- c(pca = "PCA", umap = "UMAP", tsne = "TSNE", scvi = "scVI")
        rd <- list()
        for (r in SeuratObject::Reductions(x)) {
            nm <- if (r %in% names(to_sce)) to_sce[[r]] else r
            rd[[nm]] <- unname(SeuratObject::Embeddings(x, reduction = r)[cells, , drop = FALSE])
        }
        feats <- x[[assay]][[]]
        list(X = dgc(counts), layers = layers, obs = frame(x[[]][cells, , drop = FALSE]),
             var = frame(feats[genes, , drop = FALSE]), obs_names = enc2utf8(cells), var_names = enc2utf8(genes),
             reduced_dims = rd)
    }
    parts <- function(x, assay = NULL) {
        if (methods::is(x, "Seurat")) {
            if (!requireNamespace("SeuratObject", quietly = TRUE)) stop("reading a Seurat object needs SeuratObject")
            return(seurat_parts(x, assay))
        }
        if (methods::is(x, "SummarizedExperiment")) return(sce_parts(x, if (is.null(assay)) "counts" else assay))
        stop("the object has class '", class(x)[1], "'; expected a SingleCellExperiment or Seurat object")
    }
    from_column <- function(s) {
        v <- s$values
        if (s$kind == "factor") {
            v <- as.integer(v); v[s$na] <- NA_integer_
            return(structure(v, levels = as.character(s$levels),
                             class = c(if (isTRUE(s$ordered)) "ordered", "factor")))
        }
        v <- switch(s$kind, logical = as.logical(v), integer = as.integer(v), double = as.double(v),
                    character = as.character(v))
        v[s$na] <- NA
        v
    }
    from_frame <- function(specs, rn) {
        if (!length(specs)) { out <- S4Vectors::DataFrame(x = seq_along(rn))[, 0]; rownames(out) <- rn; return(out) }
        cols <- lapply(specs, from_column)
        names(cols) <- vapply(specs, function(s) s$name, "")
        out <- S4Vectors::DataFrame(cols, check.names = FALSE)
        rownames(out) <- rn
        out
    }
    from_dgc <- function(s, rn, cn) methods::new("dgCMatrix", x = s$x, i = s$i, p = s$p, Dim = as.integer(s$Dim),
                                                  Dimnames = list(rn, cn))
    build <- function(p, kind) {
        cells <- p$obs_names; genes <- p$var_names
        X <- from_dgc(p$X, genes, cells)
        layers <- lapply(p$layers, from_dgc, rn = genes, cn = cells)
        rd <- lapply(p$reduced_dims, function(m) { rownames(m) <- cells; m })
        cd <- from_frame(p$obs, cells); rdata <- from_frame(p$var, genes)
        if (kind == "sce") {
            return(SingleCellExperiment::SingleCellExperiment(assays = c(list(counts = X), layers),
                colData = cd, rowData = rdata, reducedDims = rd))
        }
        if (anyDuplicated(cells)) stop("Seurat needs unique cell names; call adata.obs_names_make_unique() first")
        obj <- SeuratObject::CreateSeuratObject(counts = X, assay = "RNA")
        obj <- SeuratObject::AddMetaData(obj, as.data.frame(cd, optional = TRUE))
        for (nm in names(layers)) {
            if (utils::packageVersion("SeuratObject") >= "5.0.0") {
                a <- obj[["RNA"]]
                a <- do.call(getExportedValue("SeuratObject", "LayerData<-"), list(a, layer = nm, value = layers[[nm]]))
                obj[["RNA"]] <- a
            } else if (nm == "data") {
                obj <- SeuratObject::SetAssayData(obj, slot = "data", new.data = layers[[nm]], assay = "RNA")
            } else {
                obj[[nm]] <- SeuratObject::CreateAssayObject(counts = layers[[nm]])
            }
        }
        if (ncol(rdata)) obj[["RNA"]] <- SeuratObject::AddMetaData(obj[["RNA"]], as.data.frame(rdata, optional = TRUE))
        to_seurat <- c(PCA = "pca", UMAP = "umap", TSNE = "tsne", scVI = "scvi")
        keys <- c(pca = "PC_", umap = "UMAP_", tsne = "tSNE_", scvi = "scVI_")
        for (nm in names(rd)) {
            red <- if (nm %in% names(to_seurat)) to_seurat[[nm]] else nm
            key <- if (red %in% names(keys)) keys[[red]] else paste0(gsub("[^A-Za-z0-9]", "", red), "_")
            emb <- rd[[nm]]; colnames(emb) <- paste0(key, seq_len(ncol(emb)))
            obj[[red]] <- SeuratObject::CreateDimReducObject(embeddings = emb, key = key, assay = "RNA")
        }
        obj
    }
})
"""


def _r():
    """The embedded R session with pybridge's helpers loaded (rpy2 imported here, lazily)."""
    try:
        import rpy2.robjects as ro
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise PybridgeError(
            "reading/writing .rds needs rpy2 and R: pip install 'pybridge[r]' (rpy2 3.5.x) with R >= 4.1 installed"
        ) from err
    if not bool(ro.r("exists('.pybridge_env')")[0]):
        ro.r(_R_HELPERS)
        for pkg in ("SingleCellExperiment",):
            if not bool(ro.r(f"isTRUE(requireNamespace('{pkg}', quietly = TRUE))")[0]):
                raise PybridgeError(f"the R package {pkg} is not installed (Debian: apt-get install r-bioc-singlecellexperiment)")
    return ro


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
    parts = ro.r(".pybridge_env$parts")(obj, ro.NULL if assay is None else assay)
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
    return ro.r(".pybridge_env$build")(_r_parts(handoff.anndata_parts(adata, layer=layer)), kind)


def write_rds(adata, path: str | os.PathLike, kind: str = "sce", layer: str | None = None) -> None:
    """Write ``adata`` as an .rds SingleCellExperiment or Seurat object (atomically)."""
    ro = _r()
    obj = to_sce(adata, kind=kind, layer=layer)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    ro.r("saveRDS")(obj, str(tmp))
    os.replace(tmp, path)
