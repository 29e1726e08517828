"""The tasks both DAGs run: the dry-run stop, the sync into the lake, the nothing-new stop.

Each target's own tasks are in :mod:`fruits_pipeline.emr_tasks` and
:mod:`fruits_pipeline.local_tasks`, what a run is in :mod:`fruits_pipeline.runs`; the DAG
files only wire them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk import task
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from fruits_jobs import contract
from fruits_pipeline.config import Settings
from fruits_pipeline.outputs_state import survey
from fruits_pipeline.stores import open_store
from fruits_pipeline.sync import lake_digest, sync

log = logging.getLogger(__name__)


def s3_client(uri: str, aws_conn_id: str) -> Any:
    """A boto3 S3 client from the Airflow connection when ``uri`` is on S3, else None."""
    return S3Hook(aws_conn_id=aws_conn_id).get_conn() if uri.startswith("s3") else None


@task.short_circuit(ignore_downstream_trigger_rules=True)
def proceed(run: dict) -> bool:
    """Stop here on a dry run (every later task, teardown included, is skipped)."""
    if run["dry_run"]:
        log.info("dry run: plan checked, nothing else runs: %s", run)
    return not run["dry_run"]


@task
def sync_images(run: dict, lake: str, settings: Settings) -> dict:
    """Copy new or changed images from the run's source into ``lake`` (folder or S3 prefix).

    Files outside the layout, with an unsafe key or over ``sync_max_file_bytes`` are refused:
    the log and the XCom's ``refused`` name each with its reason, and the good files are
    copied anyway. Copies that failed (network, permissions) fail the task once the others
    are done, naming them; a retry copies only what is still missing.
    """
    source, dest = run["image_source"], lake
    if not source.startswith("s3") and not Path(source).is_dir():
        raise AirflowFailException(f"image source is not a folder: {source}")
    result = sync(
        open_store(source, s3_client(source, settings.aws_conn_id)),
        open_store(dest, s3_client(dest, settings.aws_conn_id)),
        max_file_bytes=settings.sync_max_file_bytes,
        concurrency=settings.sync_concurrency,
    )
    if result.failed_count:
        failed = "; ".join(f"{key!r}: {why}" for key, why in list(result.failed.items())[:10])
        raise AirflowException(f"{result.failed_count} files could not be copied: {failed}")
    return result.as_dict()


@task
def plan_work(run: dict, lake: str, output: str, settings: Settings) -> dict:
    """Decide what the run has to do, from listings and commit records only (no Spark, no data).

    Lists ``lake`` (``ListObjectsV2`` on S3) into its digest and surveys ``output``'s reports
    (:func:`fruits_jobs.contract.plan_work`): featurize when no committed batch covers the
    lake as it is now, refit when the current fit misses a committed batch or has another k.
    Runs after the sync, so it never decides from "the sync copied nothing" alone.

    :returns: ``lake`` (the digest, which the featurize job records), ``featurize``, ``pca``,
        ``anything``, ``reason`` (the sentence the log shows) and ``fit_rows`` (the most rows
        the PCA may fit).
    """
    digest = lake_digest(open_store(lake, s3_client(lake, settings.aws_conn_id)))
    state = survey(open_store(output, s3_client(output, settings.aws_conn_id)))
    work = contract.plan_work(
        state, digest, full_recompute=run["full_recompute"], k=run["k"], variance=run["variance"]
    )
    log.info("%s", work.reason)
    return {
        "lake": digest,
        "featurize": work.featurize,
        "pca": work.pca,
        "anything": work.anything,
        "reason": work.reason,
        "fit_rows": work.fit_rows,
    }


@task.short_circuit(ignore_downstream_trigger_rules=True)
def has_work(work: dict) -> bool:
    """Stop here when the run has nothing to do: no cluster, no job, no batch committed.

    Every later task, teardown included, is skipped; the run succeeds.
    """
    if not work["anything"]:
        log.info("%s: no job runs", work["reason"])
    return work["anything"]
