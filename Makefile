# pybridge: `make demo` and `make test` set up everything they need, idempotently.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-python lint venv venv-r clean

# The venv: torch first (a pinned local CPU build; an unpinned torch would pull GBs of CUDA wheels), then the
# project with numpy < 2 (reticulate 1.28 needs it). Re-run when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check $(TORCH_PIN)
	$(VPY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	@touch $@

venv: $(VENV)/.installed

demo: venv
	$(VPY) -m pybridge.demo --output demo_output

include mk/r.mk
include mk/install.mk
include mk/r45.mk
include mk/bioccheck.mk
r-deps: venv

# Python tests run after the R set-up so that the rpy2 bridge tests run instead of skipping: the .rds
# conversions call the R package's own code, so it is installed into $(R_LIB) and put on R_LIBS.
# scvi-tools 1.4.2 in its own venv (bench/setup_scvi_venv.sh, about 2.5 minutes once): the tests check that it
# loads what save_scvi_tools() writes, so with PYBRIDGE_REQUIRE_SCVI_TOOLS=1 they run rather than skip.
SCVI_PYTHON := bench/.venv-scvi/bin/python
$(SCVI_PYTHON): bench/setup_scvi_venv.sh bench/peer_venv.sh
	PYTHON=$(PYTHON) bash bench/setup_scvi_venv.sh

test-python: venv r-install $(SCVI_PYTHON)
	R_LIBS=$(R_LIB) PYBRIDGE_REQUIRE_R=1 PYBRIDGE_REQUIRE_SCVI_TOOLS=1 $(VPY) -m pytest -q tests/python

# The architecture's import rules (docs/architecture.md; contracts in pyproject.toml) and ruff.
lint: venv
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check pybridge tests bench --exclude bench/.venv-scvi

test: lint test-python r-test r-check install-test r45-test r45-check bioccheck

clean:
	rm -rf demo_output .pytest_cache build dist *.egg-info
