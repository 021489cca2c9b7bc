# Conditions across the R -> Python boundary: every call into Python that can meet bad input goes through
# .withPython(), which words pybridge's structured errors (pybridge.errors.PybridgeError: kind + details) for
# R users and re-raises Python's warnings as R warnings. Training progress reaches R as message()s.

# Evaluate `expr` (R code that calls into Python). `context` describes the data in R terms (see
# .errorContext()); errors about data are worded with it.
.withPython <- function(expr, context = NULL) {
    recorder <- .pybridgeModule("pybridge.errors")$WarningRecorder()
    recorder$start()
    on.exit(.raiseWarnings(recorder$stop(), context), add = TRUE)
    tryCatch(expr, error = function(e) .rethrow(e, context))
}

# What an error message needs to speak of the data in R terms: cell and gene names, what the counts are
# (`counts`, e.g. "assay 'counts'") and the R argument that picks them (`counts_arg`), R code that drops
# empty cells, whether genes were subset, and the R argument behind each Python argument (`args`, e.g.
# c(batch_key = "labels")).
.errorContext <- function(cells, genes, counts = "the count matrix", counts_arg = NULL, drop_empty = NULL,
                          subset = FALSE, args = c(batch_key = "batch")) {
    list(cells = cells, genes = genes, counts = counts, counts_arg = counts_arg, drop_empty = drop_empty,
         subset = subset, args = args)
}

# "the raw counts (assay.type = ...)": what to pass instead, with the R argument that chooses it if any.
.rawCounts <- function(context) {
    if (is.null(context$counts_arg)) "the raw counts" else paste0("the raw counts (", context$counts_arg, " = ...)")
}

.raiseWarnings <- function(recorded, context = NULL) {
    for (w in reticulate::py_to_r(recorded)) {
        text <- .rWarningMessage(w$kind, w$details, context)
        if (is.null(text)) text <- w$message
        warning(structure(class = c("pybridgeWarning", "warning", "condition"),
                          list(message = text, call = NULL, kind = w$kind, details = w$details)))
    }
}

# A recorded Python warning worded for R users, or NULL to keep Python's (language-neutral) text.
.rWarningMessage <- function(kind, details, context) {
    if (is.null(kind)) return(NULL)
    switch(kind,
           single_category = .singleCategoryMessage(details, context),
           rare_labels = paste0(
               "cell types with fewer than ", details$threshold, " cells in the reference's '", details$key, "': ",
               paste0(names(details$counts), " (", unlist(details$counts), ")", collapse = ", "),
               "; their states are poorly estimated. Merge them into broader types, or pass weight_obs = TRUE ",
               "to up-weight rare types"),
           batch_exceeds_cells = paste0(
               "only ", details$n_cells, " cells to train on, fewer than one minibatch (", details$batch_size,
               "): each epoch is one step over all of them"),
           NULL)
}

.singleCategoryMessage <- function(details, context) {
    arg <- .rArgument(details$role, context)
    paste0(arg, " ('", details$key, "') has a single value ('", details$category, "'): the model is trained ",
           "without batch correction")
}

# The R argument behind a Python argument (`context$args`), else the Python name.
.rArgument <- function(role, context) {
    if (role %in% names(context$args)) context$args[[role]] else role
}

# The Python exception behind an R error, or NULL (an R error, or reticulate could not say).
.pythonException <- function(e) {
    if (inherits(e, "python.builtin.BaseException")) return(e)  # reticulate >= 1.29: the condition is the exception
    last <- tryCatch(reticulate::py_last_error(), error = function(err) NULL)
    ex <- if (is.null(last)) NULL else attr(last, "exception")
    if (is.null(ex) || !grepl(as.character(reticulate::py_str(ex)), conditionMessage(e), fixed = TRUE)) return(NULL)
    ex
}

.pyField <- function(ex, name) reticulate::py_to_r(reticulate::py_get_attr(ex, name))

# A value Python handed to R, as an R value (modules imported with convert = FALSE pass Python objects).
.fromPython <- function(v) if (inherits(v, "python.builtin.object")) reticulate::py_to_r(v) else v

.rethrow <- function(e, context) {
    ex <- .pythonException(e)
    errors <- .pybridgeModule("pybridge.errors")
    if (is.null(ex) || !reticulate::import_builtins()$isinstance(ex, errors$PybridgeError)) stop(e)
    kind <- .pyField(ex, "kind")
    details <- .pyField(ex, "details")
    if (is.null(context)) context <- .errorContext(cells = NULL, genes = NULL)
    text <- if (is.null(kind)) NULL else .rMessage(kind, details, context)
    if (is.null(text)) text <- as.character(reticulate::py_str(ex))
    positions <- details$positions
    cells <- if (is.null(positions) || is.null(context$cells)) NULL else context$cells[unlist(positions) + 1L]
    stop(structure(class = c(paste0("pybridge_", if (is.null(kind)) "error" else kind), "pybridgeError",
                             "error", "condition"),
                   list(message = text, call = NULL, kind = kind, details = details, cells = cells)))
}

.rMessage <- function(kind, details, context) {
    if (kind %in% c("empty_cells", "missing_values") && is.null(context$cells)) return(NULL)
    switch(kind,
           empty_cells = .emptyCellsMessage(details, context),
           non_integer = .nonIntegerMessage(details, context),
           negative = paste0(context$counts, " has ", details$n, " negative values (min ", format(details$minimum),
                             "); scVI models raw counts, not scaled or centred data: pass ", .rawCounts(context)),
           non_finite = paste0(context$counts, " has ", details$n, " NA, NaN or infinite values; counts must ",
                               "be finite: pass ", .rawCounts(context)),
           missing_values = .missingValuesMessage(details, context),
           duplicate_genes = .duplicateGenesMessage(details),
           NULL)
}

# "'c4' (column 4), 'c9' (column 9) and 3 more": cell names and 1-based positions from 0-based ones.
.namedPositions <- function(positions0, names, max = 5L) {
    pos <- as.integer(unlist(positions0)) + 1L
    shown <- utils::head(pos, max)
    out <- paste(sprintf("'%s' (column %d)", names[shown], shown), collapse = ", ")
    if (length(pos) > max) out <- paste0(out, " and ", length(pos) - max, " more")
    out
}

.nCells <- function(n) paste(n, if (n == 1L) "cell" else "cells")

.emptyCellsMessage <- function(details, context) {
    positions <- as.integer(unlist(details$positions)) + 1L
    subset <- isTRUE(context$subset)
    where <- if (subset) paste0(" over the ", length(context$genes), " genes used (see ntop / subset.row)") else ""
    paste0(.nCells(details$n), if (details$n == 1L) " has" else " have", " no counts in ", context$counts, where,
           ": ", .namedPositions(details$positions, context$cells),
           ". scVI needs at least one count per cell; drop them first, e.g. ", .dropCellsCode(positions, context),
           if (subset) ", or use more genes" else "")
}

# R code that drops the cells at `positions` (1-based): the caller's code for cells without counts when
# all genes are used, else by position (few cells) or by the names the condition carries.
.dropCellsCode <- function(positions, context) {
    if (!isTRUE(context$subset) && !is.null(context$drop_empty)) return(context$drop_empty)
    if (length(positions) <= 10L) return(paste0("x <- x[, -c(", paste(positions, collapse = ", "), ")]"))
    paste0("x <- x[, !colnames(x) %in% e$cells], where e is this error (tryCatch(): its cells field names all ",
           length(positions), ")")
}

.nonIntegerMessage <- function(details, context) {
    paste0(context$counts, " has ", details$n, " non-integer value", if (details$n != 1L) "s",
           " (e.g. ", format(details$example),
           "); scVI models raw counts: pass ", .rawCounts(context), ", or set ",
           "allow.non.integer = TRUE for data such as expected counts")
}

.missingValuesMessage <- function(details, context) {
    arg <- .rArgument(details$role, context)
    paste0(arg, " ('", details$key, "') is NA for ", .nCells(details$n), ": ",
           .namedPositions(details$positions, context$cells),
           "; give them a value or drop them, e.g. x <- x[, !is.na(x$", details$key, ")]")
}

.duplicateGenesMessage <- function(details) {
    dups <- paste(sQuote(utils::head(unlist(details$names), 5L), FALSE), collapse = ", ")
    if (identical(details$of, "the model's genes")) {
        return(paste0("the model was trained on duplicated gene names (", dups, "), so its genes cannot be ",
                      "chosen or matched by name; train it on data with unique rownames, e.g. after ",
                      "rownames(x) <- make.unique(rownames(x))"))
    }
    paste0("the data have duplicated gene names (", dups, "), so their genes cannot be matched to the model's ",
           "by name; make the rownames unique (as for the data the model was trained on), e.g. ",
           "rownames(x) <- make.unique(rownames(x)) ",
           "or, for a SingleCellExperiment with gene IDs, rownames(sce) <- ",
           "scuttle::uniquifyFeatureNames(rowData(sce)$ID, rownames(sce))")
}

# ---------------------------------------------------------------- progress

# The `progress` training argument as Python gets it: FALSE, or a function Python calls after each epoch,
# which reports every `ceiling(max_epochs / 10)` epochs (and the last) with message(), so Rscript, knitr
# and sink() all see it. `progress = NULL`: getOption("pybridge.progress", TRUE).
.progressReporter <- function(progress = NULL, label = "training") {
    if (is.null(progress)) progress <- getOption("pybridge.progress", TRUE)
    if (!isTRUE(progress) && !isFALSE(progress)) {
        stop("progress must be TRUE or FALSE, got ", deparse(progress), call. = FALSE)
    }
    if (!progress) return(FALSE)
    started <- NULL
    function(epoch, max_epochs, record) {
        epoch <- .fromPython(epoch)
        max_epochs <- .fromPython(max_epochs)
        record <- .fromPython(record)
        if (epoch == 1L) started <<- Sys.time()
        every <- max(1L, ceiling(max_epochs / 10))
        if (epoch %% every != 0L && epoch != max_epochs && epoch != 1L) return(invisible(NULL))
        val <- record[["elbo_validation"]]
        message(sprintf("%s: epoch %d/%d, loss (negative ELBO per cell) %.1f%s, %.0f s", label, epoch, max_epochs,
                        record[["elbo_train"]], if (is.null(val)) "" else sprintf(", validation %.1f", val),
                        as.numeric(difftime(Sys.time(), started, units = "secs"))))
        invisible(NULL)
    }
}
