# The small real dataset shipped with the Python package, as an R object.

#' Mouse cortex counts shipped with pybridge
#'
#' The Zeisel et al. (2015) mouse cortex and hippocampus data (the CORTEX set
#' of the scVI paper), as shipped inside the pybridge Python package: raw UMI
#' counts of 3,005 cells and the 1,000 most variable genes. Nothing is
#' downloaded.
#'
#' @param kind `"sce"` for a SingleCellExperiment, `"seurat"` for a Seurat
#'   object (needs SeuratObject).
#' @return A SingleCellExperiment with the dgCMatrix assay `counts`
#'   (1,000 genes x 3,005 cells; genes `gene0`, `gene1`, ..., cells `cell0`,
#'   `cell1`, ...) and colData columns `cell_type` (the six level-1 classes,
#'   coded as shipped: `a` astrocytes/ependymal, `e` endothelial/mural,
#'   `i` interneurons, `m` microglia, `o` oligodendrocytes, `p` pyramidal
#'   neurons) and `subclass` (level-2 classes); or a Seurat object with the
#'   same counts (assay `"RNA"`) and meta.data columns.
#' @references
#' Zeisel A, Munoz-Manchado AB, Codeluppi S, et al. (2015). Cell types in the
#' mouse cortex and hippocampus revealed by single-cell RNA-seq.
#' \emph{Science} 347:1138-1142. \doi{10.1126/science.aaa1934}
#' @seealso [runSCVI()], [fromAnnData()]
#' @export
#' @examples
#' if (pybridgeAvailable()) {
#'     sce <- cortexData()
#'     table(sce$cell_type)
#' }
cortexData <- function(kind = c("sce", "seurat")) {
    kind <- match.arg(kind)
    fromAnnData(.withPython(.pybridgeModule("pybridge.data.datasets")$cortex()), kind = kind)
}

#' Pseudo-spots with known cell-type proportions
#'
#' Splits the cells of a labelled single-cell dataset into a reference and a
#' pool, and sums pool cells into pseudo-spots: each spot takes between
#' `cells.per.spot[1]` and `cells.per.spot[2]` cells, its cell-type mix drawn
#' from a Dirichlet distribution (concentration `alpha`; small values give
#' spots dominated by few types). The true proportions are known, which makes
#' the result a benchmark for [runDestVI()]: deconvolve `spots` with
#' `reference` and compare with `proportions`.
#'
#' @param x A SingleCellExperiment (or SummarizedExperiment) of raw counts with
#'   the cell types in a colData column.
#' @param labels colData column with the cell types.
#' @param n.spots Number of spots.
#' @param mode `"random"`: spots independent of each other; `"grid"`: spots on
#'   a near-square grid, neighbours sharing composition trends; `"spotless"`:
#'   the silver standards of the Spotless benchmark (Sang-aram et al., eLife
#'   2024): `n.regions` regions, each with cell-type frequencies set by
#'   `pattern`, and every spot drawn from one region (colData `region`).
#' @param pattern Abundance pattern of `mode = "spotless"` (default
#'   `"diverse_overlap"`): `"uniform_distinct"`, `"diverse_distinct"`,
#'   `"uniform_overlap"`, `"diverse_overlap"`, `"dominant_celltype_diverse"`,
#'   `"partially_dominant_celltype_diverse"`,
#'   `"dominant_rare_celltype_diverse"`, `"regional_rare_celltype_diverse"`.
#' @param n.regions Number of regions of `mode = "spotless"` (fewer than the
#'   number of cell types).
#' @param target.umi `NULL`, or the mean and standard deviation of a normal
#'   distribution: a spot with more counts than mean + sd keeps a random
#'   subset of its molecules, as many as a draw from that distribution (the
#'   Spotless procedure uses `c(20000, 5000)`).
#' @param cells.per.spot Smallest and largest number of cells per spot.
#' @param alpha Dirichlet concentration of the spot compositions.
#' @param reference.fraction Share of each cell type's cells kept for the
#'   reference (the others may enter spots; no cell is in both).
#' @param seed Random seed (the same seed gives the same spots).
#' @param assay.type Assay with the raw counts.
#' @return A list:
#' * `spots`: a SingleCellExperiment, genes x spots (`spot_0`, `spot_1`, ...),
#'   assay `counts` (sums of the member cells' counts), colData `n_cells`
#'   (and `region` with `mode = "spotless"`), reducedDim `"spatial"` (x, y
#'   coordinates, `mode = "grid"`);
#' * `reference`: a SingleCellExperiment of the reference cells of `x` (its
#'   colData kept);
#' * `proportions`: cell types x spots, the share of each spot's cells of each
#'   type (columns sum to 1);
#' * `umi.proportions`: cell types x spots, the share of each spot's counts
#'   from each type.
#' @seealso [runDestVI()], [cortexData()]
#' @export
#' @examples
#' if (pybridgeAvailable()) {
#'     sim <- simulateSpots(cortexData(), n.spots = 20)
#'     dim(sim$proportions)
#' }
simulateSpots <- function(x, labels = "cell_type", n.spots = 100L, mode = c("random", "grid", "spotless"),
                          cells.per.spot = c(2L, 10L), alpha = 1, reference.fraction = 0.5, seed = 0L,
                          assay.type = "counts",
                          pattern = c("diverse_overlap", "uniform_distinct", "diverse_distinct", "uniform_overlap",
                                      "dominant_celltype_diverse", "partially_dominant_celltype_diverse",
                                      "dominant_rare_celltype_diverse", "regional_rare_celltype_diverse"),
                          n.regions = 5L, target.umi = NULL) {
    mode <- match.arg(mode)
    pattern <- match.arg(pattern)
    if (!is.null(target.umi) && (!is.numeric(target.umi) || length(target.umi) != 2L || anyNA(target.umi))) {
        stop("target.umi must be NULL or c(mean, sd), e.g. c(20000, 5000); got ", deparse(target.umi), call. = FALSE)
    }
    if (!methods::is(x, "SummarizedExperiment")) {
        stop("simulateSpots() needs a SingleCellExperiment, got '", class(x)[1], "'", call. = FALSE)
    }
    if (!labels %in% colnames(SummarizedExperiment::colData(x))) {
        stop("labels = '", labels, "' is not a colData column; pass the column with the cell types", call. = FALSE)
    }
    n.types <- length(unique(SummarizedExperiment::colData(x)[[labels]]))
    if (mode == "spotless" && (!is.numeric(n.regions) || n.regions < 1 || n.regions >= n.types)) {
        stop("n.regions must be at least 1 and fewer than the ", n.types, " cell types in '", labels, "', got ",
             deparse(n.regions), call. = FALSE)
    }
    whole <- function(v, arg, n = 1L) {
        if (!is.numeric(v) || length(v) != n || anyNA(v) || any(v != round(v))) {
            stop(arg, " must be ", if (n == 1L) "a whole number" else paste(n, "whole numbers"), ", got ",
                 deparse(v), call. = FALSE)
        }
        as.integer(v)
    }
    sim <- .withPython(.pybridgeModule("pybridge.deconvolution.simulate")$pseudo_spots(
        toAnnData(x, X.name = assay.type), labels, n_spots = whole(n.spots, "n.spots"), mode = mode,
        cells_per_spot = reticulate::tuple(as.list(whole(cells.per.spot, "cells.per.spot", 2L))),
        alpha = as.double(alpha), reference_fraction = as.double(reference.fraction), seed = whole(seed, "seed"),
        pattern = as.character(pattern), n_regions = whole(n.regions, "n.regions"),
        target_umi = if (is.null(target.umi)) NULL else reticulate::tuple(as.list(as.double(target.umi)))))
    spots <- reticulate::py_get_item(sim, 0L)
    shares <- function(key) {
        frame <- reticulate::py_get_item(spots$obsm, key)
        specs <- reticulate::py_to_r(.handoff()$frame_to_columns(frame))
        t(as.matrix(as.data.frame(.frameFromSpecs(specs, NULL), optional = TRUE)))
    }
    proportions <- shares("proportions")
    umi <- shares("umi_proportions")
    cells <- as.character(reticulate::py_to_r(.handoff()$index_to_r(spots$obs_names)))
    colnames(proportions) <- colnames(umi) <- cells
    reticulate::py_del_item(spots$obsm, "proportions")
    reticulate::py_del_item(spots$obsm, "umi_proportions")
    reticulate::py_del_item(spots$obsm, "cell_membership")
    list(spots = fromAnnData(spots), reference = fromAnnData(reticulate::py_get_item(sim, 1L)),
         proportions = proportions, umi.proportions = umi)
}
