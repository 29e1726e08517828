# Fruits! image pipeline. `make demo` runs the main job end to end, `make test` runs the tests;
# both set up the virtualenv first (idempotent: reinstalls only when the lock changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium
MARP := docs/slides/node_modules/.bin/marp
SHARED ?= $(abspath $(CURDIR)/../shared)

# spark-submit finds its Python and Spark through PATH; workers use the same interpreter.
export PATH := $(BIN):$(PATH)
export PYSPARK_PYTHON := $(BIN)/python
export PYSPARK_DRIVER_PYTHON := $(BIN)/python
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo test bench bench-startup bench-whole bench-sync bench-report bench-bootstrap node-env class-archives lint format clean fetch-fruits360 aws-bootstrap aws-teardown airflow compose-env lake-state plan notebook slides

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@command -v java >/dev/null || { echo "installing Java 17 for Spark"; \
	  apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  { echo "installing PostgreSQL for make airflow"; \
	  apt-get update -qq && apt-get install -y -qq postgresql; }
	@test -x $(CHROMIUM) || { echo "installing Chromium for make slides (PDF)"; \
	  apt-get update -qq && apt-get install -y -qq chromium; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . || \
	  $(BIN)/python -m pip install -q --no-deps -e .
	touch $@

test: setup $(MARP)
	$(BIN)/python -m pytest -n 2 --dist loadscope

# Throughput of the featurize job against one plain process, and PCA fit time (idle machine).
bench: setup
	$(BIN)/python benchmarks/bench_featurize.py
	$(BIN)/python benchmarks/bench_pca.py

# The featurize job as a whole process against one plain TensorFlow process, at 1,260 and 5,040
# photos (idle machine, about 12 minutes).
bench-whole: setup
	$(BIN)/python benchmarks/bench_featurize.py whole --count 1260 5040

# A small batch's fixed costs, phase by phase, without and with the JVM class archives.
bench-startup: setup
	$(BIN)/python benchmarks/bench_startup.py

# The sync against `aws s3 sync` through 30 ms a request (moto's server), and its peak RSS on
# a 1 GB file; awscli goes into a throwaway venv under /tmp, never into .venv.
bench-sync: setup
	$(BIN)/python benchmarks/bench_sync.py

# A node's bootstrap: pip from the package index (before) against the node environment archive
# from S3 (a moto server), unpacked by the real bootstrap script; the archive's size and build time.
bench-bootstrap: setup
	$(BIN)/python benchmarks/bench_bootstrap.py

# The nodes' Python environment archive for this lock file, where upload_code looks for it.
node-env: setup
	$(BIN)/python -m fruits_pipeline.node_env

# The JVM class archives of both jobs, for the local jobs' Spark home and the EMR stand-in's,
# dumped by one small run each (a job's first run on this machine would pay the dump).
class-archives: setup
	$(BIN)/python -m scripts.class_archives

# The Airflow UI's batch report: a 100,000-image batch's page against a 10-image one.
bench-report: setup
	$(BIN)/python benchmarks/bench_report.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf out airflow_home .pytest_cache spark-warehouse metastore_db derby.log

# ---- the main job on the embedded default: local Spark, local lake, SQLite Airflow -----------
# IMAGES defaults to ../shared's grocery photos, else the sample `make fetch-fruits360` brings;
# WEIGHTS to the first ../shared/models/*.h5, else Keras' imagenet (downloaded once).
OUT ?= $(CURDIR)/out/local
BATCH ?= $(shell date -u +%Y-%m-%d)
export AIRFLOW_HOME ?= $(CURDIR)/airflow_home
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
DEMO_ENV := FRUITS_LOCAL_ROOT="$(OUT)" $(if $(IMAGES),FRUITS_IMAGE_SOURCE="$(IMAGES)") \
	$(if $(WEIGHTS),FRUITS_WEIGHTS="$(WEIGHTS)")

demo: setup
	$(BIN)/airflow db migrate > /dev/null
	$(DEMO_ENV) $(BIN)/airflow dags test fruits_local $(BATCH) > "$(AIRFLOW_HOME)/demo.log" 2>&1 \
	  || { tail -n 40 "$(AIRFLOW_HOME)/demo.log"; echo "demo failed: full log in $(AIRFLOW_HOME)/demo.log"; exit 1; }
	@echo "Airflow run log: $(AIRFLOW_HOME)/demo.log"
	@grep -o "nothing new: .*: no job runs" "$(AIRFLOW_HOME)/demo.log" | tail -n 1 || true
	$(BIN)/python -m fruits_pipeline.summary "$(OUT)/outputs" --batch $(BATCH)

# Committed batches, current PCA fit and left-overs of an output root (a folder or
# s3://bucket/outputs); CLEAN=1 deletes the left-overs (only while no job writes there).
OUTPUTS ?= $(OUT)/outputs
lake-state: setup
	$(BIN)/python -m fruits_pipeline.outputs_state "$(OUTPUTS)" $(if $(CLEAN),--clean)

# Cost and duration of an EMR run on the current FRUITS_* settings: IMAGES=N (several: a
# table), TARGET=minutes recommends a core-node count (fruits_pipeline.planner).
plan: setup
	@test -n "$(IMAGES)" || { echo "usage: make plan IMAGES=N [TARGET=minutes]"; exit 2; }
	$(BIN)/python -m fruits_pipeline.planner --images $(IMAGES) $(if $(TARGET),--target-minutes $(TARGET))

# The walkthrough notebook (notebooks/walkthrough.py, jupytext) executed on local Spark: the
# executed .ipynb, an HTML copy and the run's outputs in NOTEBOOK_OUT; IMAGES, WEIGHTS as for demo.
NOTEBOOK_OUT ?= $(CURDIR)/out/notebook
notebook: setup
	FRUITS_NOTEBOOK_OUTPUT="$(NOTEBOOK_OUT)/outputs" $(if $(IMAGES),FRUITS_IMAGE_SOURCE="$(IMAGES)") \
	  $(if $(WEIGHTS),FRUITS_WEIGHTS="$(WEIGHTS)") \
	  $(BIN)/python notebooks/build.py notebooks/walkthrough.py --out "$(NOTEBOOK_OUT)"

# The presentation (docs/slides/slides.md, Marp) as one self-contained HTML and a PDF in
# SLIDES_OUT; RUN=<output root> of make demo / make notebook first replaces the run it shows.
SLIDES_OUT ?= $(CURDIR)/out/slides
$(MARP): docs/slides/package-lock.json
	npm ci --prefix docs/slides --no-audit --no-fund --silent
	touch $@

slides: setup $(MARP)
	CHROME_PATH=$(CHROMIUM) $(BIN)/python docs/slides/build.py --out "$(SLIDES_OUT)" \
	  $(if $(RUN),--run "$(RUN)")

# ---- data for users with internet: a Fruits-360 sample from the dataset's GitHub branch ------
fetch-fruits360: setup
	$(BIN)/python scripts/fetch_fruits360.py --dest data/fruits360-sample

# ---- AWS, eu-west-1: bucket, roles and instance profile for the EMR DAG (idempotent) --------
# BUCKET=<globally unique name> is required; REGION must be an EU region.
REGION ?= eu-west-1
AWS_BOOTSTRAP = $(BIN)/python -m fruits_pipeline.aws_bootstrap
aws-bootstrap: setup
	@test -n "$(BUCKET)" || { echo "usage: make aws-bootstrap BUCKET=<name> [REGION=eu-west-1]"; exit 2; }
	$(AWS_BOOTSTRAP) up --bucket "$(BUCKET)" --region "$(REGION)"

# Asks first; keeps the bucket and its data unless DELETE_DATA=1.
aws-teardown: setup
	@test -n "$(BUCKET)" || { echo "usage: make aws-teardown BUCKET=<name> [DELETE_DATA=1]"; exit 2; }
	$(AWS_BOOTSTRAP) down --bucket "$(BUCKET)" --region "$(REGION)" $(if $(DELETE_DATA),--delete-data)

# ---- no AWS account: the local EMR stand-in (moto's API + steps run on this machine's Spark) --
# `make local-emr` serves S3/EMR/IAM/EC2 on 127.0.0.1:$(EMR_PORT) until Ctrl-C and prints the
# AIRFLOW_CONN_AWS_DEFAULT and AWS_ENDPOINT_URL to use; it refuses real AWS credentials.
# `make demo-emr` starts it, runs make aws-bootstrap on it, then fruits_emr end to end.
.PHONY: local-emr demo-emr
EMR_PORT ?= 5055
EMR_BUCKET ?= fruits-lake-eu
local-emr: setup
	$(BIN)/python -m local_emr --port $(EMR_PORT) --workdir "$(CURDIR)/out/local-emr"

demo-emr: setup
	$(if $(IMAGES),FRUITS_IMAGE_SOURCE="$(IMAGES)") $(if $(WEIGHTS),FRUITS_WEIGHTS="$(WEIGHTS)") \
	  $(BIN)/python -m local_emr.demo --port $(EMR_PORT) --bucket $(EMR_BUCKET) \
	  --batch $(BATCH) --log "$(AIRFLOW_HOME)/demo-emr.log"

# ---- Airflow as deployed, without Docker: PostgreSQL + api-server, scheduler, dag-processor,
# triggerer, with docker-compose.yaml's settings. UI on localhost:8080; Ctrl-C stops it all.
PORT ?= 8080
airflow: setup
	FRUITS_LOCAL_ROOT="$(OUT)" $(if $(IMAGES),FRUITS_IMAGE_SOURCE="$(IMAGES)") \
	  $(if $(WEIGHTS),FRUITS_WEIGHTS="$(WEIGHTS)") \
	  $(BIN)/python -m scripts.airflow_stack --home "$(AIRFLOW_HOME)" --port $(PORT)

# Fresh secrets for docker compose (it refuses to start without them); keeps an existing .env.
compose-env: setup
	@test -f .env && echo ".env exists: kept" || $(BIN)/python -c "import secrets; \
	from cryptography.fernet import Fernet; \
	print(f'AIRFLOW_FERNET_KEY={Fernet.generate_key().decode()}'); \
	print(f'AIRFLOW_JWT_SECRET={secrets.token_urlsafe(32)}')" > .env && echo "wrote .env"
