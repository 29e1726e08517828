"""Helpers for the tests on the local EMR stand-in (``tests/conftest.py`` starts it once per
test session; each module bootstraps a bucket of its own, named by its ``BUCKET``), and the
EMR DAG run on it with ``dag.test``.

Only AWS is stood in for (moto's API); the Spark steps, the DAG and the bucket set-up are the
real ones.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GROCERY, REGION, ROOT, copy_images, labels, sample_images
from tests.dags.conftest import airflow_db  # noqa: F401 - the session's metadata DB

LABELS = labels(GROCERY, 2)


def wait_for(probe: Any, timeout: float = 60, every: float = 0.2) -> Any:
    """Call ``probe`` until it returns something truthy; that value (AssertionError on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"{probe} still false after {timeout} s")


ENDED = ("TERMINATED", "TERMINATED_WITH_ERRORS")


def clusters(emr: Any) -> dict[str, dict]:
    """Every cluster of the stand-in, described, by name (``fruits-<batch>``)."""
    found = {}
    for listed in emr.list_clusters()["Clusters"]:
        found[listed["Name"]] = emr.describe_cluster(ClusterId=listed["Id"])["Cluster"]
    return found


def ended(emr: Any, batch: str, timeout: float = 60) -> dict:
    """The batch's cluster once it has ended (terminate_cluster only asks it to)."""
    return wait_for(
        lambda: (c := clusters(emr).get(f"fruits-{batch}")) and c["Status"]["State"] in ENDED and c,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 photos of each of 2 labels: the first batch's landing folder."""
    root = tmp_path_factory.mktemp("landing")
    copy_images(sample_images(GROCERY, 8, LABELS), root)
    return root


@pytest.fixture(scope="module")
def weights(weights_file: Path) -> Path:
    """The real MobileNetV2 weights (``../shared/models``) the DAG uploads to the bucket."""
    return weights_file


class DagRunner:
    """Runs a DAG with ``dag.test`` under ``FRUITS_*`` settings; states by task id."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def run(
        self, dag_id: str, day: int, conf: dict | None = None, **settings: Any
    ) -> tuple[Any, dict[str, str]]:
        from airflow.dag_processing.dagbag import DagBag

        with pytest.MonkeyPatch.context() as env:
            for name, value in {**self.settings, **settings}.items():
                env.setenv(f"FRUITS_{name.upper()}", str(value))
            bag = DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id}.py"))
            assert not bag.import_errors, bag.import_errors
            run = bag.get_dag(dag_id).test(
                logical_date=datetime(2026, 11, day, tzinfo=timezone.utc), run_conf=conf or {}
            )
        return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


@pytest.fixture(scope="module")
def dags(
    airflow_db: None,  # noqa: F811
    lake: Any,
    images: Path,
    weights: Path,
    request: pytest.FixtureRequest,
) -> DagRunner:
    """The DAG runner with the module's bucket, the landing folder and the real weights."""
    return DagRunner(
        {
            "bucket": request.module.BUCKET,
            "region": REGION,
            "image_source": images,
            "weights": weights,
            "step_poke_interval_s": 1,
        }
    )


def add_images(landing: Path, per_label: int, skip: int) -> int:
    """Copy photos ``skip`` to ``skip + per_label`` of each label into ``landing``; how many."""
    chosen = [
        photo
        for label in LABELS
        for photo in sorted((GROCERY / label).glob("*.jpg"))[skip : skip + per_label]
    ]
    copy_images(chosen, landing)
    return len(chosen)
