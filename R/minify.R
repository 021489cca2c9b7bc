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
#' `minifySCVI()` replaces the counts of `x` by what the model needs to decode
#' them: the latent posterior mean and variance of each cell (reducedDims
#' `"scvi_latent_qzm"`, `"scvi_latent_qzv"`), its observed library size and
#' log-normaliser (colData `observed_lib_size`, `pybridge_log_normalizer`).
#' The counts become an all-zero sparse matrix,
#' `metadata(x)$pybridge$minify_type` is `"latent_posterior_parameters"`
#' (the layout of scvi-tools' minified AnnData) and
#' `metadata(x)$pybridge$minified_by` a digest of the model's weights, which
#' ties the posteriors to the model. Only for models trained with the observed
#' library size (the default).
#'
#' `scviDecode()` returns the expected expression (genes x cells) at the
#' posterior mean, from minified or ordinary data.
#'
#' A minified object stands in for its counts wherever the model's outputs are
#' asked for, with the model that minified it: [scviLatent()],
#' [scviNormalized()], [scviPosteriorSample()], `scviDecode()` and
#' [scviDifferentialExpression()] read each cell's stored posterior (z at the
#' mean `scvi_latent_qzm`, or drawn from the normal with mean
#' `scvi_latent_qzm` and variance `scvi_latent_qzv`) and its stored library
#' size, and give what they give on the counts. Functions that need the counts
#' themselves ([trainSCVI()], [runSCVI()], [calculateSCVI()], [splitCounts()],
#' [scviDiagnostics()], [runDestVI()]) refuse it: pass the object from before
#' `minifySCVI()`.
#'
#' Both are S4 generics dispatching on `x`: `minifySCVI()` has a method for
#' SingleCellExperiment; `scviDecode()` has one for any data `scviLatent()`
#' accepts, minified or not.
#'
#' @param model An `SCVIModel`.
#' @param x `minifySCVI()`: a SingleCellExperiment with the model's genes.
#'   `scviDecode()`: a SingleCellExperiment minified by `minifySCVI()`, or
#'   data with the model's genes as for [scviLatent()] (a SummarizedExperiment,
#'   Seurat object or genes x cells count matrix).
#' @param assay.type Assay with raw counts.
#' @param batch Batch of each cell, as for [trainSCVI()].
#' @return `minifySCVI()`: the minified SingleCellExperiment.
#'   `scviDecode()`: a dense genes x cells matrix.
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
    .pybridgeModule("pybridge.data.minified")$minified_from_arrays(
        SingleCellExperiment::reducedDim(x, "scvi_latent_qzm"), SingleCellExperiment::reducedDim(x, "scvi_latent_qzv"),
        .arr(as.double(x$observed_lib_size)), var_names = as.list(model@settings$genes),
        obs = .frameToPandas(obs, cells), log_normalizer = .arr(as.double(x$pybridge_log_normalizer))
    )
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
#' @param genes Genes to decode (default: all of the model's genes).
#' @param library.size Library size the expression is scaled to (1 gives proportions).
#' @export
setMethod("scviDecode", "ANY", function(model, x, genes = NULL, library.size = 1, assay.type = "counts", batch = NULL) {
    .decode(model, x, genes, library.size, assay.type, batch)
})
