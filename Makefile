# The README's two commands: `make run` (set up + default experiment) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2

.PHONY: setup run test test-fast dag bench clean

setup: $(VENV)/.installed

# The CPU build of torch first where a local wheel is configured (no index, no dependencies:
# this never downloads; torch's own dependencies come with the project's), then the project;
# on a cluster the range in pyproject.toml resolves normally. The torch build is printed.
# A missing marker means no or a half-built venv (an interrupted set-up): start it afresh.
$(VENV)/.installed: pyproject.toml
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	-$(PY) -m pip install --quiet --no-index --no-deps "torch==2.13.0" 2>/dev/null
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -c "import torch; print('torch', torch.__version__)"
	touch $@

run: setup
	$(VENV)/bin/snakemake --cores $(CORES)

test: setup
	$(VENV)/bin/pytest -x --durations=15

test-fast: setup
	$(VENV)/bin/pytest -m "not slow"

# Naive vs shared-prefix sweep timings on the aligned organism: results/bench/sweep.{csv,md}.
bench: setup
	$(VENV)/bin/snakemake --cores $(CORES) bench

dag: setup
	$(VENV)/bin/snakemake --dag | dot -Tpng > dag.png

clean:
	rm -rf results logs .snakemake
