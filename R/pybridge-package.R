#' pybridge: scVI models for SingleCellExperiment and Seurat objects
#'
#' Train, apply, save and reload scVI models on SingleCellExperiment and
#' Seurat objects with the `pybridge` Python package, and convert objects to
#' and from AnnData. Python is bound only when first needed: see
#' [installPybridge()] and [usePybridge()].
#'
#' @section Naming scheme:
#' Every export follows one of these rules.
#' * `runX()` / `calculateX()`, Bioconductor's verbs, for SummarizedExperiment
#'   and SingleCellExperiment objects: `calculateX()` returns the result (a
#'   matrix), `runX()` stores it in the object (a reducedDim, an altExp) and
#'   returns the object. [runSCVI()], [calculateSCVI()], [runDestVI()] (whose
#'   `spots` may also be a Seurat object, which then gets an Assay `"DestVI"`).
#' * `RunX()`, Seurat's verb, for Seurat objects: stores the result as a
#'   reduction and the model in `Tool()`, and logs the command. \code{\link{RunSCVI}()}.
#' * `xIntegration()`, Seurat 5's (and SeuratWrappers') name for a method of
#'   `IntegrateLayers()`: [scVIIntegration()].
#' * `scviX(model, x, ...)`, functions of a model handle: the first argument
#'   is an `SCVIModel` ([SCVIModel-class]), the second the data.
#'   [scviLatent()], [scviNormalized()], [scviPosteriorSample()],
#'   [scviDecode()], [scviDiagnostics()], [scviDifferentialExpression()].
#' * `verbSCVI()`, the life cycle of a model handle: make, store, reload,
#'   list and remove handles and their saved models, or reduce data to what a
#'   handle needs. [trainSCVI()], [saveSCVI()], [loadSCVI()], [listSCVI()],
#'   [removeSCVI()], [minifySCVI()] (`model` first, as for the `scviX()`
#'   functions).
#' * Plain verbs for conversion and data preparation: [toAnnData()],
#'   [fromAnnData()], [readH5AD()], [writeH5AD()], [splitCounts()],
#'   [simulateSpots()].
#' * `plotX()`, scater's verb, for ggplot2 figures of results stored in an
#'   object: [plotSpotProportions()].
#' * `xData()`, as Bioconductor's data packages name their datasets, for the
#'   data shipped with the package: [cortexData()].
#' * `xPybridge()` for the set-up: [installPybridge()], [usePybridge()],
#'   [pybridgeAvailable()].
#'
#' The entry points that take data objects are S4 generics with methods per
#' type: [runSCVI()], [calculateSCVI()], [runDestVI()], [minifySCVI()],
#' [scviDecode()], [scviDifferentialExpression()] (the `scviX()` generics
#' dispatch on the data `x`, not on the model).
#'
#' @section Errors, warnings, progress and storage:
#' Errors about the data speak R: R argument names, cell and gene names with
#' 1-based positions, and R code as the fix; they have classes
#' `pybridgeError` and `pybridge_<kind>` (e.g. `pybridge_empty_cells`) for
#' `tryCatch()`. Warnings from the Python side are R warnings (class
#' `pybridgeWarning`). Training reports progress with `message()`
#' (`progress = FALSE` silences it). Models trained without `path` are saved
#' under `getOption("pybridge.model.dir")`: see [listSCVI()].
#'
#' @section Python users:
#' Python reads and writes `.rds` files through rpy2 with
#' `pybridge.bridge.read_rds()` / `write_rds()`; those call this package's
#' internal functions that take objects apart and put them together, so
#' the package must be installed in the R library rpy2 uses (`R CMD INSTALL`
#' on the source tree, or `R_LIBS` pointing at the library it is in).
#'
#' @references
#' Lopez R, Regier J, Cole MB, Jordan MI, Yosef N (2018). Deep generative
#' modeling for single-cell transcriptomics. \emph{Nature Methods} 15:1053-1058.
#' \doi{10.1038/s41592-018-0229-2}
#'
#' Lopez R, Li B, Keren-Shaul H, et al. (2022). DestVI identifies continuums
#' of cell types in spatial transcriptomics data. \emph{Nature Biotechnology}
#' 40:1360-1369. \doi{10.1038/s41587-022-01272-8}
#'
#' @keywords internal
#' @import methods
#' @importClassesFrom Matrix dgCMatrix
#' @importClassesFrom SummarizedExperiment SummarizedExperiment
#' @importClassesFrom SingleCellExperiment SingleCellExperiment
"_PACKAGE"
