# The R API's shape (no Python needed): classes, generics and the methods per accepted type.

test_that("SCVIModel is a formal class with its two slots", {
    expect_identical(methods::getSlots("SCVIModel"), c(path = "character", settings = "list"))
    m <- methods::new("SCVIModel", path = "/nowhere", settings = list(genes = c("a", "b"), model = list(n_latent = 2L)))
    expect_output(methods::show(m), "genes:  2")
})

test_that("every entry point taking data objects is a generic with a method per accepted type", {
    methods_of <- list(
        calculateSCVI = c("ANY", "SummarizedExperiment"),
        runSCVI = c("SingleCellExperiment", "SummarizedExperiment"),
        runDestVI = c("SingleCellExperiment", "Seurat", "ANY"),
        minifySCVI = c("SingleCellExperiment", "ANY"),
        scviDecode = "ANY",  # minified or not, one method: the output functions recognise minified data
        scviDifferentialExpression = c("SummarizedExperiment", "Seurat", "ANY")
    )
    for (g in names(methods_of)) {
        expect_true(methods::isGeneric(g), label = g)
        for (cl in methods_of[[g]]) expect_true(methods::existsMethod(g, cl), label = paste(g, cl))
    }
    # the generics keep the functions' argument lists (so `mode =` cannot partially match `model`)
    expect_identical(names(formals(scviDifferentialExpression))[1:6], c("model", "x", "groupby", "group1", "group2", "mode"))
    expect_identical(formals(scviDecode)$library.size, 1)
    expect_identical(formals(runDestVI)$labels, "cell_type")
    expect_identical(formals(minifySCVI)$assay.type, "counts")
})

test_that("unsupported objects get the same clear errors as before", {
    expect_error(minifySCVI(NULL, list()), "minifySCVI\\(\\) needs a SingleCellExperiment, got 'list'")
    expect_error(runDestVI(list(), NULL), "spots must be a SingleCellExperiment or Seurat object, got 'list'")
    expect_error(runDestVI(list(), NULL, foo = 1), "unknown argument")
})

test_that("the package help lists every export under the naming scheme", {
    src <- testthat::test_path("..", "..", "man", "pybridge-package.Rd")  # the source tree, else the installed help
    rd <- if (file.exists(src)) tools::parse_Rd(src) else tools::Rd_db("pybridge")[["pybridge-package.Rd"]]
    text <- paste(utils::capture.output(tools::Rd2txt(rd, options = list(underline_titles = FALSE))), collapse = "\n")
    exports <- setdiff(getNamespaceExports("pybridge"), c("show", ".__T__show:methods"))
    exports <- exports[!startsWith(exports, ".")]
    for (e in exports) expect_match(text, paste0(e, "()"), fixed = TRUE, label = e)
})
