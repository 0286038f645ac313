# Two commands do all set-up on a fresh machine: `make reports` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONHASHSEED := 0
PROFILE ?= mini

.PHONY: venv test test-all reports bench gpu-check lab world mini-model mini-model-check clean

# torch first and pinned (2.13.0 is a CPU build on this machine's disk); then the full, resolved lock file.
$(STAMP): requirements-lock.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements-lock.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(STAMP)

test: $(STAMP)  ## the default suite (< 10 min on 2 cores), notebooks included under papermill's smoke profile
	$(PY) -m pytest -q

reports: $(STAMP)  ## run every notebook headlessly on the embedded default (mini world + mini BLIP-2) into reports/
	$(PY) -m sevila_lib.notebooks run --profile $(PROFILE)

bench: $(STAMP)  ## speed/memory benchmarks -> reports/benchmarks.md
	$(PY) benchmarks/run_all.py

mini-model: $(STAMP)  ## regenerate the shipped mini BLIP-2 under data/mini_blip2 (about 10 min on 2 cores)
	$(PY) -m sevila_lib.mini train

mini-model-check: $(STAMP)  ## retrain the mini BLIP-2 in a temporary folder and compare its weights byte for byte
	$(PY) -m sevila_lib.mini verify

world: $(STAMP)  ## print the mini world's statistics
	$(PY) -m sevila_lib.world stats

lab: $(STAMP)  ## JupyterLab on the notebooks
	$(PY) -m pip install -q jupyterlab==4.6.6
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf .cache reports/executed reports/runs

gpu-check:  ## SeViLA at the paper shapes with random weights on the GPU(s) -> reports/gpu_check.md (tiny shapes without CUDA)
	PYTHONPATH=. python3 -m sevila_lib.gpu_check
