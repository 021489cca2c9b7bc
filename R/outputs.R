# Outputs of a trained scVI model on data with its genes: latent, normalized expression, posterior samples.

#' Outputs of a trained scVI model
#'
#' What a trained scVI model says about cells: `scviLatent()` gives each
#' cell's position in the model's latent space (for clustering, UMAP or
#' neighbour graphs, in place of PCA), `scviNormalized()` its denoised,
#' batch-correctable expression, and `scviPosteriorSample()` new counts drawn
#' from the model, e.g. to check that the model reproduces the data.
#'
#' The cells are those of `x`; the model's genes are found in `x` by name (in
#' any order; genes the model was not trained on are ignored, and all of the
#' model's genes, `model@settings$genes`, must be present).
#'
#' `scviNormalized()` is computed in chunks of `chunk.size` cells and returns
#' a dense matrix; it warns before building one over 1 GB
#' (`options(pybridge.dense.warn.gb = )` changes the threshold; pass `genes`
#' to return fewer rows).
#'
#' On a SingleCellExperiment minified by [minifySCVI()] with this model, all
#' three read each cell's stored latent posterior and library size instead of
#' counts, and give what they give on the original object (the same values,
#' or draws from the same distribution).
#'
#' @param model An `SCVIModel` handle, from [trainSCVI()], [loadSCVI()],
#'   `metadata(sce)$pybridge$scVI` after [runSCVI()], or
#'   `Tool(object, "RunSCVI")` after \code{\link{RunSCVI}()}.
#' @param x The cells: a SingleCellExperiment, SummarizedExperiment, Seurat
#'   object, or a genes x cells matrix / dgCMatrix / DelayedMatrix of raw
#'   counts, with the model's genes as row names; or a SingleCellExperiment
#'   minified by [minifySCVI()] with this model.
#' @param assay.type Assay (Seurat: layer) holding the raw counts; default
#'   `"counts"`. Not used for minified objects and plain matrices.
#' @param batch Batch of each cell, for a model trained with a batch: `NULL`
#'   (default: the cell-metadata column the model was trained with, whose name
#'   is `model@settings$batch_key`), the name of another cell-metadata column,
#'   or one value per cell. The values must be batches the model was trained
#'   on (`model@settings$batch_levels`).
#' @param give.mean `TRUE` (default): each cell's posterior mean in the latent
#'   space; `FALSE`: one random draw from its posterior.
#' @return
#' `scviLatent()`: a numeric matrix, cells x latent dimensions
#' (`model@settings$model$n_latent` columns, 10 by default), with the cell
#' names of `x` as row names (`"1"`, `"2"`, ... when `x` has none) and
#' column names `"scVI_1"`, `"scVI_2"`, ...
#'
#' `scviNormalized()`: a dense numeric matrix, genes x cells, row names
#' `genes` (in the order given; default the model's genes in the model's
#' order), column names the cell names of `x`. Each value is the expected
#' expression of the gene in the cell, without technical noise, scaled to a
#' library of `library.size` counts: with the defaults (all genes,
#' `library.size = 1`) each column sums to 1.
#'
#' `scviPosteriorSample()`: with `n.samples = 1`, a sparse `dgCMatrix` of
#' counts, genes x cells, with the same dimnames as `scviNormalized()`; with
#' `n.samples > 1`, a numeric array genes x cells x `n.samples` (the third
#' dimension unnamed), one sample per slice.
#' @references
#' Lopez R, Regier J, Cole MB, Jordan MI, Yosef N (2018). Deep generative
#' modeling for single-cell transcriptomics. \emph{Nature Methods} 15:1053-1058.
#' \doi{10.1038/s41592-018-0229-2}
#' @seealso [trainSCVI()] and [runSCVI()] to train a model;
#'   [scviDecode()] and [minifySCVI()] for minified objects;
#'   [scviDifferentialExpression()]; [SCVIModel-class] for the handle.
#' @export
#' @examples
#' if (pybridgeAvailable()) {
#'     counts <- matrix(rpois(2000, 2), 50, 40, dimnames = list(paste0("g", 1:50), paste0("c", 1:40)))
#'     model <- trainSCVI(counts, n_latent = 2, max_epochs = 2, path = tempfile())
#'     z <- scviLatent(model, counts)
#'     rho <- scviNormalized(model, counts, genes = c("g1", "g2"), library.size = 1e4)
#'     y <- scviPosteriorSample(model, counts)
#' }
scviLatent <- function(model, x, assay.type = "counts", batch = NULL, give.mean = TRUE) {
    input <- .outputInput(model, x, assay.type, batch)
    z <- .withPython(.pyModel(model)$get_latent_representation(input$adata, give_mean = give.mean), input$context)
    z <- reticulate::py_to_r(z)
    dimnames(z) <- list(input$cells, paste0("scVI_", seq_len(ncol(z))))
    z
}

#' @rdname scviLatent
#' @param genes Genes to return, by name: `NULL` (default) for all of the
#'   model's genes (`model@settings$genes`).
#' @param library.size Total counts per cell that `scviNormalized()` scales
#'   each cell's expression to: default 1 (each gene's share of the cell's
#'   expression); e.g. `1e4` for values on the scale of counts per 10,000;
#'   `"latent"` for each cell's own library size (expected counts).
#' @param n.samples `scviNormalized()`: how many draws from each cell's
#'   latent posterior are averaged; the default 1 decodes the posterior mean
#'   instead, without sampling. `scviPosteriorSample()`: how many count
#'   samples to draw per cell (default 1).
#' @param transform.batch `NULL` (default): each cell is decoded in its own
#'   batch. A batch the model was trained on (one of
#'   `model@settings$batch_levels`): every cell is decoded as if measured in
#'   that batch, which removes batch effects from the expression; several
#'   batches: the average over them.
#' @param chunk.size Cells sent to Python at a time (default 2000); lower it
#'   to use less memory.
#' @export
scviNormalized <- function(model, x, genes = NULL, library.size = 1, assay.type = "counts", batch = NULL,
                           n.samples = 1, transform.batch = NULL, chunk.size = 2000L) {
    input <- .outputInput(model, x, assay.type, batch)
    if (is.null(genes)) genes <- model@settings$genes
    .checkGenes(methods::new("SCVIModel", path = model@path, settings = list(genes = genes)), model@settings$genes)
    n <- length(input$cells)
    gb <- as.double(length(genes)) * n * 8 / 1e9
    if (gb > getOption("pybridge.dense.warn.gb", 1)) {
        warning(sprintf("building a dense %.1f GB matrix (%d genes x %d cells); pass genes = to restrict it",
                        gb, length(genes), n), call. = FALSE)
    }
    out <- matrix(0, length(genes), n, dimnames = list(genes, input$cells))
    pymodel <- .pyModel(model)
    for (start in seq.int(1L, n, by = chunk.size)) {
        idx <- start:min(n, start + chunk.size - 1L)
        chunk <- .withPython(pymodel$get_normalized_expression(
            input$adata, indices = .arr(idx - 1L), gene_list = reticulate::r_to_py(as.list(genes)),
            library_size = library.size, n_samples = as.integer(n.samples), return_mean = TRUE,
            return_numpy = TRUE, transform_batch = transform.batch
        ), input$context)
        out[, idx] <- t(reticulate::py_to_r(chunk))
    }
    out
}

#' @rdname scviLatent
#' @export
scviPosteriorSample <- function(model, x, n.samples = 1, genes = NULL, assay.type = "counts", batch = NULL) {
    input <- .outputInput(model, x, assay.type, batch)
    if (is.null(genes)) genes <- model@settings$genes
    gene_list <- reticulate::r_to_py(as.list(genes))
    y <- .withPython(.pyModel(model)$posterior_predictive_sample(input$adata, n_samples = as.integer(n.samples),
                                                                  gene_list = gene_list), input$context)
    if (n.samples == 1) {
        return(.dgcFromSlots(.handoff()$csr_to_dgc_slots(y), genes, input$cells))
    }
    arr <- aperm(reticulate::py_to_r(y), c(2L, 1L, 3L))
    dimnames(arr) <- list(genes, input$cells, NULL)
    arr
}

