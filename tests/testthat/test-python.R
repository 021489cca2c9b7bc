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

test_that("installPybridge() finds the carried sdist of its own version, or names the fix", {
    dir <- tempfile("carried")
    dir.create(dir)
    expect_error(pybridge:::.carriedPythonPackage(dir), "installPybridge\\(package = ")
    expect_error(pybridge:::.carriedPythonPackage(""), "carries no copy of the Python package pybridge-sc")
    sdist <- file.path(dir, sprintf("pybridge_sc-%s.tar.gz", utils::packageVersion("pybridge")))
    file.create(sdist)
    expect_identical(pybridge:::.carriedPythonPackage(dir), sdist)
    file.create(file.path(dir, "pybridge_sc-0.0.1.tar.gz"))
    file.remove(sdist)
    expect_error(pybridge:::.carriedPythonPackage(dir), "carries no copy")
})

test_that("the torch build and version wanted are matched exactly", {
    cpu <- list(version = "2.13.0+cpu", cuda = NA_character_)
    cuda <- list(version = "2.14.1", cuda = "13.0")
    matches <- pybridge:::.torchMatches
    expect_true(matches(cpu, "cpu", NULL))
    expect_true(matches(cpu, "cpu", "2.13.0"))
    expect_true(matches(cpu, "cpu", "2.13.0+cpu"))
    expect_false(matches(cpu, "cpu", "2.13.1"))
    expect_false(matches(cpu, "cpu", "2.1"))
    expect_false(matches(cpu, "cuda", NULL))
    expect_true(matches(cuda, "cuda", "2.14.1"))
    expect_false(matches(cuda, "cpu", NULL))
    expect_false(matches(NULL, "cpu", NULL))
    expect_identical(pybridge:::.torchBuildWanted("cpu"), "cpu")
    expect_identical(pybridge:::.torchBuildWanted("cuda"), "cuda")
    gpu <- nzchar(Sys.which("nvidia-smi")) || dir.exists("/proc/driver/nvidia")
    expect_message(auto <- pybridge:::.torchBuildWanted("auto"), if (gpu) "NVIDIA GPU found" else "no NVIDIA GPU")
    expect_identical(auto, if (gpu) "cuda" else "cpu")
    expect_error(installPybridge(torch = "rocm"), "should be one of")
    expect_error(installPybridge(torch_version = 2.13), "torch_version = \"2.13.0\"", fixed = TRUE)
    expect_error(installPybridge(package = c("a", "b")), "`package` must be NULL or one string")
})

test_that("a CPU torch that pip's configuration finds on disk is found offline", {
    skip_if_no_python()
    wheels <- Sys.glob("/opt/wheels/torch-*+cpu-*.whl")
    skip_if(length(wheels) == 0, "no CPU torch wheel in /opt/wheels on this machine")
    version <- sub("^torch-([^-]+)-.*", "\\1", basename(wheels[[1]]))
    found <- pybridge:::.localCpuTorchWheel(python_exe(), paste0("torch==", sub("+cpu", "", version, fixed = TRUE)))
    expect_match(URLdecode(found), basename(wheels[[1]]), fixed = TRUE)
    expect_null(pybridge:::.localCpuTorchWheel(python_exe(), "torch==1.0.0"))
})

test_that("torch comes from the chosen index, PyPI for CUDA, else the PyTorch CPU index or a local CPU wheel", {
    skip_if_no_python()
    source <- function(...) pybridge:::.torchSource(python_exe(), ...)
    expect_identical(source("cpu", "2.13.0", "https://example.org/simple"),
                     c("--index-url", "https://example.org/simple", "torch==2.13.0"))
    expect_identical(source("cuda", "2.14.1", NULL), "torch==2.14.1")
    expect_identical(source("cuda", NULL, NULL), "torch")
    skip_if(Sys.info()[["sysname"]] != "Linux", "the CPU index is used on Linux only")
    expect_identical(source("cpu", "1.0.0", NULL),
                     c("--index-url", "https://download.pytorch.org/whl/cpu", "torch==1.0.0"))
    local <- Sys.glob("/opt/wheels/torch-2.13.0+cpu-*.whl")
    skip_if(length(local) == 0, "no local CPU torch 2.13.0 on this machine")
    expect_match(URLdecode(source("cpu", "2.13.0", NULL)), basename(local), fixed = TRUE)
})

test_that("a Python without the matching pybridge-sc is refused with the R fix", {
    skip_if_no_python()
    expect_true(is.na(pybridge:::.distributionVersion(python_exe(), "no-such-distribution")))
    bare <- "/usr/bin/python3"
    skip_if(!file.exists(bare), "no system Python to test against")
    expect_error(pybridge:::.checkPythonPackageVersion(bare), "installPybridge\\(\\) without `package`")
})
