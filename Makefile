# dualpet: the two commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
CORES  ?= all
DEMO_PATIENTS ?= 6
DEMO_SEED ?= 2021

# Rules call `python -m dualpet`: the venv must come first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test test-fast venv lint fmt dry-run clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

# The demo cohort is generated once (deterministic seed); regenerating would touch the
# DICOM folders and make Snakemake rerun every job.
results/demo_input/studies.tsv: | $(STAMP)
	$(BIN)/dualpet synth results/demo_input --patients $(DEMO_PATIENTS) --seed $(DEMO_SEED) --size demo

demo: $(STAMP) results/demo_input/studies.tsv
	$(BIN)/snakemake --workflow-profile workflow/profiles/default --cores $(CORES)
	@echo "Cohort outputs:" && ls -1 results/cohort/

test: $(STAMP)
	$(BIN)/python -m pytest --durations=15

# The developer's loop: everything but the end-to-end workflow runs (about a minute).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

fmt: $(STAMP)
	$(BIN)/snakefmt Snakefile workflow/rules

dry-run: $(STAMP)
	$(BIN)/snakemake -n

clean:
	rm -rf results/* .snakemake logs benchmarks
	touch results/.gitkeep
