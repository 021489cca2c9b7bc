# The packages as users install them (included from the top-level Makefile; part of `make test`).
#   python-dist   the wheel and sdist of the Python distribution pybridge-sc, in $(PY_DIST_DIR)
#   install-test  the wheel and the R tarball installed fresh (venv, R library), non-editable, with no source
#                 tree on any path; runs every Python and shell block of README.md and docs/ (mk/docs-blocks.py),
#                 the README's R quick start (it runs installPybridge(), checked for the carried pybridge-sc and
#                 the CPU torch) and both vignettes

PY_WHEEL := $(PY_DIST_DIR)/pybridge_sc-$(PY_VERSION)-py3-none-any.whl

.PHONY: python-dist install-test

$(PY_WHEEL): $(PY_SOURCES)
	$(call PY_BUILD,wheel)

python-dist: $(PY_SDIST) $(PY_WHEEL)

install-test: venv r-vignettes python-dist
	mk/install-test.sh $(PYTHON) $(TORCH_PIN) $(PY_WHEEL) $(R_TARBALL) README.md
