# Spatial deconvolution with DestVI (CondSCVI on a labelled reference, DestVI on the spots).

.DESTVI_INTEGER_ARGS <- c("sc_max_epochs", "st_max_epochs", "st_max_steps", "batch_size", "vamp_prior_p", "n_latent",
                          "n_models", "seed")
.DESTVI_ARGS <- c(.DESTVI_INTEGER_ARGS, "lr", "amortization", "l1_reg", "augmentation_weight", "cells_per_spot",
                  "weight_obs", "cell_fractions", "accelerator", "progress")

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
#' Estimates, for each spot of a spatial transcriptomics experiment, the
#' proportions of the cell types of a labelled single-cell `reference`, and
#' the state of each cell type at each spot. An S4 generic dispatching on
#' `spots`, with methods for SingleCellExperiment (including
#' SpatialExperiment) and Seurat objects.
#'
#' Two models are trained, one after the other:
#' 1. CondSCVI on the `reference`: a variational autoencoder of the counts
#'    given the cell type, which learns for each cell type a space of its
#'    cell states (`n_latent` dimensions) and each gene's expression in each
#'    state (two hidden layers of 128 units, dropout 0.05; `sc_max_epochs`
#'    epochs with learning rate 0.001 and minibatches of 128 cells, on all
#'    cells).
#' 2. DestVI on the `spots`: each spot's counts are modelled as a mixture of
#'    the cell types, each in a state of its own (`gamma`) decoded by the
#'    trained CondSCVI, plus a gene-wise noise term; 20,000 gradient steps
#'    (or `st_max_epochs` epochs) with learning rate `lr` and minibatches of
#'    `batch_size` spots.
#'
#' Only the genes found in both objects (by row name) are used; a warning
#' says how many when some are missing, and fewer than 50 shared genes are an
#' error (check that both use the same gene identifiers and species). Gene
#' names must be unique in each object. The reference needs at least 2 cells
#' of each cell type (a warning under 10), no `NA` label, and every spot needs
#' counts over the shared genes. With fewer than 50 spots a warning says the
#' proportions are unreliable.
#'
#' Training reports its progress with [message()] (CondSCVI first, then
#' DestVI); `progress = FALSE` or `options(pybridge.progress = FALSE)`
#' silences it.
#'
#' @section Arguments in `...`:
#' Whole numbers may be given as `2` or `2L`.
#' * `sc_max_epochs` (60): epochs of CondSCVI on the reference. Longer
#'   training (300 epochs, scvi-tools' default for CondSCVI) gave worse proportions
#'   in our benchmark (bench/RESULTS.md).
#' * `st_max_epochs` (`NULL`): epochs of DestVI on the spots. `NULL` trains
#'   for 20,000 gradient steps, at most 2,000 epochs: 2,000 epochs up to
#'   1,280 spots (the reference's schedule), fewer on larger data (26 epochs
#'   for 100,000 spots). On our benchmark 3,000 steps were as accurate
#'   overall (better on one dataset, worse on another; bench/RESULTS.md).
#' * `st_max_steps` (`NULL`): the number of DestVI gradient steps when
#'   `st_max_epochs` is `NULL` (`NULL`: 20,000).
#' * `batch_size` (`NULL`): spots per DestVI minibatch. `NULL` applies the
#'   small-data rule `min(128, max(4, n_spots %/% 10))`: 4 spots for up to 49
#'   spots, 50 for 500, 128 from 1,280 spots on. DestVI needs many gradient
#'   steps per epoch: with minibatches close to the number of spots it
#'   under-fits. (CondSCVI always uses 128 cells.)
#' * `lr` (0.003): learning rate of DestVI.
#' * `n_latent` (5): dimensions of each cell type's state space, i.e. the
#'   columns of each `gamma` matrix.
#' * `weight_obs` (`FALSE`): `TRUE` weights each reference cell by the
#'   inverse of its cell type's share (shares below 5% count as 5%), so that
#'   rare cell types weigh more in CondSCVI's training.
#' * `vamp_prior_p` (15): prior of the states `gamma`: the reference cells of
#'   each cell type are grouped by k-means into this many clusters of their
#'   CondSCVI states, and `gamma` gets a mixture prior centred on them (a
#'   VampPrior), which keeps states close to those seen in the reference;
#'   `NULL` uses a standard normal prior instead.
#' * `amortization` (`"both"`): where the per-spot values come from.
#'   `"both"`: the states and the proportions are read from each spot's
#'   counts by neural networks; `"latent"`: only the states, the
#'   proportions being free parameters of each spot; `"proportion"`: only
#'   the proportions; `"none"`: both are free parameters of each spot.
#' * `l1_reg` (0): L1 penalty on the proportions; larger values give fewer
#'   cell types per spot.
#' * `augmentation_weight` (`NULL`): weight of a supervision by synthetic
#'   spots. At each step, synthetic spots with known compositions are made by
#'   summing random reference cells (at most 500 per cell type are kept for
#'   it), and the proportion network is also trained to recover their
#'   compositions, which keeps similar cell types from being exchanged.
#'   `NULL`: 1000 when the proportions come from a network (`amortization`
#'   `"both"` or `"proportion"`), else 0; `0` gives the objective of the
#'   DestVI paper; it must be 0 with `amortization` `"latent"` or `"none"`.
#' * `cells_per_spot` (5): the expected number of cells in a spot (like
#'   cell2location's `N_cells_per_location`); each synthetic spot holds
#'   1 + Poisson(`cells_per_spot` - 1) reference cells.
#' * `n_models` (1): the number of DestVI models trained on the same CondSCVI
#'   (seeds `seed`, `seed + 1`, ...); the proportions and states stored are
#'   the mean of theirs. An ensemble of 5 has lower error than one model
#'   (bench/RESULTS.md) and takes 5 times the DestVI training time.
#' * `cell_fractions` (`FALSE`): what a proportion is. `FALSE` (as in the
#'   paper and scvi-tools): the cell type's share of the spot's expression
#'   (its counts). `TRUE`: its share of the spot's cells, estimated by
#'   dividing each cell type's weight by its mean library size in the
#'   reference (over the shared genes) before normalising; cell types with
#'   more RNA per cell then get smaller proportions.
#' * `accelerator` (`"auto"`): `"auto"` trains on a CUDA GPU when there is
#'   one, else on the CPU; `"cpu"`; `"gpu"` or `"cuda"` (an error without a
#'   GPU).
#' * `seed` (0): random seed of both trainings (order of the minibatches,
#'   sampling).
#' * `progress` (`NULL`: `getOption("pybridge.progress", TRUE)`): `TRUE`
#'   reports progress with [message()], `FALSE` silences both trainings.
#'
#' @param spots The spatial data: a SingleCellExperiment (e.g. a
#'   SpatialExperiment) or Seurat object with raw counts, spots as columns.
#' @param reference The labelled single cells: a SingleCellExperiment or
#'   Seurat object with raw counts, cells as columns.
#' @param labels Name of the column of the reference's cell metadata
#'   (colData, meta.data) that holds each cell's type; default
#'   `"cell_type"`.
#' @param assay.type Assay (Seurat: layer) with the raw counts, in both
#'   objects; default `"counts"`.
#' @param ... Model and training arguments, named, with the defaults given
#'   in the section Arguments in `...`: `sc_max_epochs`, `st_max_epochs`,
#'   `batch_size`, `lr`, `n_latent`, `weight_obs`, `vamp_prior_p`,
#'   `amortization`, `l1_reg`, `augmentation_weight`, `cells_per_spot`,
#'   `n_models`, `cell_fractions`, `accelerator`, `seed`, `progress`.
#' @return `spots`, with nothing changed but the following added.
#'
#' A SingleCellExperiment gets the alternative experiment
#' `altExp(spots, "DestVI")`, a SummarizedExperiment with one row per cell
#' type (row names: the cell types, in the order of the levels of
#' `labels`, or sorted when `labels` is not a factor) and one column per
#' spot (the spots' column names), holding
#' * assay `"proportions"`: a numeric matrix, cell types x spots; each column
#'   sums to 1;
#' * `metadata(altExp(spots, "DestVI"))$gamma`: a named list with one
#'   numeric matrix per cell type, spots x `n_latent` (row names the spots,
#'   column names `"gamma_1"`, `"gamma_2"`, ...): the state of that cell type
#'   at each spot, a position in the cell type's CondSCVI state space. Close
#'   values mean similar states; their variation across spots shows how a
#'   cell type changes across the tissue (e.g. a gradient of activation).
#'   A cell type's state means little at spots where its proportion is
#'   near 0;
#' * `metadata(altExp(spots, "DestVI"))$genes`: the shared genes the models
#'   used (character).
#'
#' A SpatialExperiment stays one and gets the same alternative experiment;
#' its `spatialCoords()`, `imgData()` and colData are kept as they are, so
#' [plotSpotProportions()] can map the proportions at the spots' coordinates.
#'
#' A Seurat object gets the assay `"DestVI"`, whose `data` layer holds the
#'   proportions (cell types x spots; Seurat replaces underscores in the
#'   cell-type names by dashes); `Misc(spots, "DestVI")` holds `gamma` and
#'   `genes` as described above for the SingleCellExperiment metadata.
#' @references
#' Lopez R, Li B, Keren-Shaul H, et al. (2022). DestVI identifies continuums
#' of cell types in spatial transcriptomics data. \emph{Nature Biotechnology}
#' 40:1360-1369. \doi{10.1038/s41587-022-01272-8}
#' @seealso [plotSpotProportions()] to map the proportions; [simulateSpots()]
#'   for spots with known proportions; [runSCVI()] and
#'   \code{\link{RunSCVI}()} for scVI on single cells; [installPybridge()] to
#'   set up the Python side.
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
    SeuratObject::Misc(spots, slot = "DestVI") <- list(gamma = out$gamma, genes = out$genes)
    spots
})

#' @rdname runDestVI
#' @export
setMethod("runDestVI", "ANY", function(spots, reference, labels = "cell_type", assay.type = "counts", ...) {
    .destviArgs(list(...))
    stop("spots must be a SingleCellExperiment or Seurat object, got '", class(spots)[1], "'", call. = FALSE)
})
