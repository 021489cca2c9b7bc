# Seurat support: the Seurat 4 API, and SeuratObject >= 5 (Assay5 layers, split by sample, IntegrateLayers()).

.requireSeurat <- function() {
    if (!requireNamespace("SeuratObject", quietly = TRUE)) {
        stop("this needs the SeuratObject package: install.packages(\"SeuratObject\") ",
             "(Debian: apt-get install r-cran-seuratobject)", call. = FALSE)
    }
}

.isSeuratV5 <- function() utils::packageVersion("SeuratObject") >= "5.0.0"

.seuratFn <- function(name) getExportedValue("SeuratObject", name)

# Layer `layer` of an assay object as one genes x cells matrix; split v5 layers ("counts.s1",
# "counts.s2", ...) are joined (a copy; the assay stays split). `assay`: its name, for messages.
.assayLayer <- function(a, layer, assay) {
    if (.isSeuratV5()) {
        found <- .seuratFn("Layers")(a, search = layer)
        if (!length(found)) {
            stop("Seurat assay '", assay, "' has no layer '", layer, "' (layers: ",
                 paste(.seuratFn("Layers")(a), collapse = ", "), "); pass layer = the layer holding raw counts",
                 call. = FALSE)
        }
        if (length(found) > 1L) a <- .seuratFn("JoinLayers")(a, layers = layer)
        m <- .seuratFn("LayerData")(a, layer = layer)
    } else {
        m <- SeuratObject::GetAssayData(a, slot = layer)
    }
    if (is.null(m) || length(m) == 0L) {
        stop("Seurat assay '", assay, "' has no '", layer, "' data; pass layer = a layer holding raw counts",
             call. = FALSE)
    }
    m
}

# Counts (or another layer) of a Seurat assay, split v5 layers joined.
.seuratCounts <- function(object, assay = NULL, layer = "counts") {
    .requireSeurat()
    if (is.null(assay)) assay <- SeuratObject::DefaultAssay(object)
    if (!assay %in% SeuratObject::Assays(object)) {
        stop("the Seurat object has no assay '", assay, "' (assays: ",
             paste(SeuratObject::Assays(object), collapse = ", "), "); pass assay = one of them", call. = FALSE)
    }
    m <- .assayLayer(object[[assay]], layer, assay)
    list(counts = m, genes = rownames(m), cells = colnames(m), assay = assay)
}

# The sample each cell is in, from the layers of a v5 assay that hold it: layer "counts.s1" (or
# "data.s1") means sample "s1". A factor over `cells` with levels in layer order (NA: in none of them).
.batchFromLayers <- function(a, layers, cells) {
    samples <- ifelse(grepl(".", layers, fixed = TRUE), sub("^[^.]*\\.", "", layers), layers)
    batch <- rep(NA_character_, length(cells))
    for (i in seq_along(layers)) {
        at <- match(.seuratFn("Cells")(a, layer = layers[i]), cells)
        at <- at[!is.na(at)]
        clash <- at[!is.na(batch[at]) & batch[at] != samples[i]]
        if (length(clash)) {
            stop("cell '", cells[clash[1]], "' is in layers of two samples ('", batch[clash[1]], "' and '",
                 samples[i], "'); pass layers = one layer per sample, e.g. Layers(object, search = \"counts\")",
                 call. = FALSE)
        }
        batch[at] <- samples[i]
    }
    factor(batch, levels = unique(samples))
}

# The split of layer `layer` of a v5 assay as the batch of `cells`, or NULL when it is not split.
.layerSplit <- function(a, layer, cells) {
    if (!.isSeuratV5() || !methods::is(a, "StdAssay")) return(NULL)
    split <- .seuratFn("Layers")(a, search = layer)
    if (length(split) < 2L) return(NULL)
    .batchFromLayers(a, split, cells)
}

# Genes to train on: `features` (checked against the assay's genes), else the assay's variable features when
# set, else all genes; a message from `caller` says which (unless quiet).
.seuratFeatures <- function(a, features, genes, assay, caller, quiet = FALSE) {
    say <- function(...) if (!quiet) message(caller, ": ", ...)
    if (!is.null(features)) {
        if (!is.character(features) || !length(features) || anyNA(features)) {
            stop("features must be gene names (a character vector), e.g. features = VariableFeatures(object)",
                 call. = FALSE)
        }
        missing <- setdiff(features, genes)
        if (length(missing)) {
            stop(length(missing), " of the features are not genes of assay '", assay, "' (e.g. '", missing[1],
                 "'); pass names from rownames(object[[\"", assay, "\"]])", call. = FALSE)
        }
        features <- unique(features)
        say("training on the ", length(features), " genes in features")
        return(features)
    }
    variable <- intersect(SeuratObject::VariableFeatures(a), genes)
    if (length(variable)) {
        say("training on the ", length(variable), " variable features of assay '", assay,
            "' (VariableFeatures()); features = rownames(object) trains on all ", length(genes), " genes")
        return(variable)
    }
    say("assay '", assay, "' has no variable features: training on all ", length(genes), " genes (time grows ",
        "with the genes; run FindVariableFeatures() first or pass features =)")
    genes
}

# scVI needs a count in every cell over the genes it trains on: refuse empty cells by name, with the R fix.
# `counts`: genes x cells, already restricted to those genes; `all_genes`: whether they are all the assay's.
.checkCellCounts <- function(counts, all_genes, assay, caller) {
    empty <- which(Matrix::colSums(counts) == 0)
    if (!length(empty)) return(invisible(counts))
    where <- if (all_genes) paste0("assay '", assay, "'") else paste0("the ", nrow(counts), " genes used")
    fix <- if (all_genes) {
        paste0("drop them, e.g. object <- subset(object, subset = nCount_", assay, " > 0)")
    } else {
        "train on more genes, e.g. features = rownames(object), or drop them (subset(object, cells = ...))"
    }
    stop(caller, ": ", length(empty), " cells have no counts in ", where, ": ",
         .namedPositions(empty - 1L, colnames(counts)), ". scVI needs at least one count per cell: ", fix,
         call. = FALSE)
}

# One value per cell of a meta.data column, refusing NA with the cells named.
.metaBatch <- function(object, batch.key, cells) {
    if (!is.character(batch.key) || length(batch.key) != 1L || !batch.key %in% colnames(object[[]])) {
        stop("batch.key must name a meta.data column, e.g. batch.key = \"sample\"; columns: ",
             paste(colnames(object[[]]), collapse = ", "), call. = FALSE)
    }
    values <- object[[]][cells, batch.key]
    na <- which(is.na(values))
    if (length(na)) {
        stop("meta.data column '", batch.key, "' is NA for ", length(na), " cells: ", .namedPositions(na - 1L, cells),
             "; give them a value or drop them: object <- subset(object, cells = colnames(object)[!is.na(object$",
             batch.key, ")])", call. = FALSE)
    }
    values
}

# Put matrix `m` into layer `layer` of `assay` (Seurat 4: slots counts/data, other layers as assays of their own).
.seuratSetLayer <- function(object, assay, layer, m) {
    if (!.isSeuratV5() && !layer %in% c("counts", "data")) {
        object[[layer]] <- SeuratObject::CreateAssayObject(counts = m)
        return(object)
    }
    if (.isSeuratV5()) {
        a <- object[[assay]]
        a <- do.call(.seuratFn("LayerData<-"), list(a, layer = layer, value = m))
        object[[assay]] <- a
        return(object)
    }
    SeuratObject::SetAssayData(object, slot = layer, new.data = m, assay = assay)
}

# Seurat's key for a reduction name: its letters and digits, then "_".
.reductionKey <- function(name) paste0(gsub("[^A-Za-z0-9]", "", name), "_")

# The latent representation of the cells a model was trained on, as a DimReduc holding the model
# handle in its misc slot.
.latentDimReduc <- function(model, cells, key, assay) {
    z <- reticulate::py_to_r(.pyModel(model)$get_latent_representation())
    dimnames(z) <- list(cells, paste0(key, seq_len(ncol(z))))
    SeuratObject::CreateDimReducObject(embeddings = z, key = key, assay = assay, misc = list(model = model))
}

# Seurat reduction name <-> SingleCellExperiment reducedDim name, and default keys.
.SEURAT_TO_SCE <- c(pca = "PCA", umap = "UMAP", tsne = "TSNE", scvi = "scVI")
.SEURAT_KEYS <- c(pca = "PC_", umap = "UMAP_", tsne = "tSNE_", scvi = "scVI_")

# Parts (see R/parts.R) of a Seurat object: layer `X.name` of `assay` becomes X; the other
# layers (Seurat 4: `data` and same-shaped assays) become layers, scale.data is left out.
.seuratToParts <- function(x, X.name = "counts", assay = NULL) {
    counts <- .seuratCounts(x, assay = assay, layer = X.name)
    layers <- list()
    a <- x[[counts$assay]]
    if (.isSeuratV5() && methods::is(a, "StdAssay")) {
        # split layers "counts.s1", "counts.s2" are one layer "counts" (scale.data is not a split)
        names <- unique(sub("\\..*$", "", setdiff(.seuratFn("Layers")(a), "scale.data")))
    } else {
        # Seurat 4 assays hold only counts/data/scale.data: extra layers live in same-shaped assays
        extra <- Filter(function(n) n != counts$assay && identical(dim(x[[n]]), dim(a)) &&
                            identical(rownames(x[[n]]), counts$genes), SeuratObject::Assays(x))
        for (n in extra) layers[[n]] <- .assayLayer(x[[n]], "counts", n)
        names <- c("counts", "data")
    }
    for (n in setdiff(names, c(X.name, "scale.data"))) {
        m <- tryCatch(.seuratCounts(x, assay = counts$assay, layer = n)$counts, error = function(e) NULL)
        if (!is.null(m) && !identical(unname(m), unname(counts$counts))) layers[[n]] <- m
    }
    dims <- list()
    for (r in SeuratObject::Reductions(x)) {
        nm <- if (r %in% names(.SEURAT_TO_SCE)) .SEURAT_TO_SCE[[r]] else r
        dims[[nm]] <- SeuratObject::Embeddings(x, reduction = r)[counts$cells, , drop = FALSE]
    }
    features <- x[[counts$assay]][[]]
    list(
        X = counts$counts, layers = layers,
        obs = x[[]][counts$cells, , drop = FALSE], var = features[counts$genes, , drop = FALSE],
        obs_names = counts$cells, var_names = counts$genes, reduced_dims = .denseDims(dims)
    )
}

# A Seurat object (assay "RNA") from parts: X becomes layer `X.name` (and always `counts`),
# layers become layers (Seurat 4: `data`, or assays of their own), reducedDims become reductions.
.seuratFromParts <- function(parts, X.name = "counts") {
    .requireSeurat()
    dup <- anyDuplicated(parts$obs_names)
    if (dup) {
        stop("Seurat needs unique cell names; '", parts$obs_names[dup], "' is duplicated. Make them unique first: ",
             "in R, colnames(x) <- make.unique(colnames(x)); in Python, adata.obs_names_make_unique()",
             call. = FALSE)
    }
    meta <- as.data.frame(parts$obs, optional = TRUE)
    object <- SeuratObject::CreateSeuratObject(counts = parts$X, assay = "RNA")
    object <- SeuratObject::AddMetaData(object, meta)
    if (X.name != "counts") object <- .seuratSetLayer(object, "RNA", X.name, parts$X)
    for (nm in names(parts$layers)) object <- .seuratSetLayer(object, "RNA", nm, parts$layers[[nm]])
    features <- as.data.frame(parts$var, optional = TRUE)
    if (ncol(features)) object[["RNA"]] <- SeuratObject::AddMetaData(object[["RNA"]], features)
    for (nm in names(parts$reduced_dims)) {
        red <- if (nm %in% .SEURAT_TO_SCE) names(.SEURAT_TO_SCE)[.SEURAT_TO_SCE == nm] else nm
        key <- if (red %in% names(.SEURAT_KEYS)) .SEURAT_KEYS[[red]] else .reductionKey(red)
        emb <- parts$reduced_dims[[nm]]
        colnames(emb) <- paste0(key, seq_len(ncol(emb)))
        object[[red]] <- SeuratObject::CreateDimReducObject(embeddings = emb, key = key, assay = "RNA")
    }
    object
}


#' scVI for Seurat objects
#'
#' Trains scVI on the raw counts of a Seurat assay and stores the latent
#' representation as the reduction `reduction.name` (key `reduction.key`);
#' the model handle ([SCVIModel-class]) goes to `Tool(object, "RunSCVI")` and
#' to `Misc(object[[reduction.name]], "model")`, and the command is logged
#' with `LogSeuratCommand()`. Works with the Seurat 4 API and with
#' SeuratObject >= 5.
#'
#' The batch: the meta.data column `batch.key` when given; otherwise, on
#' SeuratObject >= 5, the samples of a split assay (`obj[["RNA"]] <-
#' split(obj[["RNA"]], f = obj$sample)` gives layers `counts.<sample>`: each
#' cell's batch is the sample whose layer holds it); otherwise none. Split
#' layers are joined for training (a copy; the object's layers stay split).
#' For the Seurat 5 integration workflow see [scVIIntegration()].
#'
#' @param object A Seurat object.
#' @param assay Assay to use; `NULL` (default) for the active assay
#'   (`DefaultAssay(object)`).
#' @param layer Layer (Seurat 4: slot) with the raw counts; default
#'   `"counts"`. Split layers (`counts.<sample>`) are found by this name.
#' @param features Genes to train on (names). `NULL` (default): the assay's
#'   variable features (`VariableFeatures()`, e.g. from
#'   `FindVariableFeatures()`) when set, else all genes; a message says
#'   which. Training time grows with the number of genes: on 2,700 cells,
#'   20 epochs took 13 s on 2,000 genes and 168 s on all 32,738 (see
#'   [runSCVI()]).
#' @param batch.key meta.data column with the batch of each cell; `NULL`
#'   (default): the split layers as above, or no batch.
#' @param reduction.name Name of the new reduction; default `"scvi"`.
#' @param reduction.key Key of the new reduction (the prefix of its column
#'   names); default `"scVI_"`.
#' @param path Folder to save the model in; `NULL` (default): a new folder
#'   under `getOption("pybridge.model.dir")`, announced with a message (see
#'   [listSCVI()]).
#' @param allow.non.integer `FALSE` (default) refuses counts that are not
#'   whole numbers; `TRUE` accepts them (e.g. expected counts from salmon or
#'   RSEM), see [trainSCVI()].
#' @param ... Model and training arguments, named, with their defaults as
#'   listed in [trainSCVI()]: e.g. `n_latent` (10), `n_layers` (1),
#'   `gene_likelihood` (`"zinb"`), `max_epochs` (`NULL`: 400 up to 20,000
#'   cells, fewer above), `batch_size` (128), `seed` (0), `progress`.
#' @return `object` with
#' * the reduction `reduction.name`: a DimReduc with the latent
#'   representation, cells x `n_latent` (all cells of the assay; columns
#'   `<reduction.key>1`, `<reduction.key>2`, ...), for `FindNeighbors()` and
#'   `RunUMAP()` (`reduction = "scvi"`);
#' * the model handle ([SCVIModel-class]) in `Tool(object, "RunSCVI")` and
#'   in `Misc(object[[reduction.name]], "model")`, for [scviNormalized()],
#'   [scviDifferentialExpression()] and the other `scviX()` functions;
#' * the command logged in `object@commands`.
#' @references
#' Lopez R, Regier J, Cole MB, Jordan MI, Yosef N (2018). Deep generative
#' modeling for single-cell transcriptomics. \emph{Nature Methods} 15:1053-1058.
#' \doi{10.1038/s41592-018-0229-2}
#' @seealso [scVIIntegration()] for `IntegrateLayers()`; [trainSCVI()] for
#'   the model and training arguments; [scviLatent()] and the other
#'   functions of the model handle; [runSCVI()] for SingleCellExperiment
#'   objects.
#' @rdname seurat-RunSCVI
#' @export
#' @examples
#' if (pybridgeAvailable() && requireNamespace("SeuratObject", quietly = TRUE)) {
#'     obj <- SeuratObject::pbmc_small
#'     # pbmc_small's 20 variable features leave some cells without counts: use all genes
#'     obj <- RunSCVI(obj, features = rownames(obj), n_latent = 2, max_epochs = 2, batch_size = 32,
#'                    path = tempfile())
#'     dim(SeuratObject::Embeddings(obj, "scvi"))
#' }
RunSCVI <- function(object, assay = NULL, layer = "counts", features = NULL, batch.key = NULL,
                    reduction.name = "scvi", reduction.key = "scVI_", path = NULL, allow.non.integer = FALSE, ...) {
    .requireSeurat()
    args <- .splitArgs(list(...))
    counts <- .seuratCounts(object, assay = assay, layer = layer)
    assay <- counts$assay  # LogSeuratCommand() records the assay used
    a <- object[[assay]]
    genes <- .seuratFeatures(a, features, counts$genes, assay, "RunSCVI")
    if (!is.null(batch.key)) {
        batch <- .metaBatch(object, batch.key, counts$cells)
    } else {
        batch <- .layerSplit(a, layer, counts$cells)
        if (!is.null(batch)) {
            message("RunSCVI: batch = the ", nlevels(batch), " samples the '", layer, "' layers are split by (",
                    paste(levels(batch), collapse = ", "), "); batch.key = a meta.data column overrides it")
        }
    }
    used <- .checkCellCounts(counts$counts[match(genes, counts$genes), , drop = FALSE],
                             length(genes) == length(counts$genes), assay, "RunSCVI")
    input <- .modelAnnData(used, batch = batch, batch_key = batch.key)
    model <- .train(input, path, args, allow.non.integer)
    object[[reduction.name]] <- .latentDimReduc(model, counts$cells, reduction.key, assay)
    SeuratObject::Tool(object) <- model
    SeuratObject::LogSeuratCommand(object)
}

#' scVI integration for Seurat 5's IntegrateLayers()
#'
#' A method for `Seurat::IntegrateLayers()` (SeuratObject >= 5), in place of
#' SeuratWrappers' `scVIIntegration` and with its argument names, that runs
#' pybridge's scVI without conda:
#' `obj <- IntegrateLayers(obj, method = pybridge::scVIIntegration,
#' new.reduction = "integrated.scvi")`. It trains on the raw counts (the
#' assay's `counts` layers, joined) of the cells in `layers`, with each
#' cell's sample (the split of `layers`, or `groups`) as the batch, and
#' returns the batch-corrected latent representation as a reduction.
#'
#' `IntegrateLayers()` passes the assay, `layers` (default: the `data.*`
#' layers, one per sample), `features` (default: the variable features),
#' `orig` and `scale.layer`; `orig` and `scale.layer` are not used, so
#' `orig.reduction = NULL` skips the PCA that other methods need.
#'
#' @param object The assay (a v5 `StdAssay`) that `IntegrateLayers()` passes.
#' @param features Genes to train on (names); `NULL`: the assay's variable
#'   features when set, else all genes. `IntegrateLayers()` passes the
#'   object's variable features unless told otherwise.
#' @param layers The split layers whose samples are the batches, e.g.
#'   `c("data.s1", "data.s2")` or `c("counts.s1", "counts.s2")`: a layer
#'   `<name>.<sample>` holds the cells of `<sample>`. Default `"counts"`
#'   (all split `counts.*` layers); `IntegrateLayers()` passes the `data.*`
#'   layers unless told otherwise.
#' @param groups `NULL` (default: the split of `layers`), or the batch of
#'   each cell instead of the split: a
#'   one-column data.frame with cell names as row names, or a vector (named
#'   by cell, or one value per cell of the assay in order).
#' @param new.reduction Name of the reduction to return (default
#'   `"integrated.dr"`; `IntegrateLayers()` passes its own, e.g.
#'   `"integrated.scvi"`).
#' @param reduction.key Its key, the prefix of its column names; `NULL`
#'   (default): `new.reduction`'s letters and digits, then `"_"`, e.g.
#'   `"integratedscvi_"`.
#' @param ndims Dimensions of the latent space (scVI's `n_latent`); default
#'   30, as in SeuratWrappers.
#' @param nlayers Hidden layers of the encoder and decoder (scVI's
#'   `n_layers`); default 2, as in SeuratWrappers.
#' @param gene_likelihood Distribution of the counts: `"nb"` (negative
#'   binomial; default, as in SeuratWrappers), `"zinb"` (zero-inflated
#'   negative binomial) or `"poisson"`.
#' @param max_epochs Passes over the data; `NULL` (default):
#'   `min(round(20000 / n_cells * 400), 400)`, i.e. 400 up to 20,000 cells,
#'   fewer above.
#' @param path Folder to save the model in; `NULL` (default): a new folder
#'   under `getOption("pybridge.model.dir")` (see [listSCVI()]).
#' @param allow.non.integer `FALSE` (default) refuses counts that are not
#'   whole numbers; `TRUE` accepts them (see [trainSCVI()]).
#' @param verbose `TRUE` (default); `FALSE` silences the messages and the
#'   training progress.
#' @param conda_env Accepted for SeuratWrappers compatibility and ignored
#'   with a message (as are other `conda*` arguments): pybridge runs in the
#'   Python that [installPybridge()] set up.
#' @param assay,orig,scale.layer Passed by `IntegrateLayers()`: the assay's
#'   name (recorded in the reduction; default `"RNA"`); `orig` and
#'   `scale.layer` are unused.
#' @param ... Other model and training arguments, named, with the defaults
#'   listed in [trainSCVI()] (`n_hidden` (128), `dropout_rate` (0.1),
#'   `dispersion` (`"gene"`), `batch_size` (128), `lr` (0.001), `seed` (0),
#'   ...); `n_latent` and `n_layers` are refused (use `ndims` and
#'   `nlayers`).
#' @return A list with one element, named `new.reduction`: a `DimReduc`
#'   with the batch-corrected latent representation (cells x `ndims`, the
#'   cells of `layers`; columns `<reduction.key>1`, ...), which
#'   `IntegrateLayers()` adds to the object. The model handle
#'   ([SCVIModel-class]) is in its misc slot:
#'   `Misc(obj[["integrated.scvi"]], "model")`.
#' @references
#' Lopez R, Regier J, Cole MB, Jordan MI, Yosef N (2018). Deep generative
#' modeling for single-cell transcriptomics. \emph{Nature Methods} 15:1053-1058.
#' \doi{10.1038/s41592-018-0229-2}
#' @seealso \code{\link{RunSCVI}()}, which adds the reduction to a Seurat
#'   object directly; [trainSCVI()] for the model and training arguments.
#' @export
#' @examples
#' if (pybridgeAvailable() && requireNamespace("Seurat", quietly = TRUE) &&
#'     utils::packageVersion("SeuratObject") >= "5.0.0") {
#'     small <- SeuratObject::pbmc_small
#'     obj <- SeuratObject::CreateSeuratObject(counts = SeuratObject::LayerData(small, layer = "counts"))
#'     obj[["RNA"]] <- split(obj[["RNA"]], f = small$groups)  # layers counts.g1, counts.g2
#'     obj <- Seurat::IntegrateLayers(obj, method = scVIIntegration, orig.reduction = NULL,
#'                                    layers = "counts", features = rownames(obj),
#'                                    new.reduction = "integrated.scvi", ndims = 2, max_epochs = 2,
#'                                    batch_size = 32, path = tempfile())
#'     dim(SeuratObject::Embeddings(obj, "integrated.scvi"))
#' }
scVIIntegration <- function(object, features = NULL, layers = "counts", groups = NULL,
                            new.reduction = "integrated.dr", reduction.key = NULL, ndims = 30, nlayers = 2,
                            gene_likelihood = "nb", max_epochs = NULL, path = NULL, allow.non.integer = FALSE,
                            verbose = TRUE, conda_env = NULL, assay = "RNA", orig = NULL, scale.layer = NULL, ...) {
    .requireSeurat()
    .checkIntegrationAssay(object)
    dots <- list(...)
    conda <- c(if (!is.null(conda_env)) "conda_env", grep("^conda", names(dots), value = TRUE))
    if (length(conda) && verbose) {
        message("scVIIntegration: ", paste(conda, collapse = ", "), " ignored: pybridge needs no conda ",
                "(it runs in the Python that installPybridge() set up)")
    }
    dots <- dots[!grepl("^conda", names(dots))]
    args <- .integrationArgs(dots, ndims = ndims, nlayers = nlayers, gene_likelihood = gene_likelihood,
                             max_epochs = max_epochs, verbose = verbose)
    all_cells <- .seuratFn("Cells")(object)
    if (is.null(groups)) {
        batch <- .batchFromLayers(object, .seuratFn("Layers")(object, search = layers), all_cells)
    } else {
        batch <- .groupsBatch(groups, all_cells)
    }
    if (nlevels(droplevels(batch)) < 2L) {
        stop("scVIIntegration needs cells from two or more samples, found ", nlevels(droplevels(batch)),
             ": split the assay first, e.g. obj[[\"RNA\"]] <- split(obj[[\"RNA\"]], f = obj$sample), ",
             "or pass groups = one batch per cell", call. = FALSE)
    }
    keep <- !is.na(batch)
    counts <- .assayLayer(object, "counts", assay)
    genes <- .seuratFeatures(object, features, rownames(counts), assay, "scVIIntegration", quiet = !verbose)
    used <- .checkCellCounts(counts[match(genes, rownames(counts)), match(all_cells[keep], colnames(counts)), drop = FALSE],
                             length(genes) == nrow(counts), assay, "scVIIntegration")
    input <- .modelAnnData(used, batch = droplevels(batch[keep]), batch_key = "batch")
    model <- .train(input, path, args, allow.non.integer)
    key <- if (is.null(reduction.key)) .reductionKey(new.reduction) else reduction.key
    stats::setNames(list(.latentDimReduc(model, all_cells[keep], key, assay)), new.reduction)
}
attr(scVIIntegration, "Seurat.method") <- "integration"

# IntegrateLayers() hands the method an assay: scVI needs a v5 assay of raw counts.
.checkIntegrationAssay <- function(object) {
    if (!.isSeuratV5() || !methods::is(object, "StdAssay")) {
        stop("scVIIntegration() is a method for Seurat 5's IntegrateLayers() (SeuratObject >= 5), which passes it ",
             "a v5 assay: obj <- IntegrateLayers(obj, method = pybridge::scVIIntegration, new.reduction = ",
             "\"integrated.scvi\"). For a Seurat object as such use RunSCVI()", call. = FALSE)
    }
    if (methods::is(object, "SCTAssay")) {
        stop("scVI models raw counts, not SCTransform's: integrate the RNA assay instead, ",
             "IntegrateLayers(obj, method = pybridge::scVIIntegration, assay = \"RNA\")", call. = FALSE)
    }
}

# Model and training arguments of scVIIntegration(): SeuratWrappers' names mapped to pybridge's, and `...`.
.integrationArgs <- function(dots, ndims, nlayers, gene_likelihood, max_epochs, verbose) {
    clash <- intersect(names(dots), c("n_latent", "n_layers"))
    if (length(clash)) {
        stop("pass ndims (for n_latent) and nlayers (for n_layers), not ", paste(clash, collapse = ", "),
             call. = FALSE)
    }
    args <- c(list(n_latent = ndims, n_layers = nlayers, gene_likelihood = gene_likelihood,
                   max_epochs = max_epochs), dots)
    if (!isTRUE(verbose) && is.null(args$progress)) args$progress <- FALSE
    .splitArgs(args)
}

# The batch of each cell of the assay from `groups` (a one-column data.frame with cell names as row names, or
# a vector named by cell or in the assay's cell order).
.groupsBatch <- function(groups, cells) {
    if (is.data.frame(groups)) {
        if (ncol(groups) != 1L) {
            stop("groups must have one column (the batch), it has ", ncol(groups), call. = FALSE)
        }
        groups <- stats::setNames(groups[[1]], rownames(groups))
    }
    if (!is.null(names(groups))) {
        missing <- setdiff(cells, names(groups))
        if (length(missing)) {
            stop("groups has no value for ", length(missing), " cells (e.g. '", missing[1], "')", call. = FALSE)
        }
        groups <- groups[cells]
    } else if (length(groups) != length(cells)) {
        stop("groups has ", length(groups), " values for ", length(cells), " cells; name them by cell or give ",
             "one per cell", call. = FALSE)
    }
    if (anyNA(groups)) {
        stop("groups is NA for ", sum(is.na(groups)), " cells (e.g. '", cells[is.na(groups)][1],
             "'); give them a value", call. = FALSE)
    }
    if (is.factor(groups)) droplevels(groups) else factor(as.character(groups))
}
