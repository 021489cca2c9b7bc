# Where models trained without `path` go, and listing and removing saved models.

.DEFAULT_MODEL_DIR_OPTION <- "pybridge.model.dir"

# The folder that models trained without `path` go to.
.modelDir <- function() {
    dir <- getOption(.DEFAULT_MODEL_DIR_OPTION, file.path(tools::R_user_dir("pybridge", "data"), "models"))
    if (!is.character(dir) || length(dir) != 1L || is.na(dir) || !nzchar(dir)) {
        stop("options(", .DEFAULT_MODEL_DIR_OPTION, ") must be one folder path, got ", deparse(dir), call. = FALSE)
    }
    path.expand(dir)
}

# A new folder name under .modelDir(); tempfile() makes the suffix unique without drawing from (and so
# changing) the user's random number stream, as sample() would.
.defaultModelDir <- function() {
    file.path(.modelDir(), basename(tempfile(paste0("scvi-", format(Sys.time(), "%Y%m%d-%H%M%S"), "-"))))
}

.isModelDir <- function(path) {
    file.exists(file.path(path, "model.json")) & file.exists(file.path(path, "model.safetensors"))
}

.dirSize <- function(path) {
    sum(file.size(list.files(path, recursive = TRUE, full.names = TRUE, all.files = TRUE)), na.rm = TRUE)
}

.formatBytes <- function(bytes) format(structure(bytes, class = "object_size"), units = "auto", standard = "SI")

# Say where a model trained without `path` went, and how to keep or remove it.
.announceSaved <- function(path) {
    message("scVI model saved to ", path, " (", .formatBytes(.dirSize(path)), "); keep a copy with saveSCVI(), ",
            "list saved models with listSCVI(), remove them with removeSCVI()")
}

#' List and remove saved scVI models
#'
#' Models trained without `path` ([trainSCVI()], [runSCVI()],
#' \code{\link{RunSCVI}()}) are saved in one folder, so that their handles
#' keep working in later R sessions (after `saveRDS()` of the handle or of the
#' object holding it). `listSCVI()` lists the saved models of a folder;
#' `removeSCVI()` deletes models, as [unlink()] does: at once, without asking.
#'
#' @section Where models go:
#' The folder is `getOption("pybridge.model.dir")`, by default
#' `file.path(tools::R_user_dir("pybridge", "data"), "models")` (on Linux
#' `~/.local/share/R/pybridge/models`). Each training run without `path`
#' adds one sub-folder (with the default architecture about 4 MB for 2,000
#' genes and 68 MB for 33,000; it grows with genes and `n_hidden`) and says
#' so with a message. Nothing is removed automatically.
#' To keep nothing beyond the R session, set
#' `options(pybridge.model.dir = file.path(tempdir(), "pybridge-models"))`;
#' to keep a model in a place of your choosing, pass `path` when training or
#' copy it with [saveSCVI()].
#'
#' @param dir Folder to list or clean: `NULL` (default) for the folder
#'   models trained without `path` go to (see section Where models go), or any
#'   folder path; sub-folders that are not saved models are ignored.
#' @param x What to remove: `SCVIModel` handles (one, or a list of them),
#'   model folders (a character vector), or a data frame from `listSCVI()`
#'   (its `path` column). `NULL` with `older.than` removes by age.
#' @param older.than `NULL` (default), or remove the models in `dir` last
#'   modified at least this many days ago (a number of days, or a
#'   `difftime` such as `as.difftime(12, units = "hours")`); `0` removes
#'   all of them.
#' @return `listSCVI()`: a data.frame with one row per saved model in `dir`
#'   (zero rows when there is none), oldest first, no row names, and columns
#'   `path` (character: the model's absolute folder path, what
#'   [loadSCVI()] and `removeSCVI()` take), `size` (numeric: bytes on disk)
#'   and `modified` (POSIXct: when the weights were last written).
#'   `removeSCVI()`: the paths removed (character), invisibly; a message
#'   says how many models and how much space.
#' @seealso [trainSCVI()], [runSCVI()], \code{\link{RunSCVI}()} (which save
#'   there when `path` is `NULL`); [saveSCVI()] to keep a copy elsewhere;
#'   [loadSCVI()] to open a listed model.
#' @export
#' @examples
#' if (pybridgeAvailable()) {
#'     old <- options(pybridge.model.dir = file.path(tempdir(), "pybridge-models"))
#'     counts <- matrix(rpois(2000, 2), 50, 40, dimnames = list(paste0("g", 1:50), paste0("c", 1:40)))
#'     model <- trainSCVI(counts, n_latent = 2, max_epochs = 2)
#'     listSCVI()
#'     removeSCVI(model)
#'     removeSCVI(older.than = 30)  # models not touched for 30 days
#'     options(old)
#' }
listSCVI <- function(dir = NULL) {
    dir <- if (is.null(dir)) .modelDir() else path.expand(dir)
    paths <- list.dirs(dir, full.names = TRUE, recursive = FALSE)
    paths <- normalizePath(paths[.isModelDir(paths)])
    out <- data.frame(
        path = paths,
        size = vapply(paths, .dirSize, numeric(1), USE.NAMES = FALSE),
        modified = file.mtime(file.path(paths, "model.safetensors")),
        stringsAsFactors = FALSE
    )
    out <- out[order(out$modified), , drop = FALSE]
    rownames(out) <- NULL
    out
}

#' @rdname listSCVI
#' @export
removeSCVI <- function(x = NULL, older.than = NULL, dir = NULL) {
    if (is.null(x) == is.null(older.than)) {
        stop("pass either x (models or model folders to remove) or older.than (days), not ",
             if (is.null(x)) "neither" else "both", call. = FALSE)
    }
    paths <- if (is.null(x)) .modelsOlderThan(dir, older.than) else .modelPaths(x)
    not_models <- paths[!.isModelDir(paths)]
    if (length(not_models)) {
        stop("not saved pybridge models (no model.json and model.safetensors), so not removed: ",
             paste(sQuote(not_models, FALSE), collapse = ", "), call. = FALSE)
    }
    bytes <- sum(vapply(paths, .dirSize, numeric(1)))
    unlink(paths, recursive = TRUE)
    failed <- paths[dir.exists(paths)]
    if (length(failed)) stop("could not remove ", paste(sQuote(failed, FALSE), collapse = ", "), call. = FALSE)
    .pb$models <- .pb$models[setdiff(names(.pb$models), paths)]
    message("removed ", length(paths), " model", if (length(paths) != 1L) "s", " (", .formatBytes(bytes), ")")
    invisible(paths)
}

.modelPaths <- function(x) {
    if (methods::is(x, "SCVIModel")) return(x@path)
    if (is.data.frame(x)) x <- x$path
    if (is.list(x)) return(unlist(lapply(x, .modelPaths)))
    if (!is.character(x) || anyNA(x)) {
        stop("x must be SCVIModel handles, model folders or a data frame from listSCVI(), got '", class(x)[1], "'",
             call. = FALSE)
    }
    normalizePath(path.expand(x), mustWork = FALSE)
}

.modelsOlderThan <- function(dir, older.than) {
    days <- if (inherits(older.than, "difftime")) as.numeric(older.than, units = "days") else older.than
    if (!is.numeric(days) || length(days) != 1L || is.na(days) || days < 0) {
        stop("older.than must be a number of days >= 0 or a difftime, got ", deparse(older.than), call. = FALSE)
    }
    saved <- listSCVI(dir)
    saved$path[difftime(Sys.time(), saved$modified, units = "days") >= days]
}
