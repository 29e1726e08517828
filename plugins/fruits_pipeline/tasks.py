"""Task bodies shared by the EMR and local DAGs: the trigger form, the run, sync, spark-submit.

The DAG files only wire these; every function here is a TaskFlow task or a plain helper that
a test can call without Airflow running.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk import Asset, Param, TriggerRule, get_current_context, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from fruits_jobs import contract
from fruits_pipeline import packaging, planner, preflight, steps
from fruits_pipeline.cluster import job_flow_overrides
from fruits_pipeline.config import EMR_PYTHON, PROJECT_ROOT, Settings
from fruits_pipeline.stores import open_store
from fruits_pipeline.sync import sync

log = logging.getLogger(__name__)

SPARK_INFO = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d INFO ")
"""Spark's own INFO lines, left out of the task log (the jobs' own log lines stay)."""
FIRST_ERROR = re.compile(r"^(\w+: error: |[\w.]*(Error|Exception): )")
"""A job's one-line error (``featurize: error: ...``) or a Python exception's last line."""


def run_params(settings: Settings) -> dict[str, Param]:
    """The trigger form: typed, with a JSON schema that refuses bad values before a run."""
    return {
        "batch_id": Param(
            None,
            type=["null", "string"],
            pattern=f"^{contract.BATCH_ID_PATTERN}$",
            description="Batch name; empty: the logical date (YYYY-MM-DD).",
        ),
        "image_source": Param(
            settings.image_source,
            type="string",
            minLength=1,
            description="Folder or s3:// landing prefix of <Label>/<image> files to sync; "
            "{ds} stands for the run's day (YYYY-MM-DD).",
        ),
        "k": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=contract.FEATURE_DIM,
            description="PCA components; empty: chosen by explained variance.",
        ),
        "variance": Param(
            0.9,
            type="number",
            exclusiveMinimum=0,
            maximum=1,
            description="Explained variance to reach when k is empty.",
        ),
        "full_recompute": Param(
            False, type="boolean", description="Re-featurize every image, not only new ones."
        ),
        "dry_run": Param(
            False, type="boolean", description="Check settings and plan; run nothing else."
        ),
    }


def dag_defaults(settings: Settings) -> dict[str, Any]:
    """``DAG(...)`` arguments both targets share: daily batches, no catch-up, the form."""
    return {
        "schedule": "@daily",
        "start_date": datetime(2026, 1, 1, tzinfo=timezone.utc),
        "catchup": False,
        "max_active_runs": 1,
        "params": run_params(settings),
        "default_args": {"retries": 0},
    }


def output_assets(output_uri: str) -> list[Asset]:
    """The outputs other DAGs may be scheduled on: features, PCA scores, PCA matrix."""
    root = output_uri if "://" in output_uri else Path(output_uri).as_uri()
    return [
        Asset(contract.dataset_uri(root, name))
        for name in (contract.FEATURES, contract.PCA, contract.PCA_CSV)
    ]


BATCH_TIME_FORMAT = "%Y-%m-%dT%H%M%S"
"""The batch id of a run without a logical date: when it was queued, with no ``:``."""


def batch_from(
    params: Mapping[str, Any], logical_date: datetime | None, run_after: datetime
) -> str:
    """The batch id of a run, always one safe path segment (:data:`contract.BATCH_ID_PATTERN`).

    * the form's ``batch_id`` when given (the form's pattern already refused a bad one);
    * else the logical date's day, ``2026-11-25``: scheduled runs, backfills, UI triggers;
    * else, for runs with no logical date (REST or ``TriggerDagRunOperator`` with a null
      ``logical_date``, runs started by an asset event), the time the run was queued,
      ``2026-11-25T210737``.
    """
    if params.get("batch_id"):
        return contract.validate_batch_id(params["batch_id"])
    if logical_date is not None:
        return logical_date.strftime("%Y-%m-%d")
    return contract.validate_batch_id(run_after.strftime(BATCH_TIME_FORMAT))


def resolve_run(
    params: Mapping[str, Any], logical_date: datetime | None, run_after: datetime
) -> dict:
    """Everything one run needs from its form, as a JSON-able dict (the preflight's XCom).

    ``{ds}`` in the image source becomes the run's day (``landing/{ds}/``: one landing folder
    per day, so a backfill featurizes each day's arrivals).
    """
    k = params.get("k")
    day = (logical_date or run_after).strftime("%Y-%m-%d")
    return {
        "batch_id": batch_from(params, logical_date, run_after),
        "image_source": params["image_source"].replace("{ds}", day),
        "k": k,
        "variance": None if k else params["variance"],
        "full_recompute": bool(params.get("full_recompute")),
        "dry_run": bool(params.get("dry_run")),
    }


def current_run() -> dict:
    """:func:`resolve_run` for the running task's DAG run."""
    context = get_current_context()
    return resolve_run(context["params"], context.get("logical_date"), context["dag_run"].run_after)


def job_args(job: str, run: Mapping[str, Any], images: str, output: str, weights: str) -> list:
    """The arguments of ``job`` for this run: one definition for both targets."""
    if job == steps.FEATURIZE:
        return steps.featurize_args(
            images, output, weights, run["batch_id"], full_recompute=run["full_recompute"]
        )
    return steps.pca_args(output, k=run["k"], variance=run["variance"])


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


# --- EMR target ----------------------------------------------------------------------------
@task(multiple_outputs=True)
def preflight_emr(settings: Settings) -> dict:
    """Refuse to start a run unless the bucket is EU, encrypted and private.

    Calls ``GetBucketLocation``, ``GetBucketEncryption`` and ``GetPublicAccessBlock``. The
    cost is checked once the images are counted: :func:`cost_check`.
    """
    run = current_run()
    s3 = S3Hook(aws_conn_id=settings.aws_conn_id, region_name=settings.region).get_conn()
    problems = preflight.bucket_problems(s3, settings.bucket, settings.region)
    if problems:
        raise AirflowFailException("preflight failed: " + "; ".join(problems))
    log.info(
        "preflight ok: bucket %s in %s, batch %s", settings.bucket, settings.region, run["batch_id"]
    )
    return run


@task
def cost_check(synced: dict, settings: Settings) -> dict:
    """Refuse to create the cluster when the run's estimated cost exceeds ``max_cost_eur``.

    The estimate (:func:`fruits_pipeline.planner.estimate`) counts the images of the run's
    source as ``sync_images`` found them, copied or unchanged: what the featurize step
    processes when each source is synced once (it skips images featurized before), and the
    rows the PCA refits on. Calls no AWS API.
    """
    images = synced["copied"] + synced["unchanged"]
    problems = preflight.cost_problems(settings, images)
    if problems:
        raise AirflowFailException("cost check failed: " + "; ".join(problems))
    plan = planner.estimate(settings, images)
    log.info(
        "cost check ok: EUR %.2f (max_cost_eur %.2f): %s",
        plan.cost(settings.use_spot),
        settings.max_cost_eur,
        plan.parts(),
    )
    return {"images": images, "eur": plan.cost(settings.use_spot), "minutes": plan.total_s / 60}


@task
def upload_code(settings: Settings) -> dict:
    """``PutObject`` the jobs, their zipped package, the bootstrap script (and local weights).

    Everything goes under ``code/<version>/``, the version being a hash of the bundle, so a
    running cluster never sees its code change and unchanged code is not re-sent.
    """
    bundle = packaging.code_bundle()
    version = packaging.bundle_version(bundle)
    code_uri = settings.code_uri(version)
    store = open_store(code_uri, s3_client(code_uri, settings.aws_conn_id))
    present = {entry.key for entry in store.entries()}
    weights = settings.weights
    if weights != "imagenet" and not weights.startswith("s3://"):
        local = Path(weights)
        bundle[f"weights/{local.name}"] = local.read_bytes()
        weights = f"{code_uri}/weights/{local.name}"
    for key, data in bundle.items():
        if key not in present:
            store.write(key, data)
    log.info("code %s at %s (%d files)", version, code_uri, len(bundle))
    return {"code_uri": code_uri, "weights": weights}


@task
def cluster_request(run: dict, code: dict, settings: Settings) -> dict:
    """The ``RunJobFlow`` body of this batch (see :func:`fruits_pipeline.cluster`)."""
    return job_flow_overrides(settings, run["batch_id"], code["code_uri"])


@task
def emr_steps(job: str, run: dict, code: dict, settings: Settings) -> list[dict]:
    """The one EMR step of ``job`` for this run."""
    target = steps.emr_target(code["code_uri"], EMR_PYTHON)
    args = job_args(job, run, settings.raw_images_uri, settings.output_uri, code["weights"])
    return [steps.emr_step(job, target, args)]


@task(trigger_rule=TriggerRule.ONE_FAILED, retries=0)
def watcher() -> None:
    """Fail the run when any task failed: the always-run teardown must not hide a failure."""
    raise AirflowException("a task failed upstream; the cluster was still terminated")


# --- local target --------------------------------------------------------------------------
def local_target() -> steps.SparkTarget:
    """spark-submit on this machine, ``local[*]``, from this interpreter's environment."""
    submit = Path(sys.executable).with_name("spark-submit")
    return steps.SparkTarget(
        code_root=str(PROJECT_ROOT / "spark_jobs"),
        submit=(
            str(submit) if submit.exists() else "spark-submit",
            "--master",
            "local[*]",
            "--conf",
            "spark.ui.showConsoleProgress=false",
        ),
    )


@task(multiple_outputs=True)
def preflight_local(settings: Settings) -> dict:
    """Check the local run can start: the source folder and the weights file exist."""
    run = current_run()
    problems = []
    if not run["image_source"].startswith("s3") and not Path(run["image_source"]).is_dir():
        problems.append(f"image source is not a folder: {run['image_source']}")
    if settings.weights != "imagenet" and not Path(settings.weights).is_file():
        problems.append(f"weights file not found: {settings.weights}")
    if problems:
        raise AirflowFailException("preflight failed: " + "; ".join(problems))
    return run


@task
def spark_submit_local(job: str, run: dict, settings: Settings) -> None:
    """Run ``job`` with spark-submit on ``local[*]``, its output streamed into the task log."""
    command = local_target().command(
        job, job_args(job, run, settings.local_lake, settings.local_output, settings.weights)
    )
    log.info("running %s", " ".join(command))
    env = {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    first_error = last = ""
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            last = line.rstrip()
            if not SPARK_INFO.match(line):
                log.info("%s", last)
            if not first_error and FIRST_ERROR.match(line):
                first_error = line.strip()
    if process.returncode != 0:
        raise AirflowException(
            f"spark-submit {job} exited {process.returncode}: {first_error or last}"
        )
