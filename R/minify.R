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
#' Both are S4 generics dispatching on `x`: `minifySCVI()` has a method for
#' SingleCellExperiment; `scviDecode()` has one for any data `scviLatent()`
#' accepts, minified or not.
#'
#' @param model An `SCVIModel` handle ([SCVIModel-class]), e.g. from
#'   [trainSCVI()] or `metadata(sce)$pybridge$scVI` after [runSCVI()].
#' @param x `minifySCVI()`: a SingleCellExperiment whose raw counts include
#'   all the model's genes (found by row name, in any order; other rows are
#'   kept, and zeroed too). `scviDecode()`: a
#'   SingleCellExperiment minified by `minifySCVI()` with `model`, or data
#'   with the model's genes as for [scviLatent()] (a SummarizedExperiment,
#'   Seurat object or genes x cells count matrix).
#' @param assay.type Assay (Seurat: layer) with the raw counts; default
#'   `"counts"`. `minifySCVI()` reads it and replaces it by zeros.
#' @param batch Batch of each cell, for a model trained with a batch: `NULL`
#'   (default: the cell-metadata column named `model@settings$batch_key`), the
#'   name of another colData column, or one value per cell, with values the
#'   model was trained on (`model@settings$batch_levels`).
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
#' same values as `scviNormalized()` with `n.samples = 1`).
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
    by <- S4Vectors::metadata(x)$pybridge$minified_by
    if (!is.null(by) && !identical(by, .modelFingerprint(model))) {
        stop("x was minified by another model (or by this one before further training): its stored latent ",
             "posteriors are not this model's. Pass the model that minified x, or minify the counts again with ",
             "this model: minifySCVI(model, sce)", call. = FALSE)
    }
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

# Expected expression (genes x cells) at the posterior mean.
.decode <- function(model, x, genes, library.size, assay.type, batch) {
    if (is.null(genes)) genes <- model@settings$genes
    missing <- setdiff(genes, model@settings$genes)
    if (length(missing)) {
        stop(length(missing), " of the genes are not in the model (e.g. '", missing[1], "')", call. = FALSE)
    }
    input <- .outputInput(model, x, assay.type, batch)
    out <- .withPython(.pyModel(model)$decode(adata = input$adata, genes = reticulate::r_to_py(as.list(genes)),
                                             library_size = library.size, n_latent = NULL, chunk_size = 8192L),
                       input$context)
    out <- t(reticulate::py_to_r(out))
    storage.mode(out) <- "double"
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
