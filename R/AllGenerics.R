# Generics of the entry points that take data objects; their methods live beside the code
# they run (scvi.R, destvi.R, minify.R, diagnostics.R). Functions of a model handle
# (scviX) dispatch on the data `x`, not on the model. The generics carry the functions' full
# argument lists: with only (model, x, ...), a named argument such as `mode =` would
# partially match `model`.

#' @rdname runSCVI
#' @export
setGeneric("calculateSCVI", function(x, ...) standardGeneric("calculateSCVI"))

#' @rdname runSCVI
#' @export
setGeneric("runSCVI", function(x, ...) standardGeneric("runSCVI"))

#' @rdname runDestVI
#' @export
setGeneric("runDestVI", function(spots, reference, labels = "cell_type", assay.type = "counts", ...)
    standardGeneric("runDestVI"), signature = "spots")

#' @rdname minifySCVI
#' @export
setGeneric("minifySCVI", function(model, x, assay.type = "counts", batch = NULL) standardGeneric("minifySCVI"),
           signature = "x")

#' @rdname minifySCVI
#' @export
setGeneric("scviDecode", function(model, x, genes = NULL, library.size = 1, assay.type = "counts", batch = NULL, ...)
    standardGeneric("scviDecode"), signature = "x")

#' @rdname scviDifferentialExpression
#' @export
setGeneric("scviDifferentialExpression",
           function(model, x, groupby = NULL, group1 = NULL, group2 = NULL, mode = c("vanilla", "change"),
                    delta = 0.25, fdr.target = 0.05, batch.correction = FALSE, assay.type = "counts",
                    batch = NULL, ...) standardGeneric("scviDifferentialExpression"),
           signature = "x")
