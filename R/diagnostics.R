# Held-out diagnostics (count splitting) and Bayesian differential expression for scVI models.

#' Split counts into two folds
#'
#' Splits each count of `assay.type` binomially: `fold_A` gets each count
#' with probability `fraction`, `fold_B` the rest, so `fold_A + fold_B`
#' equals the counts exactly. Train on `fold_A` and evaluate on `fold_B` with
#' [scviDiagnostics()].
#'
#' @param x A SingleCellExperiment or SummarizedExperiment of raw counts.
#' @param fraction Expected share of each count in `fold_A`, in (0, 1).
#' @param seed Random seed.
#' @param assay.type Assay with raw counts.
#' @return `x` with dgCMatrix assays `"fold_A"` and `"fold_B"` added.
#' @export
#' @examples
#' if (pybridgeAvailable()) {
#'     counts <- matrix(rpois(2000, 2), 50, 40, dimnames = list(paste0("g", 1:50), paste0("c", 1:40)))
#'     sce <- splitCounts(SingleCellExperiment::SingleCellExperiment(list(counts = counts)))
#'     SummarizedExperiment::assayNames(sce)
#' }
splitCounts <- function(x, fraction = 0.5, seed = 0, assay.type = "counts") {
    if (!methods::is(x, "SummarizedExperiment")) {
        stop("splitCounts() needs a SingleCellExperiment or SummarizedExperiment, got '", class(x)[1], "'",
             call. = FALSE)
    }
    if (!is.numeric(fraction) || length(fraction) != 1L || !(fraction > 0 && fraction < 1)) {
        stop("fraction must be a single number in (0, 1), got ", deparse(fraction), call. = FALSE)
    }
    parts <- .countsOf(x, assay.type)
    folds <- .withPython(.pybridgeModule("pybridge.diagnostics.countsplit")$count_split(
        .countsToPython(parts$counts), fraction, NULL, as.integer(seed)))
    h <- .handoff()
    for (k in 1:2) {
        m <- .dgcFromSlots(h$csr_to_dgc_slots(reticulate::py_get_item(folds, k - 1L)), rownames(x), colnames(x))
        SummarizedExperiment::assay(x, c("fold_A", "fold_B")[k], withDimnames = FALSE) <- m
    }
    x
}

#' Held-out diagnostics of an scVI model
#'
#' Evaluates `model` on the held-out fold of count-split data and writes
#' `metrics.json`, figures and `report.html` to `out.dir`, through Python's
#' `pybridge.diagnostics.report.build_report()`. The model must have been trained on the
#' `train.layer` assay of `x` (e.g. `trainSCVI(splitCounts(x), assay.type =
#' "fold_A")`); `test.layer` holds the other fold. Metrics of a model trained
#' on all counts are meaningless: the held-out fold must be unseen.
#'
#' @param model An `SCVIModel` trained on `train.layer`.
#' @param x A SingleCellExperiment with assays `train.layer` and `test.layer`
#'   (see [splitCounts()]).
#' @param out.dir Directory for the report.
#' @param train.layer,test.layer Assays with the training and held-out folds.
#' @param batch Batch of each cell, as for [trainSCVI()].
#' @param seed Random seed.
#' @param ... Further arguments of `build_report()` (e.g. `compare_likelihoods`).
#' @return The metrics (parsed `metrics.json`) as a list, with the report
#'   directory in attribute `"out.dir"`.
#' @export
scviDiagnostics <- function(model, x, out.dir = tempfile("pybridge-report-"), train.layer = "fold_A",
                            test.layer = "fold_B", batch = NULL, seed = 0, ...) {
    .refuseMinified(x)
    for (layer in c(train.layer, test.layer)) {
        if (!layer %in% SummarizedExperiment::assayNames(x)) {
            stop("assay '", layer, "' not found; split the counts first with splitCounts()", call. = FALSE)
        }
    }
    .pyModel(model)
    input <- .modelInput(model, x, train.layer, batch)
    for (layer in c(train.layer, test.layer)) {
        m <- SummarizedExperiment::assay(x, layer, withDimnames = FALSE)
        reticulate::py_set_item(input$adata$layers, layer, .countsToPython(m, paste0("assay '", layer, "'")))
    }
    h5ad <- tempfile(fileext = ".h5ad")
    on.exit(unlink(h5ad), add = TRUE)
    input$adata$write_h5ad(h5ad)
    dir.create(out.dir, recursive = TRUE, showWarnings = FALSE)
    model.dir <- .layerModelDir(model, train.layer)
    on.exit(if (model.dir != model@path) unlink(model.dir, recursive = TRUE), add = TRUE)
    .withPython(.pybridgeModule("pybridge.diagnostics.report")$build_report(
        model.dir, h5ad, normalizePath(out.dir), train_layer = train.layer, test_layer = test.layer,
        accelerator = "cpu", seed = as.integer(seed), ...), input$context)
    json <- reticulate::import("json", convert = FALSE)
    path <- file.path(normalizePath(out.dir), "metrics.json")
    metrics <- reticulate::py_to_r(json$loads(paste(readLines(path, warn = FALSE, encoding = "UTF-8"),
                                                    collapse = "\n")))
    attr(metrics, "out.dir") <- normalizePath(out.dir)
    metrics
}

# The report checks that the model read `train.layer`. A model trained from R read the
# assay from AnnData's X: record, in a temporary copy, that those counts were `train.layer`.
.layerModelDir <- function(model, train.layer) {
    layer <- reticulate::py_to_r(.pyModel(model)$registry$layer)
    if (identical(layer, train.layer)) return(model@path)
    if (!is.null(layer)) {
        stop("the model was trained on layer '", layer, "', not on '", train.layer, "'; pass train.layer = '",
             layer, "'", call. = FALSE)
    }
    copy <- .pybridgeModule()$SCVI$load(model@path)
    reticulate::py_set_attr(copy$registry, "layer", train.layer)
    dir <- tempfile("pybridge-model-")
    copy$save(dir, overwrite = TRUE)
    dir
}

#' Bayesian differential expression with an scVI model
#'
#' Compares cells of `group1` with `group2` (or with all other cells), as
#' scvi-tools' `differential_expression()`: `"vanilla"` reports Bayes factors
#' of higher expression, `"change"` the posterior probability of a log
#' fold-change beyond `delta`, with an FDR-controlled `is_de_fdr` column.
#'
#' An S4 generic dispatching on `x`, with methods for SummarizedExperiment
#' and SingleCellExperiment (`groupby` and `batch` may name colData columns,
#' `assay.type` is an assay), Seurat (meta.data columns; `assay.type` is a
#' layer) and any other data (`ANY`: a genes x cells matrix, dgCMatrix or
#' DelayedMatrix of counts; `groupby` and `batch` give one value per cell).
#'
#' On a SingleCellExperiment minified by [minifySCVI()], the posterior samples
#' come from each cell's stored latent posterior; the raw-count columns are
#' left out (there are no counts), and `mode = "change"` needs a given
#' `pseudocounts =` (its estimate reads the counts).
#'
#' @param model An `SCVIModel`.
#' @param x Data with the model's genes, as for [scviLatent()], or a
#'   SingleCellExperiment minified by [minifySCVI()].
#' @param groupby Column of the cell metadata with the groups, or one value per
#'   cell. `NULL` to compare cells given as `group1`/`group2` indices.
#' @param group1 Group(s) to test (default with `groupby`: each group in turn,
#'   one vs rest), or with `groupby = NULL` the indices (1-based) or a logical
#'   vector of the first cells.
#' @param group2 Reference group, or cell indices/logical; `NULL` for the rest.
#' @param mode `"vanilla"` or `"change"`.
#' @param delta Smallest log fold-change counted as a change (`"change"` mode).
#' @param fdr.target Target false discovery rate.
#' @param batch.correction Average over batches?
#' @param assay.type Assay with raw counts.
#' @param batch Batch of each cell, as for [trainSCVI()].
#' @param ... Further arguments of Python's `differential_expression()`
#'   (e.g. `pseudocounts`, `n_samples_overall`, `seed`, `all_stats`).
#' @return A data.frame, one row per gene and comparison; column `gene`;
#'   without the raw-count columns (`raw_mean1`, `non_zeroes_proportion1`,
#'   `raw_normalized_mean1` and those of group 2) on minified data.
#' @name scviDifferentialExpression
#' @export
NULL

# One method body for every type: .modelInput() and .resolveBatch() handle the differences.
.differentialExpressionMethod <- function(model, x, groupby = NULL, group1 = NULL, group2 = NULL,
                                          mode = c("vanilla", "change"), delta = 0.25, fdr.target = 0.05,
                                          batch.correction = FALSE, assay.type = "counts", batch = NULL, ...) {
    .differentialExpression(model, x, groupby, group1, group2, match.arg(mode), delta, fdr.target,
                            batch.correction, assay.type, batch, ...)
}

#' @rdname scviDifferentialExpression
#' @export
setMethod("scviDifferentialExpression", "SummarizedExperiment", .differentialExpressionMethod)

#' @rdname scviDifferentialExpression
#' @export
setMethod("scviDifferentialExpression", .SEURAT_CLASS, .differentialExpressionMethod)

#' @rdname scviDifferentialExpression
#' @export
setMethod("scviDifferentialExpression", "ANY", .differentialExpressionMethod)

.differentialExpression <- function(model, x, groupby, group1, group2, mode, delta, fdr.target,
                                    batch.correction, assay.type, batch, ...) {
    input <- .outputInput(model, x, assay.type, batch)
    extra <- list(...)
    if (.isMinified(x)) extra <- .minifiedDEArgs(mode, extra)
    n <- length(input$cells)
    idx <- function(g) {
        if (is.null(g)) return(NULL)
        if (is.logical(g)) {
            if (length(g) != n) stop("a logical cell selection needs one value per cell (", n, ")", call. = FALSE)
            g <- which(g)
        }
        if (!is.numeric(g) || any(g < 1 | g > n)) stop("cell indices must lie in 1..", n, call. = FALSE)
        .arr(as.integer(g) - 1L)
    }
    args <- list(adata = input$adata, mode = mode, delta = delta, batch_correction = batch.correction,
                 fdr_target = fdr.target)
    if (is.null(groupby)) {
        if (is.null(group1)) stop("pass groupby = (a cell-metadata column) or group1 = (cells)", call. = FALSE)
        args$idx1 <- idx(group1)
        args$idx2 <- idx(group2)
    } else {
        key <- "pybridge_de_group"
        g <- .resolveBatch(x, groupby, n, default_key = key)
        reticulate::py_set_item(input$adata$obs, key,
                                reticulate::r_to_py(as.character(g$values)))
        args$groupby <- key
        if (!is.null(group1)) args$group1 <- reticulate::r_to_py(as.list(as.character(group1)))
        if (!is.null(group2)) args$group2 <- as.character(group2)
    }
    df <- .withPython(do.call(.pyModel(model)$differential_expression, c(args, extra)), input$context)
    out <- reticulate::py_to_r(df$rename_axis("gene")$reset_index())
    rownames(out) <- NULL
    out
}

# The further arguments of DE on minified data: no raw-count statistics, and a given change-mode pseudocount.
.minifiedDEArgs <- function(mode, extra) {
    if (isTRUE(extra$all_stats)) {
        stop("all_stats = TRUE adds raw-count statistics, but x was minified by minifySCVI() and holds no ",
             "counts; leave all_stats out, or pass the object from before minifySCVI()", call. = FALSE)
    }
    if (mode == "change" && is.null(extra$pseudocounts)) {
        stop("scviDifferentialExpression(mode = \"change\") estimates its pseudocount from the counts, which x ",
             "lacks (it was minified by minifySCVI()): pass pseudocounts = a number (e.g. the `pseudocounts` ",
             "column of a result on the object from before minifySCVI()), or that object", call. = FALSE)
    }
    extra$all_stats <- FALSE
    extra
}
