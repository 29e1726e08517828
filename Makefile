# Fruits! image pipeline. `make demo` runs the main job end to end, `make test` runs the tests;
# both set up the virtualenv first (idempotent: reinstalls only when the lock changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED ?= $(abspath $(CURDIR)/../shared)

# spark-submit finds its Python and Spark through PATH; workers use the same interpreter.
export PATH := $(BIN):$(PATH)
export PYSPARK_PYTHON := $(BIN)/python
export PYSPARK_DRIVER_PYTHON := $(BIN)/python
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo test bench lint format clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@command -v java >/dev/null || { echo "installing Java 17 for Spark"; \
	  apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . || \
	  $(BIN)/python -m pip install -q --no-deps -e .
	touch $@

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf out airflow_home .pytest_cache spark-warehouse metastore_db derby.log

# ---- the main job on the embedded default: local Spark, local lake --------------------------
IMAGES ?= $(firstword $(wildcard $(SHARED)/data/grocery-fruits-sample) $(CURDIR)/data/fruits360-sample)
OUT ?= $(CURDIR)/out
WEIGHTS ?= $(or $(FRUITS_WEIGHTS),$(firstword $(wildcard $(SHARED)/models/*.h5)),imagenet)
SPARK_SUBMIT := $(BIN)/spark-submit --master "local[*]" --conf spark.ui.showConsoleProgress=false

demo: setup
	$(SPARK_SUBMIT) spark_jobs/featurize.py --images "$(IMAGES)" --output "$(OUT)" \
	  --weights "$(WEIGHTS)" --batch-id demo --skip-existing
	$(SPARK_SUBMIT) spark_jobs/pca.py --features "$(OUT)/features" --output "$(OUT)" --variance 0.9
	@echo "outputs in $(OUT); report and plots in $(OUT)/_reports"
