# dualpet: the two commands are `make demo` and `make test` (see README.md).
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
CORES  ?= all
DEMO_PATIENTS ?= 6
DEMO_SEED ?= 2021

# Rules call `python -m dualpet`: the venv must come first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo run docs status test test-fast test-slurm test-reliability venv lint fmt dry-run audit clean report report-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

# The demo cohort (deterministic seed). `dualpet synth` rewrites nothing that is up to date
# (same seed, size and generator revision), so the DICOM folders keep their dates and
# Snakemake reruns nothing; a cohort made by an older generator is made anew.
demo: $(STAMP)
	$(BIN)/dualpet synth results/demo_input --patients $(DEMO_PATIENTS) --seed $(DEMO_SEED) --size demo
	$(MAKE) --no-print-directory run
	@echo "Cohort outputs:" && ls -1 results/cohort/

# The Snakemake report of the demo run (tables, statistics, figures, MIPs, QC pages).
report: demo
	$(BIN)/snakemake --workflow-profile workflow/profiles/default --report results/report.html

# The report and every review page opened in a real headless browser (Chromium, driven by
# Selenium): every page renders, its pictures decode, no text reads nan or None; the review
# pages of the demo and of one clinical-size generated patient (run in $(CHECK_DIR)/clinical).
# Screenshots in $(CHECK_DIR)/. Installs Chromium from Debian when root.
CHECK_DIR := results/report_check
report-check: report
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	  else echo "report-check needs Chromium and its driver: apt install chromium chromium-driver"; exit 1; fi; }
	$(BIN)/python -m pip install -q -e '.[report-check]'
	$(BIN)/dualpet synth $(CHECK_DIR)/clinical/data --patients 1 --seed 5 --size clinical
	mkdir -p $(CHECK_DIR)/clinical/config
	printf '%s\n' 'studies: data/studies.tsv' 'clinical: data/clinical.tsv' 'reference_tracer: fdg' \
	  'index_tracer: pentixafor' 'tracer_names: {fdg: "[18F]FDG", pentixafor: "[68Ga]Pentixafor"}' \
	  > $(CHECK_DIR)/clinical/config/config.yaml
	$(BIN)/snakemake -s Snakefile -d $(CHECK_DIR)/clinical --workflow-profile workflow/profiles/default --cores $(CORES)
	$(BIN)/python tests/report_check.py results/report.html --shots $(CHECK_DIR) \
	  --pages results/*/review.html $(CHECK_DIR)/clinical/results/*/review.html

# Tests run on both cores (pytest-xdist), a module's tests in one worker (its fixtures once).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slurm and not campaign" --durations=15

# The whole reliability campaign (tests/reliability: DICOM corruptions, hostile sheets and
# configs, each with its stated outcome; `make test` runs a short subset of it) and the
# whole-run checks of tests/test_reliability.py (core counts, a killed run, hostile names).
test-reliability: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -p no:cacheprovider tests/reliability tests/test_reliability.py

# The workflow on a real single-node SLURM (Debian's packages; needs root): the cluster is
# started, a two-patient cohort runs through workflow/profiles/slurm and locally, the
# outputs are compared, and the cluster is stopped whatever the outcome.
test-slurm: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,slurm]'
	tests/slurm/cluster.sh start
	$(BIN)/python -m pytest -m slurm -s -p no:cacheprovider tests/test_slurm.py; \
	  status=$$?; tests/slurm/cluster.sh stop; exit $$status

# The developer's loop: the unit tests, without workflow runs and generated cohorts.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow and not slurm and not campaign"

# Python: ruff (lint and format, configured in pyproject.toml); the workflow: snakefmt and
# Snakemake's own linter.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --configfile tests/data/lint/config.yaml

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/snakefmt Snakefile workflow/rules

# Your own cohort (config/config.yaml) with the default profile: all cores, keep going.
# The console shows one line per patient (done, or excluded with the reason) and a running
# total; Snakemake's full output goes to .snakemake/run.log (VERBOSE=1: to the console).
run: $(STAMP)
ifeq ($(VERBOSE),1)
	$(BIN)/snakemake --workflow-profile workflow/profiles/default --cores $(CORES)
else
	set -o pipefail; $(BIN)/snakemake --workflow-profile workflow/profiles/default --cores $(CORES) 2>&1 \
	  | $(BIN)/dualpet progress --log .snakemake/run.log
endif

# The configuration reference, generated from the config schema (a test fails when it is stale).
docs: $(STAMP)
	$(BIN)/dualpet config-doc -o docs/config.md

# Where every patient of the sheet stands (works during a run): stage, state, reason, file to open.
status: $(STAMP)
	$(BIN)/dualpet status

dry-run: $(STAMP)
	$(BIN)/snakemake --workflow-profile workflow/profiles/default -n

# results/audit/: rule graph (dot, SVG) with every edge, the job plan, --summary and what
# changed in code, parameters or input since the outputs were made (dualpet.audit).
audit: $(STAMP)
	@command -v dot >/dev/null || { if [ "$$(id -u)" = 0 ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q graphviz >/dev/null; \
	  else echo "make audit: Graphviz is not installed, rulegraph.svg is skipped (apt install graphviz)"; fi; }
	$(BIN)/python -m dualpet.audit --outdir results/audit

clean:
	rm -rf results/* .snakemake logs benchmarks
	touch results/.gitkeep
