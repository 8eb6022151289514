# Every target creates/refreshes the local virtualenv from pyproject.toml (held to constraints.txt) first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

# Real Fashion-MNIST for tests and benchmarks, when it sits beside the checkout.
export CNNJAX_DATA_DIR ?= $(abspath $(firstword $(wildcard ../shared/data/fashion_mnist)))

# Accelerators: `make train EXTRAS=cuda` (NVIDIA, CUDA 13), `EXTRAS=cuda12`, or `EXTRAS=tpu`.
EXTRAS ?=
comma  := ,
STAMP  := $(VENV)/.installed$(if $(EXTRAS),-$(EXTRAS))

.PHONY: venv train test bench bench-process bench-ops chapter clean

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
	rm -rf $(VENV) runs .pytest_cache
