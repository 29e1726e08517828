"""The local EMR stand-in for a test module: started once, stopped (with every Spark process
it started) at the end, failed or not; a bootstrapped EU bucket; the EMR DAG run on it.

Only AWS is stood in for (moto's API); the Spark steps, the DAG and the bucket set-up are the
real ones.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from local_emr.server import LocalEmr, connection_uri
from tests.conftest import GROCERY, ROOT, copy_images, labels, sample_images
from tests.dags.conftest import airflow_db  # noqa: F401 - the session's metadata DB

BUCKET = "fruits-stand-in-lake"
REGION = "eu-west-1"
LABELS = labels(GROCERY, 2)


def spark_processes(folder: Path) -> list[int]:
    """Pids of live processes whose command line names ``folder`` (the stand-in's Spark)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if str(folder).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
    return found


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
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEmr]:
    """The stand-in, with the test keys and its endpoint in the environment (boto3, Airflow)."""
    workdir = tmp_path_factory.mktemp("local-emr")
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.setenv(name, "testing")
        for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
            env.delenv(name, raising=False)
        env.setenv("AWS_DEFAULT_REGION", REGION)
        emr = LocalEmr(workdir=workdir, boot_s=0.5)
        try:
            emr.start()
            env.setenv("AWS_ENDPOINT_URL", emr.endpoint)
            env.setenv("AIRFLOW_CONN_AWS_DEFAULT", connection_uri(emr.endpoint, REGION))
            yield emr
        finally:
            emr.stop()
            left = spark_processes(workdir)
            assert not left, f"Spark processes left running: {left}"


@pytest.fixture(scope="module")
def lake(stand_in: LocalEmr) -> Any:
    """``make aws-bootstrap``'s code on the stand-in: EU bucket, encryption, TLS-only policy."""
    from fruits_pipeline.aws_bootstrap import Bootstrap, Names

    outcomes = Bootstrap(Names(BUCKET, REGION)).up()
    assert outcomes["TLS-only bucket policy"] == "created", outcomes
    return stand_in.client("s3")


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
def dags(airflow_db: None, lake: Any, images: Path, weights: Path) -> DagRunner:  # noqa: F811
    """The DAG runner with the stand-in's bucket, the landing folder and the real weights."""
    return DagRunner(
        {
            "bucket": BUCKET,
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
