# Set-up, tests and runs. `make test` on a fresh clone does all set-up by itself:
# a .venv with the pinned packages, the package installed editable, the Jupyter kernel
# registered inside the venv, and the offline data (Debian's dataset-fashion-mnist).

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist

.DELETE_ON_ERROR:
.PHONY: install data test reproduce check-data notebooks run-permuted-fashion-mnist bench clean

install: $(STAMP)

# The stamp depends on pyproject.toml: a changed pin reinstalls.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[notebooks,test,baselines]"
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
# Each experiment's results JSON is the target: it depends on its notebook, its parameter file and
# the library, so only stale experiments rerun. The notebook writes the JSON last, atomically; a
# failing notebook stops make with papermill's report of the failing cell, and leaves no result.
PROFILE ?= default
PARAMS_ROOT ?= notebooks/params
RESULTS_ROOT ?= results
PARAMS_DIR := $(PARAMS_ROOT)/$(PROFILE)
RESULTS_DIR := $(RESULTS_ROOT)/$(PROFILE)
EXECUTED_DIR := build/notebooks/$(PROFILE)
LIBRARY := $(shell find adaqpacknet -name '*.py' -not -path '*/__pycache__/*')
NOTEBOOK_STEMS := $(basename $(notdir $(wildcard $(PARAMS_DIR)/*.yaml)))
EXPERIMENTS := $(filter-out 9%,$(NOTEBOOK_STEMS))
EXPERIMENT_RESULTS := $(EXPERIMENTS:%=$(RESULTS_DIR)/%.json)
REPORT_RESULTS := $(RESULTS_DIR)/90_tables.json $(RESULTS_DIR)/91_figures.json
# -k python3: the kernel registered inside .venv; progress False: one line per epoch in the log.
PAPERMILL = $(PY) -m papermill -k python3 --cwd notebooks --log-output --no-progress-bar \
	-f $(PARAMS_DIR)/$*.yaml -p profile $(PROFILE) -p results_path $(abspath $@) -p progress False

reproduce: $(REPORT_RESULTS)

# Missing datasets stop the profile here, before any experiment trains.
check-data: | $(STAMP) data
	@test -d $(PARAMS_DIR) || { echo "error: no profile '$(PROFILE)': $(PARAMS_DIR) does not exist (profiles: $(notdir $(wildcard $(PARAMS_ROOT)/*)))"; exit 1; }
	$(PY) -m adaqpacknet check-data $(PARAMS_DIR)

$(EXPERIMENT_RESULTS): $(RESULTS_DIR)/%.json: notebooks/%.ipynb $(PARAMS_DIR)/%.yaml $(LIBRARY) | $(STAMP) check-data
	@mkdir -p $(EXECUTED_DIR) $(dir $@)
	$(PAPERMILL) notebooks/$*.ipynb $(EXECUTED_DIR)/$*.ipynb

$(REPORT_RESULTS): $(RESULTS_DIR)/%.json: notebooks/%.ipynb $(PARAMS_DIR)/%.yaml $(LIBRARY) $(EXPERIMENT_RESULTS) | $(STAMP)
	@mkdir -p $(EXECUTED_DIR) $(dir $@)
	$(PAPERMILL) notebooks/$*.ipynb $(EXECUTED_DIR)/$*.ipynb

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
