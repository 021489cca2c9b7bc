# SpatialExperiment spots in runDestVI(), and plotSpotProportions().

# The plotted rows of one cell type, in spot order.
plotted <- function(p, type) p$data[p$data$cell.type == type, ]

test_that("plotSpotProportions maps each cell type's proportions at reducedDim 'spatial'", {
    sce <- spots_with_proportions()
    xy <- SingleCellExperiment::reducedDim(sce, "spatial")
    props <- SummarizedExperiment::assay(SingleCellExperiment::altExp(sce, "DestVI"), "proportions")
    p <- plotSpotProportions(sce)
    expect_s3_class(p, "ggplot")
    expect_identical(levels(p$data$cell.type), rownames(props))
    for (type in rownames(props)) {
        rows <- plotted(p, type)
        expect_identical(rows$spot, colnames(sce))
        expect_identical(rows$x, unname(xy[, "x"]))
        expect_identical(rows$y, unname(xy[, "y"]))
        expect_identical(rows$proportion, unname(props[type, ]))
    }
    expect_identical(p$labels$x, "x")
    expect_s3_class(ggplot2::ggplot_build(p), "ggplot_built")  # it draws
    two <- plotSpotProportions(sce, cell.types = c("oligo", "astro"), ncol = 1)
    expect_identical(levels(two$data$cell.type), c("oligo", "astro"))
    expect_identical(nrow(two$data), 2L * ncol(sce))
})

test_that("plotSpotProportions refuses what it cannot plot, naming the fix", {
    sce <- spots_with_proportions()
    expect_error(plotSpotProportions(sce, cell.types = c("astro", "glia")),
                 "unknown cell type(s) 'glia'; altExp(x, \"DestVI\") has 'astro', 'neuron', 'oligo'", fixed = TRUE)
    expect_error(plotSpotProportions(sce, cell.types = 1), "cell.types must be cell-type names")
    no_props <- SingleCellExperiment::removeAltExps(sce)
    expect_error(plotSpotProportions(no_props), "run x <- runDestVI(x, reference) first", fixed = TRUE)
    no_xy <- sce
    SingleCellExperiment::reducedDim(no_xy, "spatial") <- NULL
    expect_error(plotSpotProportions(no_xy), "store them as reducedDim(x, \"spatial\")", fixed = TRUE)
    expect_error(plotSpotProportions(matrix(1)), "must be a SpatialExperiment or a SingleCellExperiment")
    skip_if_not_installed("SeuratObject")
    seu <- SeuratObject::CreateSeuratObject(counts = Matrix::Matrix(1, 4, 6, sparse = TRUE,
                                                                    dimnames = dimnames(sce)))
    expect_error(plotSpotProportions(seu), "Seurat::SpatialFeaturePlot", fixed = TRUE)
})

test_that("plotSpotProportions takes a SpatialExperiment's spatialCoords", {
    skip_if_no_spatialexperiment()
    sce <- spots_with_proportions()
    xy <- cbind(pxl_col = c(5, 6, 7, 5, 6, 7), pxl_row = c(1, 1, 1, 2, 2, 2))
    spe <- SpatialExperiment::SpatialExperiment(assays = list(counts = SummarizedExperiment::assay(sce, "counts")),
                                                spatialCoords = xy)
    SingleCellExperiment::altExp(spe, "DestVI") <- SingleCellExperiment::altExp(sce, "DestVI")
    p <- plotSpotProportions(spe, cell.types = "neuron")
    expect_identical(plotted(p, "neuron")$x, unname(xy[, 1]))
    expect_identical(plotted(p, "neuron")$y, unname(xy[, 2]))
    expect_identical(p$labels[c("x", "y")], list(x = "pxl_col", y = "pxl_row"))
})

test_that("runDestVI keeps a SpatialExperiment one, with its coordinates, image and colData, and adds altExp 'DestVI'", {
    skip_if_no_python()
    skip_if_no_spatialexperiment()
    sim <- simulateSpots(cortex_sce(300L, 150L), n.spots = 16L, mode = "grid")
    xy <- SingleCellExperiment::reducedDim(sim$spots, "spatial")
    colnames(xy) <- c("x", "y")
    spe <- SpatialExperiment::SpatialExperiment(
        assays = list(counts = SummarizedExperiment::assay(sim$spots, "counts")),
        colData = SummarizedExperiment::colData(sim$spots), spatialCoords = xy, sample_id = "slice1")
    image <- SpatialExperiment::SpatialImage(grDevices::as.raster(matrix(seq(0, 1, length.out = 16), 4)))
    SpatialExperiment::imgData(spe) <- S4Vectors::DataFrame(sample_id = "slice1", image_id = "lowres",
                                                            data = I(list(image)), scaleFactor = 0.5)
    out <- suppressWarnings(runDestVI(spe, sim$reference, sc_max_epochs = 2, st_max_epochs = 2, n_latent = 2,
                                      accelerator = "cpu", progress = FALSE))
    expect_s4_class(out, "SpatialExperiment")
    expect_identical(SpatialExperiment::spatialCoords(out), SpatialExperiment::spatialCoords(spe))
    expect_identical(SpatialExperiment::imgData(out), SpatialExperiment::imgData(spe))
    expect_identical(SummarizedExperiment::colData(out), SummarizedExperiment::colData(spe))
    expect_identical(SingleCellExperiment::removeAltExps(out), spe)
    props <- SummarizedExperiment::assay(SingleCellExperiment::altExp(out, "DestVI"), "proportions")
    expect_identical(dimnames(props), list(sort(unique(as.character(sim$reference$cell_type))), colnames(spe)))
    expect_equal(unname(colSums(props)), rep(1, ncol(spe)), tolerance = 1e-5)
    p <- plotSpotProportions(out)
    expect_identical(nrow(p$data), length(props))
    expect_identical(plotted(p, rownames(props)[1])$x, unname(xy[, "x"]))
    expect_identical(plotted(p, rownames(props)[2])$proportion, unname(props[2, ]))
})
