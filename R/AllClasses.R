#' An scVI model handle
#'
#' What [trainSCVI()] and [loadSCVI()] return, and what [runSCVI()] and
#' \code{\link{RunSCVI}()} store in the object: the folder of a saved model
#' (weights in `model.safetensors`, settings in `model.json`) and a copy of
#' its settings. It holds no live Python object, so it survives
#' `saveRDS()`/`readRDS()` and new R sessions, as long as the folder
#' exists; the Python model is loaded (and cached) when first used.
#' `show()` prints the folder, the number of genes and latent dimensions,
#' the batch column and, once trained, the epochs and final training loss.
#'
#' @slot path Absolute path of the saved model folder.
#' @slot settings A list:
#' * `batch_key`: `NULL` for a model without batch; else the name of the
#'   cell-metadata column the batch was read from (`"batch"` when the batch
#'   was given as one value per cell). Output functions look for this column
#'   when their `batch` is `NULL`.
#' * `batch_levels`: the batches the model knows (character).
#' * `genes`: the genes the model was trained on, in its order (character).
#' * `model`: the architecture arguments, all of them with their values
#'   (`n_hidden`, `n_latent`, `n_layers`, `dropout_rate`, `dispersion`,
#'   `gene_likelihood`, ...; see [trainSCVI()]).
#' * `train`: the training arguments given when training (only those
#'   given; the others had their defaults, see [trainSCVI()]); an empty
#'   list for a model opened with [loadSCVI()].
#' * `history`: per-epoch numeric vectors, one value per epoch:
#'   `loss_train` (the loss minimised, i.e. the negative ELBO per cell;
#'   lower is better), its terms `reconstruction_loss_train`,
#'   `kl_local_train` and `kl_global_train`, and `kl_weight` (the weight of
#'   the KL term, rising from 0 to 1 over the first `n_epochs_kl_warmup`
#'   epochs, 400 by default); with a validation set
#'   (`train_size < 1`, the default 0.9) also `loss_validation` and the
#'   validation terms (`*_validation`).
#' @return `show()` prints the summary and returns `NULL` invisibly; objects
#'   of the class come from [trainSCVI()], [loadSCVI()] and [saveSCVI()].
#' @references
#' Lopez R, Regier J, Cole MB, Jordan MI, Yosef N (2018). Deep generative
#' modeling for single-cell transcriptomics. \emph{Nature Methods} 15:1053-1058.
#' \doi{10.1038/s41592-018-0229-2}
#' @seealso [trainSCVI()], [loadSCVI()], [saveSCVI()], [listSCVI()] to
#'   make, copy and manage models; [scviLatent()] and the other `scviX()`
#'   functions to use them.
#' @examples
#' if (pybridgeAvailable()) {
#'     counts <- matrix(rpois(2000, 2), 50, 40, dimnames = list(paste0("g", 1:50), paste0("c", 1:40)))
#'     model <- trainSCVI(counts, n_latent = 2, max_epochs = 2, path = tempfile())
#'     show(model)
#'     print(model@settings$model$n_latent)
#'     plot(model@settings$history$loss_train, type = "l", xlab = "epoch", ylab = "loss")
#' }
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
