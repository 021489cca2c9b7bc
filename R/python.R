# Finding, installing and binding the Python side. Nothing here runs when the
# package is loaded: Python is bound on the first call that needs it.

.pb <- new.env(parent = emptyenv())

#' Install the Python side of pybridge into a virtual environment
#'
#' Creates (or reuses) a Python virtual environment, installs PyTorch into it
#' first, then the Python package `pybridge-sc` (import name `pybridge`).
#' Without `package`, the copy of `pybridge-sc` carried by this R package (in
#' `system.file("python", package = "pybridge")`, the same version as the R
#' package) is installed, never PyPI's unrelated package called `pybridge`.
#' The installed version must equal `packageVersion("pybridge")`. Run it once;
#' afterwards the first pybridge call binds the `"r-pybridge"` environment (or
#' pick another with [usePybridge()]). If Python was already bound in this
#' session, restart R first. Running it again updates the environment in place.
#'
#' @section PyTorch:
#' `torch = "auto"` installs a CUDA build when an NVIDIA GPU is found
#' (`nvidia-smi` on the `PATH` or `/proc/driver/nvidia` present) and a CPU
#' build otherwise; `"cpu"` or `"cuda"` choose. `torch_version` pins a release
#' (e.g. `"2.13.0"`); `NULL` takes the newest one pip finds. A torch already in
#' the environment is kept when it is the wanted build and version.
#' * CPU build on Linux: if pip's own configuration already finds a CPU build
#'   on disk, that file is used and nothing is downloaded for torch. This is
#'   the case on machines with a pre-seeded wheel folder, e.g. a pip
#'   configuration (`pip config list`) with `find-links = /opt/wheels` and
#'   the file `/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl`.
#'   Otherwise, as on an ordinary machine, the CPU build comes from the
#'   PyTorch CPU index, `https://download.pytorch.org/whl/cpu` (about 200 MB
#'   to download, instead of several GB of CUDA libraries).
#' * CPU build on macOS and Windows: PyPI's default torch, a CPU build there.
#' * CUDA build: PyPI's default torch for Linux, with its NVIDIA libraries
#'   (several GB). For another CUDA version, name its PyTorch index, e.g.
#'   `torch_index = "https://download.pytorch.org/whl/cu126"`.
#'
#' numpy is pinned below 2 when the installed reticulate is older than 1.38
#' (older reticulate cannot talk to NumPy 2).
#'
#' @param envname Name of (or path to) the virtual environment; default
#'   `"r-pybridge"`, the one pybridge binds by itself. Names live in
#'   reticulate's virtualenv root (`WORKON_HOME`, default `~/.virtualenvs`).
#' @param python Python interpreter (>= 3.10, < 3.12) used to create the
#'   environment; `NULL` (default): `python3` on the `PATH`.
#' @param package `NULL` (default) for the carried copy of `pybridge-sc`, or
#'   another pip requirement for it: a source directory (a checkout of
#'   pybridge), a wheel or sdist file, or `"pybridge-sc==<version>"`.
#' @param torch `"auto"` (default), `"cpu"` or `"cuda"`: which PyTorch build
#'   to install (see the PyTorch section).
#' @param torch_version `NULL` (default: the newest release pip finds) or a
#'   torch release to pin, e.g. `"2.13.0"`.
#' @param torch_index `NULL` (default) or the package index torch is
#'   installed from (used for torch only, instead of the choice described in
#'   the PyTorch section).
#' @param extra_packages Further pip requirements installed alongside (a
#'   character vector; default none).
#' @param pip_options Extra options for every `pip install` (a character
#'   vector; default none), e.g. `"--proxy=http://proxy:3128"`.
#' @return The path of the environment's Python interpreter (a string),
#'   invisibly. Restart R before using pybridge if Python was bound before.
#' @seealso [usePybridge()] to bind another Python; [pybridgeAvailable()]
#'   to check the set-up.
#' @export
#' @examples
#' \dontrun{
#' installPybridge()                                        # CPU or CUDA torch, as the machine has
#' installPybridge(torch = "cpu", torch_version = "2.13.0") # pin a CPU build
#' installPybridge(package = "/path/to/pybridge")           # from a source checkout
#' }
installPybridge <- function(envname = "r-pybridge", python = NULL, package = NULL,
                            torch = c("auto", "cpu", "cuda"), torch_version = NULL, torch_index = NULL,
                            extra_packages = character(), pip_options = character()) {
    for (arg in c("package", "torch_version", "torch_index")) .checkOptionalString(get(arg), arg)
    torch <- .torchBuildWanted(match.arg(torch))
    if (is.null(package)) package <- .carriedPythonPackage()
    if (is.null(python)) python <- .systemPython()
    if (!reticulate::virtualenv_exists(envname)) .createVirtualenv(python, .virtualenvDir(envname))
    venv_python <- reticulate::virtualenv_python(envname)
    .installTorch(venv_python, torch, torch_version, torch_index, pip_options)
    .removeDistribution(venv_python, "pybridge")
    numpy <- if (utils::packageVersion("reticulate") < "1.38") "numpy<2" else "numpy"
    .pip(venv_python, c("install", pip_options, numpy, package, extra_packages))
    .checkPythonPackageVersion(venv_python)
    invisible(venv_python)
}

# `value` must be NULL or one non-empty string.
.checkOptionalString <- function(value, arg) {
    if (!is.null(value) && !(is.character(value) && length(value) == 1 && !is.na(value) && nzchar(value))) {
        example <- switch(arg, package = "/path/to/pybridge", torch_version = "2.13.0",
                          torch_index = "https://download.pytorch.org/whl/cpu")
        stop("`", arg, "` must be NULL or one string, e.g. ", arg, " = \"", example, "\"", call. = FALSE)
    }
    invisible()
}

# python3 on the PATH, or an error saying how to get or name one.
.systemPython <- function() {
    python <- Sys.which("python3")
    if (!nzchar(python)) {
        stop("no 'python3' on the PATH: install Python >= 3.10 (e.g. apt-get install python3 python3-venv) ",
             "or pass installPybridge(python = \"/path/to/python3\")", call. = FALSE)
    }
    unname(python)
}

# The sdist of pybridge-sc that R CMD build put into inst/python (same version as the R package).
.carriedPythonPackage <- function(dir = system.file("python", package = "pybridge")) {
    version <- as.character(utils::packageVersion("pybridge"))
    sdist <- file.path(dir, sprintf("pybridge_sc-%s.tar.gz", version))
    if (!nzchar(dir) || !file.exists(sdist)) {
        stop("this installation of the R package pybridge carries no copy of the Python package pybridge-sc ",
             "(it was installed from a source checkout, not from a tarball made by R CMD build). Fix: ",
             "installPybridge(package = \"/path/to/pybridge\") with the checkout's directory, or install the R ",
             "package from its tarball (R CMD build, then install.packages(\"pybridge_", version,
             ".tar.gz\", repos = NULL))", call. = FALSE)
    }
    sdist
}

# "cpu" or "cuda" for "auto", from whether this machine has an NVIDIA GPU.
.torchBuildWanted <- function(torch) {
    if (torch != "auto") return(torch)
    gpu <- nzchar(Sys.which("nvidia-smi")) || dir.exists("/proc/driver/nvidia")
    build <- if (gpu) "cuda" else "cpu"
    message(if (gpu) "NVIDIA GPU found: installing a CUDA build of torch" else
        "no NVIDIA GPU found: installing a CPU build of torch", " (choose with installPybridge(torch = ...))")
    build
}

# The environment of installPybridge()'s Python subprocesses: no PYTHONPATH, so they see only the
# virtualenv's own packages, and no LD_LIBRARY_PATH: R exports it with the system library directory
# first, and a Python built elsewhere (pyenv, conda) then loads the system libpython and its ssl
# module breaks. R's own environment is left as it is.
.PYTHON_ENV <- c("PYTHONPATH=", "LD_LIBRARY_PATH=")

# Where reticulate keeps the virtualenv `envname` (a name under virtualenv_root(), or a path).
.virtualenvDir <- function(envname) {
    if (grepl("/", envname, fixed = TRUE)) path.expand(envname) else file.path(reticulate::virtualenv_root(), envname)
}

.createVirtualenv <- function(python, dir) {
    dir.create(dirname(dir), recursive = TRUE, showWarnings = FALSE)
    status <- system2(python, c("-m", "venv", shQuote(dir)), env = .PYTHON_ENV)
    if (status != 0) {
        stop("could not create a virtual environment in ", dir, " with ", python, " (exit status ", status,
             "). Fix: install Python's venv module (e.g. apt-get install python3-venv) or pass ",
             "installPybridge(python = \"/path/to/python3\")", call. = FALSE)
    }
    invisible()
}

# Run pip in `python`; an R error with pip's exit status when it fails.
.pip <- function(python, args) {
    status <- system2(python, c("-m", "pip", "--disable-pip-version-check", shQuote(args)), env = .PYTHON_ENV)
    if (status != 0) {
        stop("pip failed (exit status ", status, "): ", python, " -m pip ", paste(args, collapse = " "),
             ". pip's output above names the cause; fix it and run installPybridge() again", call. = FALSE)
    }
    invisible()
}

# Output lines of a Python snippet run in `python`.
.pythonLines <- function(python, code) {
    suppressWarnings(system2(python, c("-c", shQuote(code)), stdout = TRUE, stderr = FALSE, env = .PYTHON_ENV))
}

# The torch in `python`: list(version, cuda) (cuda NA for a CPU build), or NULL when absent.
.installedTorch <- function(python) {
    out <- .pythonLines(python, "import torch; print(torch.__version__); print(torch.version.cuda or '')")
    if (!is.null(attr(out, "status")) || length(out) != 2) return(NULL)
    list(version = out[[1]], cuda = if (nzchar(out[[2]])) out[[2]] else NA_character_)
}

# Does `have` (from .installedTorch) match the wanted build and version?
.torchMatches <- function(have, build, version) {
    if (is.null(have) || (build == "cpu") != is.na(have$cuda)) return(FALSE)
    is.null(version) || have$version == version || startsWith(have$version, paste0(version, "+"))
}

# torch first, so that installing pybridge-sc never makes pip resolve an unpinned torch.
.installTorch <- function(python, build, version, index, pip_options) {
    if (.torchMatches(.installedTorch(python), build, version)) return(invisible())
    .pip(python, c("install", pip_options, .torchSource(python, build, version, index)))
    have <- .installedTorch(python)
    if (is.null(have)) stop("pip installed torch, but 'import torch' fails in ", python, call. = FALSE)
    if (!.torchMatches(have, build, NULL)) {
        stop("installing a ", toupper(build), " build of torch gave torch ", have$version,
             if (is.na(have$cuda)) " (CPU)" else paste0(" (CUDA ", have$cuda, ")"), ". Fix: pass the PyTorch ",
             "index of the build you want, e.g. installPybridge(torch = \"", build, "\", torch_index = ",
             "\"https://download.pytorch.org/whl/", if (build == "cpu") "cpu" else "cu126", "\")", call. = FALSE)
    }
    invisible()
}

# pip arguments naming where torch comes from (see ?installPybridge, section PyTorch).
.torchSource <- function(python, build, version, index) {
    requirement <- if (is.null(version)) "torch" else paste0("torch==", version)
    if (!is.null(index)) return(c("--index-url", index, requirement))
    if (build == "cuda" || Sys.info()[["sysname"]] != "Linux") return(requirement)
    local <- .localCpuTorchWheel(python, requirement)
    if (!is.null(local)) return(local)
    c("--index-url", "https://download.pytorch.org/whl/cpu", requirement)
}

# The URL of a CPU build of torch that pip's configuration already finds on disk
# (find-links), asked of pip offline; NULL when there is none.
.localCpuTorchWheel <- function(python, requirement) {
    report <- tempfile(fileext = ".json")
    on.exit(unlink(report), add = TRUE)
    status <- system2(python, c("-m", "pip", "--disable-pip-version-check", "install", "--dry-run", "--quiet",
                                "--no-index", "--no-deps", "--ignore-installed", "--report", report,
                                shQuote(requirement)), stdout = FALSE, stderr = FALSE, env = .PYTHON_ENV)
    if (status != 0 || !file.exists(report)) return(NULL)
    found <- .pythonLines(python, sprintf(paste0(
        "import json; r = json.load(open(%s)); ",
        "[print(i['metadata']['version'], i['download_info']['url']) for i in r['install']]"), shQuote(report)))
    parts <- strsplit(found, " ", fixed = TRUE)
    if (length(parts) != 1 || !grepl("+cpu", parts[[1]][1], fixed = TRUE)) return(NULL)
    parts[[1]][2]
}

# Uninstall distribution `name` from `python` if present (an older installPybridge() put
# a distribution called "pybridge" there; it would own the same module files).
.removeDistribution <- function(python, name) {
    if (is.na(.distributionVersion(python, name))) return(invisible())
    message("removing the distribution '", name, "' from ", python)
    .pip(python, c("uninstall", "--yes", name))
}

# Version of an installed distribution, NA when absent.
.distributionVersion <- function(python, name) {
    out <- .pythonLines(python, sprintf("import importlib.metadata as m; print(m.version('%s'))", name))
    if (!is.null(attr(out, "status")) || length(out) != 1) NA_character_ else out
}

# The installed pybridge-sc must be this R package's version.
.checkPythonPackageVersion <- function(python) {
    want <- as.character(utils::packageVersion("pybridge"))
    have <- .distributionVersion(python, "pybridge-sc")
    if (!identical(have, want)) {
        stop("the Python package installed in ", python, " is pybridge-sc ", have, ", but the R package pybridge ",
             "is ", want, ". Fix: installPybridge() without `package` installs the matching copy that ships ",
             "with the R package", call. = FALSE)
    }
    message("installed pybridge-sc ", have, " and torch ", .installedTorch(python)$version, " in ", python)
    invisible()
}

#' Choose the Python that pybridge uses
#'
#' Binds reticulate to `python` (an interpreter path) or to the virtual
#' environment `envname`, then imports the `pybridge` module to check it is
#' there. Without arguments it follows `RETICULATE_PYTHON`, then the
#' `"r-pybridge"` environment made by [installPybridge()], then reticulate's
#' default. Python can be bound only once per R session.
#'
#' It stops with an error naming the fix when the bound Python lacks the
#' `pybridge` module, or has PyPI's unrelated package of that name; it warns
#' when the Python package's version differs from the R package's.
#'
#' @param python Path to a Python interpreter, or `NULL` (default).
#' @param envname Name of or path to a virtual environment (e.g.
#'   `"r-pybridge"`), or `NULL` (default). Ignored when `python` is given.
#' @return The path of the Python interpreter in use (a string), invisibly.
#' @seealso [installPybridge()] to make the environment;
#'   [pybridgeAvailable()].
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
             ". Fix: run pybridge::installPybridge() and restart R, or set RETICULATE_PYTHON to a ",
             "Python that has the Python package pybridge-sc installed", call. = FALSE)
    }
    if (is.null(.pb$modules)) {
        .pb$modules <- list()
        .warnReferenceBlas()
    }
    module <- reticulate::import(name, convert = FALSE)
    if (name == "pybridge") .checkPythonModule(module)
    .pb$modules[[name]] <- module
    module
}

# The module `pybridge` must be pybridge-sc's, and should be the R package's version.
.checkPythonModule <- function(module) {
    python <- reticulate::py_config()$python
    if (!reticulate::py_has_attr(module, "SCVI")) {
        stop("the Python module 'pybridge' in ", python, " is not the one of the Python package pybridge-sc ",
             "(PyPI's unrelated package 'pybridge'?). Fix: run pybridge::installPybridge() and restart R",
             call. = FALSE)
    }
    have <- reticulate::py_to_r(module$`__version__`)
    want <- as.character(utils::packageVersion("pybridge"))
    if (!identical(have, want)) {
        warning("the Python package pybridge-sc in ", python, " is version ", have, " but the R package pybridge is ",
                want, ". Fix: run pybridge::installPybridge() and restart R", call. = FALSE)
    }
    invisible()
}

.handoff <- function() .pybridgeModule("pybridge.bridge.handoff")

#' Is the pybridge Python module available?
#'
#' Checks, without raising an error, whether Python can be bound and imports
#' the `pybridge` module. Binds Python if nothing is bound yet.
#'
#' Examples and vignettes use it to run only where the Python side is
#' set up.
#'
#' @return `TRUE` when Python can be bound and pybridge-sc's `pybridge`
#'   module imported, else `FALSE` (never an error).
#' @seealso [installPybridge()] to set Python up; [usePybridge()], which
#'   says why it is missing.
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
