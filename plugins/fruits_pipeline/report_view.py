"""The batch report of one DAG run, as the api-server serves it (``fruits_batch_report``).

Reads the run from Airflow's database (``SELECT`` of the run, its task instances and its
XComs), the outputs through :mod:`fruits_pipeline.stores` with the DAGs' connection, and for
``fruits_emr`` its cluster (``DescribeCluster``); writes nothing.
"""

from __future__ import annotations

from typing import Any

from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from fruits_pipeline.batch_report import RunFacts, gather, render
from fruits_pipeline.config import Settings
from fruits_pipeline.stores import open_store
from fruits_pipeline.tasks import s3_client

XCOMS = (
    ("preflight", "batch_id"),
    ("plan_work", "return_value"),
    ("cost_check", "return_value"),
    ("create_cluster", "return_value"),
)
"""The XComs the report reads: (task id, key)."""


def run_facts(session: Session, dag_id: str, run_id: str) -> RunFacts | None:
    """The run ``run_id`` of ``dag_id``: state, task states, the :data:`XCOMS`; None if none."""
    state = session.scalar(
        select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
    )
    if state is None:
        return None
    tasks = session.execute(
        select(TaskInstance.task_id, TaskInstance.state).where(
            TaskInstance.dag_id == dag_id,
            TaskInstance.run_id == run_id,
            TaskInstance.map_index == -1,
        )
    )
    rows = session.scalars(
        XComModel.get_many(
            run_id=run_id,
            dag_ids=dag_id,
            task_ids=sorted({task for task, _ in XCOMS}),
            map_indexes=-1,
        )
    )
    xcoms = {
        (row.task_id, row.key): XComModel.deserialize_value(row)
        for row in rows
        if (row.task_id, row.key) in XCOMS
    }
    return RunFacts(dag_id, run_id, str(state), {t: str(s or "none") for t, s in tasks}, xcoms)


def report_page(session: Session, dag_id: str, run_id: str) -> str | None:
    """The HTML batch report of the run, or None when ``dag_id`` has no run ``run_id``."""
    facts = run_facts(session, dag_id, run_id)
    if facts is None:
        return None
    settings = Settings.from_env()
    emr = dag_id == "fruits_emr"
    output = settings.output_uri if emr else settings.local_output
    store = open_store(output, s3_client(output, settings.aws_conn_id))
    extra: dict[str, Any] = {}
    if emr:
        from airflow.providers.amazon.aws.hooks.emr import EmrHook

        hook = EmrHook(aws_conn_id=settings.aws_conn_id, region_name=settings.region)
        extra = {
            "describe_cluster": lambda cluster: hook.conn.describe_cluster(ClusterId=cluster)[
                "Cluster"
            ],
            "log_uri": settings.log_uri,
            "max_cost_eur": settings.max_cost_eur,
        }
    return render(gather(facts, store, **extra))
