# Every target creates/refreshes the local virtualenv from pyproject.toml (held to constraints.txt)
# first; test-newest and venv-newest use a second one (see below).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

# Real Fashion-MNIST for tests and benchmarks, when it sits beside the checkout.
export CNNJAX_DATA_DIR ?= $(abspath $(firstword $(wildcard ../shared/data/fashion_mnist)))

# Accelerators: `make train EXTRAS=cuda` (NVIDIA, CUDA 13), `EXTRAS=cuda12`, or `EXTRAS=tpu`.
EXTRAS ?=
comma  := ,
STAMP  := $(VENV)/.installed$(if $(EXTRAS),-$(EXTRAS))

# `make test-newest`: a second virtualenv on the newest Python >= 3.12 found here (python3.N on
# PATH, pyenv's versions; PYTHON_NEWEST=/path/to/python overrides), with whatever jax, jaxlib, flax,
# optax and orbax pip resolves today for pyproject.toml's open ranges: no constraints.txt, so it is
# what a fresh `pip install` (Colab) gets. Rebuilt from scratch when pyproject.toml changes or the
# interpreter does; `rm -rf .venv-newest` picks up releases made since.
PYTHON_NEWEST ?=
VENV_NEWEST   := .venv-newest

.PHONY: venv venv-newest train test test-newest bench bench-process bench-ops chapter clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test$(if $(EXTRAS),$(comma)$(EXTRAS))]'
	touch $@

venv: $(STAMP)

train: venv
	$(PY) scripts/train.py --config configs/lenet.py --workdir runs/lenet

test: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -n 2 --dist loadfile

# Lint is `make test`'s job; this runs the same suite on the other stack, after printing it.
test-newest:
	@$(FIND_NEWEST); \
	$(MAKE) --no-print-directory "$(VENV_NEWEST)/.installed-py$$ver" PYTHON_NEWEST="$$py" && \
	$(VENV_NEWEST)/bin/python -c 'import sys, jax, jaxlib, flax, optax, orbax.checkpoint as ocp; \
		print("test-newest: Python", sys.version.split()[0], "jax", jax.__version__, "jaxlib", \
		jaxlib.__version__, "flax", flax.__version__, "optax", optax.__version__, "orbax", \
		ocp.__version__)' && \
	$(VENV_NEWEST)/bin/python -m pytest -q -n 2 --dist loadfile

venv-newest:
	@$(FIND_NEWEST); \
	$(MAKE) --no-print-directory "$(VENV_NEWEST)/.installed-py$$ver" PYTHON_NEWEST="$$py"

# Sets $$py to the interpreter and $$ver to its version; without one it says so and ends the recipe
# with status 0: a skip, not a failure (the pinned stack above is the one every machine has).
FIND_NEWEST = py='$(PYTHON_NEWEST)'; py=$${py:-$$(.ci/newest-python)}; \
	if [ -z "$$py" ]; then \
		echo "$@: skipped, no Python >= 3.12 on PATH or in pyenv (set PYTHON_NEWEST=...)"; \
		exit 0; \
	fi; \
	ver=$$("$$py" -c 'import platform; print(platform.python_version())') || exit 1

# The stamp names the interpreter's version, so another interpreter rebuilds the venv from scratch.
$(VENV_NEWEST)/.installed-py%: pyproject.toml
	$(if $(PYTHON_NEWEST),,$(error $@: set PYTHON_NEWEST, or run make venv-newest))
	$(PYTHON_NEWEST) -m venv --clear $(VENV_NEWEST)
	$(VENV_NEWEST)/bin/python -m pip install -q --upgrade pip
	$(VENV_NEWEST)/bin/python -m pip install -q -e '.[test]'
	touch $@

bench-ops: venv
	$(PY) scripts/bench_ops.py

$(VENV)/.installed-bench: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(PY) scripts/benchmark.py --out runs/benchmark.json

bench-process: $(VENV)/.installed-bench
	$(PY) scripts/bench_process.py --data-dir $(CNNJAX_DATA_DIR) --epochs 10 --repeats 3 \
		--out runs/bench_process.json

chapter: venv
	$(PY) scripts/chapter6.py --outdir runs/chapter6

clean:
	rm -rf $(VENV) $(VENV_NEWEST) runs .pytest_cache
