# Airflow for the fruits_emr DAG: Airflow and its amazon provider at the versions of
# requirements.lock, nothing else. TensorFlow and Spark run on EMR (and on the host's .venv
# for fruits_local), never in this image; the DAGs and plugins are mounted, not copied.
ARG AIRFLOW_VERSION=3.3.2
FROM apache/airflow:${AIRFLOW_VERSION}-python3.11
ARG AIRFLOW_VERSION
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir \
      "apache-airflow==${AIRFLOW_VERSION}" \
      "apache-airflow-providers-amazon==9.39.0" \
      --constraint /tmp/requirements.lock
