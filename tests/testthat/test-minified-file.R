# scviDecode() and scviDifferentialExpression() on the path of a minified .h5ad: the same results as on the
# minified SingleCellExperiment, reading only the chosen cells, and an HDF5-backed DelayedArray past max.dense.

# A small model with two batches, its minified SingleCellExperiment and the same data minified by Python's
# model.minify() into an .h5ad file; `adata`, the counts as Python's AnnData (made once).
minified_file_fixture <- local({
    cache <- NULL
    function() {
        if (is.null(cache)) {
            sce <- cortex_sce(120L, 60L)
            sce$sample <- rep(c("a", "b"), length.out = ncol(sce))
            model <- trainSCVI(sce, batch = "sample", n_latent = 3, n_hidden = 16, max_epochs = 3, batch_size = 32,
                               path = tempfile("m-"), progress = FALSE)
            adata <- .modelInput(model, sce, "counts", NULL)$adata
            path <- tempfile(fileext = ".h5ad")
            .pyModel(model)$minify(adata)$write_h5ad(path)
            cache <<- list(sce = sce, model = model, mini = minifySCVI(model, sce), path = path, adata = adata)
        }
        cache
    }
})

test_that("scviDecode on a minified file equals scviDecode on the minified SingleCellExperiment", {
    skip_if_no_python()
    f <- minified_file_fixture()
    genes <- rownames(f$sce)[c(5, 1, 9)]
    dense <- scviDecode(f$model, f$path, genes = genes, library.size = 1e4)
    expect_true(is.matrix(dense))
    expect_identical(dimnames(dense), list(genes, colnames(f$sce)))
    expect_equal(dense, scviDecode(f$model, f$mini, genes = genes, library.size = 1e4), tolerance = 1e-6)
    all_genes <- scviDecode(f$model, f$path)
    expect_identical(dimnames(all_genes), dimnames(f$sce))
})

test_that("scviDecode on a file reads the cells chosen by position, logical, name or obs column", {
    skip_if_no_python()
    f <- minified_file_fixture()
    full <- scviDecode(f$model, f$path, genes = rownames(f$sce)[1:4])
    pos <- c(7L, 2L, 30L, 2L)
    by_position <- scviDecode(f$model, f$path, genes = rownames(f$sce)[1:4], cells = pos)
    expect_identical(by_position, full[, pos])
    expect_identical(scviDecode(f$model, f$path, genes = rownames(f$sce)[1:4], cells = colnames(f$sce)[pos]),
                     by_position)
    keep <- f$sce$sample == "b"
    expect_identical(scviDecode(f$model, f$path, genes = rownames(f$sce)[1:4], cells = keep), full[, keep])
    expect_identical(scviDecode(f$model, f$path, genes = rownames(f$sce)[1:4], cells = list(sample = "b")),
                     full[, keep])
    expect_error(scviDecode(f$model, f$path, cells = 0), "positions in 1..120")
    expect_error(scviDecode(f$model, f$path, cells = "nope"), "not cells of the file")
    expect_error(scviDecode(f$model, f$path, cells = list(nope = "b")), "'nope' is not a cell-metadata")
    expect_error(scviDecode(f$model, f$path, batch = "sample"), "batch must be NULL for a file")
    expect_error(scviDecode(f$model, f$mini, cells = 1), "unused argument")
})

test_that("scviDecode on a file returns an HDF5-backed DelayedArray past max.dense", {
    skip_if_no_python()
    skip_if_not_installed("HDF5Array")
    f <- minified_file_fixture()
    genes <- rownames(f$sce)[1:5]
    dense <- scviDecode(f$model, f$path, genes = genes)
    # 8 bytes x 5 genes x 50 cells per block: three blocks, the last one short
    large <- scviDecode(f$model, f$path, genes = genes, max.dense = 8 * 5 * 50)
    expect_true(is(large, "DelayedArray"))
    expect_true(is(DelayedArray::seed(large), "HDF5ArraySeed"))
    expect_identical(dimnames(large), dimnames(dense))
    expect_identical(as.matrix(large), dense)
    withr_option <- options(pybridge.max.dense = 0)
    on.exit(options(withr_option))
    expect_true(is(scviDecode(f$model, f$path, genes = genes, cells = 1:3), "DelayedArray"))
})

test_that("scviDifferentialExpression on a minified file matches the minified SingleCellExperiment", {
    skip_if_no_python()
    f <- minified_file_fixture()
    run <- function(x, ...) {
        scviDifferentialExpression(f$model, x, n_samples_overall = 100L, seed = 1L, ...)
    }
    by_group <- run(f$path, groupby = "sample", group1 = "a")
    expect_identical(colnames(by_group), colnames(run(f$mini, groupby = "sample", group1 = "a")))
    expect_setequal(by_group$gene, rownames(f$sce))
    by_cells <- run(f$path, group1 = f$sce$sample == "a", mode = "change", pseudocounts = 1e-4)
    expect_identical(colnames(by_cells), colnames(run(f$mini, group1 = which(f$sce$sample == "a"), mode = "change",
                                                      pseudocounts = 1e-4)))
    expect_error(run(f$path, groupby = "nope"), "groupby must name a cell-metadata \\(obs\\) column")
    expect_error(run(f$path, groupby = "sample", mode = "change"), "pseudocounts = a number")
})

test_that("a missing, non-minified or other model's file is refused in R terms", {
    skip_if_no_python()
    f <- minified_file_fixture()
    missing <- tempfile(fileext = ".h5ad")
    expect_error(scviDecode(f$model, missing), "x must be the path of a minified .h5ad or .zarr file")
    expect_error(scviDifferentialExpression(f$model, missing, groupby = "sample"), "does not exist")
    counts <- tempfile(fileext = ".h5ad")
    f$adata$write_h5ad(counts)
    expect_error(scviDecode(f$model, counts), "is not minified: it holds counts. Use the SingleCellExperiment")
    other <- trainSCVI(f$sce, batch = "sample", n_latent = 3, n_hidden = 16, max_epochs = 1, batch_size = 32,
                       path = tempfile("w-"), progress = FALSE)
    expect_error(scviDecode(other, f$path), "x was minified by another model")
})
