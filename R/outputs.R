# Outputs of a trained scVI model on data with its genes: latent, normalized expression, posterior samples.

#' Outputs of a trained scVI model
#'
#' `scviLatent()` returns the latent representation (cells x latent).
#' `scviNormalized()` returns denoised expression (genes x cells, dense),
#' computed in chunks of cells; it warns before building a matrix over 1 GB
#' (`options(pybridge.dense.warn.gb = )` changes the threshold).
#' `scviPosteriorSample()` samples counts from the posterior predictive
#' (a genes x cells dgCMatrix, or a genes x cells x samples array).
#'
#' On a SingleCellExperiment minified by [minifySCVI()] with this model, all
#' three read each cell's stored latent posterior and library size instead of
#' counts, and give what they give on the original object (the same values,
#' or draws from the same distribution).
#'
#' @param model An `SCVIModel`.
#' @param x Data with the model's genes (any order): as for [trainSCVI()]; or
#'   a SingleCellExperiment minified by [minifySCVI()].
#' @param assay.type Assay holding raw counts.
#' @param batch Batch of each cell, as for [trainSCVI()]; needed when the model
#'   has a batch and `x` lacks the column it was trained with.
#' @param give.mean Return the posterior mean (`TRUE`) or a sample.
#' @return See Description.
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
#' @param genes Genes to return (default: all of the model's genes).
#' @param library.size Library size the expression is scaled to (1 gives proportions).
#' @param n.samples Posterior samples averaged (normalized) or drawn (posterior sample).
#' @param transform.batch Batch category to decode every cell in, or `NULL`.
#' @param chunk.size Cells per chunk.
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

