# Spatial deconvolution with DestVI (CondSCVI on a labelled reference, DestVI on the spots).

.DESTVI_INTEGER_ARGS <- c("sc_max_epochs", "st_max_epochs", "batch_size", "vamp_prior_p", "n_latent", "seed")
.DESTVI_ARGS <- c(.DESTVI_INTEGER_ARGS, "lr", "amortization", "l1_reg", "augmentation_weight", "weight_obs",
                  "cell_fractions", "accelerator", "progress")

.destviArgs <- function(args) {
    if (length(args) && (is.null(names(args)) || any(!nzchar(names(args))))) {
        stop("DestVI arguments must be named (e.g. st_max_epochs = 500)", call. = FALSE)
    }
    unknown <- setdiff(names(args), .DESTVI_ARGS)
    if (length(unknown)) {
        stop("unknown argument(s) ", paste(sQuote(unknown, FALSE), collapse = ", "), "; DestVI arguments: ",
             paste(.DESTVI_ARGS, collapse = ", "), call. = FALSE)
    }
    for (nm in intersect(names(args), .DESTVI_INTEGER_ARGS)) {
        v <- args[[nm]]
        if (!is.null(v)) {
            if (!is.numeric(v) || length(v) != 1L || is.na(v) || v != round(v)) {
                stop(nm, " must be a single whole number, got ", deparse(v), call. = FALSE)
            }
            args[[nm]] <- as.integer(v)
        }
    }
    args
}

# Spots and reference are matched by gene name, so the names must be unique in each.
.requireUniqueGenes <- function(genes, arg) {
    dups <- unique(genes[duplicated(genes)])
    if (length(dups)) {
        stop(arg, " has duplicated gene names (", paste(sQuote(utils::head(dups, 5L), FALSE), collapse = ", "),
             "), so its genes cannot be matched to the other object's by name; make them unique in both, e.g. ",
             "rownames(", arg, ") <- make.unique(rownames(", arg, ")), or with gene IDs ",
             "scuttle::uniquifyFeatureNames(rowData(", arg, ")$ID, rownames(", arg, "))", call. = FALSE)
    }
}

# Run pybridge.deconvolution.pipeline.run_destvi on two R objects; proportions (types x spots) and gamma.
.destvi <- function(spots, reference, labels, assay.type, args) {
    meta <- .cellMetadata(reference)
    if (is.null(meta) || !labels %in% colnames(meta)) {
        stop("labels = '", labels, "' is not a column of the reference's cell metadata; pass the column with ",
             "the cell types", call. = FALSE)
    }
    sp <- .checkCounts(.modelAnnData(spots, assay.type = assay.type))
    ref <- .checkCounts(.modelAnnData(reference, assay.type = assay.type, batch = labels, arg = "labels"))
    .requireUniqueGenes(sp$genes, "spots")
    .requireUniqueGenes(ref$genes, "reference")
    args$progress <- .progressReporter(args$progress, "DestVI")
    res <- .withPython(do.call(.pybridgeModule("pybridge.deconvolution.pipeline")$run_destvi,
                               c(list(sp$adata, ref$adata, labels_key = labels), args)),
                       .errorContext(cells = NULL, genes = NULL, args = c(labels_key = "labels")))
    # values and names separately: reticulate's own pandas conversion calls deprecated pandas methods
    types <- as.character(reticulate::py_to_r(.handoff()$index_to_r(res$proportions$columns)))
    props <- t(reticulate::py_to_r(res$proportions$to_numpy()))
    dimnames(props) <- list(types, sp$cells)
    gamma <- lapply(types, function(tp) {
        g <- as.matrix(reticulate::py_to_r(reticulate::py_get_item(res$gamma, tp)$to_numpy()))
        dimnames(g) <- list(sp$cells, paste0("gamma_", seq_len(ncol(g))))
        g
    })
    names(gamma) <- types
    list(proportions = props, gamma = gamma, genes = as.character(unlist(reticulate::py_to_r(res$genes))))
}

#' Spatial deconvolution with DestVI
#'
#' Trains CondSCVI on a labelled single-cell `reference` and DestVI on the
#' `spots` (over their shared genes), then stores per-spot cell-type
#' proportions in `spots`. SingleCellExperiment spots get
#' `altExp(spots, "DestVI")`: a SummarizedExperiment with cell types as rows,
#' spots as columns, assay `"proportions"`, and in its metadata `gamma` (per
#' cell type, a spots x n_latent matrix of cell-type states) and `genes`.
#' Seurat spots get an Assay `"DestVI"` (cell types as rows). Nothing else in
#' `spots` changes. An S4 generic dispatching on `spots`, with methods for
#' SingleCellExperiment and Seurat.
#'
#' @param spots Spatial counts: a SingleCellExperiment or Seurat object.
#' @param reference Labelled single cells: a SingleCellExperiment or Seurat object.
#' @param labels Column of the reference's cell metadata with the cell types.
#' @param assay.type Assay (Seurat: layer) with raw counts, in both objects.
#' @param ... Arguments of Python's `pybridge.deconvolution.pipeline.run_destvi()`:
#'   `sc_max_epochs`, `st_max_epochs`, `batch_size`, `lr`, `vamp_prior_p`,
#'   `amortization`, `l1_reg`, `augmentation_weight`, `weight_obs`, `n_latent`, `cell_fractions`,
#'   `accelerator`, `seed`, `progress` (`FALSE` silences the progress
#'   messages of both trainings, CondSCVI first, then DestVI).
#' @return `spots` with the proportions added.
#' @name runDestVI
#' @export
#' @examples
#' if (pybridgeAvailable()) {
#'     set.seed(1)
#'     ref <- SingleCellExperiment::SingleCellExperiment(list(counts = matrix(rpois(60 * 40, 3), 60, 40,
#'         dimnames = list(paste0("g", 1:60), paste0("c", 1:40)))))
#'     ref$cell_type <- rep(c("A", "B"), 20)
#'     spots <- ref[, 1:10]
#'     spots <- runDestVI(spots, ref, sc_max_epochs = 2, st_max_epochs = 2)
#'     SummarizedExperiment::assay(SingleCellExperiment::altExp(spots, "DestVI"), "proportions")
#' }
NULL

#' @rdname runDestVI
#' @export
setMethod("runDestVI", "SingleCellExperiment",
          function(spots, reference, labels = "cell_type", assay.type = "counts", ...) {
    args <- .destviArgs(list(...))
    out <- .destvi(spots, reference, labels, assay.type, args)
    se <- SummarizedExperiment::SummarizedExperiment(list(proportions = out$proportions),
                                                     metadata = list(gamma = out$gamma, genes = out$genes))
    SingleCellExperiment::altExp(spots, "DestVI") <- se
    spots
})

#' @rdname runDestVI
#' @export
setMethod("runDestVI", .SEURAT_CLASS, function(spots, reference, labels = "cell_type", assay.type = "counts", ...) {
    args <- .destviArgs(list(...))
    .requireSeurat()
    out <- .destvi(spots, reference, labels, assay.type, args)
    spots[["DestVI"]] <- .seuratFn("CreateAssayObject")(data = out$proportions)
    spots
})

#' @rdname runDestVI
#' @export
setMethod("runDestVI", "ANY", function(spots, reference, labels = "cell_type", assay.type = "counts", ...) {
    .destviArgs(list(...))
    stop("spots must be a SingleCellExperiment or Seurat object, got '", class(spots)[1], "'", call. = FALSE)
})
