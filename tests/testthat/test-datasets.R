test_that("cortexData returns the shipped counts as a SingleCellExperiment or Seurat object", {
    skip_if_no_python()
    sce <- cortexData()
    expect_s4_class(sce, "SingleCellExperiment")
    expect_identical(dim(sce), c(1000L, 3005L))
    expect_s4_class(SingleCellExperiment::counts(sce), "dgCMatrix")
    expect_identical(as.vector(table(sce$cell_type)[c("a", "e", "i", "m", "o", "p")]),
                     c(224L, 235L, 290L, 98L, 820L, 1338L))
    counts <- SingleCellExperiment::counts(sce)
    expect_true(all(counts@x == round(counts@x)))
    skip_if_not_installed("SeuratObject")
    obj <- cortexData("seurat")
    expect_s4_class(obj, "Seurat")
    expect_equal(ncol(obj), 3005)  # a double on SeuratObject 5
})

test_that("simulateSpots: spots with known shares of cells, a disjoint reference, reproducible", {
    skip_if_no_python()
    sce <- cortex_sce(600L, 200L)
    sim <- simulateSpots(sce, n.spots = 30, mode = "grid", seed = 3)
    expect_identical(dim(sim$spots), c(200L, 30L))
    expect_identical(rownames(sim$proportions), sort(unique(as.character(sce$cell_type))))
    expect_identical(colnames(sim$proportions), colnames(sim$spots))
    expect_equal(unname(colSums(sim$proportions)), rep(1, 30), tolerance = 1e-6)
    expect_equal(unname(colSums(sim$umi.proportions)), rep(1, 30), tolerance = 1e-6)
    # shares of cells: proportion x number of cells is a whole number of cells
    n_cells <- sim$spots$n_cells
    expect_true(all(n_cells >= 2 & n_cells <= 10))
    cells_of_type <- sweep(sim$proportions, 2, n_cells, `*`)
    expect_equal(cells_of_type, round(cells_of_type), tolerance = 1e-6)
    # the reference is a part of the cells (the rest feed the spots)
    expect_true(all(colnames(sim$reference) %in% colnames(sce)))
    expect_lt(ncol(sim$reference), ncol(sce))
    spot_counts <- SingleCellExperiment::counts(sim$spots)
    expect_true(all(Matrix::colSums(spot_counts) > 0))
    again <- simulateSpots(sce, n.spots = 30, mode = "grid", seed = 3)
    expect_identical(again$proportions, sim$proportions)
    expect_error(simulateSpots(sce, labels = "nope"), "labels = 'nope'")
    expect_error(simulateSpots(sce, n.spots = 2.5), "n.spots must be a whole number")
    expect_error(simulateSpots(SingleCellExperiment::counts(sce)), "needs a SingleCellExperiment")
})

test_that("simulateSpots(mode = 'spotless'): regions with the pattern's cell types, Spotless downsampling", {
    skip_if_no_python()
    sce <- cortex_sce(600L, 200L)
    sim <- simulateSpots(sce, n.spots = 40, mode = "spotless", pattern = "diverse_distinct", n.regions = 3,
                         target.umi = c(3000, 500), seed = 1)
    region <- sim$spots$region
    expect_setequal(levels(region), c("region_0", "region_1", "region_2"))
    expect_length(region, 40L)
    # distinct: each cell type is present in at most one region
    present <- (sim$proportions > 0) %*% sapply(levels(region), function(r) region == r)
    expect_true(all(rowSums(present > 0) <= 1))
    totals <- Matrix::colSums(SingleCellExperiment::counts(sim$spots))
    expect_true(all(totals <= 3000 + 5 * 500))
    expect_error(simulateSpots(sce, mode = "spotless", pattern = "dominant"), "'arg' should be one of")
    n.types <- length(unique(sce$cell_type))
    expect_error(simulateSpots(sce, mode = "spotless", n.regions = n.types),
                 paste("n.regions must be at least 1 and fewer than the", n.types))
})
