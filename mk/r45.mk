# The R 4.5 / Seurat 5 / Bioconductor 3.21 leg (included from the top-level Makefile; part of `make test`):
# the same steps as mk/r.mk, run in the Debian 13 chroot that mk/trixie.sh builds once per machine.
#   r45-chroot    build the chroot when missing or when its package list changed (cached in $(TRIXIE_ROOT))
#   r45-install   install the R package into $(R45_LIB) with R 4.5, when its sources changed
#   r45-test      testthat suite (Python- and SpatialExperiment-skips become failures)
#   r45-vignettes R CMD build with R 4.5: knits both vignettes, giving $(R45_TARBALL)
#   r45-check     R CMD check --no-manual on that tarball
#   r45-timing    wall-clock seconds of each step

TRIXIE := $(CURDIR)/mk/trixie.sh
TRIXIE_ROOT ?= /var/cache/pybridge/trixie-r45
R45_LIB ?= $(CURDIR)/.Rlib45
R45_BUILD_DIR ?= $(CURDIR)/.Rbuild45
R45_TARBALL := $(R45_BUILD_DIR)/pybridge_$(R_VERSION).tar.gz
# mk/trixie.sh run carries the exported environment into the chroot (and binds the checkout and the venv's
# Python prefix at their own paths), so the R 4.2 leg's settings apply with R 4.5's own library.
R45 = $(R_ENV) R_LIBS=$(R45_LIB) PYBRIDGE_TRIXIE=$(TRIXIE_ROOT) $(TRIXIE) run

.PHONY: r45-chroot r45-install r45-test r45-vignettes r45-check r45-all r45-timing

r45-chroot:
	@PYBRIDGE_TRIXIE=$(TRIXIE_ROOT) $(TRIXIE) build

R45_STAMP := $(R45_LIB)/pybridge/DESCRIPTION

r45-install: venv r45-chroot $(R45_STAMP)

$(R45_STAMP): $(R_SOURCES)
	@mkdir -p $(R45_LIB)
	$(R45) 'R CMD INSTALL --no-test-load -l $(R45_LIB) . >/dev/null'

r45-test: r45-install
	$(R45) "PYBRIDGE_REQUIRE_SPATIALEXPERIMENT=1 Rscript -e 'testthat::test_local(\".\", reporter = \"summary\", stop_on_failure = TRUE)'"

# Staged as r-vignettes stages (mk/r.mk: the same files, the Python sdist in inst/python).
r45-vignettes: r45-install $(PY_SDIST)
	@rm -rf $(R45_BUILD_DIR)/src && mkdir -p $(R45_BUILD_DIR)/src/inst/python
	tar cf - $(R_PKG_FILES) | tar xf - -C $(R45_BUILD_DIR)/src
	cp $(PY_SDIST) $(R45_BUILD_DIR)/src/inst/python/
	cd $(R45_BUILD_DIR) && $(R45) 'R CMD build --no-manual src'

r45-check: r45-vignettes
	cd $(R45_BUILD_DIR) && $(R45) 'R CMD check --no-manual --no-tests --no-vignettes --no-build-vignettes $(R45_TARBALL)'
	@! grep -E "^Status: .*(ERROR|WARNING)" $(R45_BUILD_DIR)/pybridge.Rcheck/00check.log

r45-all: r45-test r45-check

r45-timing:
	@for t in r45-chroot r45-test r45-check; do s=$$(date +%s); $(MAKE) -s $$t >/dev/null 2>&1 || exit 1; \
	  echo "$$t: $$(( $$(date +%s) - s )) s"; done
