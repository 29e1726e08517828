"""Fruits! on this machine: the EMR DAG's stages from the same definitions, no AWS at all.

``preflight`` -> ``sync_images`` (into a local lake folder) -> ``plan_work`` -> ``featurize``
-> ``pca`` (spark-submit on ``local[*]``) -> ``validate_outputs``; ``has_work`` ends a run that
has nothing new there. What ``make demo`` runs.
"""

from __future__ import annotations

from airflow.sdk import DAG, chain

from fruits_pipeline.config import Settings
from fruits_pipeline.local_tasks import (
    VALIDATION_POKE_S,
    VALIDATION_TIMEOUT_S,
    preflight_local,
    spark_submit_local,
)
from fruits_pipeline.operators import OutputContractSensor
from fruits_pipeline.runs import dag_defaults, output_assets
from fruits_pipeline.steps import FEATURIZE, PCA
from fruits_pipeline.tasks import has_work, plan_work, proceed, sync_images

SETTINGS = Settings.from_env()

with DAG(
    dag_id="fruits_local",
    tags=["fruits", "local"],
    doc_md=__doc__,
    **dag_defaults(SETTINGS),
):
    run = preflight_local.override(task_id="preflight")(SETTINGS)
    go = proceed(run)
    synced = sync_images(run, lake=SETTINGS.local_lake, settings=SETTINGS)
    work = plan_work(run, SETTINGS.local_lake, SETTINGS.local_output, SETTINGS)
    featurize, pca = (
        spark_submit_local.override(task_id=job)(job, run, work, SETTINGS)
        for job in (FEATURIZE, PCA)
    )
    validate_outputs = OutputContractSensor(
        task_id="validate_outputs",
        output_uri=SETTINGS.local_output,
        batch_id=run["batch_id"],
        region=SETTINGS.region,
        poke_interval=VALIDATION_POKE_S,
        timeout=VALIDATION_TIMEOUT_S,
        outlets=output_assets(SETTINGS.local_output),
    )
    chain(run, go, synced, work, has_work(work), featurize, pca, validate_outputs)
