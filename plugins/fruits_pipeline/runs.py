"""What one run of either DAG is: its trigger form, its batch id and parameters, its outputs.

:func:`dag_defaults` gives both DAGs the same schedule and form; :func:`resolve_run` turns a
run's form and dates into the dict every task of the run receives (the preflight's XCom).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, Param, get_current_context

from fruits_jobs import contract
from fruits_pipeline.config import Settings


def run_params(settings: Settings) -> dict[str, Param]:
    """The trigger form: typed, with a JSON schema that refuses bad values before a run."""
    return {
        "batch_id": Param(
            None,
            type=["null", "string"],
            pattern=f"^{contract.BATCH_ID_PATTERN}$",
            description=(
                "Batch name: 1 to 64 letters, digits, '_', '.' or '-', starting with a letter "
                "or digit (no '/', ':' or '+'). Empty: the logical date (YYYY-MM-DD), or for a "
                "run without one the time it was queued (YYYY-MM-DDTHHMMSS)."
            ),
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
