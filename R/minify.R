# Minified scVI data: keep the latent posterior per cell, drop the counts, decode on demand.

.MINIFY_TYPE <- "latent_posterior_parameters"

.isMinified <- function(x) {
    methods::is(x, "SummarizedExperiment") &&
        identical(S4Vectors::metadata(x)$pybridge$minify_type, .MINIFY_TYPE)
}

# The first function of this package in the calls that led here (for messages), or NULL.
.calledFunction <- function() {
    exports <- getNamespaceExports("pybridge")
    for (cl in sys.calls()) {
        f <- cl[[1]]
        if (is.call(f) && identical(f[[1]], as.name("::"))) f <- f[[3]]
        if (is.name(f) && as.character(f) %in% exports) return(as.character(f))
    }
    NULL
}

# Refuse a minified object where counts are read: its counts assay is all zero.
.refuseMinified <- function(x) {
    if (!.isMinified(x)) return(invisible(NULL))
    fn <- .calledFunction()
    stop(if (is.null(fn)) "This" else paste0(fn, "()"), " needs counts, but the object was minified by ",
         "minifySCVI(): its counts are all zero and only each cell's latent posterior is kept. Pass the object ",
         "from before minifySCVI() (e.g. `sce`, not `mini <- minifySCVI(model, sce)`)", call. = FALSE)
}

# The AnnData a model's outputs read, and the cell names: the stored posteriors of a minified
# SingleCellExperiment, the counts of anything else.
.outputInput <- function(model, x, assay.type, batch) {
    if (!.isMinified(x)) return(.modelInput(model, x, assay.type, batch))
    list(adata = .minifiedAnnData(model, x, batch), cells = .orDefault(colnames(x), ncol(x)))
}

.pyColumn <- function(frame, name) {
    v <- reticulate::py_to_r(reticulate::py_get_item(frame, name)$to_numpy())
    dim(v) <- NULL
    as.double(v)
}

#' Minify and decode scVI data
#'
#' `minifySCVI()` makes a SingleCellExperiment much smaller by keeping, in
#' place of its counts, only what `model` needs to reproduce its outputs for
#' each cell: the cell's latent posterior (mean and variance) and its library
#' size. `scviDecode()` returns the expected expression (genes x cells) at
#' each cell's posterior mean, from minified or ordinary data.
#'
#' A minified object stands in for its counts wherever the model's outputs are
#' asked for, with the model that minified it: [scviLatent()],
#' [scviNormalized()], [scviPosteriorSample()], `scviDecode()` and
#' [scviDifferentialExpression()] read each cell's stored posterior (z at the
#' mean `scvi_latent_qzm`, or drawn from the normal with mean
#' `scvi_latent_qzm` and variance `scvi_latent_qzv`) and its stored library
#' size, and give what they give on the counts. Another model, or this one
#' after further training, refuses it (the weights' digest in
#' `metadata(x)$pybridge$minified_by` no longer matches). Functions that need
#' the counts themselves ([trainSCVI()], [runSCVI()], [calculateSCVI()],
#' [splitCounts()], [scviDiagnostics()], [runDestVI()]) refuse it: pass the
#' object from before `minifySCVI()`.
#'
#' Only models trained with the observed library size (the default,
#' `use_observed_lib_size = TRUE`) can minify. The stored fields follow the
#' layout of scvi-tools' minified AnnData (`minify_type`
#' `"latent_posterior_parameters"`).
#'
#' `scviDecode()` also decodes a minified .h5ad or .zarr file left on disk
#' (`x` its path), e.g. an atlas minified by scvi-tools or pybridge
#' (`model.minify(adata).write_h5ad(path)` in Python): it reads the
#' posteriors, library sizes and batches of the chosen `cells` only, and the
#' model's batch column (`model@settings$batch_key`) from the file's cell
#' metadata (obs). [scviDifferentialExpression()] takes such a path too.
#'
#' Both are S4 generics dispatching on `x`: `minifySCVI()` has a method for
#' SingleCellExperiment; `scviDecode()` has one for any data `scviLatent()`
#' accepts, minified or not, and one for a file path (character).
#'
#' @param model An `SCVIModel` handle ([SCVIModel-class]), e.g. from
#'   [trainSCVI()] or `metadata(sce)$pybridge$scVI` after [runSCVI()].
#' @param x `minifySCVI()`: a SingleCellExperiment whose raw counts include
#'   all the model's genes (found by row name, in any order; other rows are
#'   kept, and zeroed too). `scviDecode()`: a
#'   SingleCellExperiment minified by `minifySCVI()` with `model`, data
#'   with the model's genes as for [scviLatent()] (a SummarizedExperiment,
#'   Seurat object or genes x cells count matrix), or the path of a minified
#'   .h5ad or .zarr file of `model`.
#' @param assay.type Assay (Seurat: layer) with the raw counts; default
#'   `"counts"`. `minifySCVI()` reads it and replaces it by zeros; not used
#'   for minified data.
#' @param batch Batch of each cell, for a model trained with a batch: `NULL`
#'   (default: the cell-metadata column named `model@settings$batch_key`), the
#'   name of another colData column, or one value per cell, with values the
#'   model was trained on (`model@settings$batch_levels`). `NULL` for a file.
#' @return
#' `minifySCVI()`: `x`, with the same dimensions, dimnames and other assays,
#' and
#' * assay `assay.type` replaced by an all-zero sparse `dgCMatrix` (genes x
#'   cells, same dimnames);
#' * reducedDims `"scvi_latent_qzm"` and `"scvi_latent_qzv"`: each cell's
#'   latent posterior mean and variance, numeric matrices cells x `n_latent`
#'   with the cell names as row names and no column names;
#' * colData columns `observed_lib_size` (each cell's total count over the
#'   model's genes) and `pybridge_log_normalizer` (the log of the decoder's
#'   normaliser at the posterior mean, so that decoding a few genes does not
#'   decode all of them);
#' * `metadata(x)$pybridge$minify_type`, the string
#'   `"latent_posterior_parameters"` that marks the object as minified, and
#'   `metadata(x)$pybridge$minified_by`, a digest of the model's weights.
#'
#' `scviDecode()`: a dense numeric matrix, genes x cells, row names `genes`
#' (in the order given), column names the cell names of `x`: the expected
#' expression at each cell's posterior mean, scaled to `library.size` (the
#' same values as `scviNormalized()` with `n.samples = 1`). For a file, the
#' chosen cells in the order given, and past `max.dense` bytes an
#' HDF5-backed DelayedArray with the same dimnames, in HDF5Array's dump file
#' (a temporary file unless [HDF5Array::setHDF5DumpDir()] says otherwise).
#' @references
#' Lopez R, Regier J, Cole MB, Jordan MI, Yosef N (2018). Deep generative
#' modeling for single-cell transcriptomics. \emph{Nature Methods} 15:1053-1058.
#' \doi{10.1038/s41592-018-0229-2}
#' @seealso [scviLatent()], [scviNormalized()], [scviPosteriorSample()] and
#'   [scviDifferentialExpression()], which accept minified objects;
#'   [trainSCVI()] and [runSCVI()] to train the model.
#' @name minifySCVI
#' @export
#' @examples
#' if (pybridgeAvailable()) {
#'     counts <- matrix(rpois(2000, 2), 50, 40, dimnames = list(paste0("g", 1:50), paste0("c", 1:40)))
#'     sce <- SingleCellExperiment::SingleCellExperiment(list(counts = counts))
#'     model <- trainSCVI(sce, n_latent = 2, max_epochs = 2, path = tempfile())
#'     mini <- minifySCVI(model, sce)
#'     rho <- scviDecode(model, mini, genes = c("g1", "g2"))
#' }
NULL

#' @rdname minifySCVI
#' @export
setMethod("minifySCVI", "SingleCellExperiment", function(model, x, assay.type = "counts", batch = NULL) {
    if (.isMinified(x)) stop("x is already minified", call. = FALSE)
    input <- .modelInput(model, x, assay.type, batch)
    mini <- .withPython(.pyModel(model)$minify(input$adata), input$context)
    obsm <- function(key) {
        m <- reticulate::py_to_r(reticulate::py_get_item(mini$obsm, key))
        m <- matrix(as.double(m), nrow = nrow(m))
        dimnames(m) <- list(colnames(x), NULL)
        m
    }
    SingleCellExperiment::reducedDim(x, "scvi_latent_qzm") <- obsm("scvi_latent_qzm")
    SingleCellExperiment::reducedDim(x, "scvi_latent_qzv") <- obsm("scvi_latent_qzv")
    x$observed_lib_size <- .pyColumn(mini$obs, "observed_lib_size")
    x$pybridge_log_normalizer <- .pyColumn(mini$obs, "pybridge_log_normalizer")
    zeros <- Matrix::sparseMatrix(i = integer(), j = integer(), x = double(), dims = dim(x),
                                  dimnames = dimnames(x))
    SummarizedExperiment::assay(x, assay.type, withDimnames = FALSE) <- zeros
    meta <- S4Vectors::metadata(x)
    meta$pybridge$minify_type <- .MINIFY_TYPE
    meta$pybridge$minified_by <- reticulate::py_to_r(reticulate::py_get_item(mini$uns, "pybridge_minified_by"))
    S4Vectors::metadata(x) <- meta
    x
})

#' @rdname minifySCVI
#' @export
setMethod("minifySCVI", "ANY", function(model, x, assay.type = "counts", batch = NULL) {
    stop("minifySCVI() needs a SingleCellExperiment, got '", class(x)[1], "'", call. = FALSE)
})

# The digest of the model's weights that minified data record (metadata(x)$pybridge$minified_by).
.modelFingerprint <- function(model) {
    reticulate::py_to_r(.pybridgeModule("pybridge.data.minified")$module_fingerprint(.pyModel(model)$module))
}

# Minified data record the digest of the weights of the model that minified them (`by`; NULL: no record).
.checkMinifiedBy <- function(model, by) {
    if (!is.null(by) && !identical(by, .modelFingerprint(model))) {
        stop("x was minified by another model (or by this one before further training): its stored latent ",
             "posteriors are not this model's. Pass the model that minified x, or minify the counts again with ",
             "this model: minifySCVI(model, sce)", call. = FALSE)
    }
    invisible()
}

# The minified AnnData for a minified SingleCellExperiment.
.minifiedAnnData <- function(model, x, batch) {
    for (key in c("scvi_latent_qzm", "scvi_latent_qzv")) {
        if (!key %in% SingleCellExperiment::reducedDimNames(x)) {
            stop("the minified data lack reducedDim '", key, "'; minify again with minifySCVI()", call. = FALSE)
        }
    }
    for (key in c("observed_lib_size", "pybridge_log_normalizer")) {
        if (!key %in% colnames(SummarizedExperiment::colData(x))) {
            stop("the minified data lack colData column '", key, "'; minify again with minifySCVI()", call. = FALSE)
        }
    }
    .checkMinifiedBy(model, S4Vectors::metadata(x)$pybridge$minified_by)
    obs <- .emptyFrame(ncol(x))
    b <- .resolveBatch(x, if (is.null(batch)) model@settings$batch_key else batch, ncol(x),
                       default_key = if (is.null(model@settings$batch_key)) "batch" else model@settings$batch_key)
    if (!is.null(b)) obs[[b$key]] <- b$values
    cells <- .orDefault(colnames(x), ncol(x))
    .withPython(.pybridgeModule("pybridge.data.minified")$minified_from_arrays(
        SingleCellExperiment::reducedDim(x, "scvi_latent_qzm"), SingleCellExperiment::reducedDim(x, "scvi_latent_qzv"),
        .arr(as.double(x$observed_lib_size)), var_names = as.list(model@settings$genes),
        obs = .frameToPandas(obs, cells), log_normalizer = .arr(as.double(x$pybridge_log_normalizer))
    ))
}

# The genes to decode: all of the model's by default, else the given ones, which must be the model's.
.decodeGenes <- function(model, genes) {
    if (is.null(genes)) return(model@settings$genes)
    missing <- setdiff(genes, model@settings$genes)
    if (length(missing)) {
        stop(length(missing), " of the genes are not in the model (e.g. '", missing[1], "')", call. = FALSE)
    }
    genes
}

# Expected expression (genes x cells, no dimnames) at the posterior mean of the cells `rows` (0-based
# positions; NULL: all) of `adata`.
.decodeRows <- function(model, adata, rows, genes, library.size, context = NULL) {
    out <- .withPython(.pyModel(model)$decode(adata = adata, cells = rows, genes = reticulate::r_to_py(as.list(genes)),
                                             library_size = library.size, n_latent = NULL, chunk_size = 8192L),
                       context)
    out <- t(reticulate::py_to_r(out))
    storage.mode(out) <- "double"
    out
}

.decode <- function(model, x, genes, library.size, assay.type, batch) {
    genes <- .decodeGenes(model, genes)
    input <- .outputInput(model, x, assay.type, batch)
    out <- .decodeRows(model, input$adata, NULL, genes, library.size, input$context)
    dimnames(out) <- list(genes, input$cells)
    out
}

#' @rdname minifySCVI
#' @param genes Genes to decode, by name: `NULL` (default) for all of the
#'   model's genes (`model@settings$genes`).
#' @param library.size Total counts per cell the expression is scaled to:
#'   default 1 (each gene's share of the cell's expression, so that over all
#'   genes each column sums to 1), e.g. `1e4` for counts per 10,000, or
#'   `"latent"` for each cell's own library size.
#' @export
setMethod("scviDecode", "ANY", function(model, x, genes = NULL, library.size = 1, assay.type = "counts", batch = NULL) {
    .decode(model, x, genes, library.size, assay.type, batch)
})

# ---------------------------------------------------------------- minified files on disk

#' @rdname minifySCVI
#' @param cells For a file: the cells to decode, `NULL` (default) for all,
#'   or one of: their 1-based positions in the file; a logical vector with
#'   one value per cell of the file; their names (this reads all cell names
#'   of the file); or a list naming one cell-metadata (obs) column of the
#'   file and the wanted values, e.g. `list(cell_type = c("B", "T"))` (this
#'   reads that column only). Only the chosen cells are read.
#' @param ... For a file: `cells` and `max.dense`.
#' @param max.dense For a file: the largest result, in bytes (8 per gene and
#'   cell), returned as a dense matrix; default
#'   `getOption("pybridge.max.dense", 5e8)`. A larger one is decoded in blocks
#'   of at most `max.dense` bytes, written to an HDF5 file and returned as a
#'   DelayedArray (needs the Bioconductor package HDF5Array).
#' @export
setMethod("scviDecode", "character", function(model, x, genes = NULL, library.size = 1, assay.type = "counts",
                                              batch = NULL, cells = NULL,
                                              max.dense = getOption("pybridge.max.dense", 5e8)) {
    if (!is.numeric(max.dense) || length(max.dense) != 1L || is.na(max.dense) || max.dense < 0) {
        stop("max.dense must be one number of bytes, e.g. max.dense = 5e8", call. = FALSE)
    }
    genes <- .decodeGenes(model, genes)
    store <- .openMinifiedFile(model, x, batch)
    rows <- .fileCells(store, cells, "cells")
    names <- .fileCellNames(store, rows)
    decode <- function(r) .decodeRows(model, store, .arr(r), genes, library.size)
    if (8 * length(genes) * length(rows) <= max.dense) {
        out <- decode(rows)
        dimnames(out) <- list(genes, names)
        return(out)
    }
    .decodeToHDF5(decode, rows, genes, names, max.dense)
})

# A minified .h5ad or .zarr file of `model`, opened for reading the cells each call asks for
# (pybridge's MinifiedFile), after the checks that speak R: a path that exists, minified data, the
# model's own posteriors and the model's batch column.
.openMinifiedFile <- function(model, path, batch) {
    if (!is.null(batch)) {
        stop("batch must be NULL for a file: each cell's batch is read from the file's cell-metadata (obs) ",
             "column named model@settings$batch_key", call. = FALSE)
    }
    if (length(path) != 1L || is.na(path) || !file.exists(path)) {
        stop("x must be the path of a minified .h5ad or .zarr file (e.g. written by scvi-tools or pybridge ",
             "after minifying), or a SingleCellExperiment; got ",
             if (length(path) == 1L) paste0("'", path, "', which does not exist") else paste(length(path), "strings"),
             call. = FALSE)
    }
    store <- .withPython(.pybridgeModule("pybridge.data.minified_file")$MinifiedFile(path.expand(path)))
    minified <- .pybridgeModule("pybridge.data.minified")
    if (!reticulate::py_to_r(minified$is_minified(store))) {
        stop("'", path, "' is not minified: it holds counts. Use the SingleCellExperiment methods: read it ",
             "with sce <- readH5AD(\"", path, "\") and pass sce, or minify it with minifySCVI(model, sce)",
             call. = FALSE)
    }
    .withPython(minified$check_minified(store))
    .checkMinifiedBy(model, .fromPython(store$uns$get("pybridge_minified_by")))
    key <- model@settings$batch_key
    if (!is.null(key) && !key %in% .fileColumns(store)) {
        stop("'", path, "' lacks the cell-metadata (obs) column '", key, "' with each cell's batch, which the ",
             "model was trained with", call. = FALSE)
    }
    store
}

.fileColumns <- function(store) as.character(unlist(.fromPython(store$obs$columns$tolist())))

# Python's 0-based positions of the cells `cells` (see ?scviDecode) of a minified file; `arg` names
# the R argument in errors.
.fileCells <- function(store, cells, arg) {
    n <- .fromPython(store$n_obs)
    if (is.null(cells)) return(seq.int(0L, length.out = n))
    if (is.list(cells)) {
        column <- names(cells)
        if (length(cells) != 1L || is.null(column) || !nzchar(column) || anyNA(cells[[1]])) {
            stop(arg, " as a list names one cell-metadata (obs) column and the wanted values, e.g. ", arg,
                 " = list(cell_type = \"B\")", call. = FALSE)
        }
        if (!column %in% .fileColumns(store)) {
            stop(arg, ": '", column, "' is not a cell-metadata (obs) column of the file; it has ",
                 paste0("'", .fileColumns(store), "'", collapse = ", "), call. = FALSE)
        }
        values <- reticulate::r_to_py(as.list(cells[[1]]))
        cells <- as.logical(.fromPython(reticulate::py_get_item(store$obs, column)$isin(values)$to_numpy()))
        if (!any(cells)) stop(arg, ": no cell has one of the values in column '", column, "'", call. = FALSE)
    }
    if (is.character(cells)) {
        pos <- match(cells, as.character(unlist(.fromPython(store$obs_names$tolist()))))
        if (anyNA(pos)) {
            stop(arg, ": ", sum(is.na(pos)), " of the names are not cells of the file (e.g. '",
                 cells[is.na(pos)][1], "')", call. = FALSE)
        }
    } else if (is.logical(cells)) {
        if (length(cells) != n || anyNA(cells)) {
            stop(arg, " as a logical vector needs TRUE or FALSE for each of the file's ", n, " cells", call. = FALSE)
        }
        pos <- which(cells)
    } else if (is.numeric(cells) && !anyNA(cells) && all(cells >= 1 & cells <= n & cells == round(cells))) {
        pos <- cells
    } else {
        stop(arg, " must be cell names, positions in 1..", n, ", a logical vector with one value per cell, or ",
             "list(<obs column> = <values>)", call. = FALSE)
    }
    as.integer(pos) - 1L
}

# The names of the cells at 0-based positions `rows` of a minified file (only those are read).
.fileCellNames <- function(store, rows) {
    as.character(unlist(.fromPython(reticulate::py_get_item(store$obs$iloc, .arr(rows))$index$tolist())))
}

# `decode(rows)` block after block into an HDF5 file (HDF5Array's dump file, see HDF5Array::setHDF5DumpDir()),
# so that R holds at most `max.dense` bytes of the result at a time; the file's matrix as a DelayedArray.
.decodeToHDF5 <- function(decode, rows, genes, names, max.dense) {
    if (!requireNamespace("HDF5Array", quietly = TRUE)) {
        stop("the decoded matrix (", length(genes), " genes x ", length(rows), " cells, ",
             format(8 * length(genes) * length(rows)), " bytes) exceeds max.dense = ", format(max.dense),
             " bytes; larger results come as an HDF5-backed DelayedArray, which needs the Bioconductor package ",
             "HDF5Array: BiocManager::install(\"HDF5Array\"). Or ask for fewer genes or cells, or raise the ",
             "limit (max.dense = , or options(pybridge.max.dense = ))", call. = FALSE)
    }
    block <- as.integer(max(1, floor(max.dense / (8 * length(genes)))))
    sink <- HDF5Array::HDF5RealizationSink(c(length(genes), length(rows)), dimnames = list(genes, names),
                                           type = "double")
    grid <- DelayedArray::RegularArrayGrid(dim(sink), c(length(genes), block))
    for (b in seq_along(grid)) {
        cols <- seq.int((b - 1L) * block + 1L, min(b * block, length(rows)))
        DelayedArray::write_block(sink, grid[[b]], decode(rows[cols]))
    }
    DelayedArray::close(sink)
    methods::as(sink, "DelayedArray")
}
