# BiocCheck on both R stacks (included from the top-level Makefile; part of `make test`), on the tarballs
# that r-vignettes (R 4.2, BiocCheck 1.34) and r45-vignettes (R 4.5, BiocCheck 1.42) build. Fails on any
# ERROR; the WARNINGs that stay are explained in README.md ("BiocCheck").
#   bioccheck     both;  r-bioccheck / r45-bioccheck  one stack each
#
# Offline: BiocManager reads Bioconductor's version map from mk/bioc-config.yaml instead of the web, and the
# deprecated-packages and support-site checks are off (mk/bioccheck.R). Other checks that need the
# network (the CRAN name, the Bioconductor repository index) say they could not connect.

BIOCCHECK_ENV = BIOCONDUCTOR_CONFIG_FILE=$(CURDIR)/mk/bioc-config.yaml OMP_NUM_THREADS=1
BIOCCHECK = Rscript $(CURDIR)/mk/bioccheck.R

.PHONY: bioccheck r-bioccheck r45-bioccheck

bioccheck: r-bioccheck r45-bioccheck

r-bioccheck: r-vignettes
	cd $(R_BUILD_DIR) && rm -rf pybridge.BiocCheck && $(BIOCCHECK_ENV) $(BIOCCHECK) $(R_TARBALL)

r45-bioccheck: r45-vignettes
	cd $(R45_BUILD_DIR) && rm -rf pybridge.BiocCheck && \
	  $(BIOCCHECK_ENV) PYBRIDGE_TRIXIE=$(TRIXIE_ROOT) $(TRIXIE) run "$(BIOCCHECK) $(R45_TARBALL)"
