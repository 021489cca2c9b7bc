# Held-out diagnostics (count splitting) and Bayesian differential expression for scVI models.

#' Split counts into two folds
#'
#' Count splitting (binomial thinning): each count of `assay.type` is split
#' between two folds, `fold_A` getting each of its units (reads or UMIs)
#' with probability `fraction` and `fold_B` the rest, so that
#' `fold_A + fold_B` equals the
#' counts exactly. For Poisson counts the two folds are independent, as if
#' the same cells had been sequenced twice: train a model on `fold_A`
#' (`trainSCVI(x, assay.type = "fold_A")`) and evaluate it on the unseen
#' `fold_B` with [scviDiagnostics()].
#'
#' @param x A SingleCellExperiment or SummarizedExperiment of raw
#'   (non-negative, whole-number) counts.
#' @param fraction Expected share of each count that goes to `fold_A`, a
#'   number strictly between 0 and 1; default 0.5 (two halves).
#' @param seed Random seed (default 0): the same seed gives the same folds.
#' @param assay.type Assay with the raw counts; default `"counts"`.
#' @return `x` with two assays added, `"fold_A"` and `"fold_B"`: sparse
#'   `dgCMatrix` count matrices with the dimensions and dimnames of `x`
#'   (genes x cells). Existing assays of those names are replaced; nothing
#'   else changes.
#' @references
#' Neufeld A, Gao LL, Popp J, Battle A, Witten D (2024). Inference after
#' latent variable estimation for single-cell RNA sequencing data.
#' \emph{Biostatistics} 25(1):270-287. \doi{10.1093/biostatistics/kxac047}
#' @seealso [scviDiagnostics()], which evaluates a model trained on one fold
#'   on the other; [trainSCVI()].
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
    for (k in seq_len(2L)) {
        m <- .dgcFromSlots(h$csr_to_dgc_slots(reticulate::py_get_item(folds, k - 1L)), rownames(x), colnames(x))
        SummarizedExperiment::assay(x, c("fold_A", "fold_B")[k], withDimnames = FALSE) <- m
    }
    x
}

#' Held-out diagnostics of an scVI model
#'
#' Checks how well a model predicts counts it has not seen: evaluates `model`
#' on the held-out fold of count-split data (see [splitCounts()]) and writes
#' `metrics.json`, figures and `report.html` to `out.dir`. The model must
#' have been trained on the `train.layer` assay of `x` (e.g.
#' `x <- splitCounts(sce); model <- trainSCVI(x, assay.type = "fold_A")`);
#' `test.layer` holds the other fold. Metrics of a model trained on all
#' counts are meaningless: the held-out fold must be unseen.
#'
#' The metrics compare the model's prediction for each cell with the
#' held-out fold (Spearman correlations per cell and per gene, also by
#' decile of library size and of gene mean), against a noise ceiling and
#' simple baselines (the mean cell, PCA); the held-out log-likelihood per
#' cell against the same baselines; the marginal log-likelihood on both
#' folds; and the calibration of the predictive distribution. Cells without
#' counts in either fold are left out (counted in
#' `metrics$data$n_cells_excluded_empty_fold`).
#'
#' @param model An `SCVIModel` handle ([SCVIModel-class]) trained on
#'   `train.layer` of `x`.
#' @param x A SingleCellExperiment (or SummarizedExperiment) with assays
#'   `train.layer` and `test.layer`, as made by [splitCounts()].
#' @param out.dir Folder for the report (created if missing); default a new
#'   temporary folder, `tempfile("pybridge-report-")`.
#' @param train.layer,test.layer Names of the assays with the training fold
#'   (default `"fold_A"`) and the held-out fold (default `"fold_B"`).
#' @param batch Batch of each cell, for a model trained with a batch: `NULL`
#'   (default: the colData column named `model@settings$batch_key`), another
#'   colData column name, or one value per cell.
#' @param seed Random seed of the evaluation's sampling (default 0).
#' @param ... Further settings of the report, by their Python names (whole
#'   numbers as integers, e.g. `ppc_cells = 300L`):
#'   `compare_likelihoods` (default `FALSE`; `TRUE` also trains the model
#'   with the other count likelihoods, `"zinb"`, `"nb"` and `"poisson"`, and
#'   compares them, in `metrics$likelihood_comparison`),
#'   `compare_max_epochs` (their epochs; default `NULL`: as many as `model`
#'   was trained for), `n_bins` (strata of library size and gene mean: 10),
#'   `ppc_cells` (cells for the calibration checks: 300), `ppc_samples`
#'   (posterior samples per cell for them: 20), `marginal_cells` (cells for
#'   the marginal log-likelihood: 200), `marginal_mc_samples` (50), `title`
#'   (of the report).
#' @return A named list, the parsed `metrics.json`: `data` (cells, genes,
#'   folds used), `model` (the model's architecture arguments),
#'   `spearman_per_cell_overall`, `spearman_per_gene_overall`,
#'   `spearman_per_cell_by_library_decile`,
#'   `spearman_per_gene_by_mean_decile`, `heldout_loglik_per_cell`,
#'   `scvi_beats_baselines_on_heldout_loglik`, `marginal_loglik_per_cell`,
#'   `calibration`, `seconds`. Attribute `"out.dir"` holds the absolute path
#'   of the report folder; open `file.path(attr(metrics, "out.dir"),
#'   "report.html")` in a browser.
#' @references
#' Lopez R, Regier J, Cole MB, Jordan MI, Yosef N (2018). Deep generative
#' modeling for single-cell transcriptomics. \emph{Nature Methods} 15:1053-1058.
#' \doi{10.1038/s41592-018-0229-2}
#'
#' Neufeld A, Gao LL, Popp J, Battle A, Witten D (2024). Inference after
#' latent variable estimation for single-cell RNA sequencing data.
#' \emph{Biostatistics} 25(1):270-287. \doi{10.1093/biostatistics/kxac047}
#' @seealso [splitCounts()] to make the folds; [trainSCVI()] to train on one.
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
    .withPython(input$adata$write_h5ad(h5ad), input$context)
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
    copy <- .withPython(.pybridgeModule()$SCVI$load(model@path))
    reticulate::py_set_attr(copy$registry, "layer", train.layer)
    dir <- tempfile("pybridge-model-")
    copy$save(dir, overwrite = TRUE)
    dir
}

#' Bayesian differential expression with an scVI model
#'
#' Compares the denoised expression of two groups of cells under the model:
#' `group1` against `group2`, or against all other cells. For each gene it
#' draws expression values from the posteriors of cells of each group (cells
#' picked at random, `n_samples_overall` draws in all) and compares them in
#' pairs.
#' * `mode = "vanilla"`: the probability that the gene is higher in group 1
#'   than in group 2 (`proba_m1`), and its log odds (`bayes_factor`);
#'   sorted by `bayes_factor`, largest first.
#' * `mode = "change"`: the probability that the log2 fold-change (group 1
#'   over group 2) exceeds `delta` in either direction (`proba_de`), the
#'   fold-change's posterior summaries, and the genes called DE at the
#'   target false discovery rate (`is_de_fdr_<fdr.target>`); sorted by
#'   `proba_de`, largest first.
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
#' `pseudocounts =` (its estimate reads the counts). The same holds for the
#' path of a minified .h5ad or .zarr file (see [scviDecode()]), whose cells
#' are read as needed: `groupby` names a column of its cell metadata (obs),
#' `batch` must be `NULL`, and `group1`, `group2` take the forms of
#' `scviDecode()`'s `cells` (positions, logical, names, or a list naming an
#' obs column and values).
#'
#' @param model An `SCVIModel` handle ([SCVIModel-class]).
#' @param x The cells, with the model's genes, as for [scviLatent()]: a
#'   SingleCellExperiment, SummarizedExperiment, Seurat object or genes x
#'   cells count matrix, a SingleCellExperiment minified by [minifySCVI()], or
#'   the path of a minified .h5ad or .zarr file of `model`.
#' @param groupby The groups: the name of a cell-metadata column (colData,
#'   meta.data), or one value per cell. `NULL` (default) to give the cells
#'   themselves in `group1` and `group2`.
#' @param group1 With `groupby`: the group(s) to test, each against
#'   `group2`; `NULL` (default) tests each group in turn against all other
#'   cells. With `groupby = NULL`: the cells of the first group, as 1-based
#'   column positions in `x` or a logical vector with one value per cell.
#' @param group2 With `groupby`: the reference group; `NULL` (default) for
#'   all cells not in the tested group. With `groupby = NULL`: the cells of
#'   the second group (positions or logical); `NULL` for all other cells.
#' @param mode `"vanilla"` (default) or `"change"`, see Description.
#' @param delta Smallest absolute log2 fold-change counted as a change
#'   (`mode = "change"`); default 0.25.
#' @param fdr.target Target false discovery rate of the `is_de_fdr_*` call
#'   (`mode = "change"`), strictly between 0 and 1; default 0.05.
#' @param batch.correction `FALSE` (default): each cell is decoded in its own
#'   batch. `TRUE`: the cells of both groups are decoded in every batch the
#'   model was trained on and compared within the same batch, so that
#'   differences between batches are not reported as differential
#'   expression.
#' @param assay.type Assay (Seurat: layer) with the raw counts; default
#'   `"counts"`.
#' @param batch Batch of each cell, for a model trained with a batch: `NULL`
#'   (default: the cell-metadata column named `model@settings$batch_key`),
#'   another column name, or one value per cell.
#' @param ... Further settings, by their Python names (whole numbers as
#'   integers, e.g. `5000L`): `n_samples_overall` (posterior draws per group:
#'   `5000L`), `n_cells_per_group` (cells a group is subsampled to first:
#'   `100000L`; `NULL` for all), `pseudocounts` (added to the expression before the log2
#'   fold-change in `mode = "change"`; default `NULL`, estimated from the
#'   genes with a raw mean below `threshold_counts` in a group),
#'   `threshold_counts` (0.01), `all_stats` (`TRUE`: add the raw-count
#'   columns), `batchid1`, `batchid2` (with `batch.correction = TRUE`, the
#'   batches each group is decoded in; default all), `batch_size` (cells per
#'   minibatch), `seed` (random seed of the sampling: `0L`).
#' @return A data.frame with one row per gene and comparison (genes of each
#'   comparison sorted as in Description), no row names, and the columns
#' * `gene`: the gene name;
#' * `mode = "vanilla"`: `proba_m1`, `proba_m2` (probabilities that the gene
#'   is higher in group 1, resp. group 2), `bayes_factor`
#'   (`log(proba_m1 / proba_m2)`);
#' * `mode = "change"`: `proba_de`, `proba_not_de`, `bayes_factor` (log odds
#'   of `proba_de`, signed by the direction of the change), `pseudocounts`,
#'   `delta`, `lfc_mean`, `lfc_median`, `lfc_std`, `lfc_min`, `lfc_max`
#'   (posterior summaries of the log2 fold-change, group 1 over group 2) and
#'   the logical `is_de_fdr_<fdr.target>`, e.g. `is_de_fdr_0.05`;
#' * `scale1`, `scale2`: the mean denoised expression of the gene in each
#'   group (its share of a cell's expression);
#' * with counts (not on minified data) and `all_stats = TRUE`: `raw_mean1`,
#'   `raw_mean2` (mean count), `non_zeroes_proportion1`,
#'   `non_zeroes_proportion2` (share of cells with a count),
#'   `raw_normalized_mean1`, `raw_normalized_mean2` (mean count per 10,000);
#' * with `groupby`: `comparison` (e.g. `"B vs Rest"`), `group1`, `group2`.
#' @references
#' Lopez R, Regier J, Cole MB, Jordan MI, Yosef N (2018). Deep generative
#' modeling for single-cell transcriptomics. \emph{Nature Methods} 15:1053-1058.
#' \doi{10.1038/s41592-018-0229-2}
#'
#' Boyeau P, Regier J, Gayoso A, Jordan MI, Lopez R, Yosef N (2023). An
#' empirical Bayes method for differential expression analysis of single
#' cells with deep generative models. \emph{Proceedings of the National
#' Academy of Sciences} 120(21):e2209124120. \doi{10.1073/pnas.2209124120}
#' @seealso [trainSCVI()], [runSCVI()] to train the model;
#'   [scviNormalized()] for the denoised expression itself; [minifySCVI()].
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
        args <- c(args, .groupArgs(key, group1, group2))
    }
    .runDifferentialExpression(model, args, extra, input$context)
}

# The groups of a comparison by a column `groupby` of the cells' metadata, as Python's arguments.
.groupArgs <- function(groupby, group1, group2) {
    list(groupby = groupby, group1 = if (!is.null(group1)) reticulate::r_to_py(as.list(as.character(group1))),
         group2 = if (!is.null(group2)) as.character(group2))
}

# Python's differential_expression(**args, **extra) as a data.frame.
.runDifferentialExpression <- function(model, args, extra, context) {
    .withPython({
        df <- do.call(.pyModel(model)$differential_expression, c(args, .wholeNumbersAsInteger(extra)))
        specs <- reticulate::py_to_r(.handoff()$frame_to_columns(df$rename_axis("gene")$reset_index()))
    }, context)
    as.data.frame(.frameFromSpecs(specs, NULL), optional = TRUE)
}

#' @rdname scviDifferentialExpression
#' @export
setMethod("scviDifferentialExpression", "character", function(model, x, groupby = NULL, group1 = NULL,
                                                              group2 = NULL, mode = c("vanilla", "change"),
                                                              delta = 0.25, fdr.target = 0.05,
                                                              batch.correction = FALSE, assay.type = "counts",
                                                              batch = NULL, ...) {
    mode <- match.arg(mode)
    store <- .openMinifiedFile(model, x, batch)
    args <- list(adata = store, mode = mode, delta = delta, batch_correction = batch.correction,
                 fdr_target = fdr.target)
    if (is.null(groupby)) {
        if (is.null(group1)) stop("pass groupby = (an obs column of the file) or group1 = (cells)", call. = FALSE)
        args$idx1 <- .arr(.fileCells(store, group1, "group1"))
        if (!is.null(group2)) args$idx2 <- .arr(.fileCells(store, group2, "group2"))
    } else {
        if (!is.character(groupby) || length(groupby) != 1L || !groupby %in% .fileColumns(store)) {
            stop("groupby must name a cell-metadata (obs) column of the file; it has ",
                 paste0("'", .fileColumns(store), "'", collapse = ", "), call. = FALSE)
        }
        args <- c(args, .groupArgs(groupby, group1, group2))
    }
    .runDifferentialExpression(model, args, .minifiedDEArgs(mode, list(...)), NULL)
})

# Further arguments for Python as typed there: R's whole numbers (200, not 200L) become integers.
.wholeNumbersAsInteger <- function(args) {
    lapply(args, function(v) {
        whole <- is.double(v) && length(v) == 1L && !is.na(v) && v == round(v) && abs(v) < .Machine$integer.max
        if (whole) as.integer(v) else v
    })
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
