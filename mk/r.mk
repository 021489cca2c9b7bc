# R package targets (included from the top-level Makefile).
#   r-deps      install the Debian R packages the R package needs (only those missing)
#   r-install   install the R package into $(R_LIB) (a project-local library), when its sources changed
#   r-test      testthat suite against the project venv (Python-skips become failures)
#   r-vignettes R CMD build: knits both vignettes once, giving $(R_TARBALL), which carries the Python
#               sdist of the same version in inst/python (installPybridge() installs that copy)
#   r-check     R CMD check --no-manual on that tarball (tests and vignettes already ran above)

R_DEBS ?= r-base-core r-base-dev r-bioc-singlecellexperiment r-cran-seuratobject r-cran-seurat \
          r-cran-reticulate r-cran-testthat r-cran-knitr r-cran-rmarkdown r-cran-roxygen2 \
          r-bioc-scuttle r-bioc-scater r-bioc-hdf5array r-bioc-bioccheck pandoc libopenblas0-pthread
R_VENV_PYTHON ?= $(CURDIR)/.venv/bin/python
R_LIB ?= $(CURDIR)/.Rlib
R_BUILD_DIR ?= $(CURDIR)/.Rbuild
R_VERSION := $(shell sed -n 's/^Version: *//p' DESCRIPTION)
R_TARBALL := $(R_BUILD_DIR)/pybridge_$(R_VERSION).tar.gz
R_ENV = RETICULATE_PYTHON=$(R_VENV_PYTHON) PYTHONPATH=$(CURDIR) R_LIBS=$(R_LIB) \
        PYBRIDGE_REQUIRE_PYTHON=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        _R_CHECK_FORCE_SUGGESTS_=false

.PHONY: r-deps r-install r-test r-vignettes r-check r-all r-timing

r-deps:
	@missing=""; for p in $(R_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	else echo "Debian R packages present"; fi
	@$(R_VENV_PYTHON) -c "import rpy2" 2>/dev/null || $(R_VENV_PYTHON) -m pip install -q "rpy2>=3.5.17,<3.6"

R_STAMP := $(R_LIB)/pybridge/DESCRIPTION
R_SOURCES := DESCRIPTION NAMESPACE $(wildcard R/*.R) $(wildcard man/*.Rd)

r-install: r-deps $(R_STAMP)

$(R_STAMP): $(R_SOURCES)
	@mkdir -p $(R_LIB)
	R CMD INSTALL --no-test-load -l $(R_LIB) . >/dev/null

r-test: r-install
	$(R_ENV) Rscript -e 'testthat::test_local(".", reporter = "summary", stop_on_failure = TRUE)'

# R CMD build copies the whole source tree before applying .Rbuildignore (GBs of venvs here),
# so build from a staged copy of just the R package's files.
R_PKG_FILES := DESCRIPTION NAMESPACE NEWS.md .Rbuildignore LICENSE R man vignettes tests/testthat.R tests/testthat

# The Python sdist (distribution pybridge-sc), built offline with the venv's setuptools; the R package
# carries it, so its version must be the R package's.
PY_VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' pybridge/_version.py)
PY_DIST_DIR ?= $(CURDIR)/dist
PY_SDIST := $(PY_DIST_DIR)/pybridge_sc-$(PY_VERSION).tar.gz
PY_SOURCES := pyproject.toml README.md LICENSE $(shell find pybridge -type f ! -name '*.pyc')
PY_BUILD = @mkdir -p $(PY_DIST_DIR) && $(R_VENV_PYTHON) -c 'import setuptools.build_meta as b, sys; \
           d = sys.argv[1]; b.build_$(1)(d)' $(PY_DIST_DIR) >$(PY_DIST_DIR)/build.log 2>&1 \
           || { cat $(PY_DIST_DIR)/build.log; exit 1; }; rm -rf build pybridge_sc.egg-info

$(PY_SDIST): $(PY_SOURCES)
	@test "$(PY_VERSION)" = "$(R_VERSION)" || { echo "pybridge/_version.py says $(PY_VERSION) but \
	DESCRIPTION says $(R_VERSION): the R package must carry its own version of the Python package"; exit 1; }
	$(call PY_BUILD,sdist)

r-vignettes: r-install $(PY_SDIST)
	@rm -rf $(R_BUILD_DIR)/src && mkdir -p $(R_BUILD_DIR)/src/inst/python
	tar cf - $(R_PKG_FILES) | tar xf - -C $(R_BUILD_DIR)/src
	cp $(PY_SDIST) $(R_BUILD_DIR)/src/inst/python/
	cd $(R_BUILD_DIR) && $(R_ENV) R CMD build --no-manual src

r-check: r-vignettes
	cd $(R_BUILD_DIR) && $(R_ENV) R CMD check --no-manual --no-tests --no-vignettes --no-build-vignettes $(R_TARBALL)
	@! grep -E "^Status: .*(ERROR|WARNING)" $(R_BUILD_DIR)/pybridge.Rcheck/00check.log

r-all: r-test r-check

# Wall-clock seconds of each R step (for the test-time budget).
r-timing: r-install
	@for t in r-test r-check; do s=$$(date +%s); $(MAKE) -s -f mk/r.mk $$t >/dev/null 2>&1 || exit 1; \
	  echo "$$t: $$(( $$(date +%s) - s )) s"; done
