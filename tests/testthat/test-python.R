test_that("loading the package binds no Python", {
    script <- tempfile(fileext = ".R")
    writeLines(c("suppressMessages(library(pybridge))",
                 "cat(reticulate::py_available(initialize = FALSE))"), script)
    out <- system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE, stderr = FALSE)
    expect_identical(utils::tail(out, 1), "FALSE")
})

test_that("RETICULATE_PYTHON is honoured and a missing module names the fix", {
    skip_if_no_python()
    expect_identical(normalizePath(usePybridge()), normalizePath(reticulate::py_config()$python))
    want <- Sys.getenv("RETICULATE_PYTHON")
    if (nzchar(want)) expect_identical(normalizePath(reticulate::py_config()$python), normalizePath(want))
    expect_error(usePybridge(python = "/nonexistent/python"), "already bound")
    script <- tempfile(fileext = ".R")
    writeLines(c("suppressMessages(library(pybridge))",
                 "tryCatch(trainSCVI(matrix(1, 2, 2)), error = function(e) cat(conditionMessage(e)))"), script)
    bare <- "/usr/bin/python3"
    skip_if(!file.exists(bare) || system2(bare, c("-c", shQuote("import pybridge")), stderr = FALSE) == 0,
            "no Python without pybridge to test against")
    env <- c(sprintf("RETICULATE_PYTHON=%s", bare), "PYTHONPATH=")
    out <- paste(system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE, stderr = TRUE, env = env),
                 collapse = "\n")
    expect_match(out, "installPybridge\\(\\)")
})
