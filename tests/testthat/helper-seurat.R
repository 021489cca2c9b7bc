# Seurat helpers that work with SeuratObject 4 and 5.

# Layer (Seurat 4: slot) `layer` of the active assay of a Seurat object, or of an assay.
seurat_layer <- function(object, layer) {
    if (utils::packageVersion("SeuratObject") >= "5.0.0") return(SeuratObject::LayerData(object, layer = layer))
    SeuratObject::GetAssayData(object, slot = layer)
}

# Seurat 5 tests skip on the Seurat 4 stack, saying why.
skip_if_not_seurat5 <- function() {
    testthat::skip_if_not_installed("SeuratObject")
    testthat::skip_if_not_installed("Seurat")
    version <- utils::packageVersion("SeuratObject")
    testthat::skip_if(version < "5.0.0", paste0("split layers and IntegrateLayers() need SeuratObject >= 5; ",
                                                "installed: ", version))
}

# Real counts (cortex_sce()) as a Seurat 5 object with its RNA assay split by a `sample` column
# (three samples, of uneven sizes, in a known order).
split_cortex_seurat <- function(n_cells = 300L, n_genes = 200L) {
    sce <- cortex_sce(n_cells, n_genes)
    obj <- SeuratObject::CreateSeuratObject(counts = SummarizedExperiment::assay(sce, "counts"))
    obj$cell_type <- sce$cell_type
    obj$sample <- rep(c("s2", "s1", "s3", "s1"), length.out = ncol(obj))
    obj[["RNA"]] <- split(obj[["RNA"]], f = obj$sample)
    obj
}

# The batch of each training cell as the model saw it (the training AnnData's obs), named by cell.
model_batches <- function(model) {
    obs <- pybridge:::.pyModel(model)$adata$obs
    key <- model@settings$batch_key
    batch <- reticulate::py_to_r(obs[[key]]$astype("str")$tolist())
    stats::setNames(as.character(unlist(batch)), as.character(unlist(reticulate::py_to_r(obs$index$tolist()))))
}
