"""Fruits! on this machine: the EMR DAG's stages from the same definitions, no AWS at all.

``preflight`` -> ``sync_images`` (into a local lake folder) -> ``featurize`` -> ``pca``
(spark-submit on ``local[*]``) -> ``validate_outputs``. What ``make demo`` runs.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Asset, chain

from fruits_jobs import contract
from fruits_pipeline import tasks
from fruits_pipeline.config import Settings
from fruits_pipeline.operators import OutputContractSensor
from fruits_pipeline.steps import FEATURIZE, PCA

SETTINGS = Settings.from_env()

with DAG(
    dag_id="fruits_local",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=tasks.run_params(SETTINGS),
    tags=["fruits", "local"],
    doc_md=__doc__,
    default_args={"retries": 0},
):
    run = tasks.preflight_local.override(task_id="preflight")(SETTINGS)
    go = tasks.proceed(run)
    synced = tasks.sync_images(run, lake=SETTINGS.local_lake)
    featurize, pca = (
        tasks.spark_submit_local.override(task_id=job)(job, run, SETTINGS)
        for job in (FEATURIZE, PCA)
    )
    validate_outputs = OutputContractSensor(
        task_id="validate_outputs",
        output_uri=SETTINGS.local_output,
        batch_id=run["batch_id"],
        poke_interval=5,
        timeout=60,
        outlets=[
            Asset(Path(contract.dataset_uri(SETTINGS.local_output, name)).as_uri())
            for name in (contract.FEATURES, contract.PCA, contract.PCA_CSV)
        ],
    )
    chain(run, go, synced, featurize, pca, validate_outputs)
