test_that("RunSCVI stores reduction 'scvi' with key scVI_, the model in Tool() and misc, and logs the command", {
    skip_if_no_python()
    skip_if_not_installed("SeuratObject")
    obj <- SeuratObject::pbmc_small
    expect_message(
        out <- RunSCVI(obj, features = rownames(obj), batch.key = "groups", n_latent = 3, n_hidden = 16,
                       max_epochs = 2, batch_size = 64, path = tempfile()),
        "training on the 230 genes in features"
    )
    emb <- SeuratObject::Embeddings(out, "scvi")
    expect_identical(dim(emb), c(80L, 3L))
    expect_identical(colnames(emb), paste0("scVI_", 1:3))
    expect_identical(SeuratObject::Key(out[["scvi"]]), "scVI_")
    model <- SeuratObject::Tool(out, "RunSCVI")
    expect_s4_class(model, "SCVIModel")
    expect_identical(SeuratObject::Misc(out[["scvi"]], "model"), model)
    expect_identical(model@settings$batch_key, "groups")
    expect_identical(model_batches(model)[colnames(obj)], stats::setNames(obj$groups, colnames(obj)))
    expect_true(any(grepl("RunSCVI", names(out@commands))))
    expect_identical(seurat_layer(out, "counts"), seurat_layer(obj, "counts"))
    expect_identical(out[[]], obj[[]])
    # the handle applies to the Seurat object again
    expect_equal(unname(scviLatent(model, obj, batch = "groups")), unname(emb), tolerance = 1e-6)
})

test_that("RunSCVI trains on the variable features by default, on `features`, or on all genes", {
    skip_if_no_python()
    skip_if_not_installed("SeuratObject")
    obj <- SeuratObject::CreateSeuratObject(counts = SummarizedExperiment::assay(cortex_sce(200L, 150L), "counts"))
    expect_message(out <- RunSCVI(obj, n_latent = 2, max_epochs = 1, path = tempfile()),
                   "no variable features: training on all 150 genes")
    expect_identical(SeuratObject::Tool(out, "RunSCVI")@settings$genes, rownames(obj))
    SeuratObject::VariableFeatures(obj) <- rownames(obj)[60:1]
    expect_message(out <- RunSCVI(obj, n_latent = 2, max_epochs = 1, path = tempfile()),
                   "training on the 60 variable features of assay 'RNA' .* all 150 genes")
    expect_identical(SeuratObject::Tool(out, "RunSCVI")@settings$genes, rownames(obj)[60:1])
    genes <- rownames(obj)[c(5, 1, 40:60)]
    expect_message(out <- RunSCVI(obj, features = genes, n_latent = 2, max_epochs = 1, path = tempfile()),
                   "training on the 23 genes in features")
    expect_identical(SeuratObject::Tool(out, "RunSCVI")@settings$genes, genes)
})

test_that("RunSCVI refuses bad features, batches and empty cells in Seurat terms", {
    skip_if_no_python()
    skip_if_not_installed("SeuratObject")
    obj <- SeuratObject::pbmc_small
    cells <- colnames(obj)
    expect_error(RunSCVI(obj, features = c("CD79A", "notagene")),
                 "1 of the features are not genes of assay 'RNA' \\(e.g. 'notagene'\\)")
    expect_error(RunSCVI(obj, features = rownames(obj), batch.key = "nope"), "batch.key must name a meta.data column")
    obj$with_na <- replace(obj$groups, c(3, 7), NA)
    expect_error(RunSCVI(obj, features = rownames(obj), batch.key = "with_na"),
                 sprintf("'with_na' is NA for 2 cells: '%s' \\(column 3\\), '%s' \\(column 7\\)", cells[3], cells[7]))
    # pbmc_small's 20 variable features leave 6 cells without counts
    expect_error(RunSCVI(obj), sprintf("RunSCVI: 6 cells have no counts in the 20 genes used: '%s' \\(column 1\\).*features = rownames\\(object\\)", cells[1]))
    expect_error(RunSCVI(obj, assay = "ADT"), "no assay 'ADT' \\(assays: RNA\\)")
})

test_that("RunSCVI on a Seurat 5 object split by sample uses the samples as the batch", {
    skip_if_not_seurat5()
    skip_if_no_python()
    obj <- split_cortex_seurat()
    layers <- SeuratObject::Layers(obj[["RNA"]])
    expect_message(out <- RunSCVI(obj, n_latent = 3, max_epochs = 2, path = tempfile()),
                   "batch = the 3 samples the 'counts' layers are split by \\(s2, s1, s3\\)")
    model <- SeuratObject::Tool(out, "RunSCVI")
    expect_identical(model@settings$batch_levels, c("s2", "s1", "s3"))
    expect_identical(model_batches(model)[colnames(obj)], stats::setNames(obj$sample, colnames(obj)))
    expect_identical(rownames(SeuratObject::Embeddings(out, "scvi")), colnames(obj))
    expect_identical(SeuratObject::Layers(out[["RNA"]]), layers)  # still split
    # batch.key overrides the split
    out <- RunSCVI(obj, batch.key = "cell_type", n_latent = 3, max_epochs = 1, path = tempfile())
    model <- SeuratObject::Tool(out, "RunSCVI")
    expect_identical(model@settings$batch_levels, levels(droplevels(obj$cell_type)))
    expect_identical(model_batches(model)[colnames(obj)], stats::setNames(as.character(obj$cell_type), colnames(obj)))
})

test_that("IntegrateLayers(method = pybridge::scVIIntegration) trains with the split as the batch", {
    skip_if_not_seurat5()
    skip_if_no_python()
    obj <- split_cortex_seurat()
    obj <- Seurat::NormalizeData(obj, verbose = FALSE)
    obj <- Seurat::FindVariableFeatures(obj, nfeatures = 80, verbose = FALSE)
    obj <- Seurat::ScaleData(obj, verbose = FALSE)
    features <- SeuratObject::VariableFeatures(obj)
    expect_message(
        out <- Seurat::IntegrateLayers(obj, method = pybridge::scVIIntegration, orig.reduction = NULL,
                                       features = features, new.reduction = "integrated.scvi", ndims = 4,
                                       max_epochs = 2, conda_env = "scvi-env", path = tempfile()),
        "conda_env ignored"
    )
    emb <- SeuratObject::Embeddings(out, "integrated.scvi")
    expect_equal(dim(emb), c(ncol(obj), 4))
    expect_identical(rownames(emb), colnames(obj))
    expect_identical(SeuratObject::Key(out[["integrated.scvi"]]), "integratedscvi_")
    model <- SeuratObject::Misc(out[["integrated.scvi"]], "model")
    expect_s4_class(model, "SCVIModel")
    expect_identical(model@settings$genes, features)
    expect_identical(model@settings$model$n_latent, 4L)
    expect_identical(model@settings$model$gene_likelihood, "nb")
    expect_identical(model@settings$batch_levels, c("s2", "s1", "s3"))
    expect_identical(model_batches(model)[colnames(obj)], stats::setNames(obj$sample, colnames(obj)))
    # it trained on the raw counts, not the normalized data layers IntegrateLayers names
    counts <- SeuratObject::LayerData(SeuratObject::JoinLayers(obj[["RNA"]], layers = "counts"), layer = "counts")
    expect_equal(unname(scviLatent(model, counts[, colnames(obj)], batch = obj$sample)), unname(emb), tolerance = 1e-5)

    # groups replaces the split; the result is what IntegrateLayers() expects from a method
    groups <- data.frame(group = obj$cell_type, row.names = colnames(obj))
    value <- pybridge::scVIIntegration(obj[["RNA"]], features = rownames(obj)[1:30], groups = groups,
                                       new.reduction = "by.type", ndims = 2, max_epochs = 1, verbose = FALSE,
                                       assay = "RNA", path = tempfile())
    expect_identical(names(value), "by.type")
    expect_s4_class(value$by.type, "DimReduc")
    model <- SeuratObject::Misc(value$by.type, "model")
    expect_identical(model@settings$genes, rownames(obj)[1:30])
    expect_identical(model_batches(model)[colnames(obj)], stats::setNames(as.character(obj$cell_type), colnames(obj)))
})

test_that("scVIIntegration refuses what it cannot integrate, in Seurat terms", {
    skip_if_not_installed("SeuratObject")
    expect_error(scVIIntegration(SeuratObject::pbmc_small), "method for Seurat 5's IntegrateLayers")
    skip_if_not_seurat5()
    obj <- SeuratObject::CreateSeuratObject(counts = seurat_layer(SeuratObject::pbmc_small, "counts"))
    expect_error(scVIIntegration(obj[["RNA"]]), "needs cells from two or more samples, found 1: split the assay first")
    expect_error(scVIIntegration(obj[["RNA"]], groups = rep(c("a", "b"), length.out = 5)), "groups has 5 values for 80 cells")
    expect_error(scVIIntegration(obj[["RNA"]], groups = rep(c("a", "b"), 40), n_latent = 3),
                 "pass ndims \\(for n_latent\\)")
})
