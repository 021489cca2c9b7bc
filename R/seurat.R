# Seurat support (SeuratObject 4 API; layers through LayerData/JoinLayers on SeuratObject >= 5).

.requireSeurat <- function() {
    if (!requireNamespace("SeuratObject", quietly = TRUE)) {
        stop("this needs the SeuratObject package: install.packages(\"SeuratObject\") ",
             "(Debian: apt-get install r-cran-seuratobject)", call. = FALSE)
    }
}

.isSeuratV5 <- function() utils::packageVersion("SeuratObject") >= "5.0.0"

.seuratFn <- function(name) getExportedValue("SeuratObject", name)

# Counts (or another layer) of a Seurat assay, joining split v5 layers first.
.seuratCounts <- function(object, assay = NULL, layer = "counts") {
    .requireSeurat()
    if (is.null(assay)) assay <- SeuratObject::DefaultAssay(object)
    a <- object[[assay]]
    if (.isSeuratV5() && methods::is(a, "Assay5")) {
        if (length(.seuratFn("Layers")(a, search = layer)) > 1L) a <- .seuratFn("JoinLayers")(a, layers = layer)
        m <- .seuratFn("LayerData")(a, layer = layer)
    } else {
        m <- SeuratObject::GetAssayData(a, slot = layer)
    }
    if (is.null(m) || length(m) == 0L) {
        stop("Seurat assay '", assay, "' has no '", layer, "' data; pass layer = a layer holding raw counts",
             call. = FALSE)
    }
    list(counts = m, genes = rownames(m), cells = colnames(m), assay = assay)
}

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

# Seurat reduction name <-> SingleCellExperiment reducedDim name, and default keys.
.SEURAT_TO_SCE <- c(pca = "PCA", umap = "UMAP", tsne = "TSNE", scvi = "scVI")
.SEURAT_KEYS <- c(pca = "PC_", umap = "UMAP_", tsne = "tSNE_", scvi = "scVI_")

# Parts (see R/parts.R) of a Seurat object: layer `X.name` of `assay` becomes X; the other
# layers (Seurat 4: `data` and same-shaped assays) become layers, scale.data is left out.
.seuratToParts <- function(x, X.name = "counts", assay = NULL) {
    counts <- .seuratCounts(x, assay = assay, layer = X.name)
    layers <- list()
    a <- x[[counts$assay]]
    if (.isSeuratV5() && methods::is(a, "Assay5")) {
        names <- unique(sub("\\..*$", "", .seuratFn("Layers")(a)))
    } else {
        # Seurat 4 assays hold only counts/data/scale.data: extra layers live in same-shaped assays
        extra <- Filter(function(n) n != counts$assay && identical(dim(x[[n]]), dim(a)) &&
                            identical(rownames(x[[n]]), counts$genes), SeuratObject::Assays(x))
        for (n in extra) layers[[n]] <- SeuratObject::GetAssayData(x[[n]], slot = "counts")
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
    if (anyDuplicated(parts$obs_names)) {
        stop("Seurat needs unique cell names; call adata.obs_names_make_unique() first", call. = FALSE)
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
        key <- if (red %in% names(.SEURAT_KEYS)) .SEURAT_KEYS[[red]] else paste0(gsub("[^A-Za-z0-9]", "", red), "_")
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
#' the command is logged with `LogSeuratCommand()`. Works with the Seurat 4
#' API and, on SeuratObject >= 5, joins split layers (a copy; the object's
#' layers stay as they are).
#'
#' @param object A Seurat object.
#' @param assay Assay to use (default: the active assay).
#' @param layer Layer (Seurat 4: slot) with raw counts.
#' @param batch.key meta.data column with the batch of each cell, or `NULL`.
#' @param reduction.name,reduction.key Name and key of the new reduction.
#' @param path Where to save the model (see [trainSCVI()]).
#' @param ... Model and training arguments, as for [trainSCVI()].
#' @return `object` with the reduction added.
#' @rdname seurat-RunSCVI
#' @export
#' @examples
#' if (pybridgeAvailable() && requireNamespace("SeuratObject", quietly = TRUE)) {
#'     obj <- SeuratObject::pbmc_small
#'     obj <- RunSCVI(obj, n_latent = 2, max_epochs = 2, path = tempfile())
#'     dim(SeuratObject::Embeddings(obj, "scvi"))
#' }
RunSCVI <- function(object, assay = NULL, layer = "counts", batch.key = NULL, reduction.name = "scvi",
                    reduction.key = "scVI_", path = NULL, ...) {
    .requireSeurat()
    counts <- .seuratCounts(object, assay = assay, layer = layer)
    assay <- counts$assay  # LogSeuratCommand() records the assay used
    batch <- NULL
    if (!is.null(batch.key)) {
        if (!batch.key %in% colnames(object[[]])) {
            stop("batch.key '", batch.key, "' is not a meta.data column", call. = FALSE)
        }
        batch <- object[[]][counts$cells, batch.key]
    }
    input <- .modelAnnData(counts$counts, batch = batch, batch_key = batch.key)
    model <- .train(input, path, .splitArgs(list(...)))
    z <- reticulate::py_to_r(.pyModel(model)$get_latent_representation())
    dimnames(z) <- list(counts$cells, paste0(reduction.key, seq_len(ncol(z))))
    object[[reduction.name]] <- SeuratObject::CreateDimReducObject(
        embeddings = z, key = reduction.key, assay = counts$assay, misc = list(model = model@path)
    )
    SeuratObject::Tool(object) <- model
    SeuratObject::LogSeuratCommand(object)
}
