# EarthMapper-JAX: the two commands a newcomer needs are `make demo` and `make test`.
# Both create/refresh a Python >= 3.12 virtualenv in .venv, install the package with its
# extras, then run.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= test,plot,geo
PYTEST_ARGS ?=
# pytest-xdist workers: one per core (`make test TEST_WORKERS=0` runs in one process).
TEST_WORKERS ?= auto
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS))

# First Python >= 3.12 found on PATH or under pyenv.
PYTHON_BOOT ?= $(shell for p in python3.13 python3.12 $$(ls -d $$HOME/.pyenv/versions/3.1[2-9]*/bin/python 2>/dev/null | sort -rV); do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null && { command -v $$p; break; }; done)

.PHONY: venv test test-slow test-all demo clean fixtures bench bench-cpu bench-cpu-check mutation mutation-planted

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@if [ -z "$(PYTHON_BOOT)" ]; then \
	  echo "error: no Python >= 3.12 found (looked for python3.13, python3.12 on PATH and ~/.pyenv/versions/3.12+); install one, e.g. 'pyenv install 3.12'" >&2; exit 1; fi
	@if [ ! -x "$(PY)" ] || ! $(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)'; then \
	  echo "creating $(VENV) with $(PYTHON_BOOT)"; rm -rf $(VENV); $(PYTHON_BOOT) -m venv $(VENV); fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $(STAMP)

# `make test`: the suite without the tests marked `slow` (those that train tiny models for minutes
# or time out a real multi-process run); `make test-slow` runs exactly those, `make test-all`
# both. CI (.ci/run) runs `make test` then `make test-slow`: nothing is skipped, only split.
test: venv
	$(PY) -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)
	@echo "make test: the tests marked slow were deselected above; 'make test-slow' runs them (CI runs both)"

test-slow: venv
	$(PY) -m pytest -m slow $(XDIST) $(PYTEST_ARGS)

test-all: venv
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

# examples/demo.py is a script of the repository (it reads configs/ beside it), not a module of
# the installed package.
demo: venv
	$(PY) examples/demo.py --out demo_out

# The CPU benchmark: VAR-mode training step and class-conditional sampling (batch and latency)
# of the tiny model, the command whose CPU table benchmarks/RESULTS.md records (a few minutes).
# The GPU comparison with PyTorch VAR (benchmarks/gpu_vs_pytorch.py) needs a VAR checkout and a
# torch Python, and its --cpu-smoke only checks that pipeline at tiny shapes (no performance).
bench: venv
	$(PY) benchmarks/bench_model.py --model tiny --batch 8 --steps 5 --sample-batch 8 --latency

# Issue 18: ours against PyTorch VAR on CPU at the real VAR-d16 shapes, both sides in one run,
# float32, one thread each (about 25 min on one core). Needs a VAR checkout (VAR_DIR: its
# models/ and dist.py suffice) and a Python with torch (TORCH_PY); BENCH_CORE pins both sides
# to one core (empty: the inherited affinity). The table lands in $(BENCH_OUT)/table.md.
VAR_DIR ?=
TORCH_PY ?=
BENCH_CORE ?=
BENCH_OUT ?= bench_cpu_out
bench-cpu-check:
	@if [ -z "$(VAR_DIR)" ] || [ ! -f "$(VAR_DIR)/models/var.py" ]; then \
	  echo "error: VAR_DIR='$(VAR_DIR)' is not a checkout of FoundationVision/VAR (no models/var.py); run 'make bench-cpu VAR_DIR=/path/to/VAR TORCH_PY=/path/to/python-with-torch'" >&2; exit 1; fi
	@if [ -z "$(TORCH_PY)" ] || ! "$(TORCH_PY)" -c 'import torch' >/dev/null 2>&1; then \
	  echo "error: TORCH_PY='$(TORCH_PY)' is not a Python that imports torch; run 'make bench-cpu VAR_DIR=/path/to/VAR TORCH_PY=/path/to/python-with-torch'" >&2; exit 1; fi

bench-cpu: bench-cpu-check venv
	$(PY) benchmarks/gpu_vs_pytorch.py --cpu $(if $(BENCH_CORE),--cpu-core $(BENCH_CORE)) \
	  --var-dir $(VAR_DIR) --torch-python $(TORCH_PY) --out $(BENCH_OUT)

# Mutation score (issue 17): mutmut mutates every function of the modules whose mistakes are
# silent (masks, layout, guidance, top-k/top-p, quantizer, the losses, TFRecord framing) and runs
# the tests that reach each mutant (tests/mutation_score.py prints the table docs/testing.md
# records; on the 2-core machine 1,307 of its 2,380 mutants took 127 min, so the whole run is
# several hours: `python tests/mutation_score.py --resume` continues an interrupted one).
# Not part of `make test`.
MUTATION_WORKERS ?= 2
mutation: venv
	$(PY) -m pip install -q -e ".[$(EXTRAS),mutation]"
	$(PY) tests/mutation_score.py --workers $(MUTATION_WORKERS) --survivors mutants.survivors.txt

# The hand-planted one-line mistakes of tests/mutants.py, each against the tests that must
# catch it (docs/testing.md records a run). Not part of `make test`.
mutation-planted: venv
	$(PY) tests/mutants.py

clean:
	rm -rf $(VENV) demo_out bench_cpu_out .pytest_cache mutants mutants.log mutants.survivors.txt
