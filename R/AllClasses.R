#' An scVI model handle
#'
#' What [trainSCVI()] and [loadSCVI()] return: the directory of a saved model
#' (safetensors weights + JSON metadata) and its settings. It holds no live
#' Python object, so it survives `saveRDS()`/`readRDS()` and new R sessions;
#' the Python model is loaded (and cached) when first used.
#'
#' @slot path Absolute path of the saved model directory.
#' @slot settings List: `batch_key`, `genes`, `model` (architecture
#'   arguments), `train` (training arguments), `history` (per-epoch
#'   metrics: `loss_train` and `loss_validation`, the loss minimised, i.e.
#'   the negative ELBO per cell, lower is better; its terms
#'   `reconstruction_loss_*`, `kl_local_*`, `kl_global_*`; and `kl_weight`).
#' @export
setClass("SCVIModel", slots = c(path = "character", settings = "list"))

#' @rdname SCVIModel-class
#' @param object An `SCVIModel`.
#' @export
setMethod("show", "SCVIModel", function(object) {
    s <- object@settings
    cat("pybridge scVI model\n")
    cat("  path:   ", object@path, "\n", sep = "")
    cat("  genes:  ", length(s$genes), "\n", sep = "")
    cat("  latent: ", s$model$n_latent, "\n", sep = "")
    if (!is.null(s$batch_key)) cat("  batch:  ", s$batch_key, " (", length(s$batch_levels), " levels)\n", sep = "")
    loss <- s$history$loss_train
    if (is.null(loss)) loss <- s$history$elbo_train  # handles made before the history was renamed
    if (length(loss)) cat("  trained: ", length(loss), " epochs, final training loss (negative ELBO per cell) ",
                          format(utils::tail(loss, 1), digits = 6), "\n", sep = "")
})

# Seurat's class, named with its package: methods for Seurat objects can then be set without
# SeuratObject (a suggested package) being loaded, or even installed, when this package is built.
.SEURAT_CLASS <- structure("Seurat", package = "SeuratObject")
