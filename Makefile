# Two commands do all set-up on a fresh machine: `make reports` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONHASHSEED := 0
PROFILE ?= mini

.PHONY: venv test reports bench gpu-check lab world mini-model mini-model-check mini-clip mini-clip-check lmms test-lmms clean

# torch first and pinned (2.13.0 is a CPU build on this machine's disk); then the full, resolved lock file.
$(STAMP): requirements-lock.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements-lock.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(STAMP)

# The lmms-eval extra in its own venv (.venv-lmms), so `make test` never sees it: the same torch and lock as .venv,
# then lmms-eval 0.7.3 and its light dependencies without their declared requirements (pyproject.toml says why),
# then the kit. A top-level `tests` package installed by a dependency would shadow ours (`from tests.conftest
# import ...`: a regular package anywhere on sys.path beats our __init__-less tests/ folder), so none may remain.
LMMS_VENV := .venv-lmms
LMMS_PY := $(LMMS_VENV)/bin/python
LMMS_STAMP := $(LMMS_VENV)/.installed
$(LMMS_STAMP): requirements-lock.txt requirements-lmms.txt pyproject.toml
	python3 -m venv $(LMMS_VENV)
	$(LMMS_PY) -m pip install -q torch==2.13.0
	$(LMMS_PY) -m pip install -q -r requirements-lock.txt
	$(LMMS_PY) -m pip install -q --no-deps -r requirements-lmms.txt
	$(LMMS_PY) -m pip install -q --no-deps --no-build-isolation -e .
	rm -rf "$$($(LMMS_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tests"
	cd /tmp && $(CURDIR)/$(LMMS_PY) -c "import lmms_eval.models as m; assert 'sevila' in m.list_available_models()"
	touch $@

lmms: $(LMMS_STAMP)  ## .venv-lmms: lmms-eval 0.7.3 with the kit's `sevila` model (see README, lmms-eval)

test: $(STAMP)  ## the default suite (< 10 min on 2 cores), notebooks included under papermill's smoke profile
	$(PY) -m pytest -q

test-lmms: $(LMMS_STAMP)  ## the lmms-eval plugin's test in .venv-lmms (skipped by `make test`)
	$(LMMS_PY) -m pytest -q tests/test_lmms.py

reports: $(STAMP)  ## run every notebook headlessly on the embedded default (mini world + mini BLIP-2) into reports/
	$(PY) -m sevila_lib.notebooks run --profile $(PROFILE)

bench: $(STAMP)  ## speed/memory benchmarks -> reports/benchmarks.md
	$(PY) benchmarks/run_all.py

mini-model: $(STAMP)  ## regenerate the shipped mini BLIP-2 under data/mini_blip2 (about 40 min on one thread)
	$(PY) -m sevila_lib.mini train

mini-model-check: $(STAMP)  ## retrain the mini BLIP-2 in a temporary folder and compare its weights byte for byte
	$(PY) -m sevila_lib.mini verify

mini-clip: $(STAMP)  ## regenerate the shipped mini CLIP (Table 6's similarity scorer) under data/mini_clip (about 5 min on one thread)
	$(PY) -m sevila_lib.mini_clip train

mini-clip-check: $(STAMP)  ## retrain the mini CLIP in a temporary folder and compare its weights byte for byte
	$(PY) -m sevila_lib.mini_clip verify

world: $(STAMP)  ## print the mini world's statistics
	$(PY) -m sevila_lib.world stats

$(VENV)/.lab-installed: $(STAMP)
	$(PY) -m pip install -q jupyterlab==4.6.6
	touch $@

lab: $(VENV)/.lab-installed  ## JupyterLab at the repository root (notebooks/ and the executed reports/); installs once
	$(VENV)/bin/jupyter lab --notebook-dir=. $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

clean:  ## remove generated caches: ViT features, score files, training runs, scratch reports (all under .cache)
	rm -rf .cache

gpu-check:  ## SeViLA at the paper shapes with random weights on the GPU(s) -> reports/gpu_check.md (tiny shapes without CUDA)
	PYTHONPATH=. python3 -m sevila_lib.gpu_check
