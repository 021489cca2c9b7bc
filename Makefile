# pybridge: `make demo` and `make test` set up everything they need, idempotently.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-python venv venv-r clean

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

test-python: venv
	$(VPY) -m pytest -q tests/python

-include mk/r.mk

test: test-python $(if $(wildcard mk/r.mk),r-test)

clean:
	rm -rf demo_output .pytest_cache build *.egg-info
