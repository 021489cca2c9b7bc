# SpatialExperiment tests skip without the package, unless PYBRIDGE_REQUIRE_SPATIALEXPERIMENT=1 (set by
# `make r45-test`, whose R 4.5 stack has it), where a missing SpatialExperiment is a failure.
skip_if_no_spatialexperiment <- function() {
    if (requireNamespace("SpatialExperiment", quietly = TRUE)) return(invisible(TRUE))
    if (identical(Sys.getenv("PYBRIDGE_REQUIRE_SPATIALEXPERIMENT"), "1")) {
        stop("PYBRIDGE_REQUIRE_SPATIALEXPERIMENT=1 but SpatialExperiment is not installed; install it ",
             "(BiocManager::install(\"SpatialExperiment\"), Debian: r-bioc-spatialexperiment)")
    }
    testthat::skip("SpatialExperiment is not installed")
}

# Six spots on a 3 x 2 grid (reducedDim "spatial") with DestVI-like proportions of three cell types in
# altExp "DestVI", made without training.
spots_with_proportions <- function() {
    props <- matrix(c(0.2, 0.3, 0.5, 1, 0, 0, 0.1, 0.8, 0.1, 0, 0.5, 0.5, 0.6, 0.2, 0.2, 0.3, 0.3, 0.4), 3,
                    dimnames = list(c("astro", "neuron", "oligo"), paste0("spot", 1:6)))
    counts <- matrix(1L, 4, 6, dimnames = list(paste0("g", 1:4), colnames(props)))
    sce <- SingleCellExperiment::SingleCellExperiment(list(counts = counts))
    SingleCellExperiment::reducedDim(sce, "spatial") <- cbind(x = rep(c(0, 10, 20), 2), y = rep(c(0, 10), each = 3))
    SingleCellExperiment::altExp(sce, "DestVI") <-
        SummarizedExperiment::SummarizedExperiment(list(proportions = props))
    sce
}
