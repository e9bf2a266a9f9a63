# Set-up, tests and runs. `make test` on a fresh clone does all set-up by itself:
# a .venv with the pinned packages, the package installed editable, the Jupyter kernel
# registered inside the venv, and the offline data (Debian's dataset-fashion-mnist).

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist

.DELETE_ON_ERROR:
.PHONY: install data test reproduce runs check-data paper-dry gpu-check wheelhouse notebooks run-permuted-fashion-mnist bench clean

install: $(STAMP)

# The stamp depends on pyproject.toml: a changed pin reinstalls.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[notebooks,test,baselines,grid]"
	# --sys-prefix: a stale user-level kernel spec must not shadow this venv's kernel.
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (adaqpacknet)"
	touch $@

# The offline default data. Installs the Debian package when it is missing (needs root or sudo).
data:
	@if [ -f $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST found in $(FASHION_MNIST_DIR)"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	elif command -v sudo >/dev/null; then \
		sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "error: Fashion-MNIST is missing from $(FASHION_MNIST_DIR); install it with 'apt-get install dataset-fashion-mnist' as root"; exit 1; \
	fi

# pytest exits 5 when it collected no test: say so rather than pass silently.
test: install data
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; fi; exit $$rc

# --- reproduce: every experiment, table and figure of a profile -----------------------------------
# A profile is a folder of parameter files, one per notebook: notebooks/params/<profile>/<nb>.yaml.
# Snakemake (workflow/Snakefile) runs the profile as independent jobs: one per run (listed by
# `python -m adaqpacknet runs <profile>`), then each experiment notebook once the runs it reads are
# finished, then the tables and figures. Finished runs and up-to-date notebooks are skipped; a
# failed job leaves no result and the jobs that do not need it go on (--keep-going); an
# interrupted run resumes from its last checkpoint. Logs: build/logs/<profile>/.
#   make reproduce                     this machine, JOBS jobs at once (one CPU thread each)
#   make reproduce GPUS=0,1,2,3        one machine with several GPUs: one GPU per concurrent job
#   make reproduce EXECUTOR=slurm      one SLURM job per batch of runs (profile: workflow/profiles/slurm)
#   make reproduce TARGETS=results/default/10_permuted.json   only that notebook and its runs
PROFILE ?= default
PARAMS_ROOT ?= notebooks/params
RESULTS_ROOT ?= results
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
EXECUTOR ?= local
GPUS ?=
SLURM_PROFILE ?= workflow/profiles/slurm
TARGETS ?=
# Anything else for snakemake, e.g. SNAKEMAKE_ARGS=--dry-run
SNAKEMAKE_ARGS ?=
PARAMS_DIR := $(PARAMS_ROOT)/$(PROFILE)
comma := ,
GPU_COUNT = $(words $(subst $(comma), ,$(GPUS)))
# A value as one shell word, in single quotes (each ' inside written '\''): a profile, folder or
# target given on the command line reaches the recipes' shell as data, never as a command (make
# itself still expands $(...) in a value, as it does for any variable: that is the caller's own
# shell at work). The Snakefile then checks each value (workflow/Snakefile) before any job is built.
quote = '$(subst ','\'',$(1))'
SNAKEMAKE = $(VENV)/bin/snakemake --snakefile workflow/Snakefile --directory . \
	--config $(call quote,profile=$(PROFILE)) $(call quote,params_root=$(PARAMS_ROOT)) \
	$(call quote,results_root=$(RESULTS_ROOT)) $(if $(GPUS),$(call quote,gpus=$(GPUS))) \
	--keep-going --rerun-incomplete --rerun-triggers mtime input --show-failed-logs
ifeq ($(EXECUTOR),local)
ENGINE = --cores $(call quote,$(JOBS)) $(if $(GPUS),--resources gpu=$(GPU_COUNT) --set-resources train:gpu=1 experiment:gpu=1)
else ifeq ($(EXECUTOR),slurm)
ENGINE = --profile $(call quote,$(SLURM_PROFILE))
else
ENGINE = $(error EXECUTOR=$(EXECUTOR) is not an executor; valid choices: local, slurm)
endif

# The Snakefile checks the profile's parameters and data before any job starts.
reproduce: | $(STAMP) data
	$(SNAKEMAKE) $(ENGINE) $(SNAKEMAKE_ARGS) $(foreach target,$(TARGETS),$(call quote,$(target)))

# The runs a profile needs and their batches, one job each (what `make reproduce` trains).
runs: | $(STAMP)
	@$(PY) -m adaqpacknet runs $(call quote,$(PROFILE)) --params-root $(call quote,$(PARAMS_ROOT))

# Missing datasets stop the profile here, before any experiment trains.
check-data: | $(STAMP) data
	@test -d $(call quote,$(PARAMS_DIR)) || { echo $(call quote,error: no profile '$(PROFILE)': $(PARAMS_DIR) does not exist (profiles: $(notdir $(wildcard $(PARAMS_ROOT)/*)))); exit 1; }
	$(PY) -m adaqpacknet check-data $(call quote,$(PARAMS_DIR))

# The paper profile end to end on fake data in the datasets' real formats (numbers mean nothing):
# every paper notebook, protocol network and method, 1 epoch, 2 tasks. CI runs it after the tests.
PAPER_DRY_DATA := build/paper-dry-data
paper-dry: | $(STAMP)
	$(PY) -m adaqpacknet.data.fake $(PAPER_DRY_DATA)
	$(MAKE) --no-print-directory reproduce PROFILE=paper-dry

# --- the GPU check (benchmarks/gpu_check.py): every sub-network method trained on the GPU in one
# process, BWT exactly 0, packed files bit-identical there, epoch times CPU vs GPU -> benchmarks/results/cuda/.
# A bare GPU machine (Python 3.11 or 3.12 with torch, torchvision, numpy, pandas, scikit-learn,
# safetensors, pyyaml, tqdm; no registry): collect the three wheels it lacks where a registry is
# reachable (`make wheelhouse`, ~0.6 MB), bring wheelhouse/ along, and there run
#   make gpu-check PYTHON=python3 NO_VENV=1
# DEVICE=cpu runs the same check on the CPU (tests/test_gpu_check.py does, in `make test`).
DEVICE ?= cuda
NO_VENV ?=
WHEEL_PYTHON ?= 3.12
WHEELHOUSE_PINS := kmeans1d==0.5.0 constriction==0.5.0 tabulate==0.9.0
ifeq ($(NO_VENV),1)
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py --device $(DEVICE)
else
gpu-check: | $(STAMP)
	$(PY) benchmarks/gpu_check.py --device $(DEVICE)
endif

# The wheels of WHEEL_PYTHON (cp312) for manylinux x86_64 that a bare GPU machine lacks; binary only.
wheelhouse:
	$(PYTHON) -m pip download --quiet --dest wheelhouse --only-binary=:all: --no-deps \
		--python-version $(WHEEL_PYTHON) --implementation cp --abi cp$(subst .,,$(WHEEL_PYTHON)) --abi abi3 --abi none \
		--platform manylinux_2_34_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
		$(WHEELHOUSE_PINS)
	@ls -l wheelhouse

# --- benchmarks: speed, memory and size, each a JSON + Markdown table in benchmarks/results/<device>/ ---
# Not part of `make test`. The scaling run comes before the inference benchmark, which loads its file.
bench: | $(STAMP) data
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_scaling.py
	$(PY) benchmarks/bench_inference.py

# Regenerate the .ipynb files from their paired jupytext .py sources (the reviewed form).
notebooks: | $(STAMP)
	$(PY) -m jupytext --sync notebooks/*.py

# The acceptance run of the core learner (shared method.md defaults, 3 epochs per task).
run-permuted-fashion-mnist: install data
	$(PY) -m adaqpacknet run --out runs/permuted_fashion_mnist/ada_qpacknet-seed0 scenario=permuted_fashion_mnist epochs=3 seed=0

clean:
	rm -rf $(VENV) runs build results .pytest_cache
