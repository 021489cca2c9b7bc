# R -> Python count hand-off: pybridge's slot route vs the naive reticulate::r_to_py(t(x)).
#
#   Rscript bench/convert_bench.R            # runs every route in its own R process, prints a markdown table
#   Rscript bench/convert_bench.R <route>    # one route (pybridge | naive | pybridge_back)
#
# Matrix: 20,000 genes x 50,000 cells dgCMatrix, 5% dense (50 M non-zeros: x 400 MB, i 200 MB).
# R side: time and peak R heap over the baseline (gc "max used"); Python side: peak of Python-tracked
# allocations (tracemalloc, which NumPy reports to) during the hand-off; whole process: VmHWM growth.
# Env: RETICULATE_PYTHON (the project venv), PYTHONPATH (repo root), N_CELLS / N_GENES to scale down.

n_genes <- as.integer(Sys.getenv("N_GENES", "20000"))
n_cells <- as.integer(Sys.getenv("N_CELLS", "50000"))
density <- 0.05

make_counts <- function() {
    per_cell <- as.integer(round(n_genes * density))
    stride <- n_genes %/% per_cell
    set.seed(0)
    # strictly increasing, distinct row indices in every column: one per stride-wide slot
    i <- rep.int(seq.int(0L, by = stride, length.out = per_cell), n_cells) +
        sample.int(stride, per_cell * n_cells, replace = TRUE) - 1L
    methods::new("dgCMatrix", i = i, p = seq.int(0L, by = per_cell, length.out = n_cells + 1L),
                 x = as.double(rpois(per_cell * n_cells, 2) + 1L), Dim = c(n_genes, n_cells))
}

vmhwm_mb <- function() {
    line <- grep("^VmHWM", readLines("/proc/self/status"), value = TRUE)
    as.numeric(gsub("[^0-9]", "", line)) / 1024
}

run_route <- function(route) {
    suppressMessages(library(Matrix))
    m <- make_counts()
    pb <- getNamespace("pybridge")
    reticulate::import("pybridge.bridge.handoff")  # bind Python and import before measuring
    tm <- reticulate::import("tracemalloc")
    sp <- reticulate::import("scipy.sparse", convert = FALSE)
    if (route == "pybridge_back") {
        csr <- pb$.countsToPython(m)
        csr <- csr$copy()  # an independent Python-owned CSR, as a model output would be
    }
    invisible(gc(reset = TRUE))
    base_r <- sum(gc()[, 2])
    base_hwm <- vmhwm_mb()
    tm$start()
    t0 <- proc.time()[["elapsed"]]
    out <- switch(route,
        pybridge = pb$.countsToPython(m),
        naive = reticulate::r_to_py(Matrix::t(m))$tocsr(),
        pybridge_back = pb$.dgcFromSlots(pb$.handoff()$csr_to_dgc_slots(csr))
    )
    secs <- proc.time()[["elapsed"]] - t0
    py_peak <- tm$get_traced_memory()[[2]] / 2^20
    tm$stop()
    r_peak <- sum(gc()[, 6]) - base_r
    ok <- if (route == "pybridge_back") identical(out, m) else {
        reticulate::py_eval("lambda a, n, g: a.shape == (n, g) and a.format == 'csr'")(out, n_cells, n_genes)
    }
    cat(sprintf("%s\t%.2f\t%.0f\t%.0f\t%.0f\t%s\n", route, secs, r_peak, py_peak, vmhwm_mb() - base_hwm, ok))
}

args <- commandArgs(trailingOnly = TRUE)
if (length(args)) {
    run_route(args[1])
} else {
    self <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
    counts_mb <- n_genes * n_cells * density * 12 / 2^20
    cat(sprintf("counts: %d genes x %d cells, %.0f%% dense, x + i slots = %.0f MB\n\n",
                n_genes, n_cells, 100 * density, counts_mb))
    cat("| route | seconds | R heap peak (MB) | Python allocations peak (MB) | process peak growth (MB) | result ok |\n")
    cat("|---|---|---|---|---|---|\n")
    for (route in c("pybridge", "naive", "pybridge_back")) {
        res <- system2(file.path(R.home("bin"), "Rscript"), c(self, route), stdout = TRUE, stderr = FALSE)
        f <- strsplit(utils::tail(res, 1), "\t")[[1]]
        cat(sprintf("| %s | %s | %s | %s | %s | %s |\n", f[1], f[2], f[3], f[4], f[5], f[6]))
    }
}
