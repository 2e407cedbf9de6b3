# grail-sim: the two commands.
#   make run    set up .venv from the pins and run the default workflow (demo data, embedded model, CPU)
#   make test   set up the same .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
# Nothing may come from a model hub here; wandb logs offline unless the user says otherwise.
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: run test dry-run lint clean-results benchmarks/default_run.md

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned in pyproject.toml to the CPU build; installing it in the same resolution keeps
	# accelerate from pulling a multi-GB CUDA build.
	$(BIN)/pip install --quiet -e '.[test,workflow]'
	$(BIN)/pip check
	touch $@

run: $(BIN)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/local --cores $(CORES)

# One pytest worker per core (pytest-xdist), whole test files per worker so that module fixtures
# (one torch thread, a trained tiny model) are built once; the model cache is shared under a file lock.
test: $(BIN)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -n $(CORES) --dist loadfile

dry-run: $(BIN)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/local -n

lint: $(BIN)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint

# Remove every generated output (results/ and reports/); the venv and the model cache stay.
clean-results:
	rm -rf results reports

# Per-rule times of the last run, the table the README links to (phony: always rebuilt from results/).
benchmarks/default_run.md: $(BIN)/.installed
	$(BIN)/python benchmarks/default_run.py --out $@
