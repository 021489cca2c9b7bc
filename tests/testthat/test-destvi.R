test_that("runDestVI stores proportions and states in altExp 'DestVI' and changes nothing else", {
    skip_if_no_python()
    sce <- cortex_sce(300L, 120L)
    counts <- SummarizedExperiment::assay(sce, "counts")
    # pseudo-spots: sums of 3 random reference cells each
    set.seed(2)
    members <- replicate(20, sample(ncol(sce), 3))
    spot_counts <- do.call(cbind, lapply(seq_len(ncol(members)), function(j) Matrix::rowSums(counts[, members[, j]])))
    dimnames(spot_counts) <- list(rownames(sce), paste0("spot", seq_len(ncol(members))))
    spots <- SingleCellExperiment::SingleCellExperiment(list(counts = methods::as(spot_counts, "dgCMatrix")))
    spots$region <- rep(c("a", "b"), 10)
    before <- spots
    warned <- character()
    out <- withCallingHandlers(
        runDestVI(spots, sce, labels = "cell_type", sc_max_epochs = 5, st_max_epochs = 5, n_latent = 3,
                  cells_per_spot = 3, n_models = 2, accelerator = "cpu", progress = FALSE),
        warning = function(w) {
            warned <<- c(warned, conditionMessage(w))
            invokeRestart("muffleWarning")
        })
    expect_true(any(grepl("with fewer than 50 spots the proportions are unreliable", warned)))  # R warnings
    se <- SingleCellExperiment::altExp(out, "DestVI")
    props <- SummarizedExperiment::assay(se, "proportions")
    types <- sort(unique(as.character(sce$cell_type)))
    expect_identical(dim(props), c(length(types), ncol(spots)))
    expect_setequal(rownames(props), types)
    expect_identical(colnames(props), colnames(spots))
    expect_true(all(props >= 0))
    expect_equal(unname(colSums(props)), rep(1, ncol(spots)), tolerance = 1e-5)
    gamma <- S4Vectors::metadata(se)$gamma
    expect_setequal(names(gamma), types)
    expect_identical(dim(gamma[[1]]), c(ncol(spots), 3L))
    expect_identical(rownames(gamma[[1]]), colnames(spots))
    expect_identical(SummarizedExperiment::assays(out), SummarizedExperiment::assays(before))
    expect_identical(SummarizedExperiment::colData(out), SummarizedExperiment::colData(before))
    expect_identical(spots, before)
    expect_error(runDestVI(spots, sce, labels = "nope"), "labels = 'nope'")
    expect_error(runDestVI(spots, sce, st_max_epochs = 1.5), "whole number")
    expect_error(runDestVI(spots, sce, foo = 1), "unknown argument")
    expect_error(runDestVI(spots, sce, cells_per_spot = 0.5), "cells_per_spot must be a number >= 1")  # before training
})

test_that("runDestVI on Seurat spots adds an Assay 'DestVI'", {
    skip_if_no_python()
    skip_if_not_installed("SeuratObject")
    sce <- cortex_sce(200L, 100L)
    counts <- SummarizedExperiment::assay(sce, "counts")
    spots <- SeuratObject::CreateSeuratObject(counts = counts[, 1:15])
    # 15 spots and rare cell types: DestVI warns, in R terms (R argument syntax, no Python advice)
    warned <- character()
    out <- withCallingHandlers(
        runDestVI(spots, sce, sc_max_epochs = 3, st_max_epochs = 3, n_latent = 2, accelerator = "cpu",
                  progress = FALSE),
        warning = function(w) {
            warned <<- c(warned, conditionMessage(w))
            invokeRestart("muffleWarning")
        })
    rare <- grep("cell types with fewer than 10 cells", warned, value = TRUE)
    expect_length(rare, 1L)
    expect_match(rare, "weight_obs = TRUE", fixed = TRUE)
    expect_false(any(grepl("weight_obs=True|batch_size=", warned)))
    expect_true("DestVI" %in% SeuratObject::Assays(out))
    kept <- SeuratObject::Misc(out, slot = "DestVI")
    expect_setequal(names(kept$gamma), unique(as.character(sce$cell_type)))
    expect_identical(rownames(kept$gamma[[1]]), colnames(spots))
    expect_true(length(kept$genes) > 50L)
    props <- as.matrix(seurat_layer(out[["DestVI"]], "data"))
    expect_identical(ncol(props), 15L)
    expect_identical(nrow(props), length(unique(sce$cell_type)))
    expect_equal(unname(colSums(props)), rep(1, 15), tolerance = 1e-5)
})
