# R <-> Python (AnnData) conversion through reticulate (R hosts Python). Objects are taken
# apart and put together in R/parts.R; this file moves the parts across. Counts travel as
# dgCMatrix slots (a genes x cells CSC is, slot for slot, the cells x genes CSR AnnData wants);
# tables travel column by column with explicit NA masks, because reticulate 1.28 corrupts NA
# in integer, logical and character columns going to pandas, and its py_to_r of scipy sparse
# matrices is broken.

# ---------------------------------------------------------------- counts

# Python cells x genes matrix (scipy CSR or NumPy view) for a genes x cells R matrix.
.countsToPython <- function(m, what = "the counts") {
    if (methods::is(m, "DelayedMatrix")) return(.delayedToPython(m))
    if (is.matrix(m)) {
        .checkNumericMatrix(m, what)
        if (!is.double(m)) storage.mode(m) <- "double"
        return(.handoff()$dense_cells_by_genes(m))
    }
    s <- .dgcSlots(.asDgCMatrix(m, what))
    .handoff()$csr_from_dgc_slots(s$x, s$i, s$p, s$Dim[1], s$Dim[2])
}

# DelayedArray / HDF5-backed assays: streamed by blocks of columns (cells).
.delayedToPython <- function(m, block.cells = NULL) {
    if (is.null(block.cells)) block.cells <- max(1L, as.integer(5e7 %/% max(1, nrow(m))))
    builder <- .handoff()$CSRBlockBuilder(nrow(m))
    starts <- seq.int(1L, ncol(m), by = block.cells)
    for (s in starts) {
        e <- min(ncol(m), s + block.cells - 1L)
        blk <- .dgcSlots(methods::as(m[, s:e, drop = FALSE], "dgCMatrix"))
        builder$add_block(blk$x, blk$i, blk$p)
    }
    builder$finish()
}

# Slots list(x, i, p, Dim) as R vectors from the dict Python returned (handoff.csr_to_dgc_slots).
.slotsFromPython <- function(slots) {
    out <- lapply(c("x", "i", "p", "Dim"), function(nm) reticulate::py_to_r(slots[[nm]]))
    names(out) <- c("x", "i", "p", "Dim")
    out
}

# dgCMatrix (genes x cells) from the slots Python returned for a cells x genes matrix.
.dgcFromSlots <- function(slots, rownames = NULL, colnames = NULL) {
    .dgcFromPlain(.slotsFromPython(slots), rownames, colnames)
}

# ---------------------------------------------------------------- tables

# pandas DataFrame (column by column, NA explicit) for a data.frame / DataFrame.
.frameToPandas <- function(df, rownames) {
    .handoff()$frame_from_columns(.frameSpecs(df), .arr(enc2utf8(rownames)), nrow(df))
}

# ---------------------------------------------------------------- parts <-> AnnData

# A Python AnnData from parts (.objectToParts()); X is the assay `X.name`.
.partsToAnnData <- function(parts, X.name = "counts") {
    layers <- Map(function(m, nm) .countsToPython(m, paste0("assay '", nm, "'")), parts$layers, names(parts$layers))
    .handoff()$build_anndata(
        .countsToPython(parts$X, paste0("assay '", X.name, "'")),
        .frameToPandas(parts$obs, parts$obs_names), .frameToPandas(parts$var, parts$var_names),
        obsm = parts$reduced_dims, layers = layers
    )
}

# Plain parts of an AnnData (handoff.anndata_parts, brought over piece by piece), X from `layer`.
.anndataPlainParts <- function(adata, layer = NULL) {
    p <- .handoff()$anndata_parts(adata, layer = layer)
    keys <- function(d) as.character(unlist(reticulate::py_to_r(reticulate::import_builtins(convert = FALSE)$list(d))))
    each <- function(d, f) {
        nms <- keys(d)
        out <- lapply(nms, function(nm) f(d[[nm]]))
        names(out) <- nms
        out
    }
    list(
        X = .slotsFromPython(p[["X"]]), layers = each(p[["layers"]], .slotsFromPython),
        obs = reticulate::py_to_r(p[["obs"]]), var = reticulate::py_to_r(p[["var"]]),
        obs_names = reticulate::py_to_r(p[["obs_names"]]), var_names = reticulate::py_to_r(p[["var_names"]]),
        reduced_dims = each(p[["reduced_dims"]], reticulate::py_to_r)
    )
}

# ---------------------------------------------------------------- AnnData <-> SCE

#' Convert a SingleCellExperiment or Seurat object to AnnData
#'
#' Returns a Python `anndata.AnnData` (a reticulate object). The assay
#' `X.name` becomes `X` (cells x genes CSR sharing memory with the dgCMatrix,
#' read-only), other assays become `layers`, colData becomes `obs`, rowData
#' becomes `var`, reducedDims become `obsm` (`scVI` -> `X_scVI`, `PCA` ->
#' `X_pca`, `UMAP` -> `X_umap`, `TSNE` -> `X_tsne`, other names `X_<name>`).
#' Factors (with unused levels), NA in every column type, non-ASCII and
#' duplicated names are kept. For Seurat objects the counts layer of `assay`
#' becomes `X`, `data` becomes a layer, meta.data becomes `obs` and the
#' reductions' embeddings become `obsm`.
#'
#' Not converted: `metadata()`, `altExps()`, Seurat's `scale.data` layer and
#' graphs. Split Seurat 5 layers (`counts.<sample>`) are joined into one.
#'
#' @param x A SingleCellExperiment, SummarizedExperiment or Seurat object.
#' @param X.name Name of the assay (Seurat: layer) that becomes `X`; default
#'   `"counts"`.
#' @param assay Seurat only: the assay to convert; `NULL` (default) for the
#'   active assay (`DefaultAssay(x)`).
#' @return A Python `anndata.AnnData` object (a reticulate reference, cells x
#'   genes): `obs_names` the cell names, `var_names` the gene names of `x`
#'   (`"1"`, `"2"`, ... when `x` has none). Use it with Python functions
#'   through reticulate, or save it with `adata$write_h5ad(path)` (or
#'   [writeH5AD()]).
#' @seealso [fromAnnData()] for the way back; [writeH5AD()] and
#'   [readH5AD()] for `.h5ad` files; [installPybridge()] for the Python side.
#' @export
#' @examples
#' if (pybridgeAvailable()) {
#'     sce <- SingleCellExperiment::SingleCellExperiment(
#'         list(counts = Matrix::rsparsematrix(20, 10, 0.3, rand.x = function(n) rpois(n, 3) + 1)))
#'     adata <- toAnnData(sce)
#' }
toAnnData <- function(x, X.name = "counts", assay = NULL) {
    if (!methods::is(x, "Seurat") && !methods::is(x, "SummarizedExperiment")) {
        stop("toAnnData() needs a SingleCellExperiment, SummarizedExperiment or Seurat object, got '",
             class(x)[1], "'", call. = FALSE)
    }
    .partsToAnnData(.objectToParts(x, X.name = X.name, assay = assay), X.name = X.name)
}

#' Convert an AnnData to a SingleCellExperiment or Seurat object
#'
#' The inverse of [toAnnData()]: `X` becomes the assay `X.name`, layers become
#' assays, `obs`/`var` become colData/rowData (pandas categoricals become
#' factors with all their levels, masked NA become `NA`), and 2-d `obsm`
#' entries become reducedDims (`X_scVI` -> `scVI`, `X_pca` -> `PCA`, ...; for
#' Seurat, lower-case reduction names).
#'
#' @param adata A Python AnnData (a reticulate object, e.g. from
#'   [toAnnData()] or `reticulate::import("anndata")$read_h5ad(path)`), or
#'   the path of a `.h5ad` file.
#' @param kind `"sce"` (default) for a SingleCellExperiment, `"seurat"` for
#'   a Seurat object (needs the Seurat packages).
#' @param X.name Name of the assay (or Seurat layer) that receives `X`;
#'   default `"counts"`.
#' @return `kind = "sce"`: a SingleCellExperiment, genes x cells, with the
#'   AnnData's `var_names` and `obs_names` as dimnames; `X` and the layers as
#'   sparse `dgCMatrix` assays; `obs` and `var` as colData and rowData;
#'   2-d `obsm` entries as reducedDims (cells x k matrices).
#'   `kind = "seurat"`: a Seurat object with one assay, `"RNA"`: `X` is its
#'   `counts` layer (and layer `X.name` too), the AnnData's layers are
#'   further layers (Seurat 4: `data`, or assays of their own), `obs` is the
#'   meta.data, `var` the assay's feature metadata and `obsm` entries are
#'   reductions (`pca`, `umap`, `tsne`, `scvi`, other names as they are).
#'   Seurat needs unique cell names: duplicated `obs_names` are refused.
#' @seealso [toAnnData()] for the way there; [readH5AD()].
#' @export
#' @examples
#' if (pybridgeAvailable()) {
#'     sce <- SingleCellExperiment::SingleCellExperiment(
#'         list(counts = Matrix::rsparsematrix(20, 10, 0.3, rand.x = function(n) rpois(n, 3) + 1)))
#'     back <- fromAnnData(toAnnData(sce))
#' }
fromAnnData <- function(adata, kind = c("sce", "seurat"), X.name = "counts") {
    kind <- match.arg(kind)
    .pybridgeModule()
    if (is.character(adata)) {
        adata <- reticulate::import("anndata", convert = FALSE)$read_h5ad(path.expand(adata))
    }
    .objectFromParts(.partsFromPlain(.anndataPlainParts(adata)), kind = kind, X.name = X.name)
}

#' Read and write .h5ad files
#'
#' `readH5AD()` reads a `.h5ad` file with Python's anndata and converts it with
#' [fromAnnData()]; `writeH5AD()` converts with [toAnnData()] and writes it.
#'
#' @param path Path of the `.h5ad` file to read or write (`writeH5AD()`
#'   replaces an existing file).
#' @param x A SingleCellExperiment, SummarizedExperiment or Seurat object.
#' @param kind `"sce"` (default) or `"seurat"`: the class `readH5AD()`
#'   returns, as in [fromAnnData()].
#' @param X.name The assay (Seurat: layer) that `X` comes from
#'   (`writeH5AD()`) or goes to (`readH5AD()`); default `"counts"`.
#' @return `readH5AD()`: a SingleCellExperiment or Seurat object, as
#'   [fromAnnData()] describes. `writeH5AD()`: `path`, invisibly.
#' @seealso [toAnnData()] and [fromAnnData()], which say what is converted.
#' @export
#' @examples
#' if (pybridgeAvailable()) {
#'     sce <- SingleCellExperiment::SingleCellExperiment(
#'         list(counts = Matrix::rsparsematrix(20, 10, 0.3, rand.x = function(n) rpois(n, 3) + 1)))
#'     f <- tempfile(fileext = ".h5ad")
#'     writeH5AD(sce, f)
#'     readH5AD(f)
#' }
readH5AD <- function(path, kind = c("sce", "seurat"), X.name = "counts") {
    if (!file.exists(path)) stop("no such file: ", path, call. = FALSE)
    fromAnnData(path, kind = kind, X.name = X.name)
}

#' @rdname readH5AD
#' @export
writeH5AD <- function(x, path, X.name = "counts") {
    .pybridgeModule()
    adata <- toAnnData(x, X.name = X.name)
    .pybridgeModule("pybridge.cli.io")$write_h5ad(adata, path.expand(path))
    invisible(path)
}
