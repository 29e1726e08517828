"""Fruits! on AWS EMR (eu-west-1): sync, featurize, PCA, validate, and always terminate.

``preflight`` -> ``sync_images`` + ``upload_code`` -> ``cost_check`` -> ``create_cluster`` ->
featurize step -> PCA step -> ``validate_outputs`` -> ``terminate_cluster`` (runs whatever
happened) -> ``watcher`` (fails the run when anything failed). Settings: ``fruits_pipeline.config``.
"""

from __future__ import annotations

from airflow.providers.amazon.aws.operators.emr import (
    EmrAddStepsOperator,
    EmrCreateJobFlowOperator,
)
from airflow.sdk import DAG, TriggerRule, chain

from fruits_pipeline import tasks
from fruits_pipeline.config import Settings
from fruits_pipeline.operators import (
    EmrStepWithLogsSensor,
    EmrTerminateCreatedJobFlowOperator,
    OutputContractSensor,
)
from fruits_pipeline.steps import FEATURIZE, PCA

SETTINGS = Settings.from_env()  # a non-EU region fails here, when the DAG is parsed
AWS = {"aws_conn_id": SETTINGS.aws_conn_id, "region_name": SETTINGS.region}
STEP_BUDGET_S = 6 * 3600
"""How long a step may take, counted by its sensor, deferred or not."""

with DAG(
    dag_id="fruits_emr",
    tags=["fruits", "emr", SETTINGS.region],
    doc_md=__doc__,
    **tasks.dag_defaults(SETTINGS),
) as dag:
    run = tasks.preflight_emr.override(task_id="preflight")(SETTINGS)
    go = tasks.proceed(run)
    synced = tasks.sync_images(run, lake=SETTINGS.raw_images_uri, settings=SETTINGS)
    code = tasks.upload_code(SETTINGS)
    create_cluster = EmrCreateJobFlowOperator(
        task_id="create_cluster",
        job_flow_overrides=tasks.cluster_request(run, code, SETTINGS),
        emr_conn_id=None,
        **AWS,
    )
    sensed = {}
    for job in (FEATURIZE, PCA):
        # Return once EMR accepted the step: a deferrable EmrAddStepsOperator (the default under
        # AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE=true) waits for the step to *finish*, 60 x 30 s
        # counted from a cluster still bootstrapping (amazon provider 9.39, operators/emr.py).
        add_step = EmrAddStepsOperator(
            task_id=f"add_{job}_step",
            job_flow_id=create_cluster.output,
            steps=tasks.emr_steps.override(task_id=f"{job}_step_spec")(job, run, code, SETTINGS),
            wait_for_completion=False,
            deferrable=False,
            **AWS,
        )
        wait_step = EmrStepWithLogsSensor(
            task_id=job,
            job_flow_id=create_cluster.output,
            step_id=f"{{{{ ti.xcom_pull(task_ids='add_{job}_step')[0] }}}}",
            log_uri=SETTINGS.log_uri,
            poke_interval=SETTINGS.step_poke_interval_s,
            max_attempts=STEP_BUDGET_S // SETTINGS.step_poke_interval_s,  # when deferred
            timeout=STEP_BUDGET_S,  # when poking
            **AWS,
        )
        sensed[job] = (add_step, wait_step)
    validate_outputs = OutputContractSensor(
        task_id="validate_outputs",
        output_uri=SETTINGS.output_uri,
        batch_id=run["batch_id"],
        aws_conn_id=SETTINGS.aws_conn_id,
        poke_interval=30,
        timeout=600,
        mode="reschedule",
        outlets=tasks.output_assets(SETTINGS.output_uri),
    )
    terminate_cluster = EmrTerminateCreatedJobFlowOperator(
        task_id="terminate_cluster",
        job_flow_id=create_cluster.output,
        trigger_rule=TriggerRule.ALL_DONE,
        **AWS,
    )
    chain(
        run,
        go,
        [synced, code],
        tasks.cost_check(synced, SETTINGS),
        create_cluster,
        *sensed[FEATURIZE],
        *sensed[PCA],
        validate_outputs,
        terminate_cluster,
    )
    list(dag.tasks) >> tasks.watcher()
