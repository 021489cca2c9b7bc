# BiocCheck on a package tarball (see mk/bioccheck.mk): Rscript mk/bioccheck.R TARBALL; exits 1 on any ERROR.
# Offline: the deprecated-packages check downloads Bioconductor's package list, and the support-site check
# looks the maintainer up on support.bioconductor.org, so both are off.
tarball <- commandArgs(trailingOnly = TRUE)[1]
do.call(BiocCheck::BiocCheck, list(tarball, "quit-with-status" = TRUE, "no-check-deprecated" = TRUE,
                                   "no-check-bioc-help" = TRUE))
