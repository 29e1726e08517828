"""Airflow plugin: a "Batch report" tab on every run of the Fruits! DAGs, and their links.

* ``fastapi_apps``: an app the api-server mounts at :data:`URL_PREFIX`, with one page,
  ``GET /fruits/report/{dag_id}/{run_id}``: :mod:`fruits_pipeline.batch_report` for that run.
  It requires a logged-in user who may read that DAG's runs (the auth manager decides, as
  for Airflow's own API: 401 without a token), and answers 404 for any other DAG or for a
  run id that no run has; ids are looked up in Airflow's database, never used as paths.
* ``external_views``: that page as the tab "Batch report" of the run's page (Airflow 3.1+).
* ``operator_extra_links``: the "Outputs" link of ``validate_outputs``
  (:class:`fruits_pipeline.operators.OutputsLink`).

The file's stem is no real module's: the plugins manager imports it under its bare name.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Path
from fastapi.responses import HTMLResponse

from fruits_pipeline.operators import OutputsLink

URL_PREFIX = "/fruits"
DAG_IDS = ("fruits_local", "fruits_emr")
"""The DAGs whose runs have a batch report."""

app = FastAPI(title="Fruits! batch report", docs_url=None, redoc_url=None, openapi_url=None)


@app.get(
    "/report/{dag_id}/{run_id}",
    response_class=HTMLResponse,
    dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))],
)
def batch_report(
    dag_id: Annotated[str, Path(max_length=250)],
    run_id: Annotated[str, Path(max_length=250)],
    session: SessionDep,
) -> HTMLResponse:
    """The batch report page of run ``run_id`` of ``dag_id``."""
    from fruits_pipeline.report_view import report_page

    if dag_id not in DAG_IDS:
        raise HTTPException(404, f"no batch report for DAG {dag_id!r}")
    page = report_page(session, dag_id, run_id)
    if page is None:
        raise HTTPException(404, f"{dag_id} has no run {run_id!r}")
    return HTMLResponse(page)


class FruitsBatchReportPlugin(AirflowPlugin):
    """The batch report tab and the "Outputs" link."""

    name = "fruits_batch_report"
    fastapi_apps: ClassVar[list[Any]] = [
        {"app": app, "url_prefix": URL_PREFIX, "name": "Fruits! batch report"}
    ]
    external_views: ClassVar[list[Any]] = [
        {
            "name": "Batch report",
            "href": f"{URL_PREFIX.lstrip('/')}/report/{{DAG_ID}}/{{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "batch-report",
            "icon": None,
        }
    ]
    operator_extra_links: ClassVar[list[Any]] = [OutputsLink()]
