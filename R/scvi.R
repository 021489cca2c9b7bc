# scVI for SingleCellExperiment, SummarizedExperiment and plain matrices.

.MODEL_ARGS <- c("n_hidden", "n_latent", "n_layers", "dropout_rate", "dispersion", "gene_likelihood",
                 "latent_distribution", "use_observed_lib_size", "encode_covariates",
                 "deeply_inject_covariates", "use_batch_norm", "use_layer_norm")
.TRAIN_ARGS <- c("max_epochs", "batch_size", "train_size", "validation_size", "early_stopping",
                 "early_stopping_patience", "lr", "weight_decay", "eps", "n_epochs_kl_warmup",
                 "accelerator", "device", "seed", "progress")
.INTEGER_ARGS <- c("n_hidden", "n_latent", "n_layers", "max_epochs", "batch_size", "n_epochs_kl_warmup",
                   "early_stopping_patience", "seed")

# Split `...` into model and training arguments, with whole numbers made integer.
.splitArgs <- function(args) {
    unknown <- setdiff(names(args), c(.MODEL_ARGS, .TRAIN_ARGS))
    if (length(args) && (is.null(names(args)) || any(!nzchar(names(args))))) {
        stop("model and training arguments must be named (e.g. n_latent = 10, max_epochs = 50)", call. = FALSE)
    }
    if (length(unknown)) {
        stop("unknown argument(s) ", paste(sQuote(unknown, FALSE), collapse = ", "),
             "; model arguments: ", paste(.MODEL_ARGS, collapse = ", "),
             "; training arguments: ", paste(.TRAIN_ARGS, collapse = ", "), call. = FALSE)
    }
    for (nm in intersect(names(args), .INTEGER_ARGS)) {
        v <- args[[nm]]
        if (!is.null(v)) {
            if (!is.numeric(v) || length(v) != 1L || is.na(v) || v != round(v)) {
                stop(nm, " must be a single whole number, got ", deparse(v), call. = FALSE)
            }
            args[[nm]] <- as.integer(v)
        }
    }
    list(model = args[intersect(names(args), .MODEL_ARGS)], train = args[intersect(names(args), .TRAIN_ARGS)])
}

# Counts, names and batch of `x`, whatever it is.
.countsOf <- function(x, assay.type) {
    .refuseMinified(x)  # all-zero counts: never read them as counts
    if (methods::is(x, "Seurat")) return(.seuratCounts(x, assay = NULL, layer = assay.type))
    if (methods::is(x, "SummarizedExperiment")) {
        if (!assay.type %in% SummarizedExperiment::assayNames(x)) {
            stop("assay '", assay.type, "' not found; available: ",
                 paste(SummarizedExperiment::assayNames(x), collapse = ", "), ". Pass assay.type = one of them",
                 call. = FALSE)
        }
        m <- SummarizedExperiment::assay(x, assay.type, withDimnames = FALSE)
        return(list(counts = m, genes = .orDefault(rownames(x), nrow(x)), cells = .orDefault(colnames(x), ncol(x))))
    }
    if (is.matrix(x) || methods::is(x, "Matrix") || methods::is(x, "DelayedMatrix")) {
        return(list(counts = x, genes = .orDefault(rownames(x), nrow(x)), cells = .orDefault(colnames(x), ncol(x))))
    }
    stop("expected a matrix (genes x cells), dgCMatrix, SummarizedExperiment, SingleCellExperiment or Seurat ",
         "object, got '", class(x)[1], "'", call. = FALSE)
}

.cellMetadata <- function(x) {
    if (methods::is(x, "Seurat")) return(x[[]])
    if (methods::is(x, "SummarizedExperiment")) return(SummarizedExperiment::colData(x))
    NULL
}

# Resolve `batch` (a cell-metadata column name or one value per cell) to list(key, values). `cells`: the
# cell names (or their number); `arg`: the R argument that holds `batch`, for messages.
.resolveBatch <- function(x, batch, cells, default_key = "batch", arg = "batch") {
    if (is.null(batch)) return(NULL)
    if (is.numeric(cells)) cells <- .orDefault(colnames(x), cells)
    n_cells <- length(cells)
    meta <- .cellMetadata(x)
    if (is.character(batch) && length(batch) == 1L && n_cells != 1L) {
        if (is.null(meta) || !batch %in% colnames(meta)) {
            stop(arg, " = '", batch, "' is not a column of the cell metadata; pass a column name or one value ",
                 "per cell", call. = FALSE)
        }
        key <- batch
        values <- meta[[batch]]
    } else {
        key <- default_key
        values <- batch
    }
    if (length(values) != n_cells) {
        stop(arg, " has ", length(values), " values for ", n_cells, " cells", call. = FALSE)
    }
    if (anyNA(values)) {
        na <- which(is.na(values))
        fix <- if (identical(key, batch)) {
            paste0("x <- x[, !is.na(x$", key, ")]")
        } else {
            paste0("keep <- !is.na(", arg, "); x <- x[, keep]; ", arg, " <- ", arg, "[keep]")
        }
        stop(arg, if (identical(key, batch)) paste0(" ('", key, "')"), " is NA for ", .nCells(length(na)), ": ",
             .namedPositions(na - 1L, cells), "; give them a value or drop them, e.g. ", fix,
             call. = FALSE)
    }
    list(key = key, values = if (is.factor(values)) droplevels(values) else factor(as.character(values)))
}

# R code that drops the cells with no counts from `x` (the user's object).
.dropEmptyCode <- function(x, assay.type) {
    if (methods::is(x, "Seurat")) return("x <- subset(x, subset = nCount_RNA > 0)")
    if (methods::is(x, "SummarizedExperiment")) {
        return(sprintf('x <- x[, Matrix::colSums(assay(x, "%s")) > 0]', assay.type))
    }
    "x <- x[, Matrix::colSums(x) > 0]"
}

# The R argument that picks the counts of `x` (NULL: a matrix, which is the counts).
.countsArgument <- function(x) {
    if (methods::is(x, "Seurat") || methods::is(x, "SummarizedExperiment")) return("assay.type")
    NULL
}

.describeCounts <- function(x, assay.type) {
    if (methods::is(x, "Seurat")) return(sprintf("layer '%s'", assay.type))
    if (methods::is(x, "SummarizedExperiment")) return(sprintf("assay '%s'", assay.type))
    "the count matrix"
}

# A minimal AnnData (counts, cell names, gene names, batch column) for the model, with the context that
# words errors about it in R terms (see .errorContext()). `arg`: the R argument that holds `batch`.
.modelAnnData <- function(x, assay.type = "counts", batch = NULL, subset.row = NULL, batch_key = NULL,
                          arg = "batch") {
    parts <- .countsOf(x, assay.type)
    counts <- parts$counts
    genes <- parts$genes
    if (!is.null(subset.row)) {
        idx <- .rowIndex(subset.row, genes)
        counts <- counts[idx, , drop = FALSE]
        genes <- genes[idx]
    }
    b <- .resolveBatch(x, batch, parts$cells, default_key = if (is.null(batch_key)) "batch" else batch_key,
                       arg = arg)
    if (is.null(b) && !is.null(batch_key)) {
        meta <- .cellMetadata(x)
        if (is.null(meta) || !batch_key %in% colnames(meta)) {
            stop("the model was trained with batch key '", batch_key, "': pass batch = (a column name or one value ",
                 "per cell)", call. = FALSE)
        }
        b <- .resolveBatch(x, batch_key, parts$cells, arg = arg)
    }
    context <- .errorContext(parts$cells, genes, counts = .describeCounts(x, assay.type),
                             counts_arg = .countsArgument(x), drop_empty = .dropEmptyCode(x, assay.type),
                             subset = length(genes) < length(parts$genes), args = c(batch_key = arg, labels_key = arg))
    obs <- .emptyFrame(length(parts$cells))
    if (!is.null(b)) obs[[b$key]] <- b$values
    adata <- .withPython(.handoff()$build_anndata(
        .countsToPython(counts), .frameToPandas(obs, parts$cells),
        .frameToPandas(.emptyFrame(length(genes)), genes)
    ), context)
    list(adata = adata, batch_key = if (is.null(b)) NULL else b$key, cells = parts$cells, genes = genes,
         context = context)
}

# Refuse counts a model cannot train on (negative, non-finite, empty cells; non-integer unless allowed),
# naming the problem in R terms.
.checkCounts <- function(input, allow.non.integer = FALSE) {
    .withPython(.pybridgeModule("pybridge.data.validation")$validate_counts(
        input$adata$X, "X", allow_non_integer = allow.non.integer
    ), input$context)
    invisible(input)
}

.rowIndex <- function(subset.row, genes) {
    if (is.character(subset.row)) {
        idx <- match(subset.row, genes)
        if (anyNA(idx)) {
            stop("subset.row names ", length(which(is.na(idx))), " genes not in the data (e.g. '",
                 subset.row[is.na(idx)][1], "')", call. = FALSE)
        }
        return(idx)
    }
    seq_along(genes)[subset.row]
}

.settingsFromPython <- function(pymodel, train_args = list()) {
    reg <- pymodel$registry
    batch_key <- reticulate::py_to_r(reg$batch_key)
    list(
        batch_key = batch_key,
        batch_levels = as.character(unlist(reticulate::py_to_r(reg$batch_categories))),
        genes = as.character(unlist(reticulate::py_to_r(reg$var_names))),
        model = reticulate::py_to_r(pymodel$`_init_params`),
        train = train_args,
        history = .historyForR(pymodel)
    )
}

# Per-epoch training history with names that say what the numbers are: Python's `elbo_train` and
# `elbo_validation` (scvi-tools' names) hold the loss, the negative ELBO per cell, and become `loss_train`
# and `loss_validation`. One value per epoch; NA for an epoch whose validation loss was not computed.
.historyForR <- function(pymodel) {
    h <- lapply(reticulate::py_to_r(pymodel$`_epoch_metrics`),
                function(values) vapply(values, function(v) if (is.null(v)) NA_real_ else as.numeric(v), 0))
    names(h) <- sub("^elbo_", "loss_", names(h))
    h
}

.cacheModel <- function(path, pymodel) {
    if (is.null(.pb$models)) .pb$models <- list()
    .pb$models[[path]] <- list(model = pymodel, stamp = file.mtime(file.path(path, "model.safetensors")))
}

# The live Python model behind a handle (loaded once per session).
.pyModel <- function(model) {
    if (!methods::is(model, "SCVIModel")) {
        stop("expected an SCVIModel (from trainSCVI() or loadSCVI()), got '", class(model)[1], "'", call. = FALSE)
    }
    path <- model@path
    weights <- file.path(path, "model.safetensors")
    if (!file.exists(weights)) {
        stop("the model directory '", path, "' no longer holds a model; train again or loadSCVI() a saved copy",
             call. = FALSE)
    }
    hit <- .pb$models[[path]]
    if (!is.null(hit) && identical(hit$stamp, file.mtime(weights))) return(hit$model)
    pymodel <- .withPython(.pybridgeModule()$SCVI$load(path))
    .cacheModel(path, pymodel)
    pymodel
}

#' Train an scVI model
#'
#' Trains scVI on the counts of `x` and saves the model to `path`. Returns a
#' handle ([SCVIModel-class]) that holds only the directory and settings, so
#' it can be saved with `saveRDS()` and used in another R session.
#' `trainSCVI()` trains on exactly the genes it is given: all of them unless
#' `subset.row` says otherwise (unlike [runSCVI()], which picks `ntop`
#' variable genes by default).
#'
#' Training reports its progress with [message()] (a line every tenth of
#' `max_epochs`, with the loss, i.e. the negative ELBO per cell), which
#' `suppressMessages()`, knitr and [sink()] see; `progress = FALSE` silences
#' it, and `options(pybridge.progress = FALSE)` silences every training.
#' Python's warnings arrive as R warnings, and errors about the data name
#' the cells and genes as R knows them (1-based positions).
#'
#' scVI (single-cell variational inference) is a variational autoencoder of
#' raw counts: an encoder maps each cell's counts (and, optionally, its
#' batch) to a low-dimensional latent representation, and a decoder maps
#' the latent representation and the batch back to each gene's expected
#' share of the cell's counts, under a count distribution
#' (`gene_likelihood`). Because the decoder is given the batch, the latent
#' representation is corrected for it.
#'
#' @section Model arguments in `...`:
#' Defaults in parentheses; whole numbers may be given as `10` or `10L`.
#' * `n_latent` (10): dimensions of the latent representation, the columns
#'   of [scviLatent()].
#' * `n_hidden` (128): units in each hidden layer of the encoder and
#'   decoder.
#' * `n_layers` (1): hidden layers of the encoder and of the decoder.
#' * `dropout_rate` (0.1): dropout rate of the encoder's hidden layers (the
#'   decoder has none).
#' * `dispersion` (`"gene"`): the negative binomial's dispersion, one per
#'   gene (`"gene"`), per gene and batch (`"gene-batch"`) or per gene and
#'   cell (`"gene-cell"`). (`"gene-label"` needs cell labels, which these R
#'   functions do not pass.)
#' * `gene_likelihood` (`"zinb"`): distribution of the counts: `"zinb"`
#'   (zero-inflated negative binomial), `"nb"` (negative binomial) or
#'   `"poisson"`.
#' * `latent_distribution` (`"normal"`): `"normal"`, or `"ln"` (logistic
#'   normal).
#' * `use_observed_lib_size` (`TRUE`): `TRUE` uses each cell's total count
#'   as its library size; `FALSE` learns it as a latent variable (with a
#'   log-normal prior per batch). [minifySCVI()] needs `TRUE`.
#' * `encode_covariates` (`FALSE`): `TRUE` also gives the batch to the
#'   encoder.
#' * `deeply_inject_covariates` (`TRUE`): the batch enters every hidden
#'   layer, not only the first.
#' * `use_batch_norm` (`"both"`) and `use_layer_norm` (`"none"`): where
#'   batch normalisation and layer normalisation are used: `"encoder"`,
#'   `"decoder"`, `"both"` or `"none"`.
#'
#' @section Training arguments in `...`:
#' * `max_epochs` (`NULL`): passes over the data; `NULL` gives
#'   `min(round(20000 / n_cells * 400), 400)`: 400 up to 20,000 cells, 80
#'   for 100,000 cells.
#' * `batch_size` (128): cells per minibatch (one gradient step each).
#' * `train_size` (0.9): share of the cells trained on; the others are the
#'   validation set, whose loss is recorded in the history
#'   (`loss_validation`). `1` trains on all cells.
#' * `validation_size` (`NULL`): share of the cells for validation; `NULL`
#'   for all cells not trained on.
#' * `early_stopping` (`FALSE`): `TRUE` stops when the validation loss (the
#'   training loss without a validation set) has not improved for
#'   `early_stopping_patience` (45) epochs.
#' * `lr` (0.001): learning rate of the Adam optimiser; `weight_decay`
#'   (1e-6) and `eps` (0.01) are its other settings.
#' * `n_epochs_kl_warmup` (400): epochs over which the weight of the KL
#'   divergence term rises linearly from 0 to 1; `NULL` or 0: no warm-up.
#' * `accelerator` (`"auto"`): `"auto"` trains on a CUDA GPU when there is
#'   one, else on the CPU; `"cpu"`; `"gpu"` or `"cuda"` (an error without a
#'   GPU). `device` (`NULL`: the first GPU) picks a GPU by number.
#' * `seed` (0): random seed of the train/validation split, the order of the
#'   minibatches and the sampling (the initial weights are always the
#'   same).
#' * `progress` (`NULL`: `getOption("pybridge.progress", TRUE)`): `TRUE`
#'   reports progress with [message()], `FALSE` silences it.
#'
#' @param x A SingleCellExperiment, SummarizedExperiment, Seurat object, or a
#'   genes x cells matrix / dgCMatrix / DelayedMatrix of raw counts.
#' @param assay.type Assay (Seurat: layer) holding the raw counts; default
#'   `"counts"`. Not used for matrices.
#' @param batch The batch (sample, donor, technology) of each cell, which the
#'   model corrects for: `NULL` (default, no batch), the name of a
#'   cell-metadata column (colData, meta.data), or one value per cell. The
#'   output functions later read the same column, or need `batch =` again.
#' @param subset.row Genes to train on: names, positions (1-based) or a
#'   logical vector over the rows; `NULL` (default) for all genes.
#' @param path Directory for the saved model. `NULL` (the default): a new
#'   folder under `getOption("pybridge.model.dir")` (see [listSCVI()] for
#'   where that is and how to list and remove what accumulates there), with
#'   a message saying where.
#' @param allow.non.integer Accept non-integer values (e.g. expected counts
#'   from salmon or RSEM)? `FALSE` (default) refuses them, since scVI models
#'   raw counts.
#' @param ... Model and training arguments, named, with the defaults and
#'   meanings listed in the sections below (the names are those of the
#'   Python package, so settings carry over between R and Python).
#' @return An `SCVIModel` handle ([SCVIModel-class]): slot `path` holds the
#'   model folder, slot `settings` the genes, batches, model arguments and
#'   per-epoch training history.
#' @references
#' Lopez R, Regier J, Cole MB, Jordan MI, Yosef N (2018). Deep generative
#' modeling for single-cell transcriptomics. \emph{Nature Methods} 15:1053-1058.
#' \doi{10.1038/s41592-018-0229-2}
#' @seealso [runSCVI()] and \code{\link{RunSCVI}()} to train and store the
#'   latent representation in one step; [scviLatent()], [scviNormalized()],
#'   [scviDifferentialExpression()] to use the model; [saveSCVI()],
#'   [loadSCVI()], [listSCVI()] to keep and manage it.
#' @export
#' @examples
#' if (pybridgeAvailable()) {
#'     counts <- matrix(rpois(2000, 2), 50, 40, dimnames = list(paste0("g", 1:50), paste0("c", 1:40)))
#'     model <- trainSCVI(counts, n_latent = 2, max_epochs = 2, path = tempfile())
#'     dim(scviLatent(model, counts))
#' }
trainSCVI <- function(x, assay.type = "counts", batch = NULL, subset.row = NULL, path = NULL,
                      allow.non.integer = FALSE, ...) {
    args <- .splitArgs(list(...))
    input <- .modelAnnData(x, assay.type = assay.type, batch = batch, subset.row = subset.row)
    .train(input, path, args, allow.non.integer)
}

# Train on `input` (from .modelAnnData()) and save to `path` (NULL: the default folder, announced).
.train <- function(input, path, args, allow.non.integer = FALSE) {
    if (!isTRUE(allow.non.integer) && !isFALSE(allow.non.integer)) {
        stop("allow.non.integer must be TRUE or FALSE, got ", deparse(allow.non.integer), call. = FALSE)
    }
    .checkCounts(input, allow.non.integer)
    pb <- .pybridgeModule()
    fit_args <- args$train
    fit_args$progress <- .progressReporter(fit_args$progress, "scVI")
    pymodel <- .withPython({
        pb$SCVI$setup_anndata(input$adata, batch_key = input$batch_key, allow_non_integer = allow.non.integer)
        m <- do.call(pb$SCVI, c(list(input$adata), args$model))
        do.call(m$train, fit_args)
        m
    }, input$context)
    announce <- is.null(path)
    if (announce) path <- .defaultModelDir()
    dir.create(dirname(path), recursive = TRUE, showWarnings = FALSE)
    .withPython(pymodel$save(path.expand(path), overwrite = TRUE))
    path <- normalizePath(path)
    .cacheModel(path, pymodel)
    if (announce) .announceSaved(path)
    methods::new("SCVIModel", path = path, settings = .settingsFromPython(pymodel, args$train))
}

#' Save and load scVI models
#'
#' `saveSCVI()` copies a model's directory to `dir` (atomically) and returns a
#' handle pointing there. `loadSCVI()` opens a saved model directory, written
#' from R or by Python's `pybridge.SCVI.save()`.
#'
#' @param model An `SCVIModel` handle ([SCVIModel-class]).
#' @param dir `saveSCVI()`: the folder to copy the model to (created with
#'   its parents). `loadSCVI()`: a saved model folder, holding
#'   `model.json` and `model.safetensors`.
#' @param overwrite `FALSE` (default) refuses an existing `dir`; `TRUE`
#'   replaces it.
#' @return An `SCVIModel` handle ([SCVIModel-class]) whose `path` is `dir`
#'   (absolute). `loadSCVI()` reads the settings from the folder; its
#'   `settings$train` is empty.
#' @seealso [trainSCVI()]; [listSCVI()] and [removeSCVI()] for the models
#'   saved without `path`.
#' @export
#' @examples
#' if (pybridgeAvailable()) {
#'     counts <- matrix(rpois(2000, 2), 50, 40, dimnames = list(paste0("g", 1:50), paste0("c", 1:40)))
#'     model <- trainSCVI(counts, n_latent = 2, max_epochs = 2, path = tempfile())
#'     saved <- saveSCVI(model, tempfile())
#'     again <- loadSCVI(saved@path)
#' }
saveSCVI <- function(model, dir, overwrite = FALSE) {
    .pyModel(model)
    dir <- path.expand(dir)
    if (file.exists(dir) && !overwrite) {
        stop("'", dir, "' exists; pass overwrite = TRUE to replace it", call. = FALSE)
    }
    tmp <- paste0(dir, ".tmp-", Sys.getpid())
    unlink(tmp, recursive = TRUE)
    dir.create(tmp, recursive = TRUE)
    files <- list.files(model@path, full.names = TRUE, no.. = TRUE)
    if (!all(file.copy(files, tmp, recursive = TRUE, copy.date = TRUE))) {
        unlink(tmp, recursive = TRUE)
        stop("could not copy the model files to '", dir, "'", call. = FALSE)
    }
    if (file.exists(dir)) {
        old <- paste0(dir, ".old-", Sys.getpid())
        file.rename(dir, old)
        on.exit(unlink(old, recursive = TRUE), add = TRUE)
    }
    if (!file.rename(tmp, dir)) stop("could not move the model into '", dir, "'", call. = FALSE)
    methods::new("SCVIModel", path = normalizePath(dir), settings = model@settings)
}

#' @rdname saveSCVI
#' @export
loadSCVI <- function(dir) {
    dir <- normalizePath(path.expand(dir), mustWork = FALSE)
    if (!file.exists(file.path(dir, "model.json")) || !file.exists(file.path(dir, "model.safetensors"))) {
        stop("'", dir, "' is not a saved pybridge model (needs model.json and model.safetensors)", call. = FALSE)
    }
    pymodel <- .withPython(.pybridgeModule()$SCVI$load(dir))
    .cacheModel(dir, pymodel)
    methods::new("SCVIModel", path = dir, settings = .settingsFromPython(pymodel))
}

.checkGenes <- function(model, genes) {
    missing <- setdiff(model@settings$genes, genes)
    if (length(missing)) {
        stop("the data lack ", length(missing), " of the model's ", length(model@settings$genes),
             " genes (e.g. '", missing[1], "'); pass data with the genes the model was trained on", call. = FALSE)
    }
}

.modelInput <- function(model, x, assay.type, batch) {
    input <- .modelAnnData(x, assay.type = assay.type, batch = batch, batch_key = model@settings$batch_key)
    .checkGenes(model, input$genes)
    input
}

# ---------------------------------------------------------------- runSCVI / calculateSCVI

.calculate <- function(x, assay.type, batch, subset.row, ntop, path, allow.non.integer, ...) {
    if (is.null(subset.row)) subset.row <- .topVariableGenes(.countsOf(x, assay.type)$counts, ntop)
    model <- trainSCVI(x, assay.type = assay.type, batch = batch, subset.row = subset.row, path = path,
                       allow.non.integer = allow.non.integer, ...)
    z <- .withPython(reticulate::py_to_r(.pyModel(model)$get_latent_representation()))  # the training data, cached
    dimnames(z) <- list(.countsOf(x, assay.type)$cells, paste0("scVI_", seq_len(ncol(z))))
    attr(z, "model") <- model
    z
}

# Positions (in their original order) of the `ntop` genes with the largest variance of log-normalised
# counts (log1p of counts scaled by each cell's total / the mean total); NULL (all genes) when there are
# no more than `ntop` genes.
.topVariableGenes <- function(counts, ntop) {
    if (!is.numeric(ntop) || length(ntop) != 1L || is.na(ntop) || ntop < 1 || ntop != round(ntop)) {
        stop("ntop must be a single whole number >= 1 (or Inf for all genes), got ", deparse(ntop), call. = FALSE)
    }
    if (ntop >= nrow(counts)) return(NULL)
    v <- .logNormRowVars(counts)
    sort(order(v, decreasing = TRUE)[seq_len(ntop)])
}

.logNormRowVars <- function(counts) {
    if (methods::is(counts, "Matrix")) counts <- methods::as(methods::as(counts, "CsparseMatrix"), "generalMatrix")
    lib <- Matrix::colSums(counts)
    scale <- lib / mean(lib)
    scale[scale <= 0] <- 1  # empty cells stay all zero (and are refused, with their names, before training)
    if (methods::is(counts, "dgCMatrix")) {
        y <- y2 <- counts
        y@x <- log1p(y@x / rep.int(scale, diff(y@p)))
        y2@x <- y@x * y@x
    } else {
        y <- if (is.matrix(counts)) log1p(sweep(counts, 2L, scale, "/"))
             else log1p(DelayedArray::sweep(counts, 2L, scale, "/"))
        y2 <- y * y
    }
    n <- ncol(y)
    mu <- Matrix::rowMeans(y)
    (Matrix::rowMeans(y2) - mu * mu) * n / max(n - 1, 1)
}

#' scVI latent representation for SingleCellExperiment objects
#'
#' `calculateSCVI()` trains scVI on the raw counts and returns the latent
#' representation (cells x `n_latent`, with the model handle in
#' `attr(, "model")`). `runSCVI()` stores it as reducedDim `name` and the
#' model handle in `metadata(x)$pybridge[[name]]`; nothing else in `x`
#' changes.
#'
#' @section Gene selection:
#' As scater's `runPCA()`, these train on the `ntop` genes (default 2,000)
#' with the largest variance of log-normalised counts (`log1p` of the
#' counts scaled by each cell's total over the mean total), computed from
#' the raw counts in one pass (0.1 s for 32,738 genes x 2,700 cells);
#' `subset.row` chooses the genes instead, and `ntop = Inf` keeps them all.
#' Training time grows with the number of genes: on 10x PBMC 3k (2,700
#' cells, 32,738 genes, one CPU thread), 20 epochs took 168 s on all genes
#' and 13 s with the default 2,000, so the default `max_epochs` for 2,700
#' cells (400) would take about an hour on all genes and 4-5 minutes on
#' 2,000. To train on exactly the genes you pass, use [trainSCVI()].
#'
#' @param x A genes x cells count matrix (matrix, dgCMatrix, DelayedMatrix), a
#'   SummarizedExperiment or a SingleCellExperiment.
#' @param assay.type Assay holding the raw counts; default `"counts"`.
#' @param batch The batch of each cell: `NULL` (default, no batch), a
#'   colData column name, or one value per cell (see [trainSCVI()]).
#' @param subset.row Genes to train on (names, 1-based positions or
#'   logical); overrides `ntop`. `NULL` (default): the `ntop` most variable.
#' @param ntop Number of most variable genes to train on when `subset.row`
#'   is `NULL`; default 2000 (see Gene selection).
#' @param path Folder to save the model in; `NULL` (default): a new folder
#'   under `getOption("pybridge.model.dir")`, announced with a message (see
#'   [listSCVI()]).
#' @param allow.non.integer `FALSE` (default) refuses counts that are not
#'   whole numbers; `TRUE` accepts them (see [trainSCVI()]).
#' @param name Name of the reducedDim (and of the model's entry in
#'   `metadata(x)$pybridge`); default `"scVI"`.
#' @param ... Model and training arguments, named, with the defaults listed
#'   in [trainSCVI()]: e.g. `n_latent` (10), `n_layers` (1),
#'   `gene_likelihood` (`"zinb"`), `max_epochs` (`NULL`: 400 up to 20,000
#'   cells, fewer above), `batch_size` (128), `seed` (0), `progress`.
#' @return `calculateSCVI()`: a numeric matrix, cells x `n_latent`, with the
#'   cell names of `x` as row names and columns `"scVI_1"`, `"scVI_2"`, ...;
#'   attribute `"model"` holds the model handle ([SCVIModel-class]).
#'   `runSCVI()`: `x` (a SingleCellExperiment; a SummarizedExperiment is
#'   converted to one) with that matrix as `reducedDim(x, name)` and the
#'   model handle in `metadata(x)$pybridge[[name]]`.
#' @references
#' Lopez R, Regier J, Cole MB, Jordan MI, Yosef N (2018). Deep generative
#' modeling for single-cell transcriptomics. \emph{Nature Methods} 15:1053-1058.
#' \doi{10.1038/s41592-018-0229-2}
#' @seealso [trainSCVI()] for the model and training arguments and to train
#'   on exactly the genes given; [scviLatent()] and the other functions of
#'   the model handle; \code{\link{RunSCVI}()} for Seurat objects.
#' @name runSCVI
#' @aliases calculateSCVI,ANY-method
#' @export
#' @examples
#' if (pybridgeAvailable()) {
#'     counts <- matrix(rpois(2000, 2), 50, 40, dimnames = list(paste0("g", 1:50), paste0("c", 1:40)))
#'     sce <- SingleCellExperiment::SingleCellExperiment(list(counts = counts))
#'     sce <- runSCVI(sce, ntop = 30, n_latent = 2, max_epochs = 2, path = tempfile())
#'     dim(SingleCellExperiment::reducedDim(sce, "scVI"))
#'     length(S4Vectors::metadata(sce)$pybridge$scVI@settings$genes)  # 30
#' }
setMethod("calculateSCVI", "ANY", function(x, ..., batch = NULL, subset.row = NULL, ntop = 2000, path = NULL,
                                           allow.non.integer = FALSE) {
    .calculate(x, assay.type = "counts", batch = batch, subset.row = subset.row, ntop = ntop, path = path,
               allow.non.integer = allow.non.integer, ...)
})

#' @rdname runSCVI
#' @export
setMethod("calculateSCVI", "SummarizedExperiment",
          function(x, ..., assay.type = "counts", batch = NULL, subset.row = NULL, ntop = 2000, path = NULL,
                   allow.non.integer = FALSE) {
    .calculate(x, assay.type = assay.type, batch = batch, subset.row = subset.row, ntop = ntop, path = path,
               allow.non.integer = allow.non.integer, ...)
})

#' @rdname runSCVI
#' @export
setMethod("runSCVI", "SingleCellExperiment",
          function(x, ..., assay.type = "counts", batch = NULL, subset.row = NULL, ntop = 2000, path = NULL,
                   allow.non.integer = FALSE, name = "scVI") {
    z <- calculateSCVI(x, ..., assay.type = assay.type, batch = batch, subset.row = subset.row, ntop = ntop,
                       path = path, allow.non.integer = allow.non.integer)
    model <- attr(z, "model")
    attr(z, "model") <- NULL
    SingleCellExperiment::reducedDim(x, name) <- z
    meta <- S4Vectors::metadata(x)
    if (is.null(meta$pybridge)) meta$pybridge <- list()
    meta$pybridge[[name]] <- model
    S4Vectors::metadata(x) <- meta
    x
})

#' @rdname runSCVI
#' @export
setMethod("runSCVI", "SummarizedExperiment", function(x, ...) {
    runSCVI(methods::as(x, "SingleCellExperiment"), ...)
})
