# EarthMapper-JAX: the two commands a newcomer needs are `make demo` and `make test`.
# Both create/refresh a Python >= 3.12 virtualenv in .venv, install the package with its
# extras, then run.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= test,plot,geo
PYTEST_ARGS ?=

# First Python >= 3.12 found on PATH or under pyenv.
PYTHON_BOOT ?= $(shell for p in python3.13 python3.12 $$(ls -d $$HOME/.pyenv/versions/3.1[2-9]*/bin/python 2>/dev/null | sort -rV); do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null && { command -v $$p; break; }; done)

.PHONY: venv test demo clean fixtures bench

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@if [ -z "$(PYTHON_BOOT)" ]; then \
	  echo "error: no Python >= 3.12 found (looked for python3.13, python3.12 on PATH and ~/.pyenv/versions/3.12+); install one, e.g. 'pyenv install 3.12'" >&2; exit 1; fi
	@if [ ! -x "$(PY)" ] || ! $(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)'; then \
	  echo "creating $(VENV) with $(PYTHON_BOOT)"; rm -rf $(VENV); $(PYTHON_BOOT) -m venv $(VENV); fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $(STAMP)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

demo: venv
	$(PY) -m earthmapper_jax.demo --out demo_out

bench: venv
	$(PY) benchmarks/run_cpu.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
