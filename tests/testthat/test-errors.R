# Errors, warnings and progress as an R user meets them: R argument names, R cell and gene names with
# 1-based positions, R code as the fix; Python warnings as R warnings; progress through message().

small_sce <- function() {
    sce <- cortex_sce(60L, 40L)
    colnames(sce) <- paste0("cell_", seq_len(ncol(sce)))
    sce
}

quiet_train <- function(x, ...) trainSCVI(x, n_latent = 2, n_hidden = 8, max_epochs = 1, batch_size = 32,
                                          progress = FALSE, path = tempfile(), ...)

test_that("duplicated gene names train; matching genes by name later says how to make them unique in R", {
    skip_if_no_python()
    sce <- small_sce()
    rownames(sce)[2] <- rownames(sce)[1]
    model <- quiet_train(sce)
    expect_identical(model@settings$genes, rownames(sce))
    z <- calculateSCVI(sce, ntop = Inf, n_latent = 2, n_hidden = 8, max_epochs = 1, batch_size = 32,
                       progress = FALSE, path = tempfile())
    expect_identical(dim(z), c(ncol(sce), 2L))
    # the data in another gene order must be matched by name: refused, with the R fix
    input <- .modelInput(model, sce[rev(seq_len(nrow(sce))), ], "counts", NULL)
    err <- tryCatch(.withPython(.pyModel(model)$get_latent_representation(input$adata), input$context),
                    error = identity)
    expect_s3_class(err, "pybridge_duplicate_genes")
    expect_match(conditionMessage(err), sprintf("duplicated gene names \\('%s'\\)", rownames(sce)[1]))
    expect_match(conditionMessage(err), "rownames(x) <- make.unique(rownames(x))", fixed = TRUE)
    expect_match(conditionMessage(err), "scuttle::uniquifyFeatureNames", fixed = TRUE)
    expect_no_match(conditionMessage(err), "adata|var_names")
})

test_that("non-integer counts are refused with the R argument that allows them", {
    skip_if_no_python()
    sce <- small_sce()
    m <- as.matrix(SummarizedExperiment::assay(sce, "counts"))
    at <- which(m > 0)[1:3]
    m[at] <- m[at] + 0.5
    SummarizedExperiment::assay(sce, "counts") <- m
    expect_error(quiet_train(sce),
                 "assay 'counts' has 3 non-integer values \\(e.g. [0-9.]+\\).*allow.non.integer = TRUE")
    err <- tryCatch(quiet_train(sce), error = identity)
    expect_s3_class(err, "pybridge_non_integer")
    expect_no_match(conditionMessage(err), "allow_non_integer|layer=")
    model <- quiet_train(sce, allow.non.integer = TRUE)
    expect_true(all(is.finite(model@settings$history$loss_train)))
    z <- calculateSCVI(sce, ntop = 20, allow.non.integer = TRUE, n_latent = 2, n_hidden = 8, max_epochs = 1,
                       batch_size = 32, progress = FALSE, path = tempfile())
    expect_identical(dim(z), c(ncol(sce), 2L))
    expect_error(quiet_train(sce, allow.non.integer = NA), "allow.non.integer must be TRUE or FALSE")
})

test_that("negative and non-finite values name the assay and the R argument", {
    skip_if_no_python()
    sce <- small_sce()
    m <- as.matrix(SummarizedExperiment::assay(sce, "counts"))
    SummarizedExperiment::assay(sce, "logcounts") <- m - 1
    expect_error(quiet_train(sce, assay.type = "logcounts"),
                 "^assay 'logcounts' has [0-9]+ negative values \\(min -1\\).*assay.type = ",
                 class = "pybridge_negative")
    m[2, 3] <- NA
    SummarizedExperiment::assay(sce, "counts") <- m
    expect_error(quiet_train(sce), "^assay 'counts' has 1 NA, NaN or infinite values", class = "pybridge_non_finite")
})

test_that("empty cells are named with R names, 1-based positions and R code to drop them", {
    skip_if_no_python()
    sce <- small_sce()
    m <- SummarizedExperiment::assay(sce, "counts")
    m[, c(4, 9)] <- 0
    SummarizedExperiment::assay(sce, "counts") <- m
    err <- tryCatch(quiet_train(sce), error = identity)
    expect_s3_class(err, "pybridge_empty_cells")
    expect_match(conditionMessage(err),
                 "2 cells have no counts in assay 'counts': 'cell_4' \\(column 4\\), 'cell_9' \\(column 9\\)")
    expect_match(conditionMessage(err), 'x <- x[, Matrix::colSums(assay(x, "counts")) > 0]', fixed = TRUE)
    expect_no_match(conditionMessage(err), "adata|np\\.|positions \\[")
    # the fix in the message works
    x <- sce
    x <- x[, Matrix::colSums(SummarizedExperiment::assay(x, "counts")) > 0]
    expect_s4_class(quiet_train(x), "SCVIModel")
    # a plain matrix gets matrix code; cells empty only over the chosen genes are named too
    expect_error(quiet_train(m), "x <- x\\[, Matrix::colSums\\(x\\) > 0\\]")
    sparse_gene_cells <- small_sce()
    g <- SummarizedExperiment::assay(sparse_gene_cells, "counts")
    g[1:5, 7] <- 0
    SummarizedExperiment::assay(sparse_gene_cells, "counts") <- g
    err <- tryCatch(quiet_train(sparse_gene_cells, subset.row = 1:5), error = identity)
    expect_match(conditionMessage(err),
                 "1 cell has no counts in assay 'counts' over the 5 genes used.*'cell_7' \\(column 7\\)")
    expect_match(conditionMessage(err), "e.g. x <- x[, -c(7)], or use more genes", fixed = TRUE)
    expect_identical(err$cells, "cell_7")
})

test_that("runDestVI with NA labels names the labels argument and the cells", {
    skip_if_no_python()
    sce <- cortex_sce(120L, 60L)
    colnames(sce) <- paste0("ref_", seq_len(ncol(sce)))
    sce$cell_type <- as.character(sce$cell_type)
    sce$cell_type[c(2, 11)] <- NA
    spots <- sce[, 1:10]
    err <- tryCatch(runDestVI(spots, sce, labels = "cell_type", sc_max_epochs = 1, st_max_epochs = 1),
                    error = identity)
    expect_match(conditionMessage(err),
                 "^labels \\('cell_type'\\) is NA for 2 cells: 'ref_2' \\(column 2\\), 'ref_11' \\(column 11\\)")
    expect_match(conditionMessage(err), "x[, !is.na(x$cell_type)]", fixed = TRUE)
    expect_no_match(conditionMessage(err), "batch")
    # spots and reference are matched by gene name: duplicated names are refused with the R fix
    sce$cell_type[c(2, 11)] <- "x"
    rownames(spots)[2] <- rownames(spots)[1]
    expect_error(runDestVI(spots, sce, sc_max_epochs = 1, st_max_epochs = 1),
                 sprintf("spots has duplicated gene names \\('%s'\\).*rownames\\(spots\\) <- make.unique",
                         rownames(spots)[1]))
})

test_that("Python warnings arrive as R warnings, suppressible, without Python file paths", {
    skip_if_no_python()
    sce <- small_sce()
    sce$one <- "a"
    w <- tryCatch(quiet_train(sce, batch = "one"), warning = identity)
    expect_s3_class(w, "pybridgeWarning")
    expect_identical(conditionMessage(w),
                     "batch ('one') has a single value ('a'): the model is trained without batch correction")
    expect_no_match(conditionMessage(w), "\\.py|sys:1|UserWarning")
    expect_silent(suppressWarnings(quiet_train(sce, batch = "one")))
    # nothing reaches stderr (no raw 'sys:1: UserWarning' line) in a fresh Rscript either
    script <- tempfile(fileext = ".R")
    writeLines(c(
        sprintf("suppressMessages(pkgload::load_all('%s', quiet = TRUE))", normalizePath(test_path("../.."))),
        "m <- matrix(rpois(40 * 30, 3), 40, 30, dimnames = list(paste0('g', 1:40), paste0('c', 1:30)))",
        "x <- suppressWarnings(trainSCVI(m, batch = rep('a', 30), n_hidden = 8, max_epochs = 2,",
        "                                progress = FALSE, path = tempfile()))"
    ), script)
    out <- system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE, stderr = TRUE)
    expect_false(any(grepl("UserWarning|sys:1|single category|batch_size", out)), info = paste(out, collapse = "\n"))
})

test_that("training progress shows under Rscript through message(), and progress = FALSE silences it", {
    skip_if_no_python()
    skip_if_not_installed("pkgload")
    script <- tempfile(fileext = ".R")
    writeLines(c(
        sprintf("suppressMessages(pkgload::load_all('%s', quiet = TRUE))", normalizePath(test_path("../.."))),
        "m <- matrix(rpois(40 * 30, 3), 40, 30, dimnames = list(paste0('g', 1:40), paste0('c', 1:30)))",
        "msgs <- character()",
        "x <- withCallingHandlers(trainSCVI(m, n_hidden = 8, max_epochs = 20, batch_size = 16, path = tempfile()),",
        "    message = function(e) msgs <<- c(msgs, conditionMessage(e)))",
        "cat(sprintf('captured %d\\n', length(grep('^scVI: epoch', msgs))))",
        "y <- trainSCVI(m, n_hidden = 8, max_epochs = 3, batch_size = 16, progress = FALSE, path = tempfile())",
        "options(pybridge.progress = FALSE)",
        "y <- trainSCVI(m, n_hidden = 8, max_epochs = 3, batch_size = 16, path = tempfile())"
    ), script)
    out <- system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE, stderr = TRUE)
    epochs <- grep("^scVI: epoch", out, value = TRUE)
    # epochs 1, 2, 4, ..., 20 of the first call; none of the second
    expect_identical(sub("^scVI: epoch ([0-9]+)/20.*", "\\1", epochs), as.character(c(1, seq(2, 20, by = 2))),
                     info = paste(out, collapse = "\n"))
    expect_match(epochs, "loss \\(negative ELBO per cell\\) [0-9.]+, validation [0-9.]+")
    expect_true("captured 11" %in% out)  # message() conditions, so handlers, knitr and sink() see them
    expect_length(grep("epoch [0-9]+/3", out), 0L)  # progress = FALSE, then options(pybridge.progress = FALSE)
})

test_that("training progress is part of a knitted document", {
    skip_if_no_python()
    skip_if_not_installed("knitr")
    skip_if_not_installed("pkgload")
    rmd <- tempfile(fileext = ".Rmd")
    writeLines(c(
        "```{r}",
        sprintf("suppressMessages(pkgload::load_all('%s', quiet = TRUE))", normalizePath(test_path("../.."))),
        "m <- matrix(rpois(40 * 30, 3), 40, 30, dimnames = list(paste0('g', 1:40), paste0('c', 1:30)))",
        "model <- trainSCVI(m, n_hidden = 8, max_epochs = 4, batch_size = 16, path = tempfile())",
        "```"
    ), rmd)
    md <- tempfile(fileext = ".md")
    script <- tempfile(fileext = ".R")
    writeLines(sprintf("knitr::knit('%s', output = '%s', quiet = TRUE)", rmd, md), script)
    out <- system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE, stderr = TRUE)
    knitted <- readLines(md)
    expect_length(grep("^## scVI: epoch [0-9]+/4, loss", knitted), 4L)
    expect_false(any(grepl("scVI: epoch", out)), info = paste(out, collapse = "\n"))  # in the document, not the console
})
