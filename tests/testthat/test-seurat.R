test_that("RunSCVI stores reduction 'scvi' with key scVI_, the model in Tool() and logs the command", {
    skip_if_no_python()
    skip_if_not_installed("SeuratObject")
    obj <- SeuratObject::pbmc_small
    out <- RunSCVI(obj, batch.key = "groups", n_latent = 3, n_hidden = 16, max_epochs = 2, path = tempfile())
    emb <- SeuratObject::Embeddings(out, "scvi")
    expect_identical(dim(emb), c(80L, 3L))
    expect_identical(colnames(emb), paste0("scVI_", 1:3))
    expect_identical(SeuratObject::Key(out[["scvi"]]), "scVI_")
    model <- SeuratObject::Tool(out, "RunSCVI")
    expect_s4_class(model, "SCVIModel")
    expect_identical(model@settings$batch_key, "groups")
    expect_true("RunSCVI.RNA.scvi" %in% names(out@commands) || any(grepl("RunSCVI", names(out@commands))))
    expect_identical(SeuratObject::GetAssayData(out, slot = "counts"), SeuratObject::GetAssayData(obj, slot = "counts"))
    expect_identical(out[[]], obj[[]])
    # the handle applies to the Seurat object again
    expect_equal(unname(scviLatent(model, obj, batch = "groups")), unname(emb), tolerance = 1e-6)
})
