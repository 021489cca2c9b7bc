with_model_dir <- function(dir, expr) {
    old <- options(pybridge.model.dir = dir)
    on.exit(options(old))
    expr
}

test_that("models trained without path go to the model folder, announced; listSCVI and removeSCVI manage them", {
    skip_if_no_python()
    dir <- tempfile("models-")
    counts <- SummarizedExperiment::assay(cortex_sce(60L, 30L), "counts")
    with_model_dir(dir, {
        expect_message(m1 <- trainSCVI(counts, n_hidden = 8, max_epochs = 1, batch_size = 32, progress = FALSE),
                       "scVI model saved to .*listSCVI\\(\\).*removeSCVI\\(\\)")
        expect_identical(dirname(m1@path), normalizePath(dir))
        set.seed(42)
        seed <- .Random.seed
        m2 <- suppressMessages(trainSCVI(counts, n_hidden = 8, max_epochs = 1, batch_size = 32, progress = FALSE))
        expect_identical(.Random.seed, seed)  # naming the folder leaves the user's random stream alone
        dir.create(file.path(dir, "not-a-model"))
        saved <- listSCVI()
        expect_identical(saved$path, c(m1@path, m2@path)[order(file.mtime(file.path(c(m1@path, m2@path),
                                                                                 "model.safetensors")))])
        expect_true(all(saved$size > 0))
        expect_s3_class(saved$modified, "POSIXct")
        # by handle
        expect_message(removed <- removeSCVI(m1), "removed 1 model")
        expect_identical(removed, m1@path)
        expect_false(dir.exists(m1@path))
        expect_error(scviLatent(m1, counts), "no longer holds a model")
        # by age: nothing is 1 day old, everything is >= 0 days old
        expect_length(suppressMessages(removeSCVI(older.than = 1)), 0L)
        expect_identical(suppressMessages(removeSCVI(older.than = as.difftime(0, units = "days"))), m2@path)
        expect_identical(nrow(listSCVI()), 0L)
        # only saved models are removed
        expect_error(removeSCVI(file.path(dir, "not-a-model")), "not saved pybridge models")
        expect_true(dir.exists(file.path(dir, "not-a-model")))
        expect_error(removeSCVI(), "pass either x")
        expect_error(removeSCVI(older.than = -1), "older.than must be")
    })
    expect_identical(nrow(listSCVI(tempfile("empty-"))), 0L)
    expect_error(with_model_dir(c("a", "b"), listSCVI()), "must be one folder path")
})

test_that("a path given when training is used and not announced", {
    skip_if_no_python()
    counts <- SummarizedExperiment::assay(cortex_sce(60L, 30L), "counts")
    dir <- tempfile("mine-")
    expect_silent(m <- trainSCVI(counts, n_hidden = 8, max_epochs = 1, batch_size = 32, progress = FALSE, path = dir))
    expect_identical(m@path, normalizePath(dir))
    expect_true(m@path %in% listSCVI(dirname(dir))$path)  # listSCVI(dir) lists any folder
})
