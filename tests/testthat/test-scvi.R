test_that("runSCVI adds reducedDim 'scVI' on real counts and changes nothing else", {
    skip_if_no_python()
    sce <- cortex_sce()
    before <- sce
    dir <- tempfile("scvi-")
    out <- runSCVI(sce, batch = "cell_type", n_latent = 4, n_hidden = 32, max_epochs = 3, path = dir)
    z <- SingleCellExperiment::reducedDim(out, "scVI")
    expect_identical(dim(z), c(ncol(sce), 4L))
    expect_identical(rownames(z), colnames(sce))
    expect_true(all(is.finite(z)))
    expect_identical(SummarizedExperiment::colData(out), SummarizedExperiment::colData(sce))
    expect_identical(SummarizedExperiment::assays(out), SummarizedExperiment::assays(sce))
    expect_identical(sce, before)
    model <- S4Vectors::metadata(out)$pybridge$scVI
    expect_s4_class(model, "SCVIModel")
    expect_identical(model@path, normalizePath(dir))
    expect_identical(model@settings$batch_key, "cell_type")
    expect_length(model@settings$history$loss_train, 3L)
    expect_true(all(model@settings$history$loss_train > 0))  # the negative ELBO, a loss
    # the stored latent is what the model gives on the same data
    expect_equal(scviLatent(model, sce), z, tolerance = 1e-6)
    # calculateSCVI on a plain dgCMatrix with a batch vector and a gene subset
    m <- SummarizedExperiment::assay(sce, "counts")
    z2 <- calculateSCVI(m, batch = as.character(sce$cell_type), subset.row = 1:50, n_latent = 2,
                        max_epochs = 2, path = tempfile())
    expect_identical(dim(z2), c(ncol(sce), 2L))
    expect_length(attr(z2, "model")@settings$genes, 50L)
})

test_that("the model handle survives saveRDS and a new R session; outputs have the right shape", {
    skip_if_no_python()
    sce <- cortex_sce(200L, 100L)
    model <- trainSCVI(sce, n_latent = 3, n_hidden = 16, max_epochs = 2, path = tempfile("m-"))
    z <- scviLatent(model, sce)
    rds <- tempfile(fileext = ".rds")
    saveRDS(list(model = model, sce = sce), rds)
    zfile <- tempfile(fileext = ".rds")
    script <- tempfile(fileext = ".R")
    writeLines(c(
        sprintf("x <- readRDS('%s')", rds),
        "suppressMessages(library(pybridge))",
        sprintf("saveRDS(scviLatent(x$model, x$sce), '%s')", zfile)
    ), script)
    res <- system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE, stderr = TRUE)
    expect_true(file.exists(zfile), info = paste(res, collapse = "\n"))
    expect_equal(readRDS(zfile), z, tolerance = 1e-6)

    saved <- saveSCVI(model, file.path(tempdir(), "saved-model"), overwrite = TRUE)
    expect_error(saveSCVI(model, saved@path), "exists")
    again <- loadSCVI(saved@path)
    expect_equal(scviLatent(again, sce), z, tolerance = 1e-6)

    genes <- rownames(sce)[c(5, 1)]
    rho <- scviNormalized(model, sce, genes = genes, library.size = 1e4, chunk.size = 64L)
    expect_identical(dimnames(rho), list(genes, colnames(sce)))
    expect_warning(full <- withr_options_gb(scviNormalized(model, sce)), "building a dense 0.0 GB matrix")
    expect_equal(unname(colSums(full)), rep(1, ncol(sce)), tolerance = 1e-4)
    expect_equal(rho, full[genes, ] * 1e4, tolerance = 1e-4)
    y <- scviPosteriorSample(model, sce)
    expect_s4_class(y, "dgCMatrix")
    expect_identical(dimnames(y), dimnames(sce))
    expect_true(all(y@x == round(y@x)))
    y3 <- scviPosteriorSample(model, sce, n.samples = 3, genes = genes)
    expect_identical(dim(y3), c(2L, ncol(sce), 3L))
})

test_that("a model trained in R reloads in Python with the same latent, and the reverse", {
    skip_if_no_python()
    sce <- cortex_sce(200L, 100L)
    dir <- tempfile("r-model-")
    model <- trainSCVI(sce, batch = "cell_type", n_latent = 3, n_hidden = 16, max_epochs = 2, path = dir)
    z <- scviLatent(model, sce)
    h5 <- tempfile(fileext = ".h5ad")
    writeH5AD(sce, h5)
    zcsv <- tempfile(fileext = ".csv")
    run_python(c(
        "import numpy as np, anndata, pybridge",
        sprintf("m = pybridge.SCVI.load(%s)", deparse(dir)),
        sprintf("a = anndata.read_h5ad(%s)", deparse(h5)),
        sprintf("np.savetxt(%s, m.get_latent_representation(a), delimiter=',')", deparse(zcsv))
    ))
    expect_equal(unname(as.matrix(utils::read.csv(zcsv, header = FALSE))), unname(z), tolerance = 1e-5)

    pydir <- tempfile("py-model-")
    pyz <- tempfile(fileext = ".csv")
    run_python(c(
        "import numpy as np, anndata, pybridge",
        sprintf("a = anndata.read_h5ad(%s)", deparse(h5)),
        "pybridge.SCVI.setup_anndata(a, batch_key='cell_type')",
        "m = pybridge.SCVI(a, n_latent=2, n_hidden=16)",
        "m.train(max_epochs=2, progress=False)",
        sprintf("m.save(%s)", deparse(pydir)),
        sprintf("np.savetxt(%s, m.get_latent_representation(), delimiter=',')", deparse(pyz))
    ))
    pymodel <- loadSCVI(pydir)
    expect_identical(pymodel@settings$batch_key, "cell_type")
    expect_equal(unname(scviLatent(pymodel, sce)), unname(as.matrix(utils::read.csv(pyz, header = FALSE))),
                 tolerance = 1e-5)
})

test_that("bad input gets clear errors", {
    skip_if_no_python()
    sce <- cortex_sce(60L, 40L)
    expect_error(trainSCVI(sce, n_latnet = 3), "unknown argument.*n_latnet")
    expect_error(trainSCVI(sce, n_latent = 2.5), "n_latent must be a single whole number")
    expect_error(trainSCVI(sce, batch = "nope"), "not a column of the cell metadata")
    b <- as.character(sce$cell_type)
    b[3] <- NA
    expect_error(trainSCVI(sce, batch = b),
                 sprintf("batch is NA for 1 cell: '%s' \\(column 3\\).*keep <- !is.na\\(batch\\)", colnames(sce)[3]))
    expect_error(trainSCVI(sce, assay.type = "logcounts"), "assay 'logcounts' not found")
    model <- trainSCVI(sce, n_latent = 2, n_hidden = 8, max_epochs = 1, batch_size = 32, path = tempfile())
    expect_error(scviLatent(model, sce[1:30, ]), "lack 10 of the model's 40 genes")
    gone <- methods::new("SCVIModel", path = tempfile(), settings = model@settings)
    expect_error(scviLatent(gone, sce), "no longer holds a model")
    expect_error(loadSCVI(tempdir()), "not a saved pybridge model")
})

test_that("runSCVI trains on the ntop most variable genes unless subset.row says otherwise", {
    skip_if_no_python()
    skip_if_not_installed("scuttle")
    sce <- cortex_sce(150L, 120L)
    out <- runSCVI(sce, ntop = 30, n_latent = 2, n_hidden = 8, max_epochs = 1, progress = FALSE, path = tempfile())
    # the same ranking as the variance of scuttle's log-normalised counts (log2 vs log1p: the same order)
    v <- apply(SummarizedExperiment::assay(scuttle::logNormCounts(sce), "logcounts"), 1, stats::var)
    expect_identical(S4Vectors::metadata(out)$pybridge$scVI@settings$genes,
                     rownames(sce)[sort(order(v, decreasing = TRUE)[1:30])])
    chosen <- rownames(sce)[c(3, 1, 7)]
    z <- calculateSCVI(sce, subset.row = chosen, ntop = 30, n_latent = 2, n_hidden = 8, max_epochs = 1,
                       progress = FALSE, path = tempfile())
    expect_identical(attr(z, "model")@settings$genes, chosen)
    all_genes <- calculateSCVI(sce, ntop = Inf, n_latent = 2, n_hidden = 8, max_epochs = 1, progress = FALSE,
                               path = tempfile())
    expect_identical(attr(all_genes, "model")@settings$genes, rownames(sce))
    model <- trainSCVI(sce, n_latent = 2, n_hidden = 8, max_epochs = 1, progress = FALSE, path = tempfile())
    expect_identical(model@settings$genes, rownames(sce))  # trainSCVI: all genes
    expect_error(runSCVI(sce, ntop = 0), "ntop must be a single whole number")
})

test_that("show() reports the training loss as the negative ELBO", {
    skip_if_no_python()
    sce <- cortex_sce(60L, 40L)
    model <- trainSCVI(sce, n_latent = 2, n_hidden = 8, max_epochs = 2, batch_size = 32, progress = FALSE,
                       path = tempfile())
    shown <- utils::capture.output(show(model))
    loss <- utils::tail(model@settings$history$loss_train, 1)
    expect_match(shown, sprintf("final training loss \\(negative ELBO per cell\\) %s$", format(loss, digits = 6)),
                 all = FALSE)
    elbo <- reticulate::py_to_r(.pyModel(model)$get_elbo())
    expect_lt(elbo, 0)  # Python's get_elbo() is the ELBO itself, the history its negative
})
