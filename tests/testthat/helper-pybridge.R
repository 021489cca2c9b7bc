# Tests that need the Python side skip without it, unless PYBRIDGE_REQUIRE_PYTHON=1
# (set by `make r-test` / CI), where a missing Python is a failure.
skip_if_no_python <- function() {
    if (pybridgeAvailable()) return(invisible(TRUE))
    if (identical(Sys.getenv("PYBRIDGE_REQUIRE_PYTHON"), "1")) {
        stop("PYBRIDGE_REQUIRE_PYTHON=1 but the pybridge Python module cannot be imported; ",
             "set RETICULATE_PYTHON to the project venv's python (make r-test does)")
    }
    testthat::skip("the pybridge Python module is not available")
}

python_exe <- function() reticulate::py_config()$python

# Run a Python script in a fresh process (not the reticulate-hosted interpreter).
run_python <- function(code) {
    f <- tempfile(fileext = ".py")
    writeLines(code, f)
    # without R's LD_LIBRARY_PATH, which can make a pyenv/conda Python load the system libpython
    out <- suppressWarnings(system2(python_exe(), f, stdout = TRUE, stderr = TRUE, env = "LD_LIBRARY_PATH="))
    status <- attr(out, "status")
    if (!is.null(status) && status != 0) stop("python failed:\n", paste(out, collapse = "\n"))
    out
}

# Real counts: the cortex data shipped with the Python package (3005 cells, obs$cell_type).
cortex_sce <- function(n_cells = 400L, n_genes = 300L) {
    sce <- cortexData()
    keep <- order(-Matrix::rowSums(SummarizedExperiment::assay(sce, "counts")))[seq_len(n_genes)]
    set.seed(0)
    sce[keep, sort(sample(ncol(sce), n_cells))]
}

# A SingleCellExperiment with every hard case: NA in every column type, factors with
# unused levels, ordered factors, non-ASCII and duplicated names, several assays, reducedDims.
tricky_sce <- function() {
    set.seed(1)
    m <- Matrix::rsparsematrix(6, 5, 0.5, rand.x = function(n) rpois(n, 4) + 1)
    dimnames(m) <- list(c("g1", "g2", "g\u00e9", "g1", "g5", "g6"), c("c1", "c1", "\u00e7", "d", "e"))
    sce <- SingleCellExperiment::SingleCellExperiment(list(counts = m, logcounts = log1p(m)))
    cd <- S4Vectors::DataFrame(
        f = factor(c("a", NA, "b", "a", "a"), levels = c("a", "b", "unused")),
        o = factor(c("lo", "hi", NA, "lo", "hi"), levels = c("lo", "hi"), ordered = TRUE),
        l = c(TRUE, NA, FALSE, TRUE, FALSE),
        i = c(1L, NA, 3L, 4L, 5L),
        d = c(1.5, NA, 2, -4, 5),
        s = c("x", NA, "\u00e9\u00e8", "y", "z"),
        check.names = FALSE
    )
    cd <- cbind(cd, S4Vectors::DataFrame(f = c(1L, 2L, 3L, NA, 5L), check.names = FALSE))  # duplicated name
    SummarizedExperiment::colData(sce) <- cd
    colnames(sce) <- c("c1", "c1", "\u00e7", "d", "e")
    SummarizedExperiment::rowData(sce)$symbol <- c("A", NA, "\u00c4", "A", "B", "C")
    SingleCellExperiment::reducedDim(sce, "PCA") <- matrix(rnorm(10), 5, dimnames = list(colnames(sce), NULL))
    SingleCellExperiment::reducedDim(sce, "UMAP") <- matrix(rnorm(10), 5, dimnames = list(colnames(sce), NULL))
    SingleCellExperiment::reducedDim(sce, "custom") <- matrix(rnorm(5), 5, dimnames = list(colnames(sce), NULL))
    sce
}

# Evaluate `expr` with the dense-matrix warning threshold at 0 GB.
withr_options_gb <- function(expr) {
    old <- options(pybridge.dense.warn.gb = 0)
    on.exit(options(old))
    expr
}
