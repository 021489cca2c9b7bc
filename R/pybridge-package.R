#' pybridge: scVI models for SingleCellExperiment and Seurat objects
#'
#' Train, apply, save and reload scVI models on SingleCellExperiment and
#' Seurat objects with the `pybridge` Python package, and convert objects to
#' and from AnnData. Python is bound only when first needed: see
#' [installPybridge()] and [usePybridge()].
#'
#' @keywords internal
#' @import methods
#' @importClassesFrom Matrix dgCMatrix
"_PACKAGE"
