"""The local DAG run by Airflow (``dag.test``, SQLite): its checks before any Spark job.

Whole runs of it (two daily batches, quarantine, refit over all) are run by the deployed
Airflow in ``tests/running_airflow``, as users run them.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.conftest import GROCERY


def run_local(dag, day: int, **conf):
    run = dag.test(logical_date=datetime(2026, 11, day, tzinfo=timezone.utc), run_conf=conf)
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


@pytest.fixture
def local_dag(load_dag, tmp_path, weights_file):
    return load_dag("fruits_local", local_root=tmp_path / "local", weights=weights_file)


def test_dry_run_checks_and_stops(local_dag, tmp_path):
    run, states = run_local(local_dag, 22, image_source=str(GROCERY), dry_run=True)
    assert run.state == "success"
    assert states["preflight"] == states["proceed"] == "success"
    assert {states[t] for t in ("sync_images", "featurize", "pca", "validate_outputs")} == {
        "skipped"
    }
    assert not (tmp_path / "local").exists()


def test_missing_source_fails_in_preflight(local_dag, tmp_path):
    run, states = run_local(local_dag, 23, image_source=str(tmp_path / "nowhere"))
    assert run.state == "failed" and states["preflight"] == "failed"
    assert states["featurize"] != "success"


def test_a_failed_job_is_named_by_its_first_error_line(tmp_path):
    from airflow.sdk.exceptions import AirflowException

    from fruits_pipeline.config import SAMPLE_IMAGES, Settings
    from fruits_pipeline.local_tasks import spark_submit_local
    from fruits_pipeline.runs import resolve_run

    fake = tmp_path / "weights.h5"
    fake.write_text("not weights")
    settings = Settings(local_root=str(tmp_path / "local"), weights=str(fake))
    (tmp_path / "local" / "lake").mkdir(parents=True)
    run = resolve_run(
        {"image_source": str(SAMPLE_IMAGES), "variance": 0.9}, None, datetime.now(timezone.utc)
    )
    with pytest.raises(AirflowException) as raised:
        spark_submit_local.function("featurize", run, settings)
    message = str(raised.value)
    assert message.startswith("spark-submit featurize exited 2: featurize: error: "), message
    assert str(fake) in message and "\n" not in message
