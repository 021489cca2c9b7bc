# Finding, installing and binding the Python side. Nothing here runs when the
# package is loaded: Python is bound on the first call that needs it.

.pb <- new.env(parent = emptyenv())

#' Install the Python side of pybridge into a virtual environment
#'
#' Creates (or reuses) a Python virtual environment with pip and installs the
#' `pybridge` Python package into it, pinning `numpy < 2` when the installed
#' reticulate is older than 1.38 (older reticulate cannot talk to NumPy 2).
#' Run it once; afterwards the first pybridge call binds the `"r-pybridge"`
#' environment (or pick another with [usePybridge()]). If Python was already
#' bound in this session, restart R first. With reticulate < 1.38, `numpy<2` is
#' pinned. On a CPU-only machine, install the CPU build of torch, e.g.
#' `extra_packages = "torch"` with
#' `pip_options = "--extra-index-url https://download.pytorch.org/whl/cpu"`.
#'
#' @param envname Name of (or path to) the virtual environment.
#' @param python Python interpreter used to create the environment
#'   (default: `python3` on the `PATH`).
#' @param package pip requirement for the Python package: a name, a version
#'   specifier, a wheel file or a source directory.
#' @param extra_packages Further pip requirements installed alongside.
#' @param pip_options Extra options for `pip install`, e.g. an index URL.
#' @return The path of the environment's Python interpreter, invisibly.
#' @export
#' @examples
#' \dontrun{
#' installPybridge()
#' }
installPybridge <- function(envname = "r-pybridge", python = NULL, package = "pybridge",
                            extra_packages = character(), pip_options = character()) {
    if (is.null(python)) {
        python <- Sys.which("python3")
        if (!nzchar(python)) {
            stop("no 'python3' on the PATH: install Python >= 3.10 (e.g. apt-get install python3 python3-venv) ",
                 "or pass installPybridge(python = \"/path/to/python3\")", call. = FALSE)
        }
    }
    # R exports LD_LIBRARY_PATH with the system library directory first; a Python built
    # elsewhere (pyenv, conda) then loads the system libpython and its ssl module breaks.
    old_ld <- Sys.getenv("LD_LIBRARY_PATH", unset = NA)
    Sys.unsetenv("LD_LIBRARY_PATH")
    on.exit(if (!is.na(old_ld)) Sys.setenv(LD_LIBRARY_PATH = old_ld), add = TRUE)
    numpy <- if (utils::packageVersion("reticulate") < "1.38") "numpy<2" else "numpy"
    if (!reticulate::virtualenv_exists(envname)) {
        reticulate::virtualenv_create(envname, python = python, packages = c("pip", "wheel", "setuptools", numpy))
    }
    pkgs <- c(numpy, package, extra_packages)
    reticulate::virtualenv_install(envname, packages = pkgs, pip_options = pip_options,
                                   ignore_installed = FALSE)
    invisible(reticulate::virtualenv_python(envname))
}

#' Choose the Python that pybridge uses
#'
#' Binds reticulate to `python` (an interpreter path) or to the virtual
#' environment `envname`, then imports the `pybridge` module to check it is
#' there. Without arguments it follows `RETICULATE_PYTHON`, then the
#' `"r-pybridge"` environment made by [installPybridge()], then reticulate's
#' default. Python can be bound only once per R session.
#'
#' @param python Path to a Python interpreter, or `NULL`.
#' @param envname Name of or path to a virtual environment, or `NULL`.
#' @return The path of the Python interpreter in use, invisibly.
#' @export
#' @examples
#' \dontrun{
#' usePybridge(python = "/opt/venv/bin/python")
#' }
usePybridge <- function(python = NULL, envname = NULL) {
    if (!is.null(python) || !is.null(envname)) {
        wanted <- if (!is.null(python)) python else reticulate::virtualenv_python(envname)
        if (reticulate::py_available(initialize = FALSE)) {
            current <- reticulate::py_config()$python
            if (normalizePath(current, mustWork = FALSE) != normalizePath(wanted, mustWork = FALSE)) {
                stop("Python is already bound to ", current, " in this R session; restart R and call ",
                     "usePybridge() before anything else uses Python", call. = FALSE)
            }
        } else {
            reticulate::use_python(wanted, required = TRUE)
        }
    }
    .pybridgeModule()
    invisible(reticulate::py_config()$python)
}

# Default binding order when nothing is bound yet: RETICULATE_PYTHON (reticulate
# honours it by itself), then the "r-pybridge" virtualenv, then reticulate's choice.
.bindDefaultPython <- function() {
    if (reticulate::py_available(initialize = FALSE)) return(invisible())
    if (!nzchar(Sys.getenv("RETICULATE_PYTHON")) && reticulate::virtualenv_exists("r-pybridge")) {
        reticulate::use_virtualenv("r-pybridge", required = TRUE)
    }
    ok <- tryCatch(reticulate::py_available(initialize = TRUE), error = function(e) FALSE)
    if (!ok) {
        stop("no usable Python found. Fix: run pybridge::installPybridge() and restart R, ",
             "or set RETICULATE_PYTHON to a Python that has the pybridge module", call. = FALSE)
    }
    invisible()
}

# The Python module `name` ("pybridge" or a submodule), imported once per session.
.pybridgeModule <- function(name = "pybridge") {
    if (!is.null(.pb$modules[[name]])) return(.pb$modules[[name]])
    .bindDefaultPython()
    if (!reticulate::py_module_available("pybridge")) {
        stop("the Python module 'pybridge' is not installed in ", reticulate::py_config()$python,
             ". Fix: run pybridge::installPybridge() and restart R, or `pip install pybridge` into that ",
             "Python, or set RETICULATE_PYTHON to a Python that has it", call. = FALSE)
    }
    if (is.null(.pb$modules)) {
        .pb$modules <- list()
        .warnReferenceBlas()
    }
    .pb$modules[[name]] <- reticulate::import(name, convert = FALSE)
    .pb$modules[[name]]
}

.handoff <- function() .pybridgeModule("pybridge.bridge.handoff")

#' Is the pybridge Python module available?
#'
#' Checks, without raising an error, whether Python can be bound and imports
#' the `pybridge` module. Binds Python if nothing is bound yet.
#'
#' @return `TRUE` or `FALSE`.
#' @export
#' @examples
#' pybridgeAvailable()
pybridgeAvailable <- function() {
    isTRUE(tryCatch({
        .pybridgeModule()
        TRUE
    }, error = function(e) FALSE))
}

# torch inside R resolves its BLAS calls to the BLAS R loaded; with R's reference
# BLAS, training runs about 10x slower. Say so once, with the fix.
.warnReferenceBlas <- function() {
    blas <- extSoftVersion()[["BLAS"]]
    if (grepl("/blas/libblas\\.so", blas) || grepl("libRblas", blas)) {
        warning("R uses the reference BLAS (", blas, "); PyTorch inside R calls it and trains about 10x slower. ",
                "Fix: install an optimized BLAS for R, e.g. apt-get install libopenblas0-pthread on Debian/Ubuntu",
                call. = FALSE)
    }
}
