# R <-> Python (AnnData) conversion. Counts travel as dgCMatrix slots (a genes x
# cells CSC is, slot for slot, the cells x genes CSR AnnData wants); tables
# travel column by column with explicit NA masks, because reticulate 1.28
# corrupts NA in integer, logical and character columns going to pandas.

# An R vector as a 1-d array, which reticulate hands to NumPy without copying
# (a plain vector would become a Python list).
.arr <- function(v) {
    dim(v) <- length(v)
    v
}

.INT32_MAX <- 2147483647

# ---------------------------------------------------------------- counts

# Python cells x genes matrix (scipy CSR or NumPy view) for a genes x cells R matrix.
.countsToPython <- function(m, what = "the counts") {
    if (methods::is(m, "DelayedMatrix")) return(.delayedToPython(m))
    if (is.matrix(m)) {
        if (!is.numeric(m) && !is.logical(m)) {
            stop(what, " is a ", typeof(m), " matrix; counts must be numeric", call. = FALSE)
        }
        if (!is.double(m)) storage.mode(m) <- "double"
        return(.handoff()$dense_cells_by_genes(m))
    }
    if (!methods::is(m, "dgCMatrix")) {
        if (!methods::is(m, "Matrix")) {
            stop(what, " has class '", class(m)[1], "', expected a matrix, dgCMatrix or DelayedMatrix; ",
                 "convert it with as(x, \"dgCMatrix\")", call. = FALSE)
        }
        m <- methods::as(methods::as(methods::as(m, "CsparseMatrix"), "generalMatrix"), "dMatrix")
    }
    .handoff()$csr_from_dgc_slots(.arr(m@x), .arr(m@i), .arr(m@p), nrow(m), ncol(m))
}

# DelayedArray / HDF5-backed assays: streamed by blocks of columns (cells).
.delayedToPython <- function(m, block.cells = NULL) {
    if (is.null(block.cells)) block.cells <- max(1L, as.integer(5e7 %/% max(1, nrow(m))))
    builder <- .handoff()$CSRBlockBuilder(nrow(m))
    starts <- seq.int(1L, ncol(m), by = block.cells)
    for (s in starts) {
        e <- min(ncol(m), s + block.cells - 1L)
        blk <- methods::as(m[, s:e, drop = FALSE], "dgCMatrix")
        builder$add_block(.arr(blk@x), .arr(blk@i), .arr(blk@p))
    }
    builder$finish()
}

# dgCMatrix (genes x cells) from the slots Python returned for a cells x genes matrix.
.dgcFromSlots <- function(slots, rownames = NULL, colnames = NULL) {
    v <- function(name) {
        out <- reticulate::py_to_r(slots[[name]])
        dim(out) <- NULL
        out
    }
    Dim <- as.integer(reticulate::py_to_r(slots[["Dim"]]))
    methods::new("dgCMatrix", x = v("x"), i = v("i"), p = v("p"), Dim = Dim,
                 Dimnames = list(rownames, colnames))
}

# ---------------------------------------------------------------- tables

.columnSpec <- function(name, v) {
    na <- is.na(v)
    if (is.factor(v)) {
        codes <- as.integer(v) - 1L
        codes[na] <- -1L
        return(list(name = name, kind = "factor", values = .arr(codes), na = .arr(na),
                    levels = .arr(enc2utf8(levels(v))), ordered = is.ordered(v)))
    }
    if (is.logical(v)) {
        v[na] <- FALSE
        return(list(name = name, kind = "logical", values = .arr(v), na = .arr(na)))
    }
    if (is.integer(v) && is.null(attr(v, "class"))) {
        v[na] <- 0L
        return(list(name = name, kind = "integer", values = .arr(v), na = .arr(na)))
    }
    if (is.double(v) && is.null(attr(v, "class"))) {
        v[na] <- 0
        return(list(name = name, kind = "double", values = .arr(v), na = .arr(na)))
    }
    if (is.character(v)) {
        v[na] <- ""
        return(list(name = name, kind = "character", values = .arr(enc2utf8(v)), na = .arr(na)))
    }
    stop("column '", name, "' has class '", paste(class(v), collapse = "/"),
         "', which has no AnnData equivalent here; convert it to character, numeric, logical or ",
         "factor (or drop it) before converting", call. = FALSE)
}

# pandas DataFrame (column by column, NA explicit) for a data.frame / DataFrame.
.frameToPandas <- function(df, rownames) {
    cols <- lapply(seq_len(ncol(df)), function(j) .columnSpec(enc2utf8(colnames(df)[j]), df[[j]]))
    .handoff()$frame_from_columns(cols, .arr(enc2utf8(rownames)), nrow(df))
}

# R vector from one Python column spec (already converted to an R list).
.columnFromSpec <- function(spec) {
    plain <- function(v) {
        dim(v) <- NULL
        v
    }
    values <- plain(spec$values)
    na <- as.logical(plain(spec$na))
    if (spec$kind == "factor") {
        values <- as.integer(values)
        values[na] <- NA_integer_
        levels <- as.character(plain(spec$levels))
        return(structure(values, levels = levels, class = c(if (isTRUE(spec$ordered)) "ordered", "factor")))
    }
    values <- switch(spec$kind, logical = as.logical(values), integer = as.integer(values),
                     double = as.double(values), character = as.character(values))
    values[na] <- NA
    values
}

# S4Vectors DataFrame from Python column specs, keeping duplicated names.
.frameFromPython <- function(specs, rownames) {
    specs <- reticulate::py_to_r(specs)
    if (length(specs) == 0L) {
        out <- .emptyFrame(length(rownames))
        rownames(out) <- rownames
        return(out)
    }
    cols <- lapply(specs, .columnFromSpec)
    names(cols) <- vapply(specs, function(s) s$name, "")
    out <- S4Vectors::DataFrame(cols, check.names = FALSE)
    rownames(out) <- rownames
    out
}

.namesFromPython <- function(x) {
    out <- reticulate::py_to_r(x)
    dim(out) <- NULL
    as.character(out)
}

# ---------------------------------------------------------------- reducedDims

.reducedDimsToPython <- function(dims, cellnames) {
    out <- list()
    for (nm in names(dims)) {
        m <- dims[[nm]]
        if (!is.matrix(m)) m <- as.matrix(m)
        storage.mode(m) <- "double"
        out[[nm]] <- m
    }
    out
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
#' @param x A SingleCellExperiment, SummarizedExperiment or Seurat object.
#' @param X.name Assay (layer for Seurat) that becomes `X`.
#' @param assay Seurat assay to convert (default: the active assay).
#' @return A Python AnnData object.
#' @seealso [fromAnnData()]
#' @export
#' @examples
#' if (pybridgeAvailable()) {
#'     sce <- SingleCellExperiment::SingleCellExperiment(
#'         list(counts = Matrix::rsparsematrix(20, 10, 0.3, rand.x = function(n) rpois(n, 3) + 1)))
#'     adata <- toAnnData(sce)
#' }
toAnnData <- function(x, X.name = "counts", assay = NULL) {
    if (methods::is(x, "Seurat")) return(.seuratToAnnData(x, X.name = X.name, assay = assay))
    if (!methods::is(x, "SummarizedExperiment")) {
        stop("toAnnData() needs a SingleCellExperiment, SummarizedExperiment or Seurat object, got '",
             class(x)[1], "'", call. = FALSE)
    }
    assays <- SummarizedExperiment::assays(x, withDimnames = FALSE)
    if (!X.name %in% names(assays)) {
        stop("assay '", X.name, "' not found; available: ", paste(names(assays), collapse = ", "),
             ". Pass X.name = one of them", call. = FALSE)
    }
    cellnames <- .orDefault(colnames(x), ncol(x))
    genenames <- .orDefault(rownames(x), nrow(x))
    X <- .countsToPython(assays[[X.name]], paste0("assay '", X.name, "'"))
    layers <- list()
    for (nm in setdiff(names(assays), X.name)) {
        layers[[nm]] <- .countsToPython(assays[[nm]], paste0("assay '", nm, "'"))
    }
    dims <- if (methods::is(x, "SingleCellExperiment")) {
        as.list(SingleCellExperiment::reducedDims(x))
    } else {
        list()
    }
    .handoff()$build_anndata(
        X, .frameToPandas(SummarizedExperiment::colData(x), cellnames),
        .frameToPandas(SummarizedExperiment::rowData(x), genenames),
        obsm = .reducedDimsToPython(dims), layers = layers
    )
}

.orDefault <- function(names, n) {
    if (is.null(names)) as.character(seq_len(n)) else names
}

# Everything from an AnnData, as R objects: counts dgCMatrix, layers, colData,
# rowData and reducedDims under their R names.
.anndataParts <- function(adata, layer = NULL) {
    parts <- .handoff()$anndata_parts(adata, layer = layer)
    cellnames <- .namesFromPython(parts[["obs_names"]])
    genenames <- .namesFromPython(parts[["var_names"]])
    layer_names <- reticulate::py_to_r(reticulate::import_builtins(convert = FALSE)$list(parts[["layers"]]))
    layers <- lapply(layer_names, function(nm) .dgcFromSlots(parts[["layers"]][[nm]], genenames, cellnames))
    names(layers) <- layer_names
    rd_names <- reticulate::py_to_r(reticulate::import_builtins(convert = FALSE)$list(parts[["reduced_dims"]]))
    dims <- lapply(rd_names, function(nm) {
        m <- reticulate::py_to_r(parts[["reduced_dims"]][[nm]])
        rownames(m) <- cellnames
        m
    })
    names(dims) <- rd_names
    list(
        X = .dgcFromSlots(parts[["X"]], genenames, cellnames), layers = layers,
        colData = .frameFromPython(parts[["obs"]], cellnames),
        rowData = .frameFromPython(parts[["var"]], genenames),
        reducedDims = dims, cellnames = cellnames, genenames = genenames
    )
}

#' Convert an AnnData to a SingleCellExperiment or Seurat object
#'
#' The inverse of [toAnnData()]: `X` becomes the assay `X.name`, layers become
#' assays, `obs`/`var` become colData/rowData (pandas categoricals become
#' factors with all their levels, masked NA become `NA`), and 2-d `obsm`
#' entries become reducedDims (`X_scVI` -> `scVI`, `X_pca` -> `PCA`, ...; for
#' Seurat, lower-case reduction names).
#'
#' @param adata A Python AnnData (reticulate object) or the path of a `.h5ad` file.
#' @param kind `"sce"` for a SingleCellExperiment, `"seurat"` for a Seurat object.
#' @param X.name Name of the assay (or Seurat layer) that receives `X`.
#' @return A SingleCellExperiment or Seurat object.
#' @seealso [toAnnData()]
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
    if (kind == "seurat") return(.seuratFromAnnData(adata, X.name = X.name))
    parts <- .anndataParts(adata)
    assays <- c(stats::setNames(list(parts$X), X.name), parts$layers)
    SingleCellExperiment::SingleCellExperiment(
        assays = assays, colData = parts$colData, rowData = parts$rowData,
        reducedDims = parts$reducedDims
    )
}

#' Read and write .h5ad files
#'
#' `readH5AD()` reads a `.h5ad` file with Python's anndata and converts it with
#' [fromAnnData()]; `writeH5AD()` converts with [toAnnData()] and writes it.
#'
#' @param path File path.
#' @param x A SingleCellExperiment or Seurat object.
#' @param kind,X.name As in [fromAnnData()] / [toAnnData()].
#' @return `readH5AD()`: the object; `writeH5AD()`: `path`, invisibly.
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
    adata$write_h5ad(path.expand(path))
    invisible(path)
}

# A DataFrame with n rows and no columns.
.emptyFrame <- function(n) S4Vectors::DataFrame(x = seq_len(n))[, 0]
