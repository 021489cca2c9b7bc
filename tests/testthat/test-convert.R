expect_same_sce <- function(back, sce) {
    for (a in SummarizedExperiment::assayNames(sce)) {
        expect_identical(as(SummarizedExperiment::assay(back, a), "dgCMatrix"),
                         as(SummarizedExperiment::assay(sce, a), "dgCMatrix"))
    }
    expect_identical(dimnames(back), dimnames(sce))
    expect_identical(SummarizedExperiment::colData(back), SummarizedExperiment::colData(sce))
    expect_identical(SummarizedExperiment::rowData(back), SummarizedExperiment::rowData(sce))
    expect_identical(SingleCellExperiment::reducedDimNames(back), SingleCellExperiment::reducedDimNames(sce))
    for (r in SingleCellExperiment::reducedDimNames(sce)) {
        expect_identical(unname(SingleCellExperiment::reducedDim(back, r)),
                         unname(SingleCellExperiment::reducedDim(sce, r)))
    }
}

test_that("SCE -> AnnData -> SCE keeps NA in every type, factor levels, odd names and reducedDims", {
    skip_if_no_python()
    sce <- tricky_sce()
    before <- sce
    ad <- toAnnData(sce)
    obs <- ad$obs
    expect_equal(reticulate::py_to_r(obs$shape), list(5L, 7L))
    dtypes <- unlist(reticulate::py_eval("lambda df: [str(t) for t in df.dtypes]")(obs))
    expect_identical(dtypes, c("category", "category", "boolean", "Int32", "float64", "string", "Int32"))
    na_counts <- reticulate::py_to_r(obs$isna()$sum()$tolist())
    expect_identical(unlist(na_counts), c(1L, 1L, 1L, 1L, 1L, 1L, 1L))
    expect_identical(reticulate::py_to_r(obs$columns$tolist()), c("f", "o", "l", "i", "d", "s", "f"))
    cat_info <- reticulate::py_eval("lambda df: (list(df.iloc[:, 0].cat.categories), bool(df.iloc[:, 1].cat.ordered))")
    info <- cat_info(obs)
    expect_identical(unlist(info[[1]]), c("a", "b", "unused"))
    expect_true(info[[2]])
    expect_setequal(unlist(reticulate::py_eval("lambda a: list(a.obsm.keys())")(ad)),
                    c("X_pca", "X_umap", "X_custom"))
    X <- ad$X
    expect_false(reticulate::py_to_r(X$data$flags$writeable))
    back <- fromAnnData(ad)
    expect_same_sce(back, sce)
    expect_identical(sce, before)  # the input is untouched
})

test_that("AnnData made in Python converts to R faithfully and back", {
    skip_if_no_python()
    reticulate::py_run_string(paste(sep = "\n",
        "import numpy as np, pandas as pd, scipy.sparse as sp, anndata as ad",
        "X = sp.csr_matrix(np.array([[1, 0, 2], [0, 3, 0], [4, 0, 0]], dtype=np.float32))",
        "obs = pd.DataFrame({'cat': pd.Categorical(['a', None, 'a'], categories=['a', 'b']),",
        "                    'flag': pd.array([True, None, False], dtype='boolean'),",
        "                    'n': pd.array([1, None, 3], dtype='Int64'), 'x': [0.5, np.nan, 1.5],",
        "                    's': pd.array(['\u00fc', None, 'z'], dtype='string'), 'plain': [True, False, True]},",
        "                   index=['c\u00e9', 'c2', 'c2'])",
        "pyad = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=['g1', 'g2', 'g3']))",
        "pyad.obsm['X_scVI'] = np.arange(6, dtype=np.float32).reshape(3, 2)"
    ))
    sce <- fromAnnData(reticulate::py$pyad)
    cd <- SummarizedExperiment::colData(sce)
    expect_identical(colnames(sce), c("c\u00e9", "c2", "c2"))
    expect_identical(cd$cat, factor(c("a", NA, "a"), levels = c("a", "b")))
    expect_identical(cd$flag, c(TRUE, NA, FALSE))
    expect_identical(cd$n, c(1L, NA, 3L))
    expect_identical(cd$x, c(0.5, NA, 1.5))
    expect_identical(cd$s, c("\u00fc", NA, "z"))
    expect_identical(cd$plain, c(TRUE, FALSE, TRUE))
    expect_identical(as.matrix(SummarizedExperiment::assay(sce, "counts")),
                     matrix(c(1, 0, 4, 0, 3, 0, 2, 0, 0), 3, byrow = TRUE, dimnames = list(c("g1", "g2", "g3"), colnames(sce))))
    expect_identical(unname(SingleCellExperiment::reducedDim(sce, "scVI")), matrix(c(0, 2, 4, 1, 3, 5), 3))
    back <- toAnnData(sce)
    reticulate::py_set_attr(reticulate::import_main(), "back", back)
    same <- reticulate::py_eval(paste(
        "all(back.obs[c].isna().tolist() == pyad.obs[c].isna().tolist() and",
        "back.obs[c].astype(object).where(back.obs[c].notna(), None).tolist() ==",
        "pyad.obs[c].astype(object).where(pyad.obs[c].notna(), None).tolist() for c in pyad.obs.columns)"))
    expect_true(same)
    expect_true(reticulate::py_eval("(back.X != pyad.X).nnz == 0"))
})

test_that("scuttle::mockSCE and dense, integer and HDF5-backed assays round-trip", {
    skip_if_no_python()
    skip_if_not_installed("scuttle")
    set.seed(2)
    sce <- scuttle::mockSCE(ncells = 50, ngenes = 80)
    back <- fromAnnData(toAnnData(sce))
    expect_identical(as.matrix(SummarizedExperiment::assay(back, "counts")), SummarizedExperiment::assay(sce, "counts"))
    expect_identical(SummarizedExperiment::colData(back), SummarizedExperiment::colData(sce))
    skip_if_not_installed("HDF5Array")
    h5 <- HDF5Array::writeHDF5Array(SummarizedExperiment::assay(sce, "counts"))
    sce_h5 <- SingleCellExperiment::SingleCellExperiment(list(counts = h5))
    ad <- toAnnData(sce_h5)
    expect_identical(unname(as.matrix(SummarizedExperiment::assay(fromAnnData(ad), "counts"))),
                     unname(SummarizedExperiment::assay(sce, "counts")))
    # streaming by column blocks gives the same matrix as the whole
    blocks <- pybridge:::.delayedToPython(h5, block.cells = 7L)
    expect_true(reticulate::py_eval("lambda a, b: (a != b).nnz == 0")(blocks, ad$X))
})

test_that("Seurat -> AnnData -> Seurat keeps counts, meta.data and embeddings", {
    skip_if_no_python()
    skip_if_not_installed("SeuratObject")
    obj <- SeuratObject::pbmc_small
    ad <- toAnnData(obj)
    expect_equal(reticulate::py_to_r(ad$shape), list(80L, 230L))
    back <- fromAnnData(ad, kind = "seurat")
    expect_identical(seurat_layer(back, "counts"), seurat_layer(obj, "counts"))
    expect_identical(seurat_layer(back, "data"), seurat_layer(obj, "data"))
    expect_identical(back[[]][, colnames(obj[[]])], obj[[]])
    for (r in c("pca", "tsne")) {
        expect_identical(SeuratObject::Embeddings(back, r), SeuratObject::Embeddings(obj, r))
    }
})

test_that("real counts from the shipped cortex data convert exactly, and .h5ad files round-trip", {
    skip_if_no_python()
    ad <- reticulate::import("pybridge.data.datasets", convert = FALSE)$cortex()
    sce <- fromAnnData(ad)
    expect_identical(dim(sce), c(1000L, 3005L))
    expect_true(is.factor(sce$cell_type))
    f <- tempfile(fileext = ".h5ad")
    writeH5AD(sce, f)
    again <- readH5AD(f)
    expect_identical(SummarizedExperiment::assay(again, "counts"), SummarizedExperiment::assay(sce, "counts"))
    expect_identical(SummarizedExperiment::colData(again), SummarizedExperiment::colData(sce))
    sce$donor <- rep(c("d1", NA, "d2"), length.out = ncol(sce))  # character columns, with and without NA
    sce$site <- rep(c("a", "b"), length.out = ncol(sce))
    writeH5AD(sce, f)
    again <- readH5AD(f)
    expect_identical(as.character(again$donor), sce$donor)
    expect_identical(as.character(again$site), sce$site)
})

test_that("unconvertible input gets a clear error", {
    skip_if_no_python()
    sce <- tricky_sce()
    sce$when <- as.Date("2020-01-01") + 0:4
    expect_error(toAnnData(sce), "column 'when' has class 'Date'")
    expect_error(toAnnData(tricky_sce(), X.name = "raw"), "assay 'raw' not found")
    expect_error(toAnnData(list()), "needs a SingleCellExperiment")
})

# The parts layer (R/parts.R) needs no Python: it is what toAnnData()/fromAnnData() and Python's
# rpy2 path (pybridge.bridge.rds, through pybridge:::.toPlainParts/.fromPlainParts) share.
test_that("objects -> parts -> objects is exact for SingleCellExperiment and Seurat, without Python", {
    sce <- tricky_sce()
    parts <- pybridge:::.objectToParts(sce)
    expect_identical(names(parts), c("X", "layers", "obs", "var", "obs_names", "var_names", "reduced_dims"))
    expect_identical(parts$obs_names, colnames(sce))
    expect_identical(names(parts$layers), "logcounts")
    expect_same_sce(pybridge:::.objectFromParts(parts, "sce"), sce)
    expect_error(pybridge:::.objectToParts(sce, X.name = "raw"), "assay 'raw' not found; available: counts, logcounts")
    expect_error(pybridge:::.toPlainParts(list(a = 1)), "expected a SingleCellExperiment or Seurat")
    skip_if_not_installed("SeuratObject")
    obj <- SeuratObject::pbmc_small
    back <- pybridge:::.objectFromParts(pybridge:::.objectToParts(obj), "seurat")
    expect_identical(seurat_layer(back, "counts"), seurat_layer(obj, "counts"))
    expect_identical(seurat_layer(back, "data"), seurat_layer(obj, "data"))
    expect_identical(back[[]][, colnames(obj[[]])], obj[[]])
    for (r in c("pca", "tsne")) expect_identical(SeuratObject::Embeddings(back, r), SeuratObject::Embeddings(obj, r))
    expect_error(pybridge:::.objectFromParts(pybridge:::.objectToParts(sce), "seurat"), "unique cell names")
})

test_that("a Seurat 5 object split by sample converts as one matrix in the object's cell order", {
    skip_if_not_seurat5()
    obj <- SeuratObject::CreateSeuratObject(counts = seurat_layer(SeuratObject::pbmc_small, "counts"))
    obj$sample <- rep(c("b", "a"), length.out = ncol(obj))
    obj[["RNA"]] <- split(obj[["RNA"]], f = obj$sample)
    obj[["RNA"]] <- SeuratObject::`LayerData<-`(obj[["RNA"]], layer = "scale.data",
                                               value = matrix(0, 3, ncol(obj), dimnames = list(rownames(obj)[1:3], colnames(obj))))
    parts <- pybridge:::.objectToParts(obj)
    expect_identical(parts$X, seurat_layer(SeuratObject::pbmc_small, "counts"))
    expect_identical(parts$obs_names, colnames(obj))
    expect_length(parts$layers, 0L)  # the split is one layer; scale.data is left out
    back <- pybridge:::.objectFromParts(parts, "seurat")
    expect_identical(seurat_layer(back, "counts"), parts$X)
    expect_identical(back$sample, obj$sample)
})

test_that("plain parts carry NA masks, factor codes, names and dgCMatrix slots as Python expects", {
    sce <- tricky_sce()
    plain <- pybridge:::.toPlainParts(sce)
    counts <- SummarizedExperiment::assay(sce, "counts", withDimnames = FALSE)
    expect_identical(c(plain$X$x), counts@x)
    expect_identical(c(plain$X$i), counts@i)
    expect_identical(c(plain$X$p), counts@p)
    expect_identical(plain$X$Dim, dim(counts))
    expect_identical(vapply(plain$obs, `[[`, "", "name"), c("f", "o", "l", "i", "d", "s", "f"))
    expect_identical(vapply(plain$obs, `[[`, "", "kind"),
                     c("factor", "factor", "logical", "integer", "double", "character", "integer"))
    expect_identical(vapply(plain$obs, function(s) sum(s$na), 0L), rep(1L, 7))
    expect_identical(c(plain$obs[[1]]$values), c(0L, -1L, 1L, 0L, 0L))  # 0-based, -1 at NA (pandas codes)
    expect_identical(c(plain$obs[[1]]$levels), c("a", "b", "unused"))
    expect_true(plain$obs[[2]]$ordered)
    expect_identical(Encoding(c(plain$obs_names))[3], "UTF-8")
    expect_identical(names(plain$reduced_dims), c("PCA", "UMAP", "custom"))
    # the way back takes what Python's handoff.anndata_parts() sends: 1-based factor codes
    plain$obs[[1]]$values <- plain$obs[[1]]$values + 1L
    plain$obs[[2]]$values <- plain$obs[[2]]$values + 1L
    expect_same_sce(pybridge:::.fromPlainParts(plain, "sce"), sce)
    expect_error(pybridge:::.asDgCMatrix(matrix("a", 2, 2), "assay 'x'"), "assay 'x' is a character matrix")
    expect_identical(pybridge:::.asDgCMatrix(matrix(1:4, 2)), Matrix::Matrix(c(1, 2, 3, 4), 2, sparse = TRUE))
})
