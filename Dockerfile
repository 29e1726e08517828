# Airflow for the fruits_emr DAG: Airflow and its amazon provider at the versions of
# requirements.lock, nothing else. TensorFlow and Spark run on EMR (and on the host's .venv
# for fruits_local), never in this image; the DAGs and plugins are mounted, not copied.
ARG AIRFLOW_VERSION=3.3.2

# The local EMR stand-in (compose profile local-emr, `--target local-emr`): moto, Spark and the
# jobs' dependencies at requirements.lock's versions, as `make setup` installs them on a host.
# local_emr/, plugins/ and spark_jobs/ are mounted. The last stage stays the default (Airflow).
FROM python:3.11-slim-bookworm AS local-emr
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless procps \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.lock
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/fruits:/opt/fruits/plugins:/opt/fruits/spark_jobs
WORKDIR /opt/fruits

FROM apache/airflow:${AIRFLOW_VERSION}-python3.11
ARG AIRFLOW_VERSION
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir \
      "apache-airflow==${AIRFLOW_VERSION}" \
      "apache-airflow-providers-amazon==9.39.0" \
      "aiobotocore==3.10.0" \
      --constraint /tmp/requirements.lock
# upload_code keeps the nodes' Python environment archives here (compose: the node-envs
# volume, which takes this folder's owner, the airflow user, when first mounted).
RUN mkdir -p /home/airflow/.cache/fruits-pipeline/node-env
