"""The EMR DAG's own tasks, and how long its sensors wait.

``preflight_emr`` (the bucket is EU, encrypted, private), ``cost_check``, ``upload_code``,
``cluster_request`` and ``emr_steps`` (what the amazon provider's operators are given), and
``watcher``, which fails the run a teardown that always runs would otherwise hide.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk import TriggerRule, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from botocore.exceptions import ClientError

from fruits_pipeline import node_env, planner, preflight, steps
from fruits_pipeline.cluster import job_flow_overrides
from fruits_pipeline.code_bundle import bundle_version, code_bundle
from fruits_pipeline.config import EMR_PYTHON, LOCK_FILE, PROJECT_ROOT, Settings
from fruits_pipeline.runs import current_run
from fruits_pipeline.stores import open_store
from fruits_pipeline.tasks import s3_client

log = logging.getLogger(__name__)

STEP_BUDGET_S = 6 * 3600
"""How long a step may take, counted by its sensor, deferred or not."""
VALIDATION_POKE_S = 30
"""Seconds between two looks of ``validate_outputs`` at the outputs on S3."""
VALIDATION_TIMEOUT_S = 600
"""How long ``validate_outputs`` keeps looking for missing outputs before it fails."""


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
def cost_check(synced: dict, work: dict, settings: Settings) -> dict:
    """Refuse to create the cluster when the run's estimated cost exceeds ``max_cost_eur``.

    A run with nothing to do (``work``: :func:`~fruits_pipeline.tasks.plan_work`) costs 0.

    The estimate (:func:`fruits_pipeline.planner.estimate`) counts the images of the run's
    source as ``sync_images`` found them, copied or unchanged: what the featurize step
    processes when each source is synced once (it skips images featurized before), and the
    rows the PCA refits on. Calls no AWS API.
    """
    if not work["anything"]:
        log.info("cost check: EUR 0.00, no cluster: %s", work["reason"])
        return {"images": 0, "eur": 0.0, "minutes": 0.0}
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


def upload_node_env(settings: Settings, s3: Any) -> str:
    """The nodes' Python environment archive in the bucket; its URI.

    ``HeadObject`` its key (:func:`~fruits_pipeline.node_env.env_key`, from the lock file):
    when the object is there, nothing else happens. Else the archive comes from
    ``settings.node_envs``, built there first if missing (about a minute, once per lock
    file), and goes up with ``upload_file`` (a multipart upload).
    """
    lock = PROJECT_ROOT / LOCK_FILE
    uri = settings.node_env_uri(node_env.env_key(lock.read_bytes()))
    key = uri.removeprefix(f"{settings.s3_root}/")
    try:
        s3.head_object(Bucket=settings.bucket, Key=key)
        log.info("node environment already at %s", uri)
        return uri
    except ClientError as err:
        if err.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
            raise
    archive = node_env.ensure(Path(settings.node_envs).expanduser(), lock)
    s3.upload_file(str(archive), settings.bucket, key)
    log.info("node environment uploaded to %s (%.0f MB)", uri, archive.stat().st_size / 1e6)
    return uri


@task
def upload_code(settings: Settings) -> dict:
    """``PutObject`` the jobs, their package, the bootstrap script (and local weights).

    The code goes under ``code/<version>/``, the version being a hash of the bundle, so a
    running cluster never sees its code change and unchanged code is not re-sent.
    """
    bundle = code_bundle()
    version = bundle_version(bundle)
    code_uri = settings.code_uri(version)
    s3 = s3_client(code_uri, settings.aws_conn_id)
    store = open_store(code_uri, s3)
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
    """The ``RunJobFlow`` body of this batch (see :func:`fruits_pipeline.cluster`).

    Its bootstrap action names the nodes' Python environment, which this puts in the bucket
    first unless it is there (:func:`upload_node_env`): only a run that starts a cluster
    (after ``has_work``) may build or send the archive.
    """
    node_env_uri = upload_node_env(settings, s3_client(code["code_uri"], settings.aws_conn_id))
    return job_flow_overrides(settings, run["batch_id"], code["code_uri"], node_env_uri)


@task
def emr_steps(job: str, run: dict, code: dict, work: dict, settings: Settings) -> list[dict]:
    """The one EMR step of ``job`` for this run and its ``work`` (lake digest, new photos seen)."""
    target = steps.emr_target(code["code_uri"], EMR_PYTHON)
    args = steps.job_args(
        job, run, settings.raw_images_uri, settings.output_uri, code["weights"], work
    )
    return [steps.emr_step(job, target, args)]


@task(trigger_rule=TriggerRule.ONE_FAILED, retries=0)
def watcher() -> None:
    """Fail the run when any task failed: the always-run teardown must not hide a failure."""
    raise AirflowException("a task failed upstream; the cluster was still terminated")
