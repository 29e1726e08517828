"""Fruits! on AWS EMR (eu-west-1): sync, featurize, PCA, validate, and always terminate.

``preflight`` -> ``sync_images`` + ``upload_code`` -> ``plan_work`` -> ``cost_check`` ->
``create_cluster`` -> featurize step -> PCA step -> ``validate_outputs`` ->
``terminate_cluster`` (runs whatever happened) -> ``watcher`` (fails the run when anything
failed). ``has_work`` ends a run with nothing new before any cluster exists. Settings:
``fruits_pipeline.config``.
"""

from __future__ import annotations

from airflow.providers.amazon.aws.operators.emr import (
    EmrAddStepsOperator,
    EmrCreateJobFlowOperator,
)
from airflow.sdk import DAG, TriggerRule, chain

from fruits_pipeline.config import Settings
from fruits_pipeline.emr_tasks import (
    STEP_BUDGET_S,
    VALIDATION_POKE_S,
    VALIDATION_TIMEOUT_S,
    cluster_request,
    cost_check,
    emr_steps,
    preflight_emr,
    upload_code,
    watcher,
)
from fruits_pipeline.operators import (
    EmrStepWithLogsSensor,
    EmrTerminateCreatedJobFlowOperator,
    OutputContractSensor,
)
from fruits_pipeline.runs import dag_defaults, output_assets
from fruits_pipeline.steps import FEATURIZE, PCA
from fruits_pipeline.tasks import has_work, plan_work, proceed, sync_images

SETTINGS = Settings.from_env()  # a non-EU region fails here, when the DAG is parsed
AWS = {"aws_conn_id": SETTINGS.aws_conn_id, "region_name": SETTINGS.region}

with DAG(
    dag_id="fruits_emr",
    tags=["fruits", "emr", SETTINGS.region],
    doc_md=__doc__,
    **dag_defaults(SETTINGS),
) as dag:
    run = preflight_emr.override(task_id="preflight")(SETTINGS)
    go = proceed(run)
    synced = sync_images(run, lake=SETTINGS.raw_images_uri, settings=SETTINGS)
    code = upload_code(SETTINGS)
    work = plan_work(run, SETTINGS.raw_images_uri, SETTINGS.output_uri, SETTINGS)
    gate = has_work(work)
    request = cluster_request(run, code, SETTINGS)
    create_cluster = EmrCreateJobFlowOperator(
        task_id="create_cluster",
        job_flow_overrides=request,
        emr_conn_id=None,
        **AWS,
    )
    sensed = {}
    for job in (FEATURIZE, PCA):
        # Return once EMR accepted the step: a deferrable EmrAddStepsOperator (the default under
        # AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE=true) waits for the step to *finish*, 60 x 30 s
        # counted from a cluster still bootstrapping (amazon provider 9.39, operators/emr.py).
        spec = emr_steps.override(task_id=f"{job}_step_spec")(job, run, code, work, SETTINGS)
        gate >> spec
        add_step = EmrAddStepsOperator(
            task_id=f"add_{job}_step",
            job_flow_id=create_cluster.output,
            steps=spec,
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
        region=SETTINGS.region,
        aws_conn_id=SETTINGS.aws_conn_id,
        poke_interval=VALIDATION_POKE_S,
        timeout=VALIDATION_TIMEOUT_S,
        mode="reschedule",
        outlets=output_assets(SETTINGS.output_uri),
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
        work,
        cost_check(synced, work, SETTINGS),
        gate,
        request,
        create_cluster,
        *sensed[FEATURIZE],
        *sensed[PCA],
        validate_outputs,
        terminate_cluster,
    )
    list(dag.tasks) >> watcher()
