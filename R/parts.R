# Objects <-> parts: the one place where SingleCellExperiment, SummarizedExperiment and Seurat
# objects are taken apart and put together again. Two callers use it:
#   * this package's reticulate path (R hosts Python): toAnnData() and fromAnnData() hand the
#     parts to Python's pybridge.bridge.handoff;
#   * Python's rpy2 path (Python hosts R): pybridge.bridge.rds calls .toPlainParts() and
#     .fromPlainParts() as `pybridge:::.toPlainParts` etc. Their arguments and the layout below
#     are a contract with that module (and with handoff.anndata_parts()): change them together.
#
# Parts (.objectToParts() returns them, .objectFromParts() takes them), as R objects:
#   X             genes x cells counts (any matrix class; a dgCMatrix with dimnames when assembling)
#   layers        named list of further genes x cells matrices (assays / Seurat layers)
#   obs, var      cell and gene tables (DataFrame or data.frame)
#   obs_names, var_names   cell and gene names (duplicates and non-ASCII allowed)
#   reduced_dims  named list of cells x k double matrices, under SingleCellExperiment names
#                 (PCA, UMAP, TSNE, scVI, ...)
# Plain parts (.partsToPlain(), .partsFromPlain()) are the same with every matrix as its
# dgCMatrix slots list(x, i, p, Dim) and every table as a list of column specs (.columnSpec()):
# atomic vectors and lists only, which reticulate and rpy2 both carry without loss. They are
# the layout of Python's handoff.anndata_parts(); R -> Python and Python -> R differ only in
# the factor codes (see .columnSpec()).

# An R vector as a 1-d array, which reticulate hands to NumPy without copying
# (a plain vector would become a Python list); rpy2 reads it like a vector.
.arr <- function(v) {
    dim(v) <- length(v)
    v
}

.plainVector <- function(v) {
    dim(v) <- NULL
    v
}

.orDefault <- function(names, n) {
    if (is.null(names)) as.character(seq_len(n)) else names
}

# A DataFrame with n rows and no columns.
.emptyFrame <- function(n) S4Vectors::DataFrame(x = seq_len(n))[, 0]

# ---------------------------------------------------------------- matrices

.checkNumericMatrix <- function(m, what) {
    if (is.matrix(m) && !is.numeric(m) && !is.logical(m)) {
        stop(what, " is a ", typeof(m), " matrix; counts must be numeric", call. = FALSE)
    }
    invisible(m)
}

# Any supported genes x cells matrix as a dgCMatrix.
.asDgCMatrix <- function(m, what = "the counts") {
    if (methods::is(m, "dgCMatrix")) return(m)
    if (methods::is(m, "DelayedMatrix")) return(methods::as(m, "dgCMatrix"))
    if (is.matrix(m)) {
        .checkNumericMatrix(m, what)
        return(methods::as(methods::as(methods::as(m, "dMatrix"), "generalMatrix"), "CsparseMatrix"))
    }
    if (!methods::is(m, "Matrix")) {
        stop(what, " has class '", class(m)[1], "', expected a matrix, dgCMatrix or DelayedMatrix; ",
             "convert it with as(x, \"dgCMatrix\")", call. = FALSE)
    }
    methods::as(methods::as(methods::as(m, "CsparseMatrix"), "generalMatrix"), "dMatrix")
}

# The slots of a dgCMatrix (genes x cells): also the data/indices/indptr of the cells x genes CSR.
.dgcSlots <- function(m) list(x = .arr(m@x), i = .arr(m@i), p = .arr(m@p), Dim = m@Dim)

# dgCMatrix from slots list(x, i, p, Dim), as R vectors or 1-d arrays.
.dgcFromPlain <- function(slots, rownames = NULL, colnames = NULL) {
    methods::new("dgCMatrix", x = as.double(.plainVector(slots$x)), i = as.integer(.plainVector(slots$i)),
                 p = as.integer(.plainVector(slots$p)), Dim = as.integer(unlist(slots$Dim)),
                 Dimnames = list(rownames, colnames))
}

# reducedDims / embeddings as plain double matrices.
.denseDims <- function(dims) {
    lapply(dims, function(m) {
        if (!is.matrix(m)) m <- as.matrix(m)
        storage.mode(m) <- "double"
        m
    })
}

# ---------------------------------------------------------------- tables, column by column

# One column as list(name, kind, values, na[, levels, ordered]): NA explicit in `na`, a
# placeholder in `values`, strings in UTF-8. Factor codes going to Python are 0-based with -1
# at NA (pandas' codes); the specs Python sends back (handoff.frame_to_columns) carry R's
# 1-based codes, which .columnFromSpec() reads.
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

# Column specs of a data.frame / DataFrame (duplicated names kept).
.frameSpecs <- function(df) {
    lapply(seq_len(ncol(df)), function(j) .columnSpec(enc2utf8(colnames(df)[j]), df[[j]]))
}

# R vector from one column spec coming from Python (factor codes 1-based, NA marked in `na`).
.columnFromSpec <- function(spec) {
    values <- .plainVector(spec$values)
    na <- as.logical(.plainVector(spec$na))
    if (spec$kind == "factor") {
        values <- as.integer(values)
        values[na] <- NA_integer_
        levels <- as.character(.plainVector(spec$levels))
        return(structure(values, levels = levels, class = c(if (isTRUE(spec$ordered)) "ordered", "factor")))
    }
    values <- switch(spec$kind, logical = as.logical(values), integer = as.integer(values),
                     double = as.double(values), character = as.character(values),
                     stop("unknown column kind '", spec$kind, "'", call. = FALSE))
    values[na] <- NA
    values
}

# S4Vectors DataFrame from column specs, keeping duplicated names.
.frameFromSpecs <- function(specs, rownames) {
    if (length(specs) == 0L) {
        out <- .emptyFrame(length(rownames))
        rownames(out) <- rownames
        return(out)
    }
    cols <- lapply(specs, .columnFromSpec)
    names(cols) <- vapply(specs, function(s) as.character(s$name), "")
    out <- S4Vectors::DataFrame(cols, check.names = FALSE)
    rownames(out) <- rownames
    out
}

# ---------------------------------------------------------------- objects -> parts

# Parts of a SingleCellExperiment / SummarizedExperiment (X: assay `X.name`; reducedDims only
# for SingleCellExperiment).
.sceToParts <- function(x, X.name = "counts") {
    assays <- SummarizedExperiment::assays(x, withDimnames = FALSE)
    if (!X.name %in% names(assays)) {
        stop("assay '", X.name, "' not found; available: ", paste(names(assays), collapse = ", "),
             ". Pass one of them as the assay to convert", call. = FALSE)
    }
    dims <- if (methods::is(x, "SingleCellExperiment")) as.list(SingleCellExperiment::reducedDims(x)) else list()
    list(
        X = assays[[X.name]], layers = as.list(assays)[setdiff(names(assays), X.name)],
        obs = SummarizedExperiment::colData(x), var = SummarizedExperiment::rowData(x),
        obs_names = .orDefault(colnames(x), ncol(x)), var_names = .orDefault(rownames(x), nrow(x)),
        reduced_dims = .denseDims(dims)
    )
}

# Parts of a SingleCellExperiment, SummarizedExperiment or Seurat object. `X.name`: the assay
# (Seurat: the layer) that becomes X; `assay`: the Seurat assay (default: the active one).
.objectToParts <- function(x, X.name = "counts", assay = NULL) {
    if (methods::is(x, "Seurat")) return(.seuratToParts(x, X.name = X.name, assay = assay))
    if (methods::is(x, "SummarizedExperiment")) return(.sceToParts(x, X.name = X.name))
    stop("the object has class '", class(x)[1], "'; expected a SingleCellExperiment or Seurat object ",
         "(or a SummarizedExperiment)", call. = FALSE)
}

# Plain parts: matrices as dgCMatrix slots, tables as column specs, names in UTF-8.
.partsToPlain <- function(parts) {
    slots <- function(m, nm) .dgcSlots(.asDgCMatrix(m, paste0("assay '", nm, "'")))
    list(
        X = slots(parts$X, "X"), layers = Map(slots, parts$layers, names(parts$layers)),
        obs = .frameSpecs(parts$obs), var = .frameSpecs(parts$var),
        obs_names = .arr(enc2utf8(as.character(parts$obs_names))),
        var_names = .arr(enc2utf8(as.character(parts$var_names))),
        reduced_dims = .denseDims(parts$reduced_dims)
    )
}

# ---------------------------------------------------------------- parts -> objects

# Parts (dgCMatrix with dimnames, DataFrames with row names) from plain parts.
.partsFromPlain <- function(plain) {
    cells <- as.character(.plainVector(plain$obs_names))
    genes <- as.character(.plainVector(plain$var_names))
    layers <- lapply(plain$layers, .dgcFromPlain, rownames = genes, colnames = cells)
    dims <- lapply(plain$reduced_dims, function(m) {
        m <- as.matrix(m)
        rownames(m) <- cells
        m
    })
    list(
        X = .dgcFromPlain(plain$X, genes, cells), layers = layers,
        obs = .frameFromSpecs(plain$obs, cells), var = .frameFromSpecs(plain$var, genes),
        obs_names = cells, var_names = genes, reduced_dims = dims
    )
}

# A SingleCellExperiment (kind "sce") or Seurat object (kind "seurat") from parts; X becomes
# the assay (Seurat: layer) `X.name`.
.objectFromParts <- function(parts, kind = c("sce", "seurat"), X.name = "counts") {
    kind <- match.arg(kind)
    if (kind == "seurat") return(.seuratFromParts(parts, X.name = X.name))
    SingleCellExperiment::SingleCellExperiment(
        assays = c(stats::setNames(list(parts$X), X.name), parts$layers),
        colData = parts$obs, rowData = parts$var, reducedDims = parts$reduced_dims
    )
}

# ---------------------------------------------------------------- entry points for Python (rpy2)

# Plain parts of an object (pybridge.bridge.rds.from_sce).
.toPlainParts <- function(x, X.name = "counts", assay = NULL) {
    .partsToPlain(.objectToParts(x, X.name = X.name, assay = assay))
}

# An object from plain parts (pybridge.bridge.rds.to_sce).
.fromPlainParts <- function(plain, kind = c("sce", "seurat"), X.name = "counts") {
    .objectFromParts(.partsFromPlain(plain), kind = match.arg(kind), X.name = X.name)
}
