# A minified SingleCellExperiment stands in for its counts in every output of the model that minified it,
# and is refused wherever the counts themselves are read.

# float32 resolution: the same quantity computed in float32 along two routes (softmax; exp(logit - stored
# log-normaliser)) agrees to a relative error of about eps32 * |log value|; log-frequencies stay above -30.
.EPS32 <- 2^-23
.REL_TOL <- 4 * .EPS32 * 30

max_rel_diff <- function(a, b) max(abs(a / b - 1))

# Draw after seeding torch, so that two calls sample the same numbers.
seeded <- function(expr) {
    reticulate::import("torch")$manual_seed(7L)
    expr
}

# One small model on cortex counts with two batches, its data and their minified copy (trained once).
minified_fixture <- local({
    cache <- NULL
    function() {
        if (is.null(cache)) {
            sce <- cortex_sce(200L, 100L)
            sce$sample <- rep(c("a", "b"), length.out = ncol(sce))
            model <- trainSCVI(sce, batch = "sample", n_latent = 3, n_hidden = 16, max_epochs = 5,
                               path = tempfile("m-"))
            cache <<- list(sce = sce, model = model, mini = minifySCVI(model, sce))
        }
        cache
    }
})

test_that("minifySCVI keeps the latent posterior and library size and drops the counts", {
    skip_if_no_python()
    f <- minified_fixture()
    sce <- f$sce
    mini <- f$mini
    expect_identical(S4Vectors::metadata(mini)$pybridge$minify_type, "latent_posterior_parameters")
    expect_match(S4Vectors::metadata(mini)$pybridge$minified_by, "^[0-9a-f]{64}$")
    qzm <- SingleCellExperiment::reducedDim(mini, "scvi_latent_qzm")
    expect_identical(dim(qzm), c(ncol(sce), 3L))
    expect_identical(rownames(qzm), colnames(sce))
    expect_true(all(SingleCellExperiment::reducedDim(mini, "scvi_latent_qzv") > 0))
    expect_equal(mini$observed_lib_size, unname(Matrix::colSums(SummarizedExperiment::assay(sce, "counts"))),
                 tolerance = 1e-6)
    expect_true(all(is.finite(mini$pybridge_log_normalizer)))
    expect_identical(SummarizedExperiment::colData(mini)$cell_type, sce$cell_type)
    zeros <- SummarizedExperiment::assay(mini, "counts")
    expect_s4_class(zeros, "dgCMatrix")
    expect_identical(length(zeros@x), 0L)
    expect_identical(dimnames(zeros), dimnames(sce))
    expect_error(minifySCVI(f$model, mini), "already minified")
})

test_that("scviLatent on minified data is the stored posterior mean, or a draw from the stored posterior", {
    skip_if_no_python()
    f <- minified_fixture()
    z <- scviLatent(f$model, f$mini)
    expect_identical(dimnames(z), list(colnames(f$sce), paste0("scVI_", 1:3)))
    expect_identical(unname(z), unname(SingleCellExperiment::reducedDim(f$mini, "scvi_latent_qzm")))
    expect_identical(nrow(unique(z)), ncol(f$mini))
    expect_identical(z, scviLatent(f$model, f$sce))
    drawn <- seeded(scviLatent(f$model, f$mini, give.mean = FALSE))
    expect_identical(drawn, seeded(scviLatent(f$model, f$sce, give.mean = FALSE)))
    expect_gt(max(abs(drawn - z)), 0)
    copy <- loadSCVI(saveSCVI(f$model, tempfile("copy-"))@path)
    expect_identical(scviLatent(copy, f$mini), z)
    other <- trainSCVI(f$sce, batch = "sample", n_latent = 3, n_hidden = 16, max_epochs = 1, path = tempfile("w-"))
    expect_error(scviLatent(other, f$mini), "minified by another model")
    expect_error(scviDecode(other, f$mini), "minified by another model")
})

test_that("scviNormalized on minified data equals scviDecode and the result on the counts", {
    skip_if_no_python()
    f <- minified_fixture()
    genes <- rownames(f$sce)[c(7, 2, 30)]
    rho <- scviNormalized(f$model, f$mini, library.size = 1e4)
    expect_identical(dimnames(rho), dimnames(f$sce))
    # both are the expected frequency at z = posterior mean, scaled to 1e4
    expect_lt(max_rel_diff(rho, scviDecode(f$model, f$mini, library.size = 1e4)), .REL_TOL)
    expect_lt(max_rel_diff(rho, scviNormalized(f$model, f$sce, library.size = 1e4)), .REL_TOL)
    expect_lt(max(abs(colSums(rho) / 1e4 - 1)), .REL_TOL)
    sub <- scviNormalized(f$model, f$mini, genes = genes, transform.batch = "a", chunk.size = 64L)
    expect_lt(max_rel_diff(sub, scviNormalized(f$model, f$sce, genes = genes, transform.batch = "a")), .REL_TOL)
    averaged <- seeded(scviNormalized(f$model, f$mini, genes = genes, n.samples = 3))
    expect_identical(averaged, seeded(scviNormalized(f$model, f$sce, genes = genes, n.samples = 3)))
})

test_that("scviDecode on minified data matches the counts", {
    skip_if_no_python()
    f <- minified_fixture()
    genes <- rownames(f$sce)[c(7, 2, 30)]
    from_mini <- scviDecode(f$model, f$mini, genes = genes, library.size = 1e4)
    expect_identical(dimnames(from_mini), list(genes, colnames(f$sce)))
    expect_lt(max_rel_diff(from_mini, scviDecode(f$model, f$sce, genes = genes, library.size = 1e4)), .REL_TOL)
    expect_lt(max(abs(colSums(scviDecode(f$model, f$mini)) - 1)), .REL_TOL)
    expect_error(scviDecode(f$model, f$mini, genes = "nope"), "not in the model")
})

test_that("scviPosteriorSample on minified data draws at each cell's stored library size", {
    skip_if_no_python()
    f <- minified_fixture()
    y <- seeded(scviPosteriorSample(f$model, f$mini))
    expect_s4_class(y, "dgCMatrix")
    expect_identical(dimnames(y), dimnames(f$sce))
    expect_gt(length(y@x), 0L)
    expect_identical(y, seeded(scviPosteriorSample(f$model, f$sce)))
    expect_gt(stats::cor(log1p(Matrix::colSums(y)), log(f$mini$observed_lib_size)), 0.8)
    several <- scviPosteriorSample(f$model, f$mini, n.samples = 2, genes = rownames(f$sce)[1:4])
    expect_identical(dim(several), c(4L, ncol(f$sce), 2L))
})

test_that("scviDifferentialExpression on minified data matches the counts without raw-count columns", {
    skip_if_no_python()
    f <- minified_fixture()
    run <- function(x, ...) {
        seeded(scviDifferentialExpression(f$model, x, groupby = "cell_type", group1 = "a", n_samples_overall = 200L,
                                          ...))
    }
    for (args in list(list(mode = "vanilla"), list(mode = "change", pseudocounts = 1e-4, batch.correction = TRUE))) {
        from_mini <- do.call(run, c(list(f$mini), args))
        from_counts <- do.call(run, c(list(f$sce, all_stats = FALSE), args))
        expect_false("raw_mean1" %in% colnames(from_mini))
        expect_identical(colnames(from_mini), colnames(from_counts))
        expect_identical(from_mini$gene, from_counts$gene)
        numbers <- vapply(from_mini, is.numeric, logical(1))
        expect_lt(max(abs(as.matrix(from_mini[numbers]) - as.matrix(from_counts[numbers]))), .REL_TOL)
    }
    expect_error(run(f$mini, mode = "change"), "pseudocounts = a number")
    expect_error(run(f$mini, all_stats = TRUE), "all_stats = TRUE .* minified")
})

test_that("functions that read counts refuse a minified object", {
    skip_if_no_python()
    f <- minified_fixture()
    refused <- function(fn) paste0("^", fn, "\\(\\) needs counts, but the object was minified by minifySCVI\\(\\)")
    expect_error(trainSCVI(f$mini, max_epochs = 1), refused("trainSCVI"))
    expect_error(runSCVI(f$mini, max_epochs = 1), refused("runSCVI"))
    expect_error(calculateSCVI(f$mini, max_epochs = 1), refused("calculateSCVI"))
    expect_error(splitCounts(f$mini), refused("splitCounts"))
    expect_error(scviDiagnostics(f$model, f$mini), refused("scviDiagnostics"))
    expect_error(runDestVI(f$mini, f$sce, labels = "cell_type"), refused("runDestVI"))
    expect_error(runDestVI(f$sce, f$mini, labels = "cell_type"), refused("runDestVI"))
})
