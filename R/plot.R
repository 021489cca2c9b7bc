# Maps of DestVI's cell-type proportions at the spots' coordinates.

# The spots' x, y coordinates (spots x 2): spatialCoords() of a SpatialExperiment, else reducedDim "spatial".
.spotCoordinates <- function(x) {
    if (methods::is(x, "Seurat")) {
        stop("plotSpotProportions() takes a SingleCellExperiment or SpatialExperiment; for a Seurat object, plot ",
             "the assay runDestVI() added: DefaultAssay(x) <- \"DestVI\"; ",
             "Seurat::SpatialFeaturePlot(x, features = rownames(x))", call. = FALSE)
    }
    if (methods::is(x, "SpatialExperiment")) {
        xy <- SpatialExperiment::spatialCoords(x)
    } else if (methods::is(x, "SingleCellExperiment") && "spatial" %in% SingleCellExperiment::reducedDimNames(x)) {
        xy <- SingleCellExperiment::reducedDim(x, "spatial")
    } else if (methods::is(x, "SingleCellExperiment")) {
        stop("x has no spot coordinates: store them as reducedDim(x, \"spatial\") (spots x 2: x, y), or make x ",
             "a SpatialExperiment with spatialCoords", call. = FALSE)
    } else {
        stop("x must be a SpatialExperiment or a SingleCellExperiment, got '", class(x)[1], "'", call. = FALSE)
    }
    if (ncol(xy) < 2L) {
        stop("the spot coordinates must have 2 columns (x, y), got ", ncol(xy), call. = FALSE)
    }
    xy[, seq_len(2L), drop = FALSE]
}

# The proportions runDestVI() stored (cell types x spots), restricted to `cell.types` (NULL: all).
.spotProportions <- function(x, cell.types) {
    if (!"DestVI" %in% SingleCellExperiment::altExpNames(x) ||
        !"proportions" %in% SummarizedExperiment::assayNames(SingleCellExperiment::altExp(x, "DestVI"))) {
        stop("x has no proportions in altExp(x, \"DestVI\"); run x <- runDestVI(x, reference) first",
             call. = FALSE)
    }
    props <- SummarizedExperiment::assay(SingleCellExperiment::altExp(x, "DestVI"), "proportions")
    if (is.null(cell.types)) return(props)
    if (!is.character(cell.types) || !length(cell.types) || anyNA(cell.types)) {
        stop("cell.types must be cell-type names (character), or NULL for all", call. = FALSE)
    }
    unknown <- setdiff(cell.types, rownames(props))
    if (length(unknown)) {
        stop("unknown cell type(s) ", paste(sQuote(unknown, FALSE), collapse = ", "), "; altExp(x, \"DestVI\") ",
             "has ", paste(sQuote(rownames(props), FALSE), collapse = ", "), call. = FALSE)
    }
    props[unique(cell.types), , drop = FALSE]
}

#' Plot cell-type proportions at the spots' coordinates
#'
#' Draws each spot at its coordinates, coloured by the proportion of a cell
#' type that [runDestVI()] estimated, with one facet per cell type.
#'
#' The coordinates are `SpatialExperiment::spatialCoords()` for a
#' SpatialExperiment, else `reducedDim(x, "spatial")` (as [simulateSpots()]
#' stores them); the first two columns are x and y, drawn as given with equal
#' scales (image coordinates, whose y grows downwards, appear upside down: add
#' `ggplot2::scale_y_reverse()`). All facets share one colour scale from 0 to
#' 1. For a Seurat object, use `Seurat::SpatialFeaturePlot()` on the assay
#' `"DestVI"`.
#'
#' @param x A SingleCellExperiment (e.g. a SpatialExperiment) on which
#'   [runDestVI()] was run, so that `altExp(x, "DestVI")` holds the
#'   proportions.
#' @param cell.types Cell types to plot, in the order of the facets; `NULL`
#'   (default) plots all.
#' @param point.size Size of the points.
#' @param ncol Number of facet columns; `NULL` lets [ggplot2::facet_wrap()]
#'   choose.
#' @return A ggplot object, whose data holds one row per spot and cell type
#'   with columns `spot`, `x`, `y`, `cell.type` (a factor in the order of
#'   `cell.types`) and `proportion`; add layers, scales or themes to it as to
#'   any ggplot.
#' @seealso [runDestVI()]
#' @export
#' @importFrom ggplot2 .data
#' @examples
#' if (pybridgeAvailable()) {
#'     sim <- simulateSpots(cortexData(), n.spots = 16, mode = "grid")
#'     spots <- runDestVI(sim$spots, sim$reference, sc_max_epochs = 2, st_max_epochs = 2, progress = FALSE)
#'     plotSpotProportions(spots, cell.types = c("o", "p"))
#' }
plotSpotProportions <- function(x, cell.types = NULL, point.size = 1.5, ncol = NULL) {
    xy <- .spotCoordinates(x)
    props <- .spotProportions(x, cell.types)
    types <- rownames(props)
    n <- length(types)
    data <- data.frame(spot = rep(.orDefault(colnames(x), ncol(x)), n),
                       x = rep(unname(xy[, 1]), n), y = rep(unname(xy[, 2]), n),
                       cell.type = factor(rep(types, each = ncol(x)), levels = types),
                       proportion = as.vector(t(props)))
    axes <- if (is.null(colnames(xy))) c("x", "y") else colnames(xy)
    ggplot2::ggplot(data, ggplot2::aes(x = .data$x, y = .data$y, colour = .data$proportion)) +
        ggplot2::geom_point(size = point.size) +
        ggplot2::facet_wrap(~cell.type, ncol = ncol) +
        ggplot2::scale_colour_viridis_c(limits = c(0, 1), name = "proportion") +
        ggplot2::coord_fixed() +
        ggplot2::labs(x = axes[1], y = axes[2])
}
